//! The custom variant against FlexAttention's user-defined masks: the cases of
//! `shared/bench/flex_mods.py` (b1, h32 over 8 kv heads, d128, bf16, s16384) — causal, sliding
//! window 1024, prefix-LM 2048, document-causal with random document lengths, causal with a
//! tanh soft cap of 50, causal with ALiBi — each timed with CUDA events (the benchmarks'
//! shared timing: median after a warm-up), with useful TFLOP/s (`4 * heads * d * visible pairs`, the pairs counted from the
//! mask itself, as flex_mods.py counts them), the block classification's creation time and the
//! cold path of a definition never seen before (render, NVRTC, classification, first launch).
//!
//!   cargo bench --bench custom -- [--json FILE] [--only NAME[,NAME..]] [--seq N]

#[path = "common/timing.rs"]
mod timing;

use flashgen_codegen::expr::{eval, Bindings, CustomMods, Value, VectorData};
use flashgen_codegen::{render, AttentionSpec, DType};
use flashgen_runtime::custom::DEFAULT_BLOCK;
use flashgen_runtime::{
    compile, AttentionArgs, CustomArgs, CustomShape, DeviceVector, Layout, Mask, Runtime, Tensor,
    TensorMut,
};
use half::bf16;
use std::time::Instant;

const HEADS: usize = 32;
const KV_HEADS: usize = 8;
const D: usize = 128;

struct Case {
    name: &'static str,
    definition: &'static str,
}

const CASES: [Case; 6] = [
    Case {
        name: "causal",
        definition: "mask = k <= q",
    },
    Case {
        name: "sliding_window_1024",
        definition: "w: i32; mask = k <= q && q - k < w",
    },
    Case {
        name: "prefix_lm_2048",
        definition: "p: i32; mask = k < p || k <= q",
    },
    Case {
        name: "document_causal",
        definition: "doc: [i32]; mask = doc[q] == doc[k] && k <= q",
    },
    Case {
        name: "causal_softcap_50",
        definition: "mask = k <= q; score = 50.0 * tanh(s / 50.0)",
    },
    Case {
        name: "causal_alibi",
        definition: "slope: [f32]; mask = k <= q; score = s + slope[h] * (k - q)",
    },
];

/// Document lengths as flex_mods.py draws them: uniform in [256, 4096) while they fit, the
/// rest one last document (its generator is torch's; this one is seeded splitmix64).
fn documents(seq: usize) -> Vec<i32> {
    let mut state = 1u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut doc = Vec::with_capacity(seq);
    let mut id = 0;
    loop {
        let len = 256 + (next() % 3840) as usize;
        if doc.len() + len >= seq {
            break;
        }
        doc.extend(std::iter::repeat_n(id, len));
        id += 1;
    }
    doc.resize(seq, id);
    doc
}

fn random_bf16(n: usize, seed: u64) -> Vec<bf16> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            bf16::from_f32((z >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0)
        })
        .collect()
}

/// Visible pairs of head 0 (none of the masks reads `h`), counted with codegen's evaluator
/// over rows on every core.
fn visible_pairs(mods: &CustomMods, params: &[VectorData], seq: usize) -> u64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows_per = seq.div_ceil(threads);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut n = 0u64;
                    for q in t * rows_per..((t + 1) * rows_per).min(seq) {
                        for k in 0..seq {
                            let env = Bindings {
                                b: 0,
                                h: 0,
                                q: q as i32,
                                k: k as i32,
                                s: 0.0,
                                params,
                            };
                            n += u64::from(
                                mods.mask()
                                    .is_none_or(|m| eval::eval(m, &env) == Value::Bool(true)),
                            );
                        }
                    }
                    n
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("counting thread"))
            .sum()
    })
}

