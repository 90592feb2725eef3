use flashgen_codegen::*;

fn wgmma(block_m: u32, block_n: u32, warps: u32) -> TileConfig {
    TileConfig::new(block_m, block_n, warps, 1).with_mma(Mma::Wgmma)
}

fn spec(d: u32, tile: TileConfig) -> KernelSpec {
    KernelSpec::new(Variant::Dense, d, DType::Bf16, true, Arch::SM90).with_tile(tile)
}

#[test]
fn every_validation_error_names_its_field_and_allowed_values() {
    let ok = TileConfig::new(128, 64, 4, 1);
    let cases: Vec<(KernelSpec, Arch, &str, &str)> = vec![
        (spec(80, ok), Arch::SM90, "head_dim", "32, 64, 96, 128, 256"),
        (
            spec(128, TileConfig::new(96, 64, 4, 1)),
            Arch::SM90,
            "block_m",
            "64, 128",
        ),
        (
            spec(128, TileConfig::new(128, 48, 4, 1)),
            Arch::SM90,
            "block_n",
            "32, 64, 128",
        ),
        (
            spec(128, TileConfig::new(128, 64, 2, 1)),
            Arch::SM90,
            "warps",
            "4, 8",
        ),
        (
            spec(128, TileConfig::new(128, 64, 4, 3)),
            Arch::SM90,
            "stages",
            "1, 2",
        ),
        (
            spec(128, TileConfig::new(64, 64, 8, 1)),
            Arch::SM90,
            "block_m",
            "16 or 32 rows per warp",
        ),
        (
            spec(256, TileConfig::new(128, 64, 4, 1)),
            Arch::SM90,
            "tile",
            "at most 192",
        ),
        (
            spec(256, TileConfig::new(64, 128, 4, 1)),
            Arch::SM86,
            "tile",
            "at most 101376",
        ),
        (
            spec(128, TileConfig::new(128, 64, 4, 2)),
            Arch::SM90,
            "tile",
            "1 stage",
        ),
        (spec(128, ok), Arch::new(7, 5), "arch", "8.0 or newer"),
        (
            spec(128, wgmma(128, 128, 8)),
            Arch::SM80,
            "mma",
            "wgmma needs sm_90a",
        ),
        (
            spec(128, wgmma(128, 64, 4)),
            Arch::SM90,
            "mma",
            "16 rows per warp",
        ),
        (
            spec(96, wgmma(128, 64, 8)),
            Arch::SM90,
            "mma",
            "64, 128, 256",
        ),
    ];
    for (spec, arch, field, allowed) in cases {
        let err = validate(&spec, arch).expect_err(&format!("{spec} on {arch} must be rejected"));
        assert_eq!(err.field(), field, "{err}");
        assert!(
            err.to_string().contains(allowed),
            "`{err}` should mention `{allowed}`"
        );
    }
    assert!(validate(&spec(128, ok), Arch::SM90).is_ok());
}

#[test]
fn shared_memory_budget_depends_on_arch() {
    // A 64x64 one-stage d256 tile: (64 + 2*64) rows of (256 + 8) 2-byte elements = 101376 bytes,
    // exactly sm_86's limit.
    let t = TileConfig::new(64, 64, 4, 1);
    assert_eq!(shared_memory_bytes(&t, 256), 101_376);
    assert!(validate(&spec(256, t), Arch::SM86).is_ok());
    // (128 + 2*2*128) rows of (128 + 8) elements: 174080 bytes, over sm_80's 166912 but within
    // sm_90's 232448.
    let t2 = TileConfig::new(128, 128, 8, 2);
    assert_eq!(shared_memory_bytes(&t2, 128), 174_080);
    assert!(validate(&spec(128, t2), Arch::SM86).is_err());
    assert!(validate(&spec(128, t2), Arch::SM80).is_err());
    assert!(validate(&spec(128, t2), Arch::SM90).is_ok());
}

