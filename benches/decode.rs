//! Decode benchmark over the paged KV cache (hq 32, hkv 8, d 128, bf16, pages of 64 tokens):
//! dense decode at b1 s32k, b1 s128k, b8 s32k and b32 s8k; selected decode at b1 s128k with a
//! 4096-token budget, the selector amortised over 4 steps; and an LServe layer (half the kv
//! heads streaming 128 + 256, half selected with a 4096-token budget) at b8 s128k. Effective
//! bandwidth = bytes of K and V the exact result must read / time (HBM read: 4.47 TB/s on an
//! H200). Two CUDA-event timings, medians of repeated launches after a warm-up: `us`, each
//! launch behind an L2 flush with the host running ahead (as the peers' `do_bench` times them,
//! so the ratios to the peers compare like with like), and `stream us`, the project's one
//! timing method (`flashgen_tuning::gpu::time_launches`: back-to-back launches as an inference
//! loop issues them, where part of the KV may still sit in L2 from the previous launch). Prints
//! a table and writes JSON.
//!
//!   cargo bench --bench decode -- [--json FILE] [--only TEXT]

#[path = "common/gpu_time.rs"]
mod gpu_time;
#[path = "common/timing.rs"]
mod timing;

use flashgen_codegen::KvDtype;
use flashgen_reference::Rng;
use flashgen_runtime::decode::{
    DecodeArgs, DecodeHeadKind, DecodeHeads, DecodeMask, DeviceAppend, DevicePageTable,
    KvCacheConfig, PageSelector, PagedKvCache, SelectorConfig, StreamingWindow,
};
use flashgen_runtime::{Layout, Runtime, Tensor, TensorMut};
use half::bf16;

const WARMUP: usize = 5;
const REPS: usize = 50;
const HQ: usize = 32;
const HKV: usize = 8;
const D: usize = 128;
const PAGE: usize = 64;
const BUDGET: usize = 4096;
/// Tokens appended per call while filling the cache.
const CHUNK: usize = 8192;

#[derive(serde::Serialize)]
struct Row {
    case: String,
    shape: String,
    us: f64,
    stream_us: f64,
    kv_bytes: u64,
    tb_per_s: f64,
}

/// A cache of `batch` sequences of `seq` random tokens (one random chunk appended repeatedly).
fn filled(
    rt: &Runtime,
    batch: usize,
    seq: usize,
) -> flashgen_runtime::Result<(PagedKvCache, DevicePageTable)> {
    let per_seq = seq.div_ceil(PAGE);
    let config = KvCacheConfig {
        num_pages: batch * per_seq,
        page_size: PAGE,
        heads_kv: HKV,
        head_dim: D,
        kv_dtype: KvDtype::Bf16,
    };
    let mut cache = PagedKvCache::new(rt, config)?;
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|b| ((b * per_seq) as u32..((b + 1) * per_seq) as u32).collect())
        .collect();
    let mut rng = Rng::new(7);
    let chunk: Vec<bf16> = (0..CHUNK * HKV * D)
        .map(|_| bf16::from_f64(rng.normal()))
        .collect();
    let mut done = 0;
    while done < seq {
        let n = CHUNK.min(seq - done);
        let table = DevicePageTable::new(rt, &config, &rows, &vec![done + n; batch])?;
        let append = DeviceAppend::new(rt, &table, &vec![n; batch])?;
        let data: Vec<bf16> = (0..batch)
            .flat_map(|_| chunk[..n * HKV * D].to_vec())
            .collect();
        let k = rt.stream().clone_htod(&data).expect("upload");
        let layout = Layout::packed(batch * n, HKV, D);
        cache.append(
            rt,
            &table,
            &append,
            Tensor { data: &k, layout },
            Tensor { data: &k, layout },
        )?;
        done += n;
    }
    let table = DevicePageTable::new(rt, &config, &rows, &vec![seq; batch])?;
    Ok((cache, table))
}

/// (flushed ms, stream ms) of a launch: see the module documentation.
type Timed = (f64, f64);

