//! Pruning before any launch: validation, the shared-memory limit, and the NVRTC resource
//! report (no spills). Compiles run in parallel on CPU threads and are delivered, as they
//! finish, to the thread that times them.

use flashgen_codegen::{
    fits_shared_memory, validate_with_limit, Arch, AttentionSpec, KernelSpec, SharedMemoryExceeded,
    SpecError, TileConfig,
};
use flashgen_runtime::{CacheHit, CacheSource, CompiledKernel};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

/// Why a tile was not (or no longer) a candidate.
#[derive(Clone, Debug, PartialEq)]
pub enum PruneReason {
    /// The spec with this tile fails validation.
    Invalid(String),
    /// Dynamic plus static shared memory over the device's per-block limit.
    SharedMemory { needed: u32, limit: u32 },
    /// ptxas reported register spills.
    Spills {
        registers: u32,
        stores: u32,
        loads: u32,
    },
    /// NVRTC (or rendering) failed.
    CompileFailed(String),
    /// Loading or launching the kernel failed.
    LaunchFailed(String),
    /// The output differed from the trusted result.
    GateFailed(String),
    /// The time budget ran out before the tile was timed.
    TimeBudget,
}

impl fmt::Display for PruneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneReason::Invalid(e) => write!(f, "invalid: {e}"),
            PruneReason::SharedMemory { needed, limit } => write!(
                f,
                "needs {needed} bytes of shared memory; the device allows {limit} per block"
            ),
            PruneReason::Spills {
                registers,
                stores,
                loads,
            } => write!(
                f,
                "spills registers ({registers} registers, {stores} bytes spill stores, {loads} \
                 bytes spill loads)"
            ),
            PruneReason::CompileFailed(e) => write!(f, "compile failed: {e}"),
            PruneReason::LaunchFailed(e) => write!(f, "launch failed: {e}"),
            PruneReason::GateFailed(e) => write!(f, "wrong output: {e}"),
            PruneReason::TimeBudget => f.write_str("not timed: the time budget ran out"),
        }
    }
}

/// A tile that was dropped, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Pruned {
    pub tile: TileConfig,
    pub reason: PruneReason,
}

/// A tile that compiled cleanly within the limits.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub tile: TileConfig,
    pub kernel: Arc<CompiledKernel>,
    /// Where the kernel came from (memory, disk cache, or a fresh compile).
    pub source: CacheSource,
    /// A kernel-cache warning (a rejected or unwritable entry); the kernel itself is fine.
    pub cache_warning: Option<String>,
}

/// What the compile step produced for one tile.
#[derive(Clone, Debug)]
pub enum CompileOutcome {
    Ready(Candidate),
    Pruned(Pruned),
}

impl CompileOutcome {
    pub fn tile(&self) -> TileConfig {
        match self {
            CompileOutcome::Ready(c) => c.tile,
            CompileOutcome::Pruned(p) => p.tile,
        }
    }
}

impl From<SharedMemoryExceeded> for PruneReason {
    fn from(e: SharedMemoryExceeded) -> Self {
        PruneReason::SharedMemory {
            needed: e.needed,
            limit: e.limit,
        }
    }
}

/// The checks that need no compile: validation for the arch, with the shared memory the tile
/// allocates dynamically against `smem_limit` (the device's limit).
pub fn check_static(spec: &KernelSpec, arch: Arch, smem_limit: u32) -> Result<(), PruneReason> {
    validate_with_limit(spec, arch, smem_limit).map_err(|e| match e {
        SpecError::SharedMemory { needed, max, .. } => {
            PruneReason::SharedMemory { needed, limit: max }
        }
        e => PruneReason::Invalid(e.to_string()),
    })
}

/// The checks on the NVRTC resource report: no spills, and dynamic plus static shared memory
/// within the limit.
pub fn check_compiled(kernel: &CompiledKernel, smem_limit: u32) -> Result<(), PruneReason> {
    let r = &kernel.report;
    if r.spills() {
        return Err(PruneReason::Spills {
            registers: r.registers,
            stores: r.spill_stores_bytes,
            loads: r.spill_loads_bytes,
        });
    }
    fits_shared_memory(
        kernel.dynamic_shared_bytes,
        r.static_shared_bytes,
        smem_limit,
    )?;
    Ok(())
}