#[test]
fn text_form_round_trips() {
    for arch in [Arch::SM80, Arch::SM86, Arch::SM90] {
        for d in HEAD_DIMS {
            for dtype in DType::ALL {
                for causal in [false, true] {
                    let base = KernelSpec::new(Variant::Dense, d, dtype, causal, arch)
                        .with_lse(d % 64 == 0)
                        .with_varlen(causal);
                    for tile in search_space(&base.attention(), arch) {
                        let s = base.with_tile(tile);
                        let text = s.to_string();
                        assert_eq!(parse_spec(&text, arch).unwrap(), s, "{text}");
                    }
                }
            }
        }
    }
}

#[test]
fn parse_errors_are_clear() {
    let cases = [
        (
            "sparse,d128,bf16",
            "unknown variant `sparse`; allowed values: dense, streaming, block-sparse, mixed",
        ),
        (
            "streaming,d128,bf16,causal",
            "causal = true does not apply to variant streaming",
        ),
        ("dense,bf16", "missing head dim"),
        ("dense,d128", "missing dtype"),
        ("dense,d128,bf16,fast", "unknown part `fast`"),
        (
            "dense,d128,bf16,m128x64",
            "m<block_m>n<block_n>w<warps>s<stages>",
        ),
        ("dense,d100,bf16", "head_dim = 100"),
    ];
    for (text, want) in cases {
        let err = parse_spec(text, Arch::SM90).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "`{err}` should contain `{want}`"
        );
    }
    assert_eq!(
        parse_tile("m128n128w8s1-wgmma").unwrap(),
        wgmma(128, 128, 8)
    );
    assert_eq!(wgmma(128, 128, 8).to_string(), "m128n128w8s1-wgmma");
    assert_eq!(parse_arch("sm_90a").unwrap(), Arch::SM90);
    assert_eq!(parse_arch("8.6").unwrap(), Arch::SM86);
    assert_eq!(parse_arch("80").unwrap(), Arch::SM80);
    assert_eq!(parse_arch("sm_75").unwrap_err().field(), "arch");
    assert!(parse_arch("hopper").is_err());
}

#[test]
fn repeated_or_conflicting_parts_are_rejected_by_name() {
    let cases = [
        (
            "dense,d64,d128,bf16",
            "duplicate head dim: `d64` and `d128`",
        ),
        ("dense,d64,bf16,d64", "duplicate part `d64`"),
        ("dense,d64,bf16,f16", "duplicate dtype: `bf16` and `f16`"),
        ("dense,d64,fp16,f16", "duplicate dtype: `fp16` and `f16`"),
        (
            "dense,d64,bf16,m64n64w4s1,m128n64w4s1",
            "duplicate tile: `m64n64w4s1` and `m128n64w4s1`",
        ),
        ("dense,d64,bf16,causal,causal", "duplicate part `causal`"),
        ("dense,d64,bf16,lse,causal,lse", "duplicate part `lse`"),
        ("dense,d64,bf16,varlen,varlen", "duplicate part `varlen`"),
        (
            "dense,d64,bf16,streaming",
            "duplicate variant: `dense` and `streaming`",
        ),
        ("dense,d64,bf16,dense", "duplicate part `dense`"),
    ];
    for (text, want) in cases {
        let err = parse_spec(text, Arch::SM80).expect_err(text);
        assert_eq!(err.field(), "spec", "{err}");
        assert!(
            err.to_string().contains(want),
            "`{err}` should contain `{want}`"
        );
    }
    // Empty parts are not parts.
    assert!(parse_spec("dense,,d64,bf16,", Arch::SM80).is_ok());
}

#[test]
fn only_known_archs_parse() {
    for arch in Arch::KNOWN {
        assert_eq!(parse_arch(&arch.sm_name()), Ok(arch));
        assert_eq!(
            parse_arch(&format!("{}.{}", arch.major, arch.minor)),
            Ok(arch)
        );
    }
    assert_eq!(parse_arch("sm_90").unwrap(), Arch::SM90);
    assert_eq!(parse_arch("90a").unwrap(), Arch::SM90);
    assert_eq!(parse_arch(" sm_100 ").unwrap(), Arch::new(10, 0));
    assert_eq!(parse_arch("12.1").unwrap(), Arch::new(12, 1));
    for bad in [
        "8.99", "sm_199", "99", "sm_80a", "sm_100a", "8.6a", "7.5", "sm_75", "sm_101", "13.0",
        "+80", "8.+0", "8.0.0", "0", "", "sm_", "a", "sm_90aa", "hopper", "sm_9000",
    ] {
        let err = parse_arch(bad).expect_err(bad);
        assert_eq!(err.field(), "arch", "{bad}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("`{bad}`"))
                && text.contains("allowed values: sm_80, sm_86, sm_87, sm_89, sm_90a, sm_100"),
            "{text}"
        );
    }
}

