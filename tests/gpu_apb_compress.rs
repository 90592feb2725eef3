//! APB KV compression on the GPU against CPU references: top-k selection exact against a CPU
//! sort (ties, lp = local, lp = 1, NaN), gather exact, retaining-head and query-aware scores
//! against f64, and the three compressors end to end, in bf16 and f16. Needs a CUDA GPU: run with
//! `--include-ignored`. Tests named `sanitizer_*` are small and run under compute-sanitizer too.

// Test helpers take a whole shape.
#![allow(clippy::too_many_arguments)]

use flashgen_apb::{
    select_rows, top_k, Activation, Error, GivenScores, KvCompressor, LocalBlock, QueryAware,
    RetainingHeads, RetainingHeadsWeights, POOL_WIDTH,
};
use flashgen_reference::Rng;
use flashgen_runtime::cudarc::driver::CudaSlice;
use flashgen_runtime::Element;
use flashgen_runtime::{Layout, Runtime, Tensor};
use half::{bf16, f16};

fn runtime() -> Runtime {
    Runtime::new(0).unwrap_or_else(|e| panic!("GPU tests need a CUDA GPU: {e}"))
}

fn up<T: flashgen_runtime::cudarc::driver::DeviceRepr>(rt: &Runtime, x: &[T]) -> CudaSlice<T> {
    rt.stream().clone_htod(x).expect("upload")
}

fn down<T: flashgen_runtime::cudarc::driver::DeviceRepr + Default + Clone>(
    rt: &Runtime,
    x: &CudaSlice<T>,
) -> Vec<T> {
    rt.stream().clone_dtoh(x).expect("download")
}

/// The 16-bit element types under test.
trait Half: Element + Into<f32> + Default + std::fmt::Debug {
    /// A NaN with a payload: what an unwritten output element still holds.
    const POISON: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn bits(self) -> u16;
}

impl Half for bf16 {
    const POISON: Self = bf16::from_bits(0x7fc1);
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn bits(self) -> u16 {
        self.to_bits()
    }
}

impl Half for f16 {
    const POISON: Self = f16::from_bits(0x7e01);
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn bits(self) -> u16 {
        self.to_bits()
    }
}

fn random_half<T: Half>(rng: &mut Rng, n: usize, scale: f64) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f64(rng.uniform(-scale, scale)))
        .collect()
}

/// The local block's tensors on the device: q `[b, n, hq, d]`, k in BHSD (strided), v in BSHD,
/// and optionally the anchor query tokens `[b, nq, hq, d]`.
struct Block<T> {
    shape: (usize, usize, usize, usize, usize),
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    aq: Vec<T>,
    q_dev: CudaSlice<T>,
    k_dev: CudaSlice<T>,
    v_dev: CudaSlice<T>,
    aq_dev: CudaSlice<T>,
    q_layout: Layout,
    k_layout: Layout,
    v_layout: Layout,
    aq_layout: Layout,
}

impl<T: Half> Block<T> {
    fn new(
        rt: &Runtime,
        rng: &mut Rng,
        b: usize,
        n: usize,
        hq: usize,
        hkv: usize,
        d: usize,
        nq: usize,
        bhsd_k: bool,
    ) -> Self {
        let q_layout = Layout::bshd(b, n, hq, d);
        let k_layout = if bhsd_k {
            Layout::bhsd(b, n, hkv, d)
        } else {
            Layout::bshd(b, n, hkv, d)
        };
        let v_layout = Layout::bshd(b, n, hkv, d);
        let aq_layout = Layout::bshd(b, nq.max(1), hq, d);
        let q = random_half(rng, q_layout.numel(), 1.0);
        let k = random_half(rng, k_layout.numel(), 1.0);
        let v = random_half(rng, v_layout.numel(), 1.0);
        let aq = random_half(rng, aq_layout.numel(), 1.0);
        Block {
            shape: (b, n, hq, hkv, d),
            q_dev: up(rt, &q),
            k_dev: up(rt, &k),
            v_dev: up(rt, &v),
            aq_dev: up(rt, &aq),
            q,
            k,
            v,
            aq,
            q_layout,
            k_layout,
            v_layout,
            aq_layout,
        }
    }

