//! Attention-layer prefill on N hosts: APB vs ring attention vs star attention vs single-GPU
//! dense causal flash attention, b1 h32 (8 kv heads) d128 bf16, wall time per layer including
//! communication.
//!
//! Parameters: APB's anchor is `min(4096, L/4)` and its passing length `min(2048, L/8)` for a
//! local block of `L` tokens; the last 128 anchor tokens are the query that the built-in
//! query-aware compressor scores with (`apb`); `apb_fixed` passes on a fixed selection instead,
//! so its compression is a gather only. Star attention runs twice: with an anchor as long as the local
//! block (the setting of the Star Attention paper, which the APB paper compares against), and
//! with APB's anchor (less context than APB sees, so less work and less accuracy).
//!
//! Modes: `nccl` runs one rank per GPU (when the machine has at least N GPUs and libnccl.so.2
//! loads): every rank times `barrier; prefill; synchronize; barrier` and the slowest rank
//! counts. `sim` runs the N hosts in turn on GPU 0 (same code path): the time is the largest
//! per-host GPU time (CUDA events around each host's turns); the copies standing in for the
//! communication are reported apart and not counted, since on one GPU they say nothing about
//! the interconnect.
//!
//! ```text
//! apb_prefill [--n 32768,131072] [--hosts 2,4] [--iters 5] [--warmup 2] [--no-sim] [--no-nccl]
//!             [--json FILE]
//! ```

#[path = "common/timing.rs"]
mod timing;

use flashgen_apb::multigpu::{
    nccl_group, nccl_present, nccl_version, run_hosts, Communicator, SimGroup,
};
use flashgen_apb::prefill::{apb_prefill, ApbParams, HostBlock, PrefillShape, SeqSplit};
use flashgen_apb::ring::ring_prefill;
use flashgen_apb::star::star_prefill;
use flashgen_apb::{GivenSelection, QueryAware, Result};
use flashgen_codegen::{AttentionSpec, Variant};
use flashgen_reference::{Precision, Rng};
use flashgen_runtime::cudarc::driver::CudaSlice;
use flashgen_runtime::{device_count, AttentionArgs, Runtime, Tensor, TensorMut};
use half::bf16;
use serde::Serialize;
use std::time::Instant;

const HQ: usize = 32;
const HKV: usize = 8;
const D: usize = 128;
/// Query tokens at the end of the anchor that the query-aware compressor scores with.
const ANCHOR_QUERY: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Method {
    /// APB with the built-in query-aware compressor.
    Apb,
    /// APB with a fixed selection (the compression is only a gather).
    ApbFixed,
    Ring,
    /// Star attention with an anchor as long as the local block.
    Star,
    /// Star attention with APB's anchor.
    StarSmallAnchor,
}

const METHODS: [Method; 5] = [
    Method::Apb,
    Method::ApbFixed,
    Method::Ring,
    Method::Star,
    Method::StarSmallAnchor,
];

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Apb => "apb",
            Method::ApbFixed => "apb_fixed",
            Method::Ring => "ring",
            Method::Star => "star",
            Method::StarSmallAnchor => "star_small_anchor",
        }
    }

    /// The parameters this method runs with.
    fn params(self, split: &SeqSplit) -> ApbParams {
        let apb = apb_params(split.len(split.hosts - 1));
        match self {
            Method::Star => ApbParams {
                anchor: split.len(0),
                anchor_query: 0,
                ..apb
            },
            Method::StarSmallAnchor | Method::Ring => ApbParams {
                anchor_query: 0,
                ..apb
            },
            Method::Apb | Method::ApbFixed => apb,
        }
    }
}

#[derive(Serialize)]
struct Row {
    n: usize,
    hosts: usize,
    mode: &'static str,
    method: String,
    /// Median wall (nccl) or largest per-host GPU time (sim), milliseconds.
    ms: f64,
    /// Per-host times of the median iteration (sim: GPU time; nccl: wall time).
    host_ms: Vec<f64>,
    /// sim only: the copies that stand in for communication.
    comm_ms: Option<f64>,
    anchor: usize,
    passing: usize,
}