#[test]
fn missing_tile_takes_the_default() {
    let s = parse_spec("dense,d128,bf16,causal", Arch::SM90).unwrap();
    assert_eq!(s.tile, default_tile(&s.attention(), Arch::SM90));
    assert!(s.causal && !s.lse && !s.varlen);
}

#[test]
fn default_tile_is_valid_for_every_spec_and_arch() {
    for arch in [Arch::SM80, Arch::SM86, Arch::SM89, Arch::SM90] {
        for d in HEAD_DIMS {
            let s = KernelSpec::new(Variant::Dense, d, DType::F16, false, arch);
            validate(&s, arch).unwrap_or_else(|e| panic!("default for d{d} on {arch}: {e}"));
            assert!(search_space(&s.attention(), arch).contains(&s.tile));
        }
    }
}

#[test]
fn hopper_defaults_to_wgmma_and_other_archs_to_mma_sync() {
    for d in [64, 128, 256] {
        let s = KernelSpec::new(Variant::Dense, d, DType::Bf16, true, Arch::SM90);
        assert!(s.tile.mma.is_wgmma(), "d{d}");
        let code = render(&s).unwrap().code;
        assert!(code.contains(&format!(
            "wgmma.mma_async.sync.aligned.m64n{d}k16.f32.bf16.bf16"
        )));
        assert!(s.kernel_name().ends_with("_causal") && !s.kernel_name().contains('-'));
        let s = KernelSpec::new(Variant::Dense, d, DType::Bf16, true, Arch::SM80);
        assert_eq!(s.tile.mma, Mma::Sync, "d{d}");
        assert!(!render(&s).unwrap().code.contains("wgmma"));
    }
    // Measured: the pipelined loop for every variant at d128, not for varlen.
    for causal in [false, true] {
        let s = KernelSpec::new(Variant::Dense, 128, DType::Bf16, causal, Arch::SM90);
        assert_eq!(s.tile.to_string(), "m64n128w4s1-wgmma-pipelined");
    }
    let s = KernelSpec::new(Variant::Streaming, 128, DType::Bf16, false, Arch::SM90);
    assert_eq!(s.tile.to_string(), "m64n64w4s1-wgmma-pipelined");
    let s = s.with_varlen(true);
    assert_eq!(default_tile(&s.attention(), Arch::SM90).mma, Mma::Wgmma);
    let s = KernelSpec::new(Variant::Apb, 128, DType::Bf16, false, Arch::SM90);
    assert_eq!(s.tile.to_string(), "m64n128w4s1-wgmma-pipelined");
    // Head dims the swizzled layout cannot split stay on mma.sync on Hopper too.
    let s = KernelSpec::new(Variant::Dense, 96, DType::Bf16, true, Arch::SM90);
    assert_eq!(s.tile.mma, Mma::Sync);
}

#[test]
fn rendering_is_deterministic_and_complete() {
    let s = parse_spec("dense,d64,f16,causal,lse,varlen,m128n64w4s2", Arch::SM80).unwrap();
    let a = render(&s).unwrap();
    let b = render(&s).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.kernel_name, s.kernel_name());
    assert!(a.code.contains(&format!(
        "__global__ void __launch_bounds__(THREADS) {}(",
        s.kernel_name()
    )));
    assert!(a.code.contains("constexpr int HEAD_DIM = 64;"));
    assert!(a
        .code
        .contains("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"));
    assert!(a.code.contains("cvt.rn.f16x2.f32"));
    assert!(a.code.contains("constexpr bool VARLEN = true;"));
    assert!(
        !a.code.contains("#include"),
        "templates must be self-contained"
    );
    assert!(
        !a.code.contains("{{") && !a.code.contains("{%"),
        "unrendered template syntax"
    );
    assert_eq!(a.threads, 128);
    assert_eq!(a.shared_bytes, shared_memory_bytes(&s.tile, 64));
}