    fn local(&self, with_query: bool) -> LocalBlock<'_, T> {
        LocalBlock {
            q: Tensor {
                data: &self.q_dev,
                layout: self.q_layout,
            },
            k: Tensor {
                data: &self.k_dev,
                layout: self.k_layout,
            },
            v: Tensor {
                data: &self.v_dev,
                layout: self.v_layout,
            },
            anchor_query: with_query.then_some(Tensor {
                data: &self.aq_dev,
                layout: self.aq_layout,
            }),
        }
    }

    fn outputs(&self, rt: &Runtime, lp: usize) -> (CudaSlice<T>, CudaSlice<T>) {
        let (b, _, _, hkv, d) = self.shape;
        let poison = vec![T::POISON; b * lp * hkv * d];
        (up(rt, &poison), up(rt, &poison))
    }

    /// The CPU gather of `positions` (`[b, hkv, lp]`) in `[b, lp, hkv, d]`.
    fn gathered(&self, positions: &[i32], lp: usize) -> (Vec<T>, Vec<T>) {
        let (b, _, _, hkv, d) = self.shape;
        let mut ok = Vec::with_capacity(b * lp * hkv * d);
        let mut ov = Vec::with_capacity(b * lp * hkv * d);
        for bi in 0..b {
            for i in 0..lp {
                for h in 0..hkv {
                    let p = positions[(bi * hkv + h) * lp + i] as usize;
                    for dd in 0..d {
                        ok.push(self.k[self.k_layout.offset(bi, p, h, dd)]);
                        ov.push(self.v[self.v_layout.offset(bi, p, h, dd)]);
                    }
                }
            }
        }
        (ok, ov)
    }

    /// Runs `c` and checks: positions = the CPU selection over `scores` (the GPU's own, so the
    /// check is exact), outputs = the CPU gather, bit for bit.
    fn check_compress(
        &self,
        rt: &Runtime,
        c: &dyn KvCompressor<T>,
        lp: usize,
        scores: &[f32],
        with_query: bool,
    ) {
        let (b, n, _, hkv, _) = self.shape;
        let (mut ok, mut ov) = self.outputs(rt, lp);
        let positions = c
            .compress(rt, &self.local(with_query), lp, &mut ok, &mut ov)
            .expect("compress");
        let positions = down(rt, &positions);
        assert_eq!(
            positions,
            select_rows(scores, n, lp),
            "selection, n {n} lp {lp}"
        );
        assert_eq!(positions.len(), b * hkv * lp);
        let (want_k, want_v) = self.gathered(&positions, lp);
        let (got_k, got_v) = (down(rt, &ok), down(rt, &ov));
        assert!(
            got_k.iter().zip(&want_k).all(|(a, b)| a.bits() == b.bits()),
            "gathered K differs"
        );
        assert!(
            got_v.iter().zip(&want_v).all(|(a, b)| a.bits() == b.bits()),
            "gathered V differs"
        );
    }
}

/// Relative L2 error of `got` against `want`; also asserts no NaN.
fn rel_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|x| x.is_finite()), "non-finite output");
    let (mut num, mut den) = (0.0, 0.0);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    (num / den.max(1e-300)).sqrt()
}

/// Random scores with the requested flavour of ties.
fn scores(rng: &mut Rng, len: usize, flavour: &str) -> Vec<f32> {
    (0..len)
        .map(|_| match flavour {
            "distinct" => rng.uniform(-4.0, 4.0) as f32,
            "ties" => rng.below(7) as f32 - 3.0,
            "mixed" => match rng.below(10) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => f32::INFINITY,
                3 => -0.0,
                4 => 0.0,
                5 => 1.0,
                _ => rng.uniform(-1.0, 1.0) as f32,
            },
            _ => unreachable!(),
        })
        .collect()
}

