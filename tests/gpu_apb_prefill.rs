//! Multi-host prefill (APB, star and ring attention) against the f64 reference: N simulated
//! hosts on one GPU, and real NCCL ranks (one per GPU) against the simulated run.

use flashgen_apb::multigpu::{nccl_group, nccl_present, run_hosts, Communicator, SimGroup};
use flashgen_apb::prefill::{apb_prefill, ApbParams, HostBlock, PrefillShape, SeqSplit};
use flashgen_apb::ring::ring_prefill;
use flashgen_apb::star::star_prefill;
use flashgen_apb::{Error, GivenSelection, QueryAware};
use flashgen_reference as reference;
use flashgen_reference::{
    attention_bshd, check_close, check_lse, Mask, Precision, Rng, Shape, Tolerance,
};
use flashgen_runtime::cudarc::driver::CudaSlice;
use flashgen_runtime::{device_count, Runtime};
use half::bf16;

/// A whole problem on the host: Q `[batch, n, hq, d]`, K and V `[batch, n, hkv, d]`.
struct Problem {
    shape: PrefillShape,
    params: ApbParams,
    hosts: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    seed: u64,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    n: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    hosts: usize,
    anchor: usize,
    lp: usize,
    anchor_query: usize,
}

impl Problem {
    fn new(c: Case) -> Self {
        let mut rng = Rng::fresh();
        let shape = PrefillShape {
            batch: c.batch,
            n: c.n,
            heads_q: c.hq,
            heads_kv: c.hkv,
            dim: c.d,
        };
        Problem {
            shape,
            params: ApbParams {
                anchor: c.anchor,
                passing: c.lp,
                anchor_query: c.anchor_query,
                scale: None,
            },
            hosts: c.hosts,
            q: rng.normal_vec_in(c.batch * c.n * c.hq * c.d, Precision::Bf16),
            k: rng.normal_vec_in(c.batch * c.n * c.hkv * c.d, Precision::Bf16),
            v: rng.normal_vec_in(c.batch * c.n * c.hkv * c.d, Precision::Bf16),
            seed: rng.seed(),
        }
    }

    fn split(&self) -> SeqSplit {
        SeqSplit::new(self.shape.n, self.hosts).unwrap()
    }

    /// Tokens `start..start + len` of every sequence of `data` (`heads` heads).
    fn rows(&self, data: &[f32], heads: usize, start: usize, len: usize) -> Vec<f32> {
        let (n, d) = (self.shape.n, self.shape.dim);
        let row = heads * d;
        let mut out = Vec::with_capacity(self.shape.batch * len * row);
        for b in 0..self.shape.batch {
            let at = (b * n + start) * row;
            out.extend_from_slice(&data[at..at + len * row]);
        }
        out
    }

    fn block(&self, r: usize) -> [Vec<f32>; 3] {
        let s = self.split();
        let (start, len) = (s.start(r), s.len(r));
        [
            self.rows(&self.q, self.shape.heads_q, start, len),
            self.rows(&self.k, self.shape.heads_kv, start, len),
            self.rows(&self.v, self.shape.heads_kv, start, len),
        ]
    }

    /// Host `r`'s selection: per (batch, kv head) the `lp` positions whose keys have the largest
    /// sum of |k| over the head dim, ascending. Empty for the last host (it does not compress).
    fn selection(&self, r: usize) -> Vec<i32> {
        if r + 1 == self.hosts {
            return Vec::new();
        }
        let [_, k, _] = self.block(r);
        let (len, hkv, d, lp) = (
            self.split().len(r),
            self.shape.heads_kv,
            self.shape.dim,
            self.params.passing,
        );
        let mut out = Vec::new();
        for b in 0..self.shape.batch {
            for h in 0..hkv {
                let mut score: Vec<(f32, usize)> = (0..len)
                    .map(|j| {
                        let at = ((b * len + j) * hkv + h) * d;
                        (k[at..at + d].iter().map(|x| x.abs()).sum(), j)
                    })
                    .collect();
                score.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                let mut keep: Vec<i32> = score[..lp].iter().map(|&(_, j)| j as i32).collect();
                keep.sort_unstable();
                out.extend(keep);
            }
        }
        out
    }