/// The first line of an error, at most 300 characters (compile logs are long).
fn brief(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Compiles the tiles of `spec` on `threads` CPU threads (one per core when 0) and hands each
/// outcome, as soon as it is ready, to `on_outcome` on the calling thread, which can time it
/// meanwhile. Tiles that fail the static checks are handed over first, without compiling.
/// `compile` is usually [`flashgen_runtime::KernelCache::get_or_compile`], so a second tune
/// finds everything cached. Returning `false` from `on_outcome` stops the compiles not yet
/// started; outcomes still in flight are then dropped.
pub fn compile_pipeline<F, G>(
    spec: &AttentionSpec,
    arch: Arch,
    smem_limit: u32,
    tiles: &[TileConfig],
    threads: usize,
    compile: F,
    mut on_outcome: G,
) where
    F: Fn(&KernelSpec) -> Result<CacheHit, String> + Sync,
    G: FnMut(CompileOutcome) -> bool,
{
    let mut to_compile = Vec::new();
    for &tile in tiles {
        match check_static(&spec.with_tile(tile), arch, smem_limit) {
            Ok(()) => to_compile.push(tile),
            Err(reason) => {
                if !on_outcome(CompileOutcome::Pruned(Pruned { tile, reason })) {
                    return;
                }
            }
        }
    }
    if to_compile.is_empty() {
        return;
    }
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(to_compile.len());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<CompileOutcome>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, compile, to_compile) = (&next, &stop, &compile, &to_compile);
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&tile) = to_compile.get(i) else {
                    break;
                };
                let outcome = match compile(&spec.with_tile(tile)) {
                    Ok(hit) => match check_compiled(&hit.kernel, smem_limit) {
                        Ok(()) => CompileOutcome::Ready(Candidate {
                            tile,
                            kernel: hit.kernel,
                            source: hit.source,
                            cache_warning: hit.warning,
                        }),
                        Err(reason) => CompileOutcome::Pruned(Pruned { tile, reason }),
                    },
                    Err(e) => CompileOutcome::Pruned(Pruned {
                        tile,
                        reason: PruneReason::CompileFailed(brief(&e)),
                    }),
                };
                if tx.send(outcome).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut open = true;
        for outcome in rx {
            if open && !on_outcome(outcome) {
                open = false;
                stop.store(true, Ordering::Relaxed);
            }
        }
    });
}

/// The candidates and the pruned tiles of a search space.
#[derive(Clone, Debug, Default)]
pub struct PruneResult {
    /// In the order of the given tiles.
    pub candidates: Vec<Candidate>,
    /// In the order of the given tiles.
    pub pruned: Vec<Pruned>,
}

