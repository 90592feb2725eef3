//! Every kernel the templates can generate compiles with NVRTC (needs libnvrtc, no GPU).
//!
//! For sm_80 and sm_90a: every tile of the search space of dense attention with lse and varlen
//! (the heaviest flags) at every head dim, causal and not; the streaming, block-sparse, mixed,
//! APB and custom (with a vector-reading mask and a score modifier) variants at their default
//! tile with lse; dense without flags at its default tile, in bf16 and
//! f16; dense with lse, causal and not, at its default tile. Default tiles must not spill; other
//! tiles may (the tuner prunes them by this report), but at least 80% of each search space must
//! be spill-free. No default tile may have its tensor-core pipeline broken by ptxas: a note that
//! it serialised wgmma instructions or injected a warpgroup wait is a failure (the pipelined
//! mainloop would silently lose its overlap).

use flashgen_codegen::expr::Definition;
use flashgen_codegen::{
    default_tile, render, search_space, Arch, AttentionSpec, DType, KernelSpec, Variant, HEAD_DIMS,
};
use flashgen_runtime::{compile, ResourceReport};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

const ARCHS: [Arch; 2] = [Arch::SM80, Arch::SM90];
const THREADS: usize = 2;
const MIN_SPILL_FREE: f64 = 0.8;

/// A search space: (arch, head dim, causal).
type Group = (Arch, u32, bool);

struct Job {
    spec: KernelSpec,
    arch: Arch,
    /// The tile `default_tile` picks for this spec.
    is_default: bool,
    /// The search space this tile belongs to, for the dense sweep.
    group: Option<Group>,
}

struct Outcome {
    report: ResourceReport,
    millis: f64,
    /// ptxas notes that it serialised wgmma instructions or made one wait for another.
    pipeline_notes: Vec<String>,
}

/// The lines of a compile log where ptxas says it broke a wgmma pipeline (its C75xx notes,
/// e.g. "(C7517) warpgroup.wait is injected ..." or "(C7515) ... wgmma.mma_async instructions
/// are serialized ...").
fn wgmma_pipeline_notes(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            let lower = line.to_ascii_lowercase();
            line.contains("(C75")
                && (lower.contains("wgmma")
                    || lower.contains("warpgroup")
                    || lower.contains("gmma"))
        })
        .map(str::to_string)
        .collect()
}

fn jobs() -> Vec<Job> {
    let mut jobs = Vec::new();
    for arch in ARCHS {
        for head_dim in HEAD_DIMS {
            for causal in [false, true] {
                let base = AttentionSpec::new(Variant::Dense, head_dim, DType::Bf16, causal)
                    .with_lse(true)
                    .with_varlen(true);
                let default = default_tile(&base, arch);
                let space = search_space(&base, arch);
                assert!(
                    space.contains(&default),
                    "{arch}: default tile {default} of {base} is not in its search space"
                );
                for tile in space {
                    jobs.push(Job {
                        spec: base.with_tile(tile),
                        arch,
                        is_default: tile == default,
                        group: Some((arch, head_dim, causal)),
                    });
                }
            }
            for variant in [
                Variant::Streaming,
                Variant::BlockSparse,
                Variant::Mixed,
                Variant::Apb,
            ] {
                jobs.push(Job {
                    spec: KernelSpec::new(variant, head_dim, DType::Bf16, false, arch)
                        .with_lse(true),
                    arch,
                    is_default: true,
                    group: None,
                });
            }
            // Custom with the heaviest kind of definition: a vector read in the mask and a
            // score modifier on every score.
            let custom = AttentionSpec::new(Variant::Custom, head_dim, DType::Bf16, false)
                .with_lse(true)
                .with_definition(Some(
                    Definition::parse(
                        "doc: [i32]; mask = doc[q] == doc[k] && k <= q; score = 50.0 * tanh(s / 50.0)",
                    )
                    .expect("a valid definition"),
                ));
            jobs.push(Job {
                spec: custom.with_default_tile(arch),
                arch,
                is_default: true,
                group: None,
            });
            for causal in [false, true] {
                jobs.push(Job {
                    spec: KernelSpec::new(Variant::Dense, head_dim, DType::Bf16, causal, arch)
                        .with_lse(true),
                    arch,
                    is_default: true,
                    group: None,
                });
            }
            for dtype in DType::ALL {
                jobs.push(Job {
                    spec: KernelSpec::new(Variant::Dense, head_dim, dtype, false, arch),
                    arch,
                    is_default: true,
                    group: None,
                });
            }
        }
    }
    jobs
}

fn compile_one(job: &Job) -> Result<Outcome, String> {
    let source = render(&job.spec).map_err(|e| format!("render failed: {e:?}"))?;
    let (kernel, millis) = compile(&source, job.arch).map_err(|e| e.to_string())?;
    if !kernel.cubin.starts_with(b"\x7fELF") {
        return Err(format!(
            "the CUBIN does not start with the ELF magic ({} bytes)",
            kernel.cubin.len()
        ));
    }
    if kernel.report.registers == 0 {
        return Err(format!(
            "no ptxas resource report for {} in the log:\n{}",
            source.kernel_name, kernel.log
        ));
    }
    Ok(Outcome {
        report: kernel.report,
        millis,
        pipeline_notes: wgmma_pipeline_notes(&kernel.log),
    })
}