    /// Reference of host `r`: causal on host 0; else the APB mask over
    /// `[anchor | passing of hosts 0..r from `selected` | local]` (`lp` 0: star attention).
    fn apb_reference(&self, r: usize, lp: usize, selected: &[Vec<i32>]) -> reference::Output {
        let s = self.split();
        let (b, hq, hkv, d) = (
            self.shape.batch,
            self.shape.heads_q,
            self.shape.heads_kv,
            self.shape.dim,
        );
        let [q, k, v] = self.block(r);
        let len = s.len(r);
        if r == 0 {
            let shape = Shape::new(b, len, len, hq, hkv, d);
            return attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap();
        }
        let a = self.params.anchor;
        let p = a + r * lp;
        let sk = p + len;
        let n = self.shape.n;
        let gather = |full: &[f32], local: &[f32]| {
            let mut out = vec![0f32; b * sk * hkv * d];
            for bi in 0..b {
                for h in 0..hkv {
                    let mut put = |j: usize, src: &[f32]| {
                        let at = ((bi * sk + j) * hkv + h) * d;
                        out[at..at + d].copy_from_slice(src);
                    };
                    for j in 0..a {
                        let at = ((bi * n + j) * hkv + h) * d;
                        put(j, &full[at..at + d]);
                    }
                    for (host, sel) in selected.iter().enumerate().take(r) {
                        for t in 0..lp {
                            let pos = s.start(host) + sel[(bi * hkv + h) * lp + t] as usize;
                            let at = ((bi * n + pos) * hkv + h) * d;
                            put(a + host * lp + t, &full[at..at + d]);
                        }
                    }
                    for j in 0..len {
                        let at = ((bi * len + j) * hkv + h) * d;
                        put(p + j, &local[at..at + d]);
                    }
                }
            }
            out
        };
        let (kx, vx) = (gather(&self.k, &k), gather(&self.v, &v));
        let shape = Shape::new(b, len, sk, hq, hkv, d);
        attention_bshd(&q, &kx, &vx, &shape, &Mask::apb(a, r * lp), None).unwrap()
    }

    /// Full causal attention restricted to host `r`'s queries.
    fn causal_reference(&self, r: usize) -> reference::Output {
        let s = self.split();
        let (b, hq, hkv, d) = (
            self.shape.batch,
            self.shape.heads_q,
            self.shape.heads_kv,
            self.shape.dim,
        );
        let [q, _, _] = self.block(r);
        let sk = s.start(r) + s.len(r);
        let k = self.rows(&self.k, hkv, 0, sk);
        let v = self.rows(&self.v, hkv, 0, sk);
        let shape = Shape::new(b, s.len(r), sk, hq, hkv, d);
        attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap()
    }
}

fn upload(rt: &Runtime, x: &[f32]) -> CudaSlice<bf16> {
    let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    rt.stream().clone_htod(&h).unwrap()
}

struct Blocks {
    q: CudaSlice<bf16>,
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
}

impl Blocks {
    fn new(rt: &Runtime, p: &Problem, r: usize) -> Self {
        let [q, k, v] = p.block(r);
        Blocks {
            q: upload(rt, &q),
            k: upload(rt, &k),
            v: upload(rt, &v),
        }
    }

    fn host(&self) -> HostBlock<'_, bf16> {
        HostBlock {
            q: &self.q,
            k: &self.k,
            v: &self.v,
        }
    }
}

/// What one host returned, on the host.
#[derive(Clone, Debug, Default)]
struct HostOut {
    o: Vec<bf16>,
    lse: Vec<f32>,
    selected: Vec<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Apb,
    Star,
    Ring,
}

