//! The variant registry is complete: every registered variant is accepted by spec parsing (and
//! its text round-trips), the CLI, the macro, tuned config keys, the f64 oracle and NVRTC on
//! sm_80 and sm_90a, and the tuner sets up its standard problem. The matches below are
//! exhaustive, so a variant added to the registry does not compile here until its macro
//! declaration and oracle rule exist, and fails here until every other place accepts it. Every
//! variant file on disk is registered: a module the list does not name is never compiled.

use flashgen::attention_kernel;
use flashgen::codegen::variants::{schedule_files, MODULES};
use flashgen::codegen::{parse_spec, render, Arch, AttentionSpec, KernelSpec, Variant, REGISTRY};
use flashgen::runtime::config::spec_key;
use flashgen::tuning::TuneTarget;
use flashgen_reference::{BlockSparse, HeadKind, Mask};
use std::process::Command;

attention_kernel! {
    struct DenseKernel: dense(causal), head_dim = 128, dtype = bf16, lse;
    struct StreamingKernel: streaming(sink = 128, window = 2048), head_dim = 128, dtype = bf16;
    struct BlockSparseKernel: block_sparse(block_q = 128, block_k = 128, causal), head_dim = 128,
        dtype = bf16;
    struct MixedKernel: mixed(sink = 64, window = 256, block_q = 128, block_k = 128),
        head_dim = 128, dtype = bf16, lse;
    struct ApbKernel: apb, head_dim = 128, dtype = bf16, lse;
    struct CustomKernel: custom, head_dim = 128, dtype = bf16;
}

/// The macro's declaration of each variant.
fn declared(variant: Variant) -> &'static str {
    match variant {
        Variant::Dense => DenseKernel::SPEC,
        Variant::Streaming => StreamingKernel::SPEC,
        Variant::BlockSparse => BlockSparseKernel::SPEC,
        Variant::Mixed => MixedKernel::SPEC,
        Variant::Apb => ApbKernel::SPEC,
        Variant::Custom => CustomKernel::SPEC,
    }
}

/// The oracle's rule for each variant, over `hq` query heads of `sq x sk`.
fn oracle(variant: Variant, causal: bool, hq: usize, sq: usize, sk: usize) -> Mask {
    match variant {
        Variant::Dense => Mask::Dense { causal },
        Variant::Streaming => Mask::streaming(4, 16),
        Variant::BlockSparse => {
            Mask::BlockSparse(BlockSparse::all_blocks(16, 16, causal, sq, sk).unwrap())
        }
        Variant::Mixed => Mask::Mixed {
            head_kind: (0..hq)
                .map(|h| match h % 4 {
                    0 => HeadKind::Dense,
                    1 => HeadKind::DenseCausal,
                    2 => HeadKind::Streaming {
                        sink: 4,
                        window: 16,
                    },
                    _ => HeadKind::BlockSparse,
                })
                .collect(),
            block_sparse: Some(BlockSparse::all_blocks(16, 16, causal, sq, sk).unwrap()),
        },
        Variant::Apb => Mask::apb(8, 8),
        // Without a definition a custom spec sees every key (definitions: attention_custom).
        Variant::Custom => Mask::Dense { causal: false },
    }
}

/// The spec texts of a variant: with and without each flag it accepts.
fn texts(variant: Variant) -> Vec<String> {
    let name = variant.name();
    let mut out = vec![format!("{name},d128,bf16"), format!("{name},d64,f16,lse")];
    if variant.accepts_causal() {
        out.push(format!("{name},d128,bf16,causal,lse"));
    }
    if variant.accepts_varlen() {
        out.push(format!("{name},d64,bf16,varlen"));
    }
    out
}

fn flashgen(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flashgen"))
        .args(args)
        .env(
            "FLASHGEN_CACHE_DIR",
            std::env::temp_dir().join("flashgen-registry-test"),
        )
        .output()
        .expect("the flashgen binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn every_registered_variant_is_accepted_everywhere() {
    assert_eq!(Variant::ALL.len(), REGISTRY.len());
    let (ok, help) = flashgen(&["--help"]);
    assert!(ok, "{help}");
    let (ok, tune_help) = flashgen(&["tune", "--help"]);
    assert!(ok, "{tune_help}");
    for info in REGISTRY {
        let v = info.variant;
        let name = info.name;
        // Spec text: parse, print, parse again; the config key is the text without the tile.
        for text in texts(v) {
            for arch in [Arch::SM80, Arch::SM90] {
                let spec = parse_spec(&text, arch).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(spec.variant, v);
                assert_eq!(
                    spec_key(&spec.attention()),
                    text,
                    "the config key of {text}"
                );
                assert_eq!(parse_spec(&spec.to_string(), arch).unwrap(), spec);
            }
        }
        // The CLI: help lists it, `--variant` takes it, `emit` renders it.
        assert!(help.contains(name), "--help omits {name}");
        assert!(tune_help.contains(name), "tune --help omits {name}");
        let (ok, out) = flashgen(&["tune", "--list", "--variant", name, "--arch", "sm_90a"]);
        assert!(
            ok && out.contains(&format!("{name},")),
            "tune --list --variant {name}: {out}"
        );
        let (ok, out) = flashgen(&["emit", &format!("{name},d64,bf16"), "--arch", "sm_80"]);
        assert!(ok && out.contains("extern \"C\""), "emit {name}: {out}");
        // The macro.
        let spec = parse_spec(declared(v), Arch::SM90).unwrap();
        assert_eq!(spec.variant, v, "the macro's {name}");
        // The oracle.
        let (hq, sq, sk) = (4, 24, 40);
        let mask = oracle(v, v.accepts_causal(), hq, sq, sk);
        mask.check(1, hq, sq, sk)
            .unwrap_or_else(|e| panic!("oracle of {name}: {e}"));
        assert!(mask.visible_pairs(0, hq, sq, sk) > 0, "oracle of {name}");
        // The tuner's standard problem.
        let spec = AttentionSpec::new(v, 128, flashgen::DType::Bf16, v.accepts_causal());
        let target = TuneTarget::standard(spec, 4096);
        target
            .check()
            .unwrap_or_else(|e| panic!("standard tuning problem of {name}: {e}"));
        assert!(target.flops() > 0.0, "standard tuning problem of {name}");
        // NVRTC, on the default tile of each arch.
        for arch in [Arch::SM80, Arch::SM90] {
            let spec = KernelSpec::new(v, 128, flashgen::DType::Bf16, v.accepts_causal(), arch)
                .with_lse(true);
            let source = render(&spec).unwrap();
            flashgen::runtime::compile(&source, arch)
                .unwrap_or_else(|e| panic!("NVRTC {spec} on {arch}: {e}"));
        }
    }
}

/// The `.rs` files of a directory other than `mod.rs`, without the extension, sorted.
fn modules_in(dir: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_owned))
        .filter(|m| m != "mod")
        .collect();
    out.sort();
    out
}

#[test]
fn every_variant_file_is_registered() {
    let mut registered: Vec<String> = MODULES.iter().map(|m| m.to_string()).collect();
    registered.sort();
    assert_eq!(modules_in("codegen/src/variants"), registered);
    assert_eq!(modules_in("runtime/src/variants"), registered);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/variants");
    for file in std::fs::read_dir(dir).unwrap() {
        let name = format!("variants/{}", file.unwrap().file_name().to_string_lossy());
        assert!(
            schedule_files().any(|(n, _)| n == name),
            "{name} is no registered variant's schedule file"
        );
    }
}
