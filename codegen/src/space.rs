//! The tile search space and the heuristic default config.

use crate::spec::{Arch, KernelSpec, Mma, TileConfig, Variant};
use crate::validate::validate;

/// Every tile config the templates support for `spec` on `arch`, in a stable order.
pub fn search_space(spec: &KernelSpec, arch: Arch) -> Vec<TileConfig> {
    let mut out = Vec::new();
    for &block_m in &TileConfig::BLOCK_M {
        for &block_n in &TileConfig::BLOCK_N {
            for &warps in &TileConfig::WARPS {
                for &stages in &TileConfig::STAGES {
                    for mma in TileConfig::MMA {
                        let tile = TileConfig::new(block_m, block_n, warps, stages).with_mma(mma);
                        if validate(&spec.with_tile(tile), arch).is_ok() {
                            out.push(tile);
                        }
                    }
                }
            }
        }
    }
    out
}

/// A config that is good without tuning (measured on an H100 over the benchmark's cases; the
/// tuner picks per shape). On sm_90a the `wgmma` mainloop: two warpgroups over 128 keys a step
/// for dense d128, one warpgroup elsewhere (more CTAs balance short and sparse work better).
/// Elsewhere FlashAttention-2's shapes (128 query rows over 4 warps, 64 keys a step) where
/// registers allow, 16 rows per warp for the largest head dim.
pub fn default_tile(spec: &KernelSpec, arch: Arch) -> TileConfig {
    let hopper = match (spec.variant, spec.head_dim) {
        // Measured by a full tune on an H100 (dense d128: 1.16-1.25x over m128n128w8s1).
        (Variant::Dense | Variant::Apb, 256) => TileConfig::new(128, 64, 8, 1),
        (Variant::Streaming, _) | (_, 256) => TileConfig::new(64, 64, 4, 1),
        _ => TileConfig::new(64, 128, 4, 1),
    }
    .with_mma(Mma::Wgmma);
    let preferred = match spec.head_dim {
        256 | 32 => TileConfig::new(64, 64, 4, 1),
        64 => TileConfig::new(128, 64, 4, 2),
        // With both lse and varlen, two 16-row tiles per warp no longer fit in registers.
        _ if spec.lse && spec.varlen => TileConfig::new(128, 64, 8, 1),
        _ => TileConfig::new(128, 64, 4, 1),
    };
    for tile in [hopper, preferred] {
        if validate(&spec.with_tile(tile), arch).is_ok() {
            return tile;
        }
    }
    search_space(spec, arch)
        .into_iter()
        .next()
        .unwrap_or(preferred)
}

/// The built-in default set of kernels (what `flashgen compile --default-set` builds and the
/// tuner tunes): every variant at head dims 64 and 128, bf16, with lse output.
pub fn default_set(arch: Arch) -> Vec<KernelSpec> {
    let mut out = Vec::new();
    for variant in crate::spec::Variant::ALL {
        for head_dim in [64, 128] {
            let causal_options: &[bool] = if variant.accepts_causal() {
                &[false, true]
            } else {
                &[false]
            };
            for &causal in causal_options {
                out.push(
                    KernelSpec::new(variant, head_dim, crate::spec::DType::Bf16, causal, arch)
                        .with_lse(true),
                );
            }
        }
    }
    out
}