fn spill_text(r: &ResourceReport) -> String {
    format!(
        "{} regs, {} B spill stores, {} B spill loads, {} B stack",
        r.registers, r.spill_stores_bytes, r.spill_loads_bytes, r.stack_frame_bytes
    )
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90a() {
    let jobs = jobs();
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Outcome, String>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let outcome = compile_one(job);
                results.lock().unwrap()[i] = Some(outcome);
            });
        }
    });
    let results: Vec<Result<Outcome, String>> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect();
    let wall = start.elapsed().as_secs_f64();

    let mut failures = Vec::new();
    let mut default_spills = Vec::new();
    let mut tuned_spills = Vec::new();
    let mut default_pipeline_breaks = Vec::new();
    let mut tuned_pipeline_breaks = 0;
    // Per search space: (tiles, spill-free tiles).
    let mut groups: BTreeMap<Group, (usize, usize)> = BTreeMap::new();
    // Per arch: (kernels, NVRTC ms, most registers).
    let mut per_arch: BTreeMap<Arch, (usize, f64, u32)> = BTreeMap::new();
    for (job, result) in jobs.iter().zip(&results) {
        let name = format!("{} on {}", job.spec, job.arch);
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let r = &outcome.report;
        let arch = per_arch.entry(job.arch).or_default();
        arch.0 += 1;
        arch.1 += outcome.millis;
        arch.2 = arch.2.max(r.registers);
        if let Some(group) = job.group {
            let g = groups.entry(group).or_default();
            g.0 += 1;
            g.1 += usize::from(!r.spills());
        }
        if !outcome.pipeline_notes.is_empty() {
            if job.is_default {
                default_pipeline_breaks.push(format!(
                    "{name}:\n  {}",
                    outcome.pipeline_notes.join("\n  ")
                ));
            } else {
                tuned_pipeline_breaks += 1;
            }
        }
        if r.spills() {
            let line = format!("{name}: {}", spill_text(r));
            if job.is_default {
                default_spills.push(line);
            } else {
                tuned_spills.push(line);
            }
        }
    }

    println!(
        "compiled {} kernels in {wall:.1} s on {THREADS} threads",
        jobs.len()
    );
    for (arch, (n, ms, regs)) in &per_arch {
        println!(
            "  {arch}: {n} kernels, {:.1} s NVRTC ({:.0} ms mean), at most {regs} registers",
            ms / 1e3,
            ms / *n as f64
        );
    }
    println!("spill-free tiles of each dense lse varlen search space:");
    for ((arch, head_dim, causal), (n, free)) in &groups {
        let causal = if *causal { "causal" } else { "      " };
        println!("  {arch:<6} d{head_dim:<3} {causal}  {free:>2}/{n:<2}");
    }
    if !tuned_spills.is_empty() {
        println!(
            "non-default tiles that spill ({}; the tuner skips them):",
            tuned_spills.len()
        );
        for line in &tuned_spills {
            println!("  {line}");
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {} kernels failed:\n{}",
        failures.len(),
        jobs.len(),
        failures.join("\n\n")
    );
    println!("non-default tiles with a broken wgmma pipeline: {tuned_pipeline_breaks}");
    assert!(
        default_pipeline_breaks.is_empty(),
        "ptxas broke the wgmma pipeline of default tiles:\n{}",
        default_pipeline_breaks.join("\n")
    );
    assert!(
        default_spills.is_empty(),
        "default tiles spill:\n{}",
        default_spills.join("\n")
    );
    let thin: Vec<String> = groups
        .iter()
        .filter(|(_, (n, free))| (*free as f64) < MIN_SPILL_FREE * *n as f64)
        .map(|((arch, d, causal), (n, free))| {
            format!("{arch} d{d} causal={causal}: {free} of {n} tiles spill-free")
        })
        .collect();
    assert!(
        thin.is_empty(),
        "less than {:.0}% of a search space is spill-free:\n{}",
        MIN_SPILL_FREE * 100.0,
        thin.join("\n")
    );
}

#[test]
fn the_sweep_covers_every_head_dim_arch_and_variant() {
    let jobs = jobs();
    for arch in ARCHS {
        for head_dim in HEAD_DIMS {
            for variant in Variant::ALL {
                assert!(
                    jobs.iter().any(|j| j.arch == arch
                        && j.spec.head_dim == head_dim
                        && j.spec.variant == variant
                        && j.is_default),
                    "{arch} d{head_dim} {variant} has no default-tile kernel"
                );
            }
            for causal in [false, true] {
                let n = jobs
                    .iter()
                    .filter(|j| j.group == Some((arch, head_dim, causal)))
                    .count();
                assert!(
                    n > 0,
                    "{arch} d{head_dim} causal={causal}: empty search space"
                );
            }
        }
    }
    // No kernel twice.
    let mut seen = std::collections::HashSet::new();
    for j in &jobs {
        assert!(seen.insert((j.arch, j.spec)), "{} twice", j.spec);
    }
}

#[test]
fn pipeline_notes_are_read_from_a_captured_log() {
    // Lines of a real NVRTC 13.0 sm_90a log: a kernel that changed a wgmma accumulator before
    // waiting for it, and the resource report around it.
    let log = "ptxas info    : (C7517) warpgroup.wait is injected in around line 79 by compiler to allow use of registers defined by GMMA in function 'k'
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k' for 'sm_90a'
ptxas info    : Used 58 registers, used 0 barriers";
    let notes = wgmma_pipeline_notes(log);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("C7517"));
    assert!(wgmma_pipeline_notes("ptxas info    : Used 58 registers, used 0 barriers").is_empty());
}
