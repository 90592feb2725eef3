//! The candidate tiles of a tune: the full search space, or a quick subset chosen by a static
//! score.

use flashgen_codegen::validate::{accumulator_registers, q_in_registers};
use flashgen_codegen::{
    default_tile, search_space, shared_memory_bytes, Arch, AttentionSpec, Mma, TileConfig,
};

/// Tiles per tensor-core kind that a quick tune times besides the default.
pub const QUICK_PER_MMA: usize = 3;

/// Resident warps per SM beyond which more occupancy no longer helps the score.
const WARPS_FOR_LATENCY: u32 = 16;

/// A static estimate of how promising a tile is (higher is better), from what is known before
/// compiling: operand reuse of the tile (`m * n / (m + n)`), warps resident per SM under the
/// shared-memory limit (latency hiding), a small bonus for double-buffered K/V and a small
/// penalty when Q is re-read from shared memory at every step.
pub fn static_score(spec: &AttentionSpec, tile: &TileConfig, smem_limit: u32) -> f64 {
    let (m, n) = (tile.block_m as f64, tile.block_n as f64);
    let reuse = m * n / (m + n);
    let smem = shared_memory_bytes(tile, spec.head_dim).max(1);
    let ctas = (smem_limit / smem).clamp(1, 64 / tile.warps.max(1));
    let warps = (ctas * tile.warps).min(WARPS_FOR_LATENCY) as f64;
    let latency = 0.5 + 0.5 * warps / WARPS_FOR_LATENCY as f64;
    let stages = if tile.stages > 1 { 1.05 } else { 1.0 };
    let q_reload = if tile.mma == Mma::Sync && !q_in_registers(tile, spec.head_dim) {
        0.9
    } else {
        1.0
    };
    // Close to the register limit, the compiler has less room to schedule loads early.
    let pressure = if accumulator_registers(tile, spec.head_dim) > 128 {
        0.95
    } else {
        1.0
    };
    reuse * latency * stages * q_reload * pressure
}

/// The tiles a tune considers, the default first: with `quick` the default, its neighbours
/// in the search space (the other stage count, the other `block_n`, half or double `block_m`
/// with the warps scaled alike: winners are usually next to a good default), and the best
/// tiles by [`static_score`]: [`QUICK_PER_MMA`] of the default's tensor-core kind and one of
/// each other kind; otherwise the whole [`search_space`]. Tiles over the shared-memory limit
/// are left to the pruning step, which reports them.
pub fn candidate_tiles(
    spec: &AttentionSpec,
    arch: Arch,
    smem_limit: u32,
    quick: bool,
) -> Vec<TileConfig> {
    let default = default_tile(spec, arch);
    let space = search_space(spec, arch);
    let mut out = vec![default];
    if !quick {
        out.extend(space.into_iter().filter(|t| *t != default));
        return out;
    }
    let fits = |t: &TileConfig| shared_memory_bytes(t, spec.head_dim) <= smem_limit;
    let add = |t: TileConfig, out: &mut Vec<TileConfig>| {
        if space.contains(&t) && fits(&t) && !out.contains(&t) {
            out.push(t);
        }
    };
    let d = default;
    let neighbours = [
        TileConfig {
            stages: 3 - d.stages.clamp(1, 2),
            ..d
        },
        TileConfig {
            block_n: if d.block_n == 64 { 128 } else { 64 },
            ..d
        },
        TileConfig {
            block_m: d.block_m / 2,
            warps: (d.warps / 2).max(4),
            ..d
        },
        TileConfig {
            block_m: d.block_m * 2,
            warps: d.warps * 2,
            ..d
        },
    ];
    for t in neighbours {
        add(t, &mut out);
    }
    for mma in TileConfig::MMA {
        let mut scored: Vec<(f64, usize, TileConfig)> = space
            .iter()
            .enumerate()
            .filter(|(_, t)| t.mma == mma && !out.contains(t) && fits(t))
            .map(|(i, t)| (static_score(spec, t, smem_limit), i, *t))
            .collect();
        // Best score first; the search-space order breaks ties, so the choice is stable.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let take = if mma == d.mma { QUICK_PER_MMA } else { 1 };
        for (_, _, t) in scored.into_iter().take(take) {
            add(t, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::{DType, Variant};

    fn spec(d: u32) -> AttentionSpec {
        AttentionSpec::new(Variant::Dense, d, DType::Bf16, true).with_lse(true)
    }

    #[test]
    fn quick_space_is_the_default_its_neighbours_and_a_few_per_mma_kind() {
        let arch = Arch::SM90;
        for s in [spec(128), spec(64)] {
            let limit = arch.max_shared_bytes_per_block();
            let quick = candidate_tiles(&s, arch, limit, true);
            let d = default_tile(&s, arch);
            assert_eq!(quick[0], d);
            // The default's other stage count is a neighbour.
            let other_stages = TileConfig {
                stages: 3 - d.stages,
                ..d
            };
            assert!(quick.contains(&other_stages), "{quick:?}");
            let sync = quick.iter().filter(|t| t.mma == Mma::Sync).count();
            assert_eq!(sync, 1, "one tile of the other tensor-core kind: {quick:?}");
            let wgmma = quick.iter().filter(|t| t.mma.is_wgmma()).count();
            assert!(wgmma > QUICK_PER_MMA, "{quick:?}");
            // No duplicates; all valid; a subset of the full space.
            let full = candidate_tiles(&s, arch, limit, false);
            assert_eq!(full.len(), search_space(&s, arch).len().max(1));
            assert!(quick.len() < full.len());
            for t in &quick {
                assert_eq!(quick.iter().filter(|x| *x == t).count(), 1);
                assert!(full.contains(t));
                flashgen_codegen::validate(&s.with_tile(*t), arch).unwrap();
            }
            // Deterministic.
            assert_eq!(quick, candidate_tiles(&s, arch, limit, true));
        }
    }

    #[test]
    fn quick_space_on_sm80_has_no_wgmma_and_respects_the_limit() {
        let arch = Arch::SM80;
        let s = spec(128);
        let limit = 48 * 1024;
        let quick = candidate_tiles(&s, arch, limit, true);
        assert!(quick.iter().all(|t| t.mma == Mma::Sync));
        assert!(quick
            .iter()
            .skip(1)
            .all(|t| shared_memory_bytes(t, 128) <= limit));
    }

    #[test]
    fn score_prefers_reuse_and_occupancy() {
        let s = spec(64);
        let limit = Arch::SM80.max_shared_bytes_per_block();
        let small = static_score(&s, &TileConfig::new(64, 32, 4, 1), limit);
        let large = static_score(&s, &TileConfig::new(128, 64, 4, 1), limit);
        assert!(large > small);
        // The same tile scores lower when shared memory allows fewer resident CTAs.
        let t = TileConfig::new(64, 32, 4, 1);
        assert!(static_score(&s, &t, 20_000) < static_score(&s, &t, limit));
    }
}