#[test]
fn hash_is_stable_and_distinguishes_specs() {
    let s = parse_spec("dense,d128,bf16,causal", Arch::SM90).unwrap();
    assert_eq!(spec_hash(&s), spec_hash(&s.clone()));
    assert_eq!(spec_hash(&s).len(), 64);
    let mut seen = std::collections::HashSet::new();
    for tile in search_space(&s.attention(), Arch::SM90) {
        for lse in [false, true] {
            assert!(seen.insert(spec_hash(&s.with_tile(tile).with_lse(lse))));
        }
    }
    assert_eq!(template_digest().len(), 64);
}

#[test]
fn source_digests_cover_name_code_and_launch_shape() {
    let a = render(&parse_spec("dense,d64,bf16,m64n64w4s1", Arch::SM80).unwrap()).unwrap();
    assert_eq!(a.digest(), a.clone().digest());
    assert_eq!(a.digest().len(), 64);
    let mut edited = a.clone();
    edited.code.push(' ');
    let mut renamed = a.clone();
    renamed.kernel_name.push('x');
    let mut wider = a.clone();
    wider.threads *= 2;
    let mut more_smem = a.clone();
    more_smem.shared_bytes += 16;
    for other in [edited, renamed, wider, more_smem] {
        assert_ne!(a.digest(), other.digest());
    }
}

fn pipelined(block_m: u32, block_n: u32, warps: u32) -> TileConfig {
    TileConfig::new(block_m, block_n, warps, 2).with_mma(Mma::WgmmaPipelined)
}

#[test]
fn pipelined_wgmma_tiles_parse_validate_and_render() {
    let t = pipelined(64, 128, 4);
    assert_eq!(t.to_string(), "m64n128w4s2-wgmma-pipelined");
    assert_eq!(parse_tile("m64n128w4s2-wgmma-pipelined").unwrap(), t);
    let s = spec(128, t);
    validate(&s, Arch::SM90).unwrap();
    assert!(s.kernel_name().ends_with("_wgmma_pipelined_causal"));
    let code = render(&s).unwrap().code;
    assert!(code.contains("wgmma.wait_group.sync.aligned %0;"));
    assert!(code.contains("fg_wgmma_wait<1>();"));
    // Every variant renders through the same loop.
    for variant in Variant::ALL {
        let s = KernelSpec::new(variant, 128, DType::Bf16, false, Arch::SM90).with_tile(t);
        validate(&s, Arch::SM90).unwrap();
        assert!(render(&s).unwrap().code.contains("Pipelined wgmma loop"));
    }
    // The search space offers it on sm_90a only.
    assert!(search_space(&s.attention(), Arch::SM90).contains(&t));
    assert!(!search_space(&s.attention(), Arch::SM80)
        .iter()
        .any(|t| t.mma == Mma::WgmmaPipelined));
    let err = |tile, d| {
        validate(&spec(d, tile), Arch::SM90)
            .unwrap_err()
            .to_string()
    };
    // Single-buffered too.
    let one_stage = TileConfig::new(64, 128, 4, 1).with_mma(Mma::WgmmaPipelined);
    assert!(search_space(&s.attention(), Arch::SM90).contains(&one_stage));
    assert!(render(&spec(128, one_stage))
        .unwrap()
        .code
        .contains("One K and one V buffer"));
    // d256 with 128 keys a step leaves no registers for the scores in flight.
    assert!(err(pipelined(64, 128, 4), 256).contains("registers"));
    assert!(err(pipelined(128, 64, 4), 128).contains("16 rows per warp"));
    assert!(validate(&spec(128, t), Arch::SM80)
        .unwrap_err()
        .to_string()
        .contains("sm_90a"));
}
