//! The tile search space and the heuristic default config.

use crate::spec::{Arch, AttentionSpec, Mma, TileConfig};
use crate::validate::validate;

/// Every tile config the templates support for `spec` on `arch`, in a stable order.
pub fn search_space(spec: &AttentionSpec, arch: Arch) -> Vec<TileConfig> {
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

/// A config that is good without tuning (the tuner picks per shape). On sm_90a the `wgmma`
/// mainloops, one warpgroup per CTA (more CTAs balance short and sparse work better) except
/// for d256. Measured on an H200 (b1 h32 d128 bf16 with lse, s32768 unless noted, useful
/// TFLOP/s): the pipelined loop over 64x128 tiles, two CTAs per SM, against the plain wgmma
/// default: streaming 441 vs 402, block-sparse 450 vs 396, mixed heads 473 vs 440, causal
/// 495 vs 468 (s4096 448 vs 406, s16384 497 vs 471). At d64 it lost (causal s16384 378 vs
/// 419), so d64 keeps the plain loop; varlen was not measured with it. Non-causal dense d128
/// s16384: 8.93 ms pipelined vs 9.51 ms plain (493 vs 462 TFLOP/s, same run). APB d128 takes
/// the pipelined loop too: the simulated 4-host prefill at 128k ran 28.8 ms against 36.6 ms on
/// `m64n128w4s1-wgmma`.
/// Elsewhere FlashAttention-2's shapes (128 query rows over 4 warps, 64 keys a step) where
/// registers allow, 16 rows per warp for the largest head dim.
/// What a variant measured better for itself (the key tile of the wgmma loops, the d256
/// warpgroups, the warps of the mma.sync tiles) is its registry row's
/// [`TilePrefs`](crate::variants::TilePrefs).
pub fn default_tile(spec: &AttentionSpec, arch: Arch) -> TileConfig {
    let prefs = spec.variant.info().tiles;
    // Every variant at d128, except varlen batches.
    let pipelined = !spec.varlen && spec.head_dim == 128;
    let hopper = match spec.head_dim {
        256 if prefs.wgmma_d256_two_warpgroups => {
            TileConfig::new(128, 64, 8, 1).with_mma(Mma::Wgmma)
        }
        256 => TileConfig::new(64, 64, 4, 1).with_mma(Mma::Wgmma),
        _ => TileConfig::new(64, prefs.wgmma_block_n, 4, 1).with_mma(if pipelined {
            Mma::WgmmaPipelined
        } else {
            Mma::Wgmma
        }),
    };
    let preferred = match spec.head_dim {
        256 | 32 => TileConfig::new(64, 64, 4, 1),
        64 => TileConfig::new(128, 64, 4, 2),
        // With both lse and varlen two 16-row tiles per warp no longer fit in registers
        // (ptxas spills).
        _ if (spec.lse && spec.varlen) || prefs.sync_eight_warps => TileConfig::new(128, 64, 8, 1),
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

/// The tile for a block-sparse (or mixed) launch whose block list has blocks of `block_q` x
/// `block_k` tokens: the default tile if its `block_m` and `block_n` divide them, else the tile
/// of the search space nearest to it (same mainloop kind first, then the largest tile, then
/// the same warps and stages). `None` when no tile divides the blocks.
pub fn default_tile_for_blocks(
    spec: &AttentionSpec,
    arch: Arch,
    block_q: usize,
    block_k: usize,
) -> Option<TileConfig> {
    let fits = |t: &TileConfig| {
        block_q.is_multiple_of(t.block_m as usize) && block_k.is_multiple_of(t.block_n as usize)
    };
    let preferred = default_tile(spec, arch);
    if fits(&preferred) {
        return Some(preferred);
    }
    search_space(spec, arch)
        .into_iter()
        .filter(fits)
        .min_by_key(|t| {
            (
                t.mma != preferred.mma,
                std::cmp::Reverse(t.block_m * t.block_n),
                t.warps != preferred.warps,
                t.stages != preferred.stages,
            )
        })
}

/// The built-in default set of specs (what `flashgen compile --default-set` builds, each with
/// its arch's [`default_tile`], and the tuner tunes): every variant at head dims 64 and 128,
/// bf16, with lse output.
pub fn default_set() -> Vec<AttentionSpec> {
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
                    AttentionSpec::new(variant, head_dim, crate::spec::DType::Bf16, causal)
                        .with_lse(true),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DType, Variant};

    /// Each variant's `TilePrefs` reach its default tile; a variant without preferences gets
    /// the standard tiles.
    #[test]
    fn default_tiles_follow_the_variants_preferences() {
        let tile = |v, hd, arch| {
            default_tile(&AttentionSpec::new(v, hd, DType::Bf16, false), arch).to_string()
        };
        let sm90 = Arch::SM90;
        assert_eq!(
            tile(Variant::Streaming, 128, sm90),
            "m64n64w4s1-wgmma-pipelined"
        );
        assert_eq!(
            tile(Variant::Dense, 128, sm90),
            "m64n128w4s1-wgmma-pipelined"
        );
        assert_eq!(tile(Variant::Streaming, 64, sm90), "m64n64w4s1-wgmma");
        assert_eq!(tile(Variant::BlockSparse, 64, sm90), "m64n128w4s1-wgmma");
        assert_eq!(tile(Variant::Apb, 256, sm90), "m128n64w8s1-wgmma");
        assert_eq!(tile(Variant::Mixed, 256, sm90), "m64n64w4s1-wgmma");
        assert_eq!(tile(Variant::Mixed, 128, Arch::SM80), "m128n64w8s1");
        assert_eq!(tile(Variant::Dense, 128, Arch::SM80), "m128n64w4s1");
    }

    #[test]
    fn block_lists_get_the_nearest_dividing_tile() {
        for arch in [Arch::SM80, Arch::SM90] {
            for head_dim in [64, 128] {
                let spec = AttentionSpec::new(Variant::BlockSparse, head_dim, DType::Bf16, true);
                // Blocks the default divides keep it.
                assert_eq!(
                    default_tile_for_blocks(&spec, arch, 256, 256),
                    Some(default_tile(&spec, arch))
                );
                for (bq, bk) in [(64, 64), (64, 32), (128, 64)] {
                    let tile = default_tile_for_blocks(&spec, arch, bq, bk)
                        .unwrap_or_else(|| panic!("no tile for {bq} x {bk} on {arch}"));
                    assert_eq!(bq % tile.block_m as usize, 0);
                    assert_eq!(bk % tile.block_n as usize, 0);
                    assert!(validate(&spec.with_tile(tile), arch).is_ok());
                }
                assert_eq!(default_tile_for_blocks(&spec, arch, 32, 64), None);
                assert_eq!(default_tile_for_blocks(&spec, arch, 64, 16), None);
            }
        }
    }
}
