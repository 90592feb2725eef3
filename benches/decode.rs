//! Decode benchmark over the paged KV cache (hq 32, hkv 8, d 128, bf16, pages of 64 tokens):
//! dense decode at b1 s32k, b1 s128k, b8 s32k and b32 s8k; selected decode at b1 and b8 s128k
//! with a 4096-token budget (rows: decode, selector, step = decode + selector / 4); and an
//! LServe layer (half the kv heads streaming 128 + 256, half selected with a 4096-token budget)
//! at b8 s128k. Quantized caches: dense decode at b8 s32k over int8, int8tok, int4tok and fp8
//! pools holding the same tokens as the bf16 row, with the speedup over it, and the LServe layer
//! over int8tok pools at b8 s128k against dense bf16 decode there. Effective bandwidth = bytes
//! of K and V (with their scales) the exact result must read / time (HBM read: 4.47 TB/s on an
//! H200). Device time by CUDA events, median of repeated launches after a warm-up, each launch
//! behind an L2 flush with the host running ahead (`flashgen_tuning::gpu::time_launches_flushed`,
//! as the peers' `do_bench` times them, so the ratios to the peers compare like with like).
//! Prints a table and writes JSON.
//!
//!   cargo bench --bench decode -- [--json FILE] [--only TEXT]

#[path = "common/timing.rs"]
mod timing;

use flashgen_codegen::{DType, KvDtype, KvDtypes, KvScaling};
use flashgen_reference::Rng;
use flashgen_runtime::decode::{
    DecodeArgs, DecodeHeadKind, DecodeHeads, DecodeMask, DeviceAppend, DevicePageTable,
    KvCacheConfig, KvScales, PageSelector, PagedKvCache, SelectorConfig, StreamingWindow,
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
    kv_bytes: u64,
    tb_per_s: f64,
    /// The bf16 row's time over this one's (quantized rows).
    speedup_vs_bf16: Option<f64>,
}

/// Bytes of one token's K and V over all kv heads, scales included.
fn kv_token_bytes(kv: KvDtypes) -> u64 {
    let pool = |f: KvDtype| {
        let params = if f.scaling() == KvScaling::PerToken {
            8
        } else {
            0
        };
        (f.row_bytes(D) + params) * HKV
    };
    (pool(kv.k) + pool(kv.v)) as u64
}

/// Per-tensor scales for the static formats: the normal(0, 1) data clipped at 4 sigma.
fn scales(kv: KvDtypes) -> KvScales {
    let s = |f: KvDtype| match f {
        KvDtype::Int8 => vec![4.0 / 127.0],
        KvDtype::Fp8 => vec![4.0 / 448.0],
        _ => Vec::new(),
    };
    KvScales {
        k: s(kv.k),
        v: s(kv.v),
    }
}