struct Args {
    ns: Vec<usize>,
    hosts: Vec<usize>,
    iters: usize,
    warmup: usize,
    sim: bool,
    nccl: bool,
    json: Option<String>,
}

fn parse_list(s: &str) -> Vec<usize> {
    s.split(',')
        .map(|x| x.trim().parse().expect("a list of numbers"))
        .collect()
}

fn args() -> Args {
    let mut a = Args {
        ns: vec![32768, 131072],
        hosts: vec![2, 4],
        iters: 5,
        warmup: 2,
        sim: true,
        nccl: true,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--n" => a.ns = parse_list(&value()),
            "--hosts" => a.hosts = parse_list(&value()),
            "--iters" => a.iters = value().parse().expect("--iters N"),
            "--warmup" => a.warmup = value().parse().expect("--warmup N"),
            "--no-sim" => a.sim = false,
            "--no-nccl" => a.nccl = false,
            "--json" => a.json = Some(value()),
            // cargo bench passes --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Anchor and passing lengths for a local block of `len` tokens.
fn apb_params(len: usize) -> ApbParams {
    ApbParams {
        anchor: 4096.min(len / 4),
        passing: 2048.min(len / 8),
        anchor_query: ANCHOR_QUERY,
        scale: None,
    }
}

/// Random bf16 data of `len` elements, tiled from a pool (drawing 10^8 normals is slow and
/// the timing does not depend on the values).
fn data(rt: &Runtime, pool: &[bf16], len: usize) -> CudaSlice<bf16> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let take = (len - v.len()).min(pool.len());
        v.extend_from_slice(&pool[..take]);
    }
    rt.stream().clone_htod(&v).expect("upload")
}

struct HostData {
    q: CudaSlice<bf16>,
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    select: GivenSelection,
    query_aware: QueryAware,
}

fn host_data(
    rt: &Runtime,
    pool: &[bf16],
    shape: &PrefillShape,
    split: &SeqSplit,
    r: usize,
) -> HostData {
    let len = split.len(r);
    let lp = apb_params(split.len(split.hosts - 1)).passing;
    // Evenly spaced positions: the timing does not depend on which are chosen.
    let lp_here = if r + 1 < split.hosts { lp } else { 0 };
    let list: Vec<i32> = (0..lp_here)
        .map(|j| (j * len / lp_here.max(1)) as i32)
        .collect();
    let index: Vec<i32> = (0..HKV).flat_map(|_| list.iter().copied()).collect();
    HostData {
        q: data(rt, pool, shape.q_layout(len).numel()),
        k: data(rt, pool, shape.kv_layout(len).numel()),
        v: data(rt, pool, shape.kv_layout(len).numel()),
        select: GivenSelection::new(rt, &index, 1, HKV, lp_here, len).expect("selection"),
        query_aware: QueryAware::new(),
    }
}

fn run_one(
    rt: &Runtime,
    comm: &dyn Communicator,
    shape: &PrefillShape,
    params: &ApbParams,
    method: Method,
    h: &HostData,
) -> Result<()> {
    let block = HostBlock {
        q: &h.q,
        k: &h.k,
        v: &h.v,
    };
    match method {
        Method::Apb => apb_prefill(rt, comm, shape, params, &h.query_aware, block).map(drop),
        Method::ApbFixed => apb_prefill(rt, comm, shape, params, &h.select, block).map(drop),
        Method::Ring => ring_prefill(rt, comm, shape, params, block).map(drop),
        Method::Star | Method::StarSmallAnchor => {
            star_prefill(rt, comm, shape, params, block).map(drop)
        }
    }
}

/// Index of the median of `xs`.
fn median_index(xs: &[f64]) -> usize {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    idx[idx.len() / 2]
}