#[derive(serde::Serialize)]
struct Row {
    case: &'static str,
    s: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    tile: String,
    ms: f64,
    tflops: f64,
    block_mask_ms: f64,
    density: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let json = flag("--json");
    let only: Option<Vec<String>> =
        flag("--only").map(|s| s.split(',').map(str::to_string).collect());
    let seq: usize = flag("--seq").map_or(16384, |s| s.parse().expect("--seq N"));
    let rt = match Runtime::new(0) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no GPU ({e}): nothing to benchmark");
            return;
        }
    };
    let stream = rt.stream();
    let ql = Layout::bshd(1, seq, HEADS, D);
    let kl = Layout::bshd(1, seq, KV_HEADS, D);
    let q = stream
        .clone_htod(&random_bf16(ql.numel(), 1))
        .expect("upload");
    let k = stream
        .clone_htod(&random_bf16(kl.numel(), 2))
        .expect("upload");
    let v = stream
        .clone_htod(&random_bf16(kl.numel(), 3))
        .expect("upload");
    let mut o = stream.alloc_zeros::<bf16>(ql.numel()).expect("alloc");
    let mut lse = stream.alloc_zeros::<f32>(HEADS * seq).expect("alloc");
    let doc = documents(seq);
    let slopes: Vec<f32> = (1..=HEADS)
        .map(|h| (-8.0 * h as f32 / HEADS as f32).exp2())
        .collect();
    let doc_dev: DeviceVector = rt.upload_vector_i32(&doc).expect("upload");
    let slope_dev: DeviceVector = rt.upload_vector_f32(&slopes).expect("upload");
    println!(
        "custom masks on {}: b1 h{HEADS}/{KV_HEADS} d{D} bf16 s{seq}, lse written, {} documents",
        rt.info().name,
        doc.iter().max().map_or(0, |m| m + 1)
    );
    println!(
        "{:<22} {:<34} {:>9} {:>9} {:>13} {:>8}",
        "case", "tile", "ms", "TFLOP/s", "block mask ms", "density"
    );
    let mut rows = Vec::new();
    for case in CASES {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == case.name))
        {
            continue;
        }
        let mods = CustomMods::parse(case.definition).expect("valid definition");
        let spec = AttentionSpec::custom(&mods, D as u32, DType::Bf16).with_lse(true);
        let kernel = spec.with_default_tile(rt.arch());
        let mut custom = CustomArgs::new();
        let mut host = Vec::new();
        for p in mods.params() {
            match p.name.as_str() {
                "w" => {
                    custom = custom.int("w", 1024);
                    host.push(VectorData::Scalar(Value::Int(1024)));
                }
                "p" => {
                    custom = custom.int("p", 2048);
                    host.push(VectorData::Scalar(Value::Int(2048)));
                }
                "doc" => {
                    custom = custom.vector("doc", &doc_dev);
                    host.push(VectorData::I32(&doc));
                }
                _ => {
                    custom = custom.vector("slope", &slope_dev);
                    host.push(VectorData::F32(&slopes));
                }
            }
        }
        let shape = CustomShape::Fixed {
            batch: 1,
            heads_q: HEADS,
            sq: seq,
            sk: seq,
        };
        // Block classification: wall time of the kernel and the download of the lists.
        let mut mask_ms = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            rt.custom_blocks_uncached(&spec, &custom, shape, DEFAULT_BLOCK, DEFAULT_BLOCK)
                .expect("classification");
            mask_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        mask_ms.sort_by(f64::total_cmp);
        let blocks = rt
            .custom_blocks(&spec, &custom, shape)
            .expect("classification");
        let ms = timing::median_ms(&rt, timing::REPS, || {
            let args = AttentionArgs::new(
                Tensor {
                    data: &q,
                    layout: ql,
                },
                Tensor {
                    data: &k,
                    layout: kl,
                },
                Tensor {
                    data: &v,
                    layout: kl,
                },
                TensorMut {
                    data: &mut o,
                    layout: ql,
                },
            )
            .lse(&mut lse)
            .mask(Mask::Custom {
                args: &custom,
                blocks: Some(&blocks),
            });
            rt.attention(&kernel, args)
        })
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let pairs = visible_pairs(&mods, &host, seq);
        let tflops = 4.0 * HEADS as f64 * D as f64 * pairs as f64 / ms / 1e9;
        let density = pairs as f64 / (seq * seq) as f64;
        println!(
            "{:<22} {:<34} {:>9.3} {:>9.1} {:>13.3} {:>8.3}",
            case.name,
            kernel.tile.to_string(),
            ms,
            tflops,
            mask_ms[2],
            density
        );
        rows.push(Row {
            case: case.name,
            s: seq,
            hq: HEADS,
            hkv: KV_HEADS,
            d: D,
            tile: kernel.tile.to_string(),
            ms,
            tflops,
            block_mask_ms: mask_ms[2],
            density,
        });
    }
    // Definitions never compiled before (windows no earlier run has used, the disk cache
    // notwithstanding): render and NVRTC alone, then the whole cold path of a first launch
    // through the runtime.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000) as usize;
    let fresh = |n: usize| {
        let mods = CustomMods::parse(&format!("mask = k <= q && q - k < {}", 1_000_000 + n))
            .expect("valid definition");
        AttentionSpec::custom(&mods, D as u32, DType::Bf16).with_lse(true)
    };
    let kernel = fresh(2 * nonce).with_default_tile(rt.arch());
    let t = Instant::now();
    let source = render(&kernel).expect("renders");
    let (_, nvrtc_ms) = compile(&source, rt.arch()).expect("compiles");
    let render_nvrtc_ms = t.elapsed().as_secs_f64() * 1e3;
    let cold = fresh(2 * nonce + 1).with_default_tile(rt.arch());
    let t = Instant::now();
    let custom = CustomArgs::new();
    let args = AttentionArgs::new(
        Tensor {
            data: &q,
            layout: ql,
        },
        Tensor {
            data: &k,
            layout: kl,
        },
        Tensor {
            data: &v,
            layout: kl,
        },
        TensorMut {
            data: &mut o,
            layout: ql,
        },
    )
    .lse(&mut lse)
    .mask(Mask::Custom {
        args: &custom,
        blocks: None,
    });
    rt.attention(&cold, args).expect("cold launch");
    stream.synchronize().expect("sync");
    let cold_s = t.elapsed().as_secs_f64();
    println!(
        "cold new expression: render + NVRTC {render_nvrtc_ms:.0} ms (NVRTC {nvrtc_ms:.0} ms); \
         first launch through the runtime (compile, classification, launch) {cold_s:.2} s"
    );
    if let Some(path) = json {
        let out = serde_json::json!({ "rows": rows, "cold_nvrtc_ms": nvrtc_ms, "cold_render_nvrtc_ms": render_nvrtc_ms, "cold_first_launch_s": cold_s });
        std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json"))
            .expect("writing --json");
    }
}
