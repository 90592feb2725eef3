//! Helpers shared by the integration tests: a direct, unoptimised implementation of the
//! semantics (one key at a time through `Mask::visible`) and random problem inputs.

#![allow(dead_code)]

use flashgen_reference::{Mask, Rng, Shape};

/// Direct attention over contiguous BSHD inputs: returns (o `[b, sq, hq, d]`, lse `[b, hq, sq]`).
pub fn naive(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: &Shape,
    mask: &Mask,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut o = vec![0.0; s.q_len()];
    let mut lse = vec![f64::NEG_INFINITY; s.lse_len()];
    let group = s.hq / s.hkv;
    for b in 0..s.batch {
        for h in 0..s.hq {
            let g = h / group;
            for i in 0..s.sq {
                let qi = &q[((b * s.sq + i) * s.hq + h) * s.d..][..s.d];
                let mut scores = Vec::new();
                for j in 0..s.sk {
                    if mask.visible(b, h, i, j, s.sq, s.sk) {
                        let kj = &k[((b * s.sk + j) * s.hkv + g) * s.d..][..s.d];
                        let dot: f64 = qi
                            .iter()
                            .zip(kj)
                            .map(|(&x, &y)| f64::from(x) * f64::from(y))
                            .sum();
                        scores.push((j, scale * dot));
                    }
                }
                if scores.is_empty() {
                    continue;
                }
                let max = scores
                    .iter()
                    .map(|&(_, s)| s)
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|&(_, s)| (s - max).exp()).sum();
                lse[(b * s.hq + h) * s.sq + i] = max + sum.ln();
                let oi = &mut o[((b * s.sq + i) * s.hq + h) * s.d..][..s.d];
                for &(j, sc) in &scores {
                    let p = (sc - max).exp() / sum;
                    let vj = &v[((b * s.sk + j) * s.hkv + g) * s.d..][..s.d];
                    for (o, &x) in oi.iter_mut().zip(vj) {
                        *o += p * f64::from(x);
                    }
                }
            }
        }
    }
    (o, lse)
}

/// Random Q, K, V for `shape`.
pub fn qkv(rng: &mut Rng, shape: &Shape) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        rng.normal_vec(shape.q_len()),
        rng.normal_vec(shape.kv_len()),
        rng.normal_vec(shape.kv_len()),
    )
}

/// Largest elementwise difference; -inf == -inf counts as 0, any other non-finite mismatch as inf.
pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x == y {
                0.0
            } else if x.is_finite() && y.is_finite() {
                (x - y).abs()
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

/// Asserts two (o, lse) pairs agree to `tol`, naming the case and seed on failure.
pub fn assert_same(what: &str, seed: u64, got: (&[f64], &[f64]), want: (&[f64], &[f64]), tol: f64) {
    let (do_, dl) = (max_diff(got.0, want.0), max_diff(got.1, want.1));
    assert!(
        do_ <= tol && dl <= tol,
        "{what} (seed {seed}): max |dO| = {do_:e}, max |dlse| = {dl:e}, tolerance {tol:e}"
    );
}