/// Both timings of `f`.
fn both_ms(
    rt: &Runtime,
    mut f: impl FnMut() -> flashgen_runtime::Result<()>,
) -> flashgen_runtime::Result<Timed> {
    let flushed = gpu_time::device_median_ms(rt, WARMUP, REPS, &mut f)?;
    let stream = timing::median_ms(rt, REPS, &mut f)?;
    Ok((flushed, stream))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    // `--only TEXT`: run only the cases whose "case shape" text contains TEXT (for profilers).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wanted = |case: &str, shape: &str| {
        only.as_deref()
            .is_none_or(|o| format!("{case} {shape}").contains(o))
    };
    let rt = match Runtime::new(0) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("decode benchmark needs a CUDA GPU: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "{} ({} SMs); hq {HQ} hkv {HKV} d {D} bf16, pages of {PAGE}",
        rt.info().name,
        rt.info().sm_count
    );
    println!(
        "{:<44} {:<22} {:>10} {:>10} {:>12} {:>8}",
        "case", "shape", "us", "stream us", "KV MB", "TB/s"
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut report = |case: &str, shape: String, (us, stream_us): (f64, f64), kv_bytes: u64| {
        let tb = kv_bytes as f64 / (us * 1e-6) / 1e12;
        println!(
            "{case:<44} {shape:<22} {us:>10.1} {stream_us:>10.1} {:>12.1} {tb:>8.2}",
            kv_bytes as f64 / 1e6
        );
        rows.push(Row {
            case: case.into(),
            shape,
            us,
            stream_us,
            kv_bytes,
            tb_per_s: tb,
        });
    };
    let token_bytes = (2 * HKV * D * 2) as u64; // K and V of one token, all kv heads

    for (batch, seq) in [(1, 32768), (1, 131072), (8, 32768), (32, 8192)] {
        let shape = format!("b{batch} s{seq}");
        if !wanted("dense decode", &shape) {
            continue;
        }
        let result = (|| -> flashgen_runtime::Result<(f64, f64)> {
            let (cache, table) = filled(&rt, batch, seq)?;
            let q_layout = Layout::bhsd(batch, 1, HQ, D);
            let q = rt
                .stream()
                .alloc_zeros::<bf16>(q_layout.required_len())
                .expect("alloc");
            let mut o = rt
                .stream()
                .alloc_zeros::<bf16>(q_layout.required_len())
                .expect("alloc");
            let mut lse = rt.stream().alloc_zeros::<f32>(batch * HQ).expect("alloc");
            both_ms(&rt, || {
                rt.decode(
                    &cache,
                    &table,
                    DecodeArgs::new(
                        Tensor {
                            data: &q,
                            layout: q_layout,
                        },
                        TensorMut {
                            data: &mut o,
                            layout: q_layout,
                        },
                    )
                    .lse(&mut lse),
                )
                .map(drop)
            })
        })();
        match result {
            Ok((ms, stream_ms)) => report(
                "dense decode",
                shape,
                (ms * 1e3, stream_ms * 1e3),
                batch as u64 * seq as u64 * token_bytes,
            ),
            Err(e) => println!("dense decode {shape}: failed: {e}"),
        }
    }

    // Selected decode and the LServe layer: q random so that the selection is query-aware.
    for (case, batch, mixed) in [
        ("selected decode (selector / 4)", 1usize, false),
        ("LServe layer: half streaming, half selected", 8, true),
    ] {
        let seq = 131072;
        let shape = format!("b{batch} s{seq} budget {BUDGET}");
        if !wanted(case, &shape) {
            continue;
        }
        let result = (|| -> flashgen_runtime::Result<(Timed, Timed, f64)> {
            let (cache, table) = filled(&rt, batch, seq)?;
            let q_layout = Layout::bhsd(batch, 1, HQ, D);
            let mut rng = Rng::new(11);
            let q_host: Vec<bf16> = (0..q_layout.required_len())
                .map(|_| bf16::from_f64(rng.normal()))
                .collect();
            let q = rt.stream().clone_htod(&q_host).expect("upload");
            let mut o = rt
                .stream()
                .alloc_zeros::<bf16>(q_layout.required_len())
                .expect("alloc");
            let selector = PageSelector::new(SelectorConfig {
                budget: BUDGET,
                sink_pages: 2,
                refresh_every: 4,
            })?;
            let qt = || Tensor {
                data: &q,
                layout: q_layout,
            };
            let sel = selector.select(&rt, &cache, &table, qt())?;
            let select_ms = both_ms(&rt, || selector.select(&rt, &cache, &table, qt()).map(drop))?;
            let kinds: Vec<DecodeHeadKind> = (0..HKV)
                .map(|h| {
                    if h % 2 == 0 {
                        DecodeHeadKind::Streaming
                    } else {
                        DecodeHeadKind::Selected
                    }
                })
                .collect();
            let heads = DecodeHeads::new(&rt, &kinds)?;
            let window = StreamingWindow {
                sink: 128,
                recent: 256,
            };
            let mask = if mixed {
                DecodeMask::Mixed {
                    heads: &heads,
                    streaming: window,
                    selection: &sel,
                }
            } else {
                DecodeMask::Selected(&sel)
            };
            let decode_ms = both_ms(&rt, || {
                rt.decode(
                    &cache,
                    &table,
                    DecodeArgs::new(
                        qt(),
                        TensorMut {
                            data: &mut o,
                            layout: q_layout,
                        },
                    )
                    .mask(mask),
                )
                .map(drop)
            })?;
            // Tokens the exact result reads per (sequence, kv head).
            let selected = BUDGET as f64;
            let streaming = (window.sink + window.recent) as f64;
            let per_head = if mixed {
                (selected + streaming) / 2.0
            } else {
                selected
            };
            Ok((decode_ms, select_ms, per_head))
        })();
        match result {
            Ok((decode_ms, select_ms, per_head)) => {
                let bytes = (batch as f64 * per_head * token_bytes as f64) as u64;
                report(
                    &format!("{case}: decode"),
                    shape.clone(),
                    (decode_ms.0 * 1e3, decode_ms.1 * 1e3),
                    bytes,
                );
                report(
                    &format!("{case}: selector"),
                    shape.clone(),
                    (select_ms.0 * 1e3, select_ms.1 * 1e3),
                    0,
                );
                report(
                    &format!("{case}: step"),
                    shape,
                    (
                        (decode_ms.0 + select_ms.0 / 4.0) * 1e3,
                        (decode_ms.1 + select_ms.1 / 4.0) * 1e3,
                    ),
                    bytes,
                );
            }
            Err(e) => println!("{case} {shape}: failed: {e}"),
        }
    }

    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialise");
        std::fs::write(&path, text).expect("write json");
        println!("wrote {path}");
    }
}