/// The benchmarked layer: b1, HQ query heads over HKV kv heads of D, `n` tokens.
fn prefill_shape(n: usize) -> PrefillShape {
    PrefillShape {
        batch: 1,
        n,
        heads_q: HQ,
        heads_kv: HKV,
        dim: D,
    }
}

fn bench_dense(rt: &Runtime, pool: &[bf16], n: usize, a: &Args) -> Result<f64> {
    let shape = prefill_shape(n);
    let (ql, kvl) = (shape.q_layout(n), shape.kv_layout(n));
    let q = data(rt, pool, ql.numel());
    let k = data(rt, pool, kvl.numel());
    let v = data(rt, pool, kvl.numel());
    let mut o = rt.stream().alloc_zeros::<bf16>(ql.numel()).expect("alloc");
    let spec = AttentionSpec::new(
        Variant::Dense,
        D as u32,
        flashgen_codegen::DType::Bf16,
        true,
    );
    let ms = timing::median_ms(rt, a.iters, || {
        rt.attention_tuned(
            &spec,
            AttentionArgs::new(
                Tensor {
                    data: &q,
                    layout: ql,
                },
                Tensor {
                    data: &k,
                    layout: kvl,
                },
                Tensor {
                    data: &v,
                    layout: kvl,
                },
                TensorMut {
                    data: &mut o,
                    layout: ql,
                },
            ),
        )
        .map(drop)
    })?;
    Ok(ms)
}

fn bench_sim(
    rt: &Runtime,
    pool: &[bf16],
    n: usize,
    hosts: usize,
    a: &Args,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let shape = prefill_shape(n);
    let split = SeqSplit::new(n, hosts)?;
    let data: Vec<HostData> = (0..hosts)
        .map(|r| host_data(rt, pool, &shape, &split, r))
        .collect();
    for method in METHODS {
        let params = method.params(&split);
        let mut samples = Vec::new();
        for i in 0..a.warmup + a.iters {
            let group = SimGroup::with_timing(rt, hosts)?;
            run_hosts(&group.comms(), |r, comm| {
                run_one(rt, comm, &shape, &params, method, &data[r])
            })?;
            let t = group.times()?;
            if i >= a.warmup {
                samples.push(t);
            }
        }
        let worst: Vec<f64> = samples
            .iter()
            .map(|t| t.host_ms.iter().copied().fold(0.0, f64::max))
            .collect();
        let m = median_index(&worst);
        rows.push(Row {
            n,
            hosts,
            mode: "sim",
            method: method.name().to_string(),
            ms: worst[m],
            host_ms: samples[m].host_ms.clone(),
            comm_ms: Some(samples[m].comm_ms),
            anchor: params.anchor,
            passing: params.passing,
        });
    }
    Ok(())
}

