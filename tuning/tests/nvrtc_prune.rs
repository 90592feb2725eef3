//! Pruning through the real kernel cache and NVRTC (needs libnvrtc, no GPU): the quick space of
//! a spec compiles cleanly, and a second pass finds every kernel in the cache.

use flashgen_codegen::{Arch, AttentionSpec, DType, Variant};
use flashgen_runtime::{CacheSource, KernelCache};
use flashgen_tuning::{candidate_tiles, prune};

#[test]
fn quick_space_compiles_and_a_second_pass_is_cached() {
    let arch = Arch::SM90;
    let spec = AttentionSpec::new(Variant::Dense, 64, DType::Bf16, true).with_lse(true);
    let limit = arch.max_shared_bytes_per_block();
    let tiles: Vec<_> = candidate_tiles(&spec, arch, limit, true)
        .into_iter()
        .take(3)
        .collect();
    let dir = std::env::temp_dir().join(format!("flashgen-tuning-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let compile = |cache: &KernelCache| {
        prune(&spec, arch, limit, &tiles, |s| {
            cache.get_or_compile(s, arch).map_err(|e| e.to_string())
        })
    };

    let cache = KernelCache::new(Some(dir.clone()));
    let first = compile(&cache);
    assert!(first.pruned.is_empty(), "{:?}", first.pruned);
    assert_eq!(first.candidates.len(), tiles.len());
    for c in &first.candidates {
        assert!(!c.kernel.report.spills(), "{} spills", c.tile);
        assert!(
            c.kernel.report.registers > 0,
            "{}: no resource report",
            c.tile
        );
        assert!(matches!(c.source, CacheSource::Compiled { .. }));
    }

    // The same cache: memory hits. A new cache over the same folder: disk hits.
    let again = compile(&cache);
    assert!(again
        .candidates
        .iter()
        .all(|c| c.source == CacheSource::Memory));
    let fresh = compile(&KernelCache::new(Some(dir.clone())));
    assert!(fresh
        .candidates
        .iter()
        .all(|c| c.source == CacheSource::Disk));
    let tiles_of = |r: &flashgen_tuning::PruneResult| -> Vec<_> {
        r.candidates.iter().map(|c| c.tile).collect()
    };
    assert_eq!(tiles_of(&first), tiles_of(&fresh));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tile_over_a_small_device_limit_is_pruned_without_compiling() {
    let arch = Arch::SM80;
    let spec = AttentionSpec::new(Variant::Dense, 128, DType::Bf16, false);
    let tiles = candidate_tiles(&spec, arch, arch.max_shared_bytes_per_block(), false);
    let r = prune(&spec, arch, 40 * 1024, &tiles, |_| {
        Err("the compiler must not be called".to_string())
    });
    assert!(r.candidates.is_empty());
    assert_eq!(r.pruned.len(), tiles.len());
    for p in &r.pruned {
        let text = p.reason.to_string();
        assert!(
            text.contains("shared memory") || text.contains("must not be called"),
            "{text}"
        );
    }
    assert!(r
        .pruned
        .iter()
        .any(|p| p.reason.to_string().contains("shared memory")));
}