/// Runs `method` on the hosts of `comms`; `rts[r]` is host r's runtime.
fn run_method<C: Communicator>(
    rts: &[&Runtime],
    comms: &[C],
    p: &Problem,
    method: Method,
) -> flashgen_apb::Result<Vec<HostOut>> {
    let s = p.split();
    let blocks: Vec<Blocks> = (0..p.hosts).map(|r| Blocks::new(rts[r], p, r)).collect();
    let selections: Vec<GivenSelection> = (0..p.hosts)
        .map(|r| {
            let sel = p.selection(r);
            let lp = if sel.is_empty() { 0 } else { p.params.passing };
            GivenSelection::new(rts[r], &sel, p.shape.batch, p.shape.heads_kv, lp, s.len(r))
                .unwrap()
        })
        .collect();
    run_hosts(comms, |r, comm| {
        let rt = rts[r];
        let comm: &dyn Communicator = comm;
        let host = blocks[r].host();
        let down = |x: &CudaSlice<bf16>| rt.stream().clone_dtoh(x).unwrap();
        Ok(match method {
            Method::Apb => {
                let out = apb_prefill(rt, comm, &p.shape, &p.params, &selections[r], host)?;
                HostOut {
                    o: down(&out.o),
                    selected: out
                        .selected
                        .map(|x| rt.stream().clone_dtoh(&x).unwrap())
                        .unwrap_or_default(),
                    ..Default::default()
                }
            }
            Method::Star => HostOut {
                o: down(&star_prefill(rt, comm, &p.shape, &p.params, host)?),
                ..Default::default()
            },
            Method::Ring => {
                let out = ring_prefill(rt, comm, &p.shape, &p.params, host)?;
                HostOut {
                    o: down(&out.o),
                    lse: rt.stream().clone_dtoh(&out.lse).unwrap(),
                    ..Default::default()
                }
            }
        })
    })
}

fn simulated(rt: &Runtime, p: &Problem, method: Method) -> Vec<HostOut> {
    let group = SimGroup::new(rt, p.hosts).unwrap();
    let rts = vec![rt; p.hosts];
    run_method(&rts, &group.comms(), p, method).unwrap()
}

fn o_len(p: &Problem, r: usize) -> usize {
    p.shape.q_layout(p.split().len(r)).numel()
}

fn lse_len(p: &Problem, r: usize) -> usize {
    p.shape.batch * p.shape.heads_q * p.split().len(r)
}

