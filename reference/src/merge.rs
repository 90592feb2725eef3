//! Merging partial results computed over disjoint key sets (ring attention, split-KV decode,
//! APB's partial blocks) through their log-sum-exp.

use crate::attention::Output;

/// Merges two partial outputs over disjoint key sets of the same queries: per row,
/// `lse = log(exp(lse_a) + exp(lse_b))` and `o = exp(lse_a - lse) o_a + exp(lse_b - lse) o_b`.
/// A row empty in both stays `O = 0`, `lse = -inf`.
///
/// # Panics
/// If the outputs differ in rows, heads or head dimension.
pub fn merge(a: &Output, b: &Output) -> Output {
    assert!(
        a.rows == b.rows && a.heads == b.heads && a.dim == b.dim,
        "merge needs outputs of the same rows, heads and head dimension"
    );
    let mut out = a.clone();
    for batch in 0..a.batch() {
        for h in 0..a.heads {
            for i in 0..a.seqlen(batch) {
                let (la, lb) = (a.lse_at(batch, h, i), b.lse_at(batch, h, i));
                let lse = log_add_exp(la, lb);
                let at = out.lse_offset(batch, h, i);
                out.lse[at] = lse;
                let at = out.o_offset(batch, h, i);
                let (oa, ob) = (a.o_row(batch, h, i), b.o_row(batch, h, i));
                let (wa, wb) = if lse == f64::NEG_INFINITY {
                    (0.0, 0.0)
                } else {
                    ((la - lse).exp(), (lb - lse).exp())
                };
                for (d, o) in out.o[at..at + a.dim].iter_mut().enumerate() {
                    *o = wa * oa[d] + wb * ob[d];
                }
            }
        }
    }
    out
}

/// `log(exp(a) + exp(b))` without overflow; `-inf` when both are `-inf`.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_add_exp_values() {
        assert_eq!(
            log_add_exp(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert_eq!(log_add_exp(f64::NEG_INFINITY, 2.0), 2.0);
        assert!((log_add_exp(0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
        assert!((log_add_exp(1000.0, 1000.0) - (1000.0 + 2f64.ln())).abs() < 1e-12);
    }
}