fn check_top_k(rt: &Runtime, rng: &mut Rng, rows: usize, n: usize, lp: usize, flavour: &str) {
    let s = scores(rng, rows * n, flavour);
    let dev = up(rt, &s);
    let got = down(rt, &top_k(rt, &dev, rows, n, lp).expect("top_k"));
    assert_eq!(
        got,
        select_rows(&s, n, lp),
        "top-k differs: rows {rows} n {n} lp {lp} {flavour}"
    );
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn top_k_is_exact_against_a_cpu_sort() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    for flavour in ["distinct", "ties", "mixed"] {
        for (rows, n, lp) in [
            (1, 1, 1),
            (3, 1000, 1),
            (3, 1000, 1000),
            (2, 1023, 511),
            (2, 1025, 1024),
            (5, 4097, 333),
            (8, 32768, 2048),
            (8, 32768, 4096),
            (2, 32768, 32768),
            (1, 100_003, 7),
        ] {
            check_top_k(&rt, &mut rng, rows, n, lp, flavour);
        }
    }
    // One value everywhere: the first lp positions.
    let flat = up(&rt, &vec![0.25f32; 3 * 5000]);
    let got = down(&rt, &top_k(&rt, &flat, 3, 5000, 1234).unwrap());
    let want: Vec<i32> = (0..3).flat_map(|_| 0..1234).collect();
    assert_eq!(got, want);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn top_k_rejects_bad_arguments() {
    let rt = runtime();
    let s = up(&rt, &[1.0f32; 20]);
    for (rows, n, lp) in [(2, 10, 0), (2, 10, 11), (3, 10, 5), (0, 10, 1)] {
        assert!(
            matches!(
                top_k(&rt, &s, rows, n, lp),
                Err(Error::InvalidArgument { .. })
            ),
            "rows {rows} n {n} lp {lp}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn given_scores_select_and_gather_exactly() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    check_given::<bf16>(&rt, &mut rng);
    check_given::<f16>(&rt, &mut rng);
}

fn check_given<T: Half>(rt: &Runtime, rng: &mut Rng) {
    for (b, n, hq, hkv, d, lp, bhsd) in [
        (1, 1, 4, 1, 64, 1, false),
        (2, 777, 8, 2, 128, 100, true),
        (2, 777, 8, 2, 128, 777, false),
        (1, 4097, 32, 8, 128, 512, true),
        (3, 300, 6, 3, 96, 17, false),
    ] {
        let block = Block::<T>::new(rt, rng, b, n, hq, hkv, d, 1, bhsd);
        let s = scores(
            rng,
            b * hkv * n,
            if n % 2 == 0 { "ties" } else { "distinct" },
        );
        let dev = up(rt, &s);
        block.check_compress(rt, &GivenScores::new(&dev), lp, &s, false);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn compressors_reject_bad_calls() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    let block = Block::<bf16>::new(&rt, &mut rng, 1, 50, 4, 2, 64, 3, false);
    let s = up(&rt, &vec![1.0f32; 100]);
    let given = GivenScores::new(&s);
    for lp in [0, 51] {
        let (mut ok, mut ov) = block.outputs(&rt, lp.max(1));
        let r = given.compress(&rt, &block.local(false), lp, &mut ok, &mut ov);
        assert!(
            matches!(r, Err(Error::InvalidArgument { arg: "lp", .. })),
            "lp {lp}"
        );
    }
    let (mut ok, mut ov) = block.outputs(&rt, 10);
    let r = given.compress(&rt, &block.local(false), 9, &mut ok, &mut ov);
    assert!(matches!(
        r,
        Err(Error::InvalidArgument { arg: "out_k", .. })
    ));
    let short = up(&rt, &vec![1.0f32; 99]);
    let r = GivenScores::new(&short).compress(&rt, &block.local(false), 10, &mut ok, &mut ov);
    assert!(matches!(
        r,
        Err(Error::InvalidArgument { arg: "scores", .. })
    ));
    let r = QueryAware::new().compress(&rt, &block.local(false), 10, &mut ok, &mut ov);
    assert!(matches!(
        r,
        Err(Error::InvalidArgument {
            arg: "local.anchor_query",
            ..
        })
    ));
}

/// f64 retaining heads: per token `fc2(act(fc1([q | k | v]) + b1)) + b2`, max-pooled.
fn retaining_reference<T: Half>(block: &Block<T>, w: &Weights<T>, act: Activation) -> Vec<f64> {
    let (b, n, hq, hkv, d) = block.shape;
    let inf = (hq + 2 * hkv) * d;
    let mut out = vec![0.0; b * hkv * n];
    let mut per_token = vec![0.0; b * n * hkv];
    for bi in 0..b {
        for t in 0..n {
            let mut x = Vec::with_capacity(inf);
            for h in 0..hq {
                for dd in 0..d {
                    x.push(block.q[block.q_layout.offset(bi, t, h, dd)].to_f64());
                }
            }
            for (data, layout) in [(&block.k, &block.k_layout), (&block.v, &block.v_layout)] {
                for h in 0..hkv {
                    for dd in 0..d {
                        x.push(data[layout.offset(bi, t, h, dd)].to_f64());
                    }
                }
            }
            let hidden: Vec<f64> = (0..w.hidden)
                .map(|j| {
                    let row = &w.fc1[j * inf..(j + 1) * inf];
                    let z: f64 = row.iter().zip(&x).map(|(a, b)| a.to_f64() * b).sum();
                    act.apply(z + w.b1[j].to_f64())
                })
                .collect();
            for h in 0..hkv {
                let row = &w.fc2[h * w.hidden..(h + 1) * w.hidden];
                per_token[(bi * n + t) * hkv + h] = row
                    .iter()
                    .zip(&hidden)
                    .map(|(a, b)| a.to_f64() * b)
                    .sum::<f64>()
                    + w.b2[h].to_f64();
            }
        }
    }
    let r = POOL_WIDTH / 2;
    for bi in 0..b {
        for h in 0..hkv {
            for t in 0..n {
                let (lo, hi) = (t.saturating_sub(r), (t + r).min(n - 1));
                out[(bi * hkv + h) * n + t] = (lo..=hi)
                    .map(|u| per_token[(bi * n + u) * hkv + h])
                    .fold(f64::NEG_INFINITY, f64::max);
            }
        }
    }
    out
}

struct Weights<T> {
    fc1: Vec<T>,
    b1: Vec<T>,
    fc2: Vec<T>,
    b2: Vec<T>,
    hidden: usize,
}

impl<T: Half> Weights<T> {
    fn random(rng: &mut Rng, hq: usize, hkv: usize, d: usize, hidden: usize) -> Self {
        let inf = (hq + 2 * hkv) * d;
        Weights {
            fc1: random_half(rng, hidden * inf, 2.0 / (inf as f64).sqrt()),
            b1: random_half(rng, hidden, 0.5),
            fc2: random_half(rng, hkv * hidden, 2.0 / (hidden as f64).sqrt()),
            b2: random_half(rng, hkv, 0.5),
            hidden,
        }
    }

    fn heads(
        &self,
        rt: &Runtime,
        hq: usize,
        hkv: usize,
        d: usize,
        act: Activation,
    ) -> RetainingHeads<T> {
        RetainingHeads::new(
            rt,
            hq,
            hkv,
            d,
            &RetainingHeadsWeights {
                fc1_weight: &self.fc1,
                fc1_bias: &self.b1,
                fc2_weight: &self.fc2,
                fc2_bias: &self.b2,
                hidden: self.hidden,
                activation: act,
            },
        )
        .expect("retaining heads")
    }
}

fn check_retaining<T: Half>(
    rt: &Runtime,
    rng: &mut Rng,
    b: usize,
    n: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    hidden: usize,
    lp: usize,
) {
    for act in [Activation::Relu, Activation::Silu, Activation::GeluTanh] {
        let block = Block::<T>::new(rt, rng, b, n, hq, hkv, d, 1, false);
        let w = Weights::<T>::random(rng, hq, hkv, d, hidden);
        let heads = w.heads(rt, hq, hkv, d, act);
        let got = down(rt, &heads.scores(rt, &block.local(false)).expect("scores"));
        let err = rel_error(&got, &retaining_reference(&block, &w, act));
        assert!(
            err < 1e-2,
            "retaining heads {act:?} b{b} n{n} h{hq}/{hkv} d{d} hidden {hidden}: rel error {err}"
        );
        block.check_compress(rt, &heads, lp, &got, false);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn retaining_head_scores_match_an_f64_mlp_and_compress_end_to_end() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    check_retaining::<bf16>(&rt, &mut rng, 2, 77, 4, 2, 64, 48, 30);
    check_retaining::<bf16>(&rt, &mut rng, 1, 301, 8, 2, 128, 96, 64);
    check_retaining::<bf16>(&rt, &mut rng, 1, 3, 2, 1, 32, 5, 3);
    check_retaining::<f16>(&rt, &mut rng, 2, 99, 8, 4, 64, 40, 50);
}

/// f64 query-aware scores: softmax over the local keys per (query head, token), summed over
/// the group's heads and the tokens.
fn query_aware_reference<T: Half>(block: &Block<T>, nq: usize, scale: f64) -> Vec<f64> {
    let (b, n, hq, hkv, d) = block.shape;
    let group = hq / hkv;
    let mut out = vec![0.0; b * hkv * n];
    for bi in 0..b {
        for h in 0..hq {
            let hk = h / group;
            for t in 0..nq {
                let logits: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..d)
                            .map(|dd| {
                                block.aq[block.aq_layout.offset(bi, t, h, dd)].to_f64()
                                    * block.k[block.k_layout.offset(bi, j, hk, dd)].to_f64()
                            })
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                for (j, l) in logits.iter().enumerate() {
                    out[(bi * hkv + hk) * n + j] += (l - m).exp() / z;
                }
            }
        }
    }
    out
}

fn check_query_aware<T: Half>(
    rt: &Runtime,
    rng: &mut Rng,
    b: usize,
    n: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    nq: usize,
    lp: usize,
) {
    let block = Block::<T>::new(rt, rng, b, n, hq, hkv, d, nq, true);
    let want = query_aware_reference(&block, nq, 1.0 / (d as f64).sqrt());
    // The cuBLAS path (all kv heads at once, then one at a time), the tile kernels, and a
    // budget below one kv head's logits (the tile kernels again).
    let one_head = (hq / hkv) * nq * n * 4;
    for (path, qa) in [
        ("cublas", QueryAware::new()),
        (
            "cublas, one kv head a pass",
            QueryAware::new().with_logit_budget(one_head),
        ),
        ("tiled", QueryAware::new().tiled()),
        (
            "over budget",
            QueryAware::new().with_logit_budget(one_head - 1),
        ),
    ] {
        let got = down(rt, &qa.scores(rt, &block.local(true)).expect("scores"));
        let err = rel_error(&got, &want);
        assert!(
            err < 1e-3,
            "query-aware ({path}) b{b} n{n} h{hq}/{hkv} d{d} nq{nq}: rel error {err}"
        );
        block.check_compress(rt, &qa, lp, &got, true);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn query_aware_scores_match_f64_and_compress_end_to_end() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    check_query_aware::<bf16>(&rt, &mut rng, 2, 300, 8, 2, 96, 5, 40);
    check_query_aware::<bf16>(&rt, &mut rng, 1, 1000, 32, 8, 128, 9, 128);
    check_query_aware::<bf16>(&rt, &mut rng, 1, 1, 4, 4, 64, 1, 1);
    check_query_aware::<bf16>(&rt, &mut rng, 1, 129, 4, 1, 256, 33, 129);
    check_query_aware::<f16>(&rt, &mut rng, 2, 257, 8, 2, 128, 7, 64);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_select_and_gather() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    check_top_k(&rt, &mut rng, 2, 1500, 700, "mixed");
    let block = Block::<bf16>::new(&rt, &mut rng, 2, 130, 4, 2, 64, 1, true);
    let s = scores(&mut rng, 2 * 2 * 130, "ties");
    let dev = up(&rt, &s);
    block.check_compress(&rt, &GivenScores::new(&dev), 33, &s, false);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_retaining_heads() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    check_retaining::<bf16>(&rt, &mut rng, 2, 70, 4, 2, 64, 40, 20);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_query_aware() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    check_query_aware::<bf16>(&rt, &mut rng, 2, 130, 4, 2, 96, 3, 20);
    check_query_aware::<f16>(&rt, &mut rng, 1, 70, 4, 1, 64, 2, 10);
}