fn check_apb_case(rt: &Runtime, c: Case) {
    let p = Problem::new(c);
    let outs = simulated(rt, &p, Method::Apb);
    let lp = p.params.passing;
    let selected: Vec<Vec<i32>> = (0..p.hosts)
        .map(|r| {
            let sel = &outs[r].selected;
            if r + 1 < p.hosts && lp > 0 {
                assert_eq!(sel.len(), c.batch * c.hkv * lp, "{c:?}: host {r} selection");
                assert_eq!(
                    *sel,
                    p.selection(r),
                    "{c:?}: host {r} returned other positions"
                );
            }
            sel[..].to_vec()
        })
        .collect();
    for (r, out) in outs.iter().enumerate() {
        let reference = p.apb_reference(r, lp, &selected);
        let tol = Tolerance::rel(1e-2).with_shape(&[c.batch, p.split().len(r), c.hq, c.d]);
        if let Err(e) = check_close(&out.o[..o_len(&p, r)], &reference.o, &tol) {
            panic!("APB {c:?}, host {r} (seed {}): {e}", p.seed);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn simulated_apb_equals_the_reference_of_the_selected_positions() {
    let rt = Runtime::new(0).unwrap();
    let base = Case {
        batch: 1,
        n: 700,
        hq: 8,
        hkv: 2,
        d: 128,
        hosts: 2,
        anchor: 64,
        lp: 32,
        anchor_query: 0,
    };
    for c in [
        base,
        // Three hosts, uneven blocks (334, 333, 333), MQA, d64, anchor queries broadcast.
        Case {
            n: 1000,
            hq: 4,
            hkv: 1,
            d: 64,
            hosts: 3,
            anchor: 100,
            lp: 50,
            anchor_query: 16,
            ..base
        },
        // Four hosts, anchor 0, batch 2, uneven (258, 258, 257, 257), no GQA.
        Case {
            batch: 2,
            n: 1030,
            hq: 4,
            hkv: 4,
            hosts: 4,
            anchor: 0,
            lp: 40,
            ..base
        },
        // Awkward sizes: lp 1, anchor 33, GQA 16/4.
        Case {
            n: 515,
            hq: 16,
            hkv: 4,
            hosts: 4,
            anchor: 33,
            lp: 1,
            ..base
        },
        // lp = 0 (nothing passed: star attention through the APB path).
        Case {
            n: 600,
            hosts: 3,
            anchor: 50,
            lp: 0,
            ..base
        },
        // lp = the whole block of the shortest compressing host.
        Case {
            n: 301,
            hosts: 3,
            anchor: 10,
            lp: 100,
            ..base
        },
        // One host: plain causal attention.
        Case {
            n: 333,
            hosts: 1,
            anchor: 20,
            lp: 0,
            ..base
        },
    ] {
        check_apb_case(&rt, c);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn simulated_star_equals_anchor_plus_local() {
    let rt = Runtime::new(0).unwrap();
    for (n, hosts, anchor) in [(900, 3, 128), (517, 4, 0), (400, 2, 200)] {
        let c = Case {
            batch: 1,
            n,
            hq: 8,
            hkv: 2,
            d: 128,
            hosts,
            anchor,
            lp: 0,
            anchor_query: 0,
        };
        let p = Problem::new(c);
        let outs = simulated(&rt, &p, Method::Star);
        for (r, out) in outs.iter().enumerate() {
            let reference = p.apb_reference(r, 0, &[]);
            if let Err(e) = check_close(&out.o, &reference.o, &Tolerance::rel(1e-2)) {
                panic!("star {c:?}, host {r} (seed {}): {e}", p.seed);
            }
        }
    }
}

fn check_ring_case(rt: &Runtime, c: Case) {
    let p = Problem::new(c);
    let outs = simulated(rt, &p, Method::Ring);
    for (r, out) in outs.iter().enumerate() {
        let reference = p.causal_reference(r);
        let tol = Tolerance::rel(1e-2).with_shape(&[c.batch, p.split().len(r), c.hq, c.d]);
        if let Err(e) = check_close(&out.o[..o_len(&p, r)], &reference.o, &tol) {
            panic!("ring {c:?}, host {r} (seed {}): {e}", p.seed);
        }
        if let Err(e) = check_lse(&out.lse[..lse_len(&p, r)], &reference.lse, 1e-3, None) {
            panic!("ring lse {c:?}, host {r} (seed {}): {e}", p.seed);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn simulated_ring_attention_equals_full_causal_attention() {
    let rt = Runtime::new(0).unwrap();
    let base = Case {
        batch: 1,
        n: 640,
        hq: 8,
        hkv: 2,
        d: 128,
        hosts: 2,
        anchor: 0,
        lp: 0,
        anchor_query: 0,
    };
    for c in [
        base,
        Case {
            n: 1001,
            hosts: 3,
            hq: 4,
            hkv: 1,
            d: 64,
            ..base
        },
        Case {
            batch: 2,
            n: 777,
            hosts: 4,
            hq: 8,
            hkv: 8,
            ..base
        },
        Case {
            n: 259,
            hosts: 1,
            ..base
        },
    ] {
        check_ring_case(&rt, c);
    }
}

/// Small runs of every new kernel (merge, finish, gather) for compute-sanitizer.
#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_small_apb_and_ring() {
    let rt = Runtime::new(0).unwrap();
    let c = Case {
        batch: 1,
        n: 200,
        hq: 4,
        hkv: 2,
        d: 64,
        hosts: 3,
        anchor: 16,
        lp: 8,
        anchor_query: 4,
    };
    check_apb_case(&rt, c);
    check_ring_case(&rt, c);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn simulated_hosts_that_disagree_fail_instead_of_hanging() {
    let rt = Runtime::new(0).unwrap();
    let group = SimGroup::new(&rt, 3).unwrap();
    let buf = rt.stream().alloc_zeros::<u8>(12).unwrap();
    // Host 1 calls another collective than the others.
    let result = run_hosts(&group.comms(), |r, comm| {
        let comm: &dyn Communicator = comm;
        if r == 1 {
            comm.barrier()
        } else {
            let mut recv = rt.stream().alloc_zeros::<u8>(12).unwrap();
            comm.all_gather(&buf, 4, &mut recv)
        }
    });
    match result {
        Err(Error::Communicator(m)) => assert!(m.contains("called"), "{m}"),
        other => panic!("expected a communicator error, got {other:?}"),
    }
    // Host 0 fails before the collective the others wait in.
    let group = SimGroup::new(&rt, 3).unwrap();
    let result: flashgen_apb::Result<Vec<()>> = run_hosts(&group.comms(), |r, comm| {
        if r == 0 {
            return Err(Error::InvalidArgument {
                arg: "test",
                reason: "host 0 gives up".into(),
            });
        }
        comm.barrier()
    });
    match result {
        Err(Error::InvalidArgument { reason, .. }) => assert_eq!(reason, "host 0 gives up"),
        other => panic!("expected host 0's own error first, got {other:?}"),
    }
    // Sizes that do not match.
    let group = SimGroup::new(&rt, 2).unwrap();
    let result = run_hosts(&group.comms(), |r, comm| {
        let comm: &dyn Communicator = comm;
        let mut recv = rt.stream().alloc_zeros::<u8>(12).unwrap();
        comm.all_gather(&buf, 2 + r, &mut recv)
    });
    assert!(matches!(result, Err(Error::Communicator(_))), "{result:?}");
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn real_nccl_run_equals_the_simulated_run() {
    let gpus = device_count().unwrap_or(0).max(0) as usize;
    if gpus < 2 {
        println!("skipped: {gpus} GPU(s); the NCCL run needs at least 2");
        return;
    }
    if !nccl_present() {
        println!("skipped: libnccl.so.2 is not on the loader path");
        return;
    }
    let hosts = gpus.min(4);
    let rts: Vec<Runtime> = (0..hosts).map(|i| Runtime::new(i).unwrap()).collect();
    let refs: Vec<&Runtime> = rts.iter().collect();
    let comms = nccl_group(&refs).unwrap();
    let c = Case {
        batch: 1,
        n: 1025,
        hq: 8,
        hkv: 2,
        d: 128,
        hosts,
        anchor: 64,
        lp: 48,
        anchor_query: 8,
    };
    let p = Problem::new(c);
    for method in [Method::Apb, Method::Star, Method::Ring] {
        let real = run_method(&refs, &comms, &p, method).unwrap();
        let sim = simulated(&rts[0], &p, method);
        for r in 0..hosts {
            let want: Vec<f64> = sim[r].o.iter().map(|x| x.to_f64()).collect();
            let report =
                check_close(&real[r].o, &want, &Tolerance::rel(1e-6)).unwrap_or_else(|e| {
                    panic!("{method:?} host {r}: NCCL differs from simulated: {e}")
                });
            println!(
                "{method:?} host {r}: NCCL vs simulated max abs diff {:.3e}",
                report.max_abs_error
            );
            assert_eq!(real[r].selected, sim[r].selected, "{method:?} host {r}");
        }
    }
    println!("NCCL run on {hosts} GPUs equals the simulated run");
}

/// The NCCL calls themselves (library, id, communicator, all-gather, broadcast, grouped
/// send/recv, barrier) on a one-rank communicator, which a single GPU can run.
#[test]
#[ignore = "needs a CUDA GPU"]
fn nccl_collectives_on_one_rank() {
    if !nccl_present() {
        println!("skipped: libnccl.so.2 is not on the loader path");
        return;
    }
    let rt = Runtime::new(0).unwrap();
    let comms = nccl_group(&[&rt]).unwrap();
    let comm: &dyn Communicator = &comms[0];
    assert_eq!((comm.rank(), comm.world_size()), (0, 1));
    let data: Vec<i32> = (1..=1000).collect();
    let send = rt.stream().clone_htod(&data).unwrap();
    let mut recv = rt.stream().alloc_zeros::<i32>(1000).unwrap();
    comm.all_gather(&send, 1000, &mut recv).unwrap();
    assert_eq!(rt.stream().clone_dtoh(&recv).unwrap(), data);
    let mut buf = rt.stream().clone_htod(&data).unwrap();
    comm.broadcast(&mut buf, 1000, 0).unwrap();
    assert_eq!(rt.stream().clone_dtoh(&buf).unwrap(), data);
    let mut got = rt.stream().alloc_zeros::<i32>(1000).unwrap();
    comm.exchange(&[(0, &send, 600)], &mut [(0, &mut got, 600)])
        .unwrap();
    let back = rt.stream().clone_dtoh(&got).unwrap();
    assert_eq!(back[..600], data[..600]);
    assert!(back[600..].iter().all(|&x| x == 0));
    comm.barrier().unwrap();
    // Too small a receive buffer is refused before NCCL sees it.
    let mut small = rt.stream().alloc_zeros::<i32>(10).unwrap();
    assert!(comm.all_gather(&send, 1000, &mut small).is_err());
    // Every method on one NCCL rank equals plain causal attention.
    let p = Problem::new(Case {
        batch: 1,
        n: 300,
        hq: 4,
        hkv: 2,
        d: 128,
        hosts: 1,
        anchor: 0,
        lp: 0,
        anchor_query: 0,
    });
    for method in [Method::Apb, Method::Star, Method::Ring] {
        let out = run_method(&[&rt], &comms, &p, method).unwrap();
        let reference = p.causal_reference(0);
        check_close(&out[0].o, &reference.o, &Tolerance::rel(1e-2))
            .unwrap_or_else(|e| panic!("{method:?} on one NCCL rank: {e}"));
    }
}

/// APB with the built-in query-aware compressor on simulated hosts: whatever positions it
/// selects, each host's output equals the reference built from those positions.
#[test]
#[ignore = "needs a CUDA GPU"]
fn simulated_apb_with_the_query_aware_compressor() {
    let rt = Runtime::new(0).unwrap();
    for c in [
        Case {
            batch: 1,
            n: 1001,
            hq: 8,
            hkv: 2,
            d: 128,
            hosts: 3,
            anchor: 96,
            lp: 40,
            anchor_query: 24,
        },
        Case {
            batch: 2,
            n: 800,
            hq: 4,
            hkv: 4,
            d: 64,
            hosts: 4,
            anchor: 64,
            lp: 17,
            anchor_query: 64,
        },
    ] {
        let p = Problem::new(c);
        let group = SimGroup::new(&rt, p.hosts).unwrap();
        let blocks: Vec<Blocks> = (0..p.hosts).map(|r| Blocks::new(&rt, &p, r)).collect();
        let compressor = QueryAware::new();
        let outs = run_hosts(&group.comms(), |r, comm| {
            let comm: &dyn Communicator = comm;
            let out = apb_prefill(
                &rt,
                comm,
                &p.shape,
                &p.params,
                &compressor,
                blocks[r].host(),
            )?;
            let selected = out
                .selected
                .map(|x| rt.stream().clone_dtoh(&x).unwrap())
                .unwrap_or_default();
            Ok((rt.stream().clone_dtoh(&out.o).unwrap(), selected))
        })
        .unwrap();
        let selected: Vec<Vec<i32>> = outs.iter().map(|o| o.1.clone()).collect();
        for (r, sel) in selected.iter().enumerate().take(p.hosts - 1) {
            let len = p.split().len(r) as i32;
            assert_eq!(sel.len(), c.batch * c.hkv * c.lp, "{c:?} host {r}");
            for list in sel.chunks(c.lp) {
                assert!(
                    list.windows(2).all(|w| w[0] < w[1]),
                    "{c:?} host {r}: {list:?}"
                );
                assert!(
                    list.iter().all(|&i| (0..len).contains(&i)),
                    "{c:?} host {r}"
                );
            }
        }
        for (r, (o, _)) in outs.iter().enumerate() {
            let reference = p.apb_reference(r, c.lp, &selected);
            if let Err(e) = check_close(o, &reference.o, &Tolerance::rel(1e-2)) {
                panic!("query-aware APB {c:?}, host {r} (seed {}): {e}", p.seed);
            }
        }
    }
}