fn bench_nccl(
    rts: &[Runtime],
    pool: &[bf16],
    n: usize,
    a: &Args,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let hosts = rts.len();
    let shape = prefill_shape(n);
    let split = SeqSplit::new(n, hosts)?;
    let refs: Vec<&Runtime> = rts.iter().collect();
    let comms = nccl_group(&refs)?;
    let data: Vec<HostData> = (0..hosts)
        .map(|r| host_data(&rts[r], pool, &shape, &split, r))
        .collect();
    for method in METHODS {
        let params = method.params(&split);
        let per_host: Vec<Vec<f64>> = run_hosts(&comms, |r, comm| {
            let comm: &dyn Communicator = comm;
            let mut times = Vec::new();
            for i in 0..a.warmup + a.iters {
                comm.barrier()?;
                let t0 = Instant::now();
                run_one(&rts[r], comm, &shape, &params, method, &data[r])?;
                comm.barrier()?;
                if i >= a.warmup {
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            Ok(times)
        })?;
        let worst: Vec<f64> = (0..a.iters)
            .map(|i| per_host.iter().map(|h| h[i]).fold(0.0, f64::max))
            .collect();
        let m = median_index(&worst);
        rows.push(Row {
            n,
            hosts,
            mode: "nccl",
            method: method.name().to_string(),
            ms: worst[m],
            host_ms: per_host.iter().map(|h| h[m]).collect(),
            comm_ms: None,
            anchor: params.anchor,
            passing: params.passing,
        });
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = args();
    let gpus = device_count()?.max(0) as usize;
    if gpus == 0 {
        println!("no CUDA GPU: nothing to measure");
        return Ok(());
    }
    let rt0 = Runtime::new(0)?;
    let mut rng = Rng::new(7);
    let pool: Vec<bf16> = rng
        .normal_vec_in(1 << 20, Precision::Bf16)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    let nccl = a.nccl && nccl_present();
    println!(
        "{} x{gpus}; NCCL: {}",
        rt0.info().name,
        if nccl {
            format!("{}", nccl_version()?)
        } else if a.nccl {
            "libnccl.so.2 not found".into()
        } else {
            "off".into()
        }
    );
    let mut rows = Vec::new();
    let mut dense = Vec::new();
    for &n in &a.ns {
        let ms = bench_dense(&rt0, &pool, n, &a)?;
        dense.push((n, ms));
        for &hosts in &a.hosts {
            if a.sim {
                bench_sim(&rt0, &pool, n, hosts, &a, &mut rows)?;
            }
            if nccl && gpus >= hosts {
                let rts: Vec<Runtime> = (0..hosts)
                    .map(Runtime::new)
                    .collect::<flashgen_runtime::Result<_>>()?;
                bench_nccl(&rts, &pool, n, &a, &mut rows)?;
            } else if a.nccl {
                println!(
                    "n {n}, {hosts} hosts: no NCCL run ({gpus} GPU(s), NCCL {})",
                    if nccl { "present" } else { "absent" }
                );
            }
        }
    }

    println!();
    println!(
        "| n | hosts | mode | APB anchor / lp | APB ms | APB fixed-selection ms | ring ms | \
         star ms (anchor = block) | star ms (APB's anchor) | 1-GPU dense ms | APB vs ring | \
         APB vs dense | APB vs star |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut keys: Vec<(usize, usize, &str)> = rows.iter().map(|r| (r.n, r.hosts, r.mode)).collect();
    keys.dedup();
    for (n, hosts, mode) in keys {
        let get = |m: &str| {
            rows.iter()
                .find(|r| (r.n, r.hosts, r.mode, r.method.as_str()) == (n, hosts, mode, m))
                .expect("every method ran")
        };
        let (apb, fixed, ring, star, small) = (
            get("apb"),
            get("apb_fixed"),
            get("ring"),
            get("star"),
            get("star_small_anchor"),
        );
        let d = dense.iter().find(|x| x.0 == n).expect("dense ran").1;
        println!(
            "| {n} | {hosts} | {mode} | {} / {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | \
             {:.2}x | {:.2}x | {:.2}x |",
            apb.anchor,
            apb.passing,
            apb.ms,
            fixed.ms,
            ring.ms,
            star.ms,
            small.ms,
            d,
            ring.ms / apb.ms,
            d / apb.ms,
            star.ms / apb.ms
        );
    }
    println!();
    println!("per-host times (ms):");
    for r in &rows {
        let hosts: Vec<String> = r.host_ms.iter().map(|x| format!("{x:.2}")).collect();
        let comm = r
            .comm_ms
            .map(|c| format!(", copies {c:.2}"))
            .unwrap_or_default();
        println!(
            "  n {} {} hosts {} {}: [{}]{comm}",
            r.n,
            r.hosts,
            r.mode,
            r.method,
            hosts.join(", ")
        );
    }
    if let Some(path) = &a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            gpu: String,
            gpus: usize,
            dense_ms: Vec<(usize, f64)>,
            rows: &'a [Row],
        }
        let out = Out {
            gpu: rt0.info().name.clone(),
            gpus,
            dense_ms: dense,
            rows: &rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&out).expect("json"))
            .expect("write json");
    }
    Ok(())
}
