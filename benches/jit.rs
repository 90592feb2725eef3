//! Host-side JIT latency (criterion; no GPU needed, only libnvrtc):
//!
//! - `render`: `flashgen_codegen::render` of each spec of the default set for sm_90a (spec to
//!   CUDA source, tera templates);
//! - `nvrtc_compile`: a cold NVRTC compile (`flashgen_runtime::compile`, no cache) of each
//!   default-set kernel for sm_90a (all 16, d64 and d128), from its rendered source. A compile
//!   takes 0.2 to 3 s on a 2-core machine, so this group takes 10 flat samples of one compile each
//!   (criterion's minimum; it warns that it cannot complete 10 samples in the target time,
//!   which is expected) and is most of the run;
//! - `custom_cold`: the two kernels a cold launch of a new custom definition compiles, for the
//!   causal mask with a tanh soft cap of `benches/custom.rs`: the attention kernel (render and
//!   NVRTC, `attention_kernel`) and its block classification kernel (`classification_kernel`);
//! - `cache_memory_hit`: `KernelCache::get_or_compile` of a kernel already in the cache's memory
//!   table (key computation, lock, lookup);
//! - `cache_disk_hit`: the same call on a fresh `KernelCache` over a folder that holds the
//!   kernel's entry, so every lookup reads, checks (key, length, SHA-256 of the payload, ELF
//!   image) and decodes the entry from disk. The entry stays in the OS page cache, so this is a
//!   warm-file read, not a cold disk.
//!
//!   cargo bench --bench jit                    # all groups, about 3.5 minutes on 2 cores
//!   cargo bench --bench jit -- cache_          # one or more groups by name
//!   cargo bench --bench jit -- 'nvrtc_compile|custom_cold'   # the compile times alone
//!
//! Medians land in `target/criterion/<group>/<kernel>/new/estimates.json`. The disk-hit entries
//! are written to a temporary folder that is removed at the end.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use flashgen_codegen::expr::CustomMods;
use flashgen_codegen::render::render_custom_blocks;
use flashgen_codegen::{default_set, render, Arch, AttentionSpec, DType, KernelSpec};
use flashgen_runtime::{compile, CacheSource, KernelCache};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

const ARCH: Arch = Arch::SM90;

/// The spec the memory-hit group looks up (a hit's cost does not depend on the kernel).
const MEMORY_HIT_SPEC: usize = 0;

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flashgen-bench-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the bench cache folder");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The default set, each spec with its default tile for `ARCH`.
fn specs() -> Vec<KernelSpec> {
    default_set()
        .into_iter()
        .map(|spec| spec.with_default_tile(ARCH))
        .collect()
}

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for spec in specs() {
        group.bench_function(spec.to_string(), |b| {
            b.iter(|| render(black_box(&spec)).expect("render"))
        });
    }
    group.finish();
}

fn bench_nvrtc_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("nvrtc_compile");
    // One compile per sample; the warm-up is a single compile (it also loads libnvrtc).
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    for spec in specs() {
        let source = render(&spec).expect("render");
        group.bench_function(spec.to_string(), |b| {
            b.iter(|| compile(black_box(&source), ARCH).expect("NVRTC compile"))
        });
    }
    group.finish();
}

/// The custom definition of the cold-compile group: `benches/custom.rs`'s causal soft cap.
const CUSTOM_DEFINITION: &str = "mask = k <= q; score = 50.0 * tanh(s / 50.0)";

fn bench_custom_cold(c: &mut Criterion) {
    let mods = CustomMods::parse(CUSTOM_DEFINITION).expect("valid definition");
    let spec = AttentionSpec::custom(&mods, 128, DType::Bf16)
        .with_lse(true)
        .with_default_tile(ARCH);
    let attention = || {
        let source = render(&spec).expect("render");
        compile(&source, ARCH).expect("NVRTC compile")
    };
    let classification = || {
        let source = render_custom_blocks(spec.definition).expect("render");
        compile(&source, ARCH).expect("NVRTC compile")
    };
    let mut group = c.benchmark_group("custom_cold");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    group.bench_function("attention_kernel", |b| b.iter(attention));
    group.bench_function("classification_kernel", |b| b.iter(classification));
    group.finish();
}

fn bench_cache_memory_hit(c: &mut Criterion) {
    let dir = TempDir::new("memory");
    let cache = KernelCache::new(Some(dir.0.clone()));
    let spec = specs()[MEMORY_HIT_SPEC];
    let mut group = c.benchmark_group("cache_memory_hit");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function(spec.to_string(), |b| {
        // The first lookup compiles; every later one is served from memory.
        cache.get_or_compile(&spec, ARCH).expect("compile");
        let hit = cache.get_or_compile(&spec, ARCH).expect("lookup");
        assert_eq!(hit.source, CacheSource::Memory, "{spec}: not a memory hit");
        b.iter(|| {
            cache
                .get_or_compile(black_box(&spec), ARCH)
                .expect("lookup")
        })
    });
    group.finish();
}

fn bench_cache_disk_hit(c: &mut Criterion) {
    let dir = TempDir::new("disk");
    // Writes each kernel's entry on first use; later calls of the bench closure find it in
    // this cache's memory and leave the file as it is.
    let primer = KernelCache::new(Some(dir.0.clone()));
    let mut group = c.benchmark_group("cache_disk_hit");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for spec in specs() {
        group.bench_function(spec.to_string(), |b| {
            primer.get_or_compile(&spec, ARCH).expect("compile");
            let hit = KernelCache::new(Some(dir.0.clone()))
                .get_or_compile(&spec, ARCH)
                .expect("lookup");
            assert_eq!(hit.source, CacheSource::Disk, "{spec}: not a disk hit");
            assert!(hit.warning.is_none(), "{spec}: {:?}", hit.warning);
            // A fresh cache per lookup (memory table empty), so each one reads the entry.
            // Dropping the cache and the kernel is left out of the timing.
            b.iter_batched(
                || KernelCache::new(Some(dir.0.clone())),
                |cache| {
                    let hit = cache.get_or_compile(black_box(&spec), ARCH);
                    (cache, hit.expect("lookup"))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_render,
    bench_nvrtc_compile,
    bench_custom_cold,
    bench_cache_memory_hit,
    bench_cache_disk_hit
);
criterion_main!(benches);
