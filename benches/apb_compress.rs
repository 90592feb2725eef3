//! APB compression benchmark: each compressor at one host's local block (n = 32768 local
//! positions, 32 query / 8 kv heads, head dim 128, lp = 2048, bf16), plus the top-k selection
//! alone at several lp. CUDA-event timing, median of repeated runs after a warm-up; prints a
//! table and writes JSON.
//!
//!   cargo bench --bench apb_compress -- [--json FILE]

#[path = "common/timing.rs"]
mod timing;

use flashgen_apb::{
    top_k, Activation, GivenScores, KvCompressor, LocalBlock, QueryAware, RetainingHeads,
    RetainingHeadsWeights,
};
use flashgen_reference::Rng;
use flashgen_runtime::cudarc::driver::CudaSlice;
use flashgen_runtime::{Layout, Runtime, Tensor};
use half::bf16;

const REPS: usize = 15;
const LOCAL: usize = 32768;
const HQ: usize = 32;
const HKV: usize = 8;
const D: usize = 128;
const LP: usize = 2048;
/// Hidden width of the retaining heads' MLP.
const HIDDEN: usize = 512;
/// Query tokens embedded in the anchor (query-aware scorer).
const NQ: usize = 64;

/// Median milliseconds of `f`.
fn time(rt: &Runtime, f: impl FnMut() -> flashgen_apb::Result<()>) -> flashgen_apb::Result<f64> {
    timing::median_ms(rt, REPS, f)
}

#[derive(serde::Serialize)]
struct Row {
    case: String,
    shape: String,
    ms: f64,
}

fn random(rng: &mut Rng, n: usize, scale: f64) -> Vec<bf16> {
    (0..n)
        .map(|_| bf16::from_f64(rng.uniform(-scale, scale)))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let rt = match Runtime::new(0) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("the APB compression benchmark needs a CUDA GPU: {e}");
            std::process::exit(1);
        }
    };
    println!("{} ({}), bf16", rt.info().name, rt.arch().sm_name());
    let mut rng = Rng::new(7);
    let s = rt.stream();
    let up = |x: &[bf16]| -> CudaSlice<bf16> { s.clone_htod(x).expect("upload") };
    let (ql, kl, aql) = (
        Layout::bshd(1, LOCAL, HQ, D),
        Layout::bshd(1, LOCAL, HKV, D),
        Layout::bshd(1, NQ, HQ, D),
    );
    let q = up(&random(&mut rng, ql.numel(), 1.0));
    let k = up(&random(&mut rng, kl.numel(), 1.0));
    let v = up(&random(&mut rng, kl.numel(), 1.0));
    let aq = up(&random(&mut rng, aql.numel(), 1.0));
    let local = LocalBlock {
        q: Tensor {
            data: &q,
            layout: ql,
        },
        k: Tensor {
            data: &k,
            layout: kl,
        },
        v: Tensor {
            data: &v,
            layout: kl,
        },
        anchor_query: Some(Tensor {
            data: &aq,
            layout: aql,
        }),
    };
    let mut out_k = s.alloc_zeros::<bf16>(LP * HKV * D).expect("alloc");
    let mut out_v = s.alloc_zeros::<bf16>(LP * HKV * D).expect("alloc");
    let shape = format!("b1 n{LOCAL} h{HQ}/{HKV} d{D}");
    let mut rows = Vec::new();
    let mut report = |case: String, shape: String, ms: flashgen_apb::Result<f64>| match ms {
        Ok(ms) => {
            println!("{case:<34} {shape:<34} {ms:>9.3} ms");
            rows.push(Row { case, shape, ms });
        }
        Err(e) => println!("{case:<34} {shape:<34} failed: {e}"),
    };
    let scores: Vec<f32> = (0..HKV * LOCAL)
        .map(|_| rng.uniform(-4.0, 4.0) as f32)
        .collect();
    let scores = s.clone_htod(&scores).expect("upload");
    for lp in [512, 2048, 4096] {
        report(
            format!("top-k select lp {lp}"),
            format!("{HKV} rows x {LOCAL}"),
            time(&rt, || top_k(&rt, &scores, HKV, LOCAL, lp).map(drop)),
        );
    }
    let given = GivenScores::new(&scores);
    report(
        "given scores: select + gather".to_string(),
        format!("{shape} lp{LP}"),
        time(&rt, || {
            given
                .compress(&rt, &local, LP, &mut out_k, &mut out_v)
                .map(drop)
        }),
    );

    let inf = (HQ + 2 * HKV) * D;
    let w1 = random(&mut rng, HIDDEN * inf, 2.0 / (inf as f64).sqrt());
    let b1 = random(&mut rng, HIDDEN, 0.5);
    let w2 = random(&mut rng, HKV * HIDDEN, 2.0 / (HIDDEN as f64).sqrt());
    let b2 = random(&mut rng, HKV, 0.5);
    match RetainingHeads::new(
        &rt,
        HQ,
        HKV,
        D,
        &RetainingHeadsWeights {
            fc1_weight: &w1,
            fc1_bias: &b1,
            fc2_weight: &w2,
            fc2_bias: &b2,
            hidden: HIDDEN,
            activation: Activation::Silu,
        },
    ) {
        Ok(heads) => {
            report(
                "retaining heads: scores".to_string(),
                format!("{shape} hidden {HIDDEN}"),
                time(&rt, || heads.scores(&rt, &local).map(drop)),
            );
            report(
                "retaining heads: compress".to_string(),
                format!("{shape} hidden {HIDDEN} lp{LP}"),
                time(&rt, || {
                    heads
                        .compress(&rt, &local, LP, &mut out_k, &mut out_v)
                        .map(drop)
                }),
            );
        }
        Err(e) => println!("retaining heads unavailable: {e}"),
    }

    let qa = QueryAware::new();
    report(
        "query-aware: scores".to_string(),
        format!("{shape} nq{NQ}"),
        time(&rt, || qa.scores(&rt, &local).map(drop)),
    );
    report(
        "query-aware: compress".to_string(),
        format!("{shape} nq{NQ} lp{LP}"),
        time(&rt, || {
            qa.compress(&rt, &local, LP, &mut out_k, &mut out_v)
                .map(drop)
        }),
    );

    let tiled = QueryAware::new().tiled();
    report(
        "query-aware (tile kernels): scores".to_string(),
        format!("{shape} nq{NQ}"),
        time(&rt, || tiled.scores(&rt, &local).map(drop)),
    );

    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialise");
        std::fs::write(&path, text).expect("write json");
        println!("wrote {path}");
    }
}
