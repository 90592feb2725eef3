//! The custom variant's kernels compile with NVRTC for sm_80 and sm_90a without register
//! spills (needs libnvrtc, no GPU): the attention kernel of typical definitions (masks only,
//! score modifiers only, both, with vectors and scalars) on every mainloop, and the block
//! classification kernel of each definition.

use flashgen_codegen::expr::Definition;
use flashgen_codegen::render::render_custom_blocks;
use flashgen_codegen::{
    default_tile, render, Arch, AttentionSpec, DType, Mma, TileConfig, Variant,
};
use flashgen_runtime::compile;

pub const DEFINITIONS: &[&str] = &[
    "mask = k <= q",
    "w: i32; mask = k <= q && q - k < w",
    "p: i32; mask = k < p || k <= q",
    "doc: [i32]; mask = doc[q] == doc[k] && k <= q",
    "mask = k <= q; score = 50.0 * tanh(s / 50.0)",
    "slope: [f32]; mask = k <= q; score = s + slope[h] * (k - q)",
    "bias: [f32]; score = s + bias[h]",
];

fn spec(text: &str, head_dim: u32, varlen: bool) -> AttentionSpec {
    let def = Definition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    AttentionSpec::new(Variant::Custom, head_dim, DType::Bf16, false)
        .with_lse(true)
        .with_varlen(varlen)
        .with_definition(Some(def))
}

#[test]
fn custom_kernels_compile_without_spills() {
    if !flashgen_runtime::libs::nvrtc_present() {
        eprintln!("libnvrtc is not loadable: skipped");
        return;
    }
    let mut jobs = Vec::new();
    for text in DEFINITIONS {
        for arch in [Arch::SM80, Arch::SM90] {
            let s = spec(text, 128, false);
            jobs.push((s.with_default_tile(arch), arch));
        }
    }
    // Every mainloop on one definition with a vector, a scalar and a score modifier.
    let both =
        "doc: [i32]; cap: f32; mask = doc[q] == doc[k] && k <= q; score = cap * tanh(s / cap)";
    for (tile, arch) in [
        (TileConfig::new(128, 64, 8, 1), Arch::SM80),
        (TileConfig::new(64, 64, 4, 2), Arch::SM80),
        (
            TileConfig::new(64, 128, 4, 1).with_mma(Mma::Wgmma),
            Arch::SM90,
        ),
        (
            TileConfig::new(64, 128, 4, 1).with_mma(Mma::WgmmaPipelined),
            Arch::SM90,
        ),
        (
            TileConfig::new(64, 64, 4, 2).with_mma(Mma::WgmmaPipelined),
            Arch::SM90,
        ),
    ] {
        jobs.push((spec(both, 128, false).with_tile(tile), arch));
        jobs.push((spec(both, 64, true).with_tile(tile), arch));
    }
    // A custom spec without a definition sees every key.
    let plain = AttentionSpec::new(Variant::Custom, 64, DType::F16, false);
    jobs.push((plain.with_default_tile(Arch::SM90), Arch::SM90));
    jobs.push((
        plain.with_tile(default_tile(&plain, Arch::SM80)),
        Arch::SM80,
    ));
    for (kernel, arch) in jobs {
        let source = render(&kernel).expect("renders");
        let (compiled, _) =
            compile::compile(&source, arch).unwrap_or_else(|e| panic!("{kernel} for {arch}:\n{e}"));
        let r = &compiled.report;
        assert_eq!(
            (r.spill_stores_bytes, r.spill_loads_bytes),
            (0, 0),
            "{kernel} for {arch} spills: {r:?}"
        );
    }
    for text in DEFINITIONS {
        let source = render_custom_blocks(Some(Definition::parse(text).unwrap())).unwrap();
        for arch in [Arch::SM80, Arch::SM90] {
            compile::compile(&source, arch)
                .unwrap_or_else(|e| panic!("blocks of {text} for {arch}:\n{e}"));
        }
    }
}