/// A cache of `batch` sequences of `seq` random tokens (one random chunk appended repeatedly).
fn filled(
    rt: &Runtime,
    batch: usize,
    seq: usize,
    kv: KvDtypes,
) -> flashgen_runtime::Result<(PagedKvCache, DevicePageTable)> {
    let per_seq = seq.div_ceil(PAGE);
    let config = KvCacheConfig::new(batch * per_seq, PAGE, HKV, D, DType::Bf16).with_kv(kv);
    let mut cache = PagedKvCache::with_scales(rt, config, &scales(kv))?;
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
        "{:<48} {:<22} {:>10} {:>12} {:>8} {:>8}",
        "case", "shape", "us", "KV MB", "TB/s", "x bf16"
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut report = |case: &str, shape: String, us: f64, kv_bytes: u64, vs: Option<f64>| {
        let tb = kv_bytes as f64 / (us * 1e-6) / 1e12;
        let speedup = vs.map(|base| base / us);
        println!(
            "{case:<48} {shape:<22} {us:>10.1} {:>12.1} {tb:>8.2} {:>8}",
            kv_bytes as f64 / 1e6,
            speedup.map_or(String::new(), |x| format!("{x:.2}"))
        );
        rows.push(Row {
            case: case.into(),
            shape,
            us,
            kv_bytes,
            tb_per_s: tb,
            speedup_vs_bf16: speedup,
        });
    };
    let bf16 = KvDtypes::same(KvDtype::Bf16);
    // K and V of one token, all kv heads.
    let token_bytes = kv_token_bytes(bf16);
    // Dense decode (O and lse) of `batch` sequences of `seq` tokens over pools `kv`:
    // microseconds.
    let dense = |batch: usize, seq: usize, kv: KvDtypes| -> flashgen_runtime::Result<f64> {
        let (cache, table) = filled(&rt, batch, seq, kv)?;
        let q_layout = Layout::bhsd(batch, 1, HQ, D);
        let mut rng = Rng::new(13);
        let q_host: Vec<bf16> = (0..q_layout.required_len())
            .map(|_| bf16::from_f64(rng.normal()))
            .collect();
        let q = rt.stream().clone_htod(&q_host).expect("upload");
        let mut o = rt
            .stream()
            .alloc_zeros::<bf16>(q_layout.required_len())
            .expect("alloc");
        let mut lse = rt.stream().alloc_zeros::<f32>(batch * HQ).expect("alloc");
        let ms = timing::flushed_median_ms(&rt, WARMUP, REPS, || {
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
        })?;
        Ok(ms * 1e3)
    };

    for (batch, seq) in [(1, 32768), (1, 131072), (8, 32768), (32, 8192)] {
        let shape = format!("b{batch} s{seq}");
        if !wanted("dense decode", &shape) {
            continue;
        }
        let result = dense(batch, seq, bf16);
        match result {
            Ok(us) => report(
                "dense decode",
                shape,
                us,
                batch as u64 * seq as u64 * token_bytes,
                None,
            ),
            Err(e) => println!("dense decode {shape}: failed: {e}"),
        }
    }

    // The quantized rows and their bf16 yardstick (`--only quantized` runs just these).
    if wanted("dense decode, quantized pools", "b8 s32768") {
        // Quantized pools holding the same tokens, against the bf16 cache at b8 s32k.
        let (batch, seq) = (8, 32768);
        match dense(batch, seq, bf16) {
            Ok(base) => {
                for kv in [
                    KvDtype::Int8,
                    KvDtype::Int8Token,
                    KvDtype::Int4Token,
                    KvDtype::Fp8,
                ]
                .map(KvDtypes::same)
                .into_iter()
                .chain([KvDtypes::new(KvDtype::Int4Token, KvDtype::Int8Token)])
                {
                    let case = format!("dense decode, {kv} pools");
                    match dense(batch, seq, kv) {
                        Ok(us) => report(
                            &case,
                            format!("b{batch} s{seq}"),
                            us,
                            batch as u64 * seq as u64 * kv_token_bytes(kv),
                            Some(base),
                        ),
                        Err(e) => println!("{case}: failed: {e}"),
                    }
                }
            }
            Err(e) => println!("dense decode b{batch} s{seq} (bf16 base): failed: {e}"),
        }
    }
    // Dense bf16 decode at b8 s128k: the LServe layer's yardstick.
    let dense_128k = if wanted("dense decode LServe", "b8 s131072") {
        let result = dense(8, 131072, bf16);
        match &result {
            Ok(us) => report(
                "dense decode",
                "b8 s131072".into(),
                *us,
                8 * 131072 * token_bytes,
                None,
            ),
            Err(e) => println!("dense decode b8 s131072: failed: {e}"),
        }
        result.ok()
    } else {
        None
    };

    // Selected decode and the LServe layer: q random so that the selection is query-aware.
    for (case, batch, mixed, kv) in [
        ("selected decode (selector / 4)", 1usize, false, bf16),
        // The selector over a batch (one launch for every sequence).
        ("selected decode (selector / 4)", 8, false, bf16),
        ("LServe layer: half streaming, half selected", 8, true, bf16),
        (
            "LServe layer, int8tok pools",
            8,
            true,
            KvDtypes::same(KvDtype::Int8Token),
        ),
    ] {
        let seq = 131072;
        let shape = format!("b{batch} s{seq} budget {BUDGET}");
        if !wanted(case, &shape) {
            continue;
        }
        let result = (|| -> flashgen_runtime::Result<(f64, f64, f64)> {
            let (cache, table) = filled(&rt, batch, seq, kv)?;
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
            let select_ms = timing::flushed_median_ms(&rt, WARMUP, REPS, || {
                selector.select(&rt, &cache, &table, qt()).map(drop)
            })?;
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
            let decode_ms = timing::flushed_median_ms(&rt, WARMUP, REPS, || {
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
                let bytes = (batch as f64 * per_head * kv_token_bytes(kv) as f64) as u64;
                // The LServe layers' speedup is over dense bf16 decode of the same context.
                let vs = if mixed { dense_128k } else { None };
                report(
                    &format!("{case}: decode"),
                    shape.clone(),
                    decode_ms * 1e3,
                    bytes,
                    vs,
                );
                report(
                    &format!("{case}: selector"),
                    shape.clone(),
                    select_ms * 1e3,
                    0,
                    None,
                );
                report(
                    &format!("{case}: step"),
                    shape,
                    (decode_ms + select_ms / 4.0) * 1e3,
                    bytes,
                    vs,
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
