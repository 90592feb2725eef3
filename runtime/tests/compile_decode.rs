//! Decode kernels compile with NVRTC for sm_80 and sm_90a without register spills (needs
//! libnvrtc, no GPU): the attention kernel of every variant, head dim,
//! dtype and row tile at pages of 64 tokens, every page size of dense d128 bf16 with 16 rows
//! (the page size changes constants only: block-to-page arithmetic), the append kernel of every
//! KV dtype pair and the page selector of every dtype and head dim; quantized caches as
//! `quantized_sample` picks (each format's load path at the register-heaviest shapes; the
//! schedules are the 16-bit cache's).

use flashgen_codegen::{Arch, DType, DecodeSpec, DecodeVariant};
use flashgen_runtime::compile;
use flashgen_runtime::compile::parse_report;
use flashgen_runtime::decode::DecodeModule;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const THREADS: usize = 2;

/// The quantized specs the sweep compiles: per pair of formats, the register-heaviest dense
/// shapes (d64 r64, d128 r16 and r64, d256 r32) in bf16, the same shapes in f16 (keys as f16
/// operands; same formats only), and each other variant at d128 r16 in bf16 and at d64 r64 and
/// d128 r32 in f16 (same formats only; the f16 kernels nearest the register limit).
fn quantized_sample(spec: &DecodeSpec) -> bool {
    if spec.page_size != 64 {
        return false;
    }
    let same = spec.kv_dtype.k == spec.kv_dtype.v;
    let (d, r) = (spec.head_dim, spec.rows);
    let heavy = matches!((d, r), (64, 64) | (128, 16) | (128, 64) | (256, 32));
    match (spec.variant, spec.dtype) {
        (DecodeVariant::Dense, DType::Bf16) => heavy,
        (DecodeVariant::Dense, DType::F16) => same && heavy,
        (_, DType::Bf16) => same && d == 128 && r == 16,
        (_, DType::F16) => same && matches!((d, r), (64, 64) | (128, 32)),
    }
}

#[test]
fn every_decode_kernel_compiles_without_spills() {
    if !flashgen_runtime::libs::nvrtc_present() {
        eprintln!("libnvrtc is not loadable: skipped");
        return;
    }
    // FLASHGEN_DECODE_FILTER=<part of a kernel name or module>: only those (for iterating).
    let filter = std::env::var("FLASHGEN_DECODE_FILTER").ok();
    let jobs: Vec<(DecodeModule, Arch)> = [Arch::SM80, Arch::SM90]
        .into_iter()
        .flat_map(|arch| {
            DecodeModule::all()
                .into_iter()
                .filter(|m| match m {
                    DecodeModule::Attention(spec) if spec.quantized() => quantized_sample(spec),
                    DecodeModule::Attention(spec) => {
                        spec.page_size == 64
                            || (spec.variant == DecodeVariant::Dense
                                && spec.head_dim == 128
                                && spec.dtype == DType::Bf16
                                && spec.rows == 16)
                    }
                    _ => true,
                })
                .map(move |m| (m, arch))
        })
        .filter(|(m, _)| match (&filter, m) {
            (Some(f), DecodeModule::Attention(spec)) => spec.kernel_name().contains(f.as_str()),
            (Some(f), _) => format!("{m:?}").contains(f.as_str()),
            (None, _) => true,
        })
        .collect();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let max_regs = Mutex::new(0u32);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(module, arch)) = jobs.get(i) else {
                    break;
                };
                let outcome = module
                    .source(arch)
                    .map_err(|e| e.to_string())
                    .and_then(|src| compile(&src, arch).map_err(|e| e.to_string()));
                let mut fail = failures.lock().unwrap();
                match outcome {
                    Err(e) => fail.push(format!("{module:?} on {arch}: {e}")),
                    Ok((kernel, _)) => {
                        for f in module.functions() {
                            match parse_report(&kernel.log, &f) {
                                None => fail.push(format!("{f} on {arch}: no ptxas report")),
                                Some(r) if r.spills() => {
                                    fail.push(format!("{f} ({module:?}) on {arch} spills: {r:?}"))
                                }
                                Some(r) => {
                                    let mut m = max_regs.lock().unwrap();
                                    *m = (*m).max(r.registers);
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "{} decode modules compiled in {:.1} s, at most {} registers",
        jobs.len(),
        start.elapsed().as_secs_f64(),
        max_regs.into_inner().unwrap()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