/// Compiles every tile (in parallel, one thread per core) and keeps those that validate, fit
/// the shared-memory limit and do not spill.
pub fn prune<F>(
    spec: &AttentionSpec,
    arch: Arch,
    smem_limit: u32,
    tiles: &[TileConfig],
    compile: F,
) -> PruneResult
where
    F: Fn(&KernelSpec) -> Result<CacheHit, String> + Sync,
{
    let mut result = PruneResult::default();
    compile_pipeline(spec, arch, smem_limit, tiles, 0, compile, |outcome| {
        match outcome {
            CompileOutcome::Ready(c) => result.candidates.push(c),
            CompileOutcome::Pruned(p) => result.pruned.push(p),
        }
        true
    });
    let position = |t: &TileConfig| tiles.iter().position(|x| x == t);
    result.candidates.sort_by_key(|c| position(&c.tile));
    result.pruned.sort_by_key(|p| position(&p.tile));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::{search_space, shared_memory_bytes, DType, Mma, Variant};
    use flashgen_runtime::ResourceReport;
    use std::sync::Mutex;

    fn fake_kernel(spec: &KernelSpec, report: ResourceReport) -> CacheHit {
        CacheHit {
            kernel: Arc::new(CompiledKernel {
                kernel_name: spec.kernel_name(),
                arch: Arch::SM90,
                cubin: b"\x7fELF".to_vec(),
                log: String::new(),
                report,
                threads: spec.tile.threads(),
                dynamic_shared_bytes: shared_memory_bytes(&spec.tile, spec.head_dim),
            }),
            source: CacheSource::Compiled { millis: 1 },
            warning: None,
        }
    }

    /// A compiler that spills on 8-warp sync tiles, fails on block_n 32 with 2 stages, and
    /// adds 20 KiB of static shared memory to wgmma tiles with block_n 128.
    fn fake_compile(spec: &KernelSpec) -> Result<CacheHit, String> {
        let t = spec.tile;
        if t.block_n == 32 && t.stages == 2 {
            return Err("kernel x failed to compile for sm_90a:\nerror: something\nmore".into());
        }
        let mut r = ResourceReport {
            registers: 128,
            ..Default::default()
        };
        if t.warps == 8 && t.mma == Mma::Sync {
            r.registers = 255;
            r.spill_stores_bytes = 64;
            r.spill_loads_bytes = 32;
        }
        if t.mma == Mma::Wgmma && t.block_n == 128 {
            r.static_shared_bytes = 20 * 1024;
        }
        Ok(fake_kernel(spec, r))
    }

    fn spec() -> AttentionSpec {
        AttentionSpec::new(Variant::Dense, 128, DType::Bf16, true).with_lse(true)
    }

    #[test]
    fn spills_smem_and_compile_failures_are_pruned_with_reasons() {
        let arch = Arch::SM90;
        let s = spec();
        let mut tiles = search_space(&s, arch);
        // An invalid tile given by hand is pruned too, not compiled.
        tiles.push(TileConfig::new(96, 64, 4, 1));
        let limit = 100 * 1024;
        let compiled = Mutex::new(Vec::new());
        let r = prune(&s, arch, limit, &tiles, |spec| {
            compiled.lock().unwrap().push(spec.tile);
            fake_compile(spec)
        });
        assert_eq!(r.candidates.len() + r.pruned.len(), tiles.len());
        for p in &r.pruned {
            let t = p.tile;
            let dynamic = shared_memory_bytes(&t, 128);
            match &p.reason {
                PruneReason::Invalid(e) => assert!(e.contains("block_m"), "{e}"),
                PruneReason::SharedMemory { needed, limit: l } => {
                    assert_eq!(*l, limit);
                    assert!(*needed > limit);
                    assert!(*needed == dynamic || *needed == dynamic + 20 * 1024);
                }
                PruneReason::Spills { stores, .. } => {
                    assert_eq!(*stores, 64);
                    assert!(t.warps == 8 && t.mma == Mma::Sync);
                }
                PruneReason::CompileFailed(e) => {
                    assert_eq!(e, "kernel x failed to compile for sm_90a:");
                    assert!(t.block_n == 32 && t.stages == 2);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // At least one of each kind happened, and the static ones never reached the compiler.
        let has = |f: fn(&PruneReason) -> bool| r.pruned.iter().any(|p| f(&p.reason));
        assert!(has(|r| matches!(r, PruneReason::Invalid(_))));
        assert!(has(|r| matches!(r, PruneReason::SharedMemory { .. })));
        assert!(has(|r| matches!(r, PruneReason::Spills { .. })));
        assert!(has(|r| matches!(r, PruneReason::CompileFailed(_))));
        let compiled = compiled.into_inner().unwrap();
        for p in &r.pruned {
            if matches!(p.reason, PruneReason::Invalid(_)) {
                assert!(!compiled.contains(&p.tile));
            }
            if let PruneReason::SharedMemory { needed, .. } = p.reason {
                let static_only = needed == shared_memory_bytes(&p.tile, 128);
                assert_eq!(compiled.contains(&p.tile), !static_only, "{:?}", p.tile);
            }
        }
        // Static smem from ptxas counts: a wgmma n128 tile whose dynamic part fits is pruned.
        assert!(r.pruned.iter().any(|p| p.tile.mma == Mma::Wgmma
            && p.tile.block_n == 128
            && shared_memory_bytes(&p.tile, 128) <= limit
            && matches!(p.reason, PruneReason::SharedMemory { .. })));
        // Survivors are clean and in the given order.
        for c in &r.candidates {
            check_compiled(&c.kernel, limit).unwrap();
        }
        let order: Vec<_> = r
            .candidates
            .iter()
            .map(|c| tiles.iter().position(|t| *t == c.tile).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        assert!(!r.candidates.is_empty());
    }

    #[test]
    fn the_pipeline_delivers_while_compiling_and_stops_on_request() {
        let arch = Arch::SM90;
        let s = spec();
        let tiles: Vec<_> = search_space(&s, arch)
            .into_iter()
            .filter(|t| check_static(&s.with_tile(*t), arch, u32::MAX).is_ok())
            .collect();
        assert!(tiles.len() > 4);
        let compiled = AtomicUsize::new(0);
        let mut seen = 0;
        compile_pipeline(
            &s,
            arch,
            u32::MAX,
            &tiles,
            2,
            |spec| {
                compiled.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                Ok(fake_kernel(spec, ResourceReport::default()))
            },
            |_| {
                seen += 1;
                seen < 2
            },
        );
        assert_eq!(seen, 2);
        // The two threads had at most one more compile each in flight when asked to stop.
        let n = compiled.load(Ordering::SeqCst);
        assert!(n <= 2 + 2, "compiled {n} of {}", tiles.len());
        assert!(n < tiles.len());
    }
}
