//! The correctness gate: a candidate's output, written over NaN poison, must match the trusted
//! result (the default tile's output on the same inputs) before the candidate may win.

/// Largest relative L2 error of O against the trusted output.
pub const MAX_REL_L2: f64 = 1e-2;

/// Largest absolute error of the log-sum-exp (f32, natural log) against the trusted one.
pub const MAX_LSE_ABS: f64 = 1e-2;

/// What the gate measured for a passing candidate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateReport {
    pub rel_l2: f64,
    pub lse_max_abs: Option<f64>,
}

/// Checks that the trusted output is usable as a reference: every element written (no NaN).
pub fn check_reference(o: &[f32], lse: Option<&[f32]>) -> Result<(), String> {
    if let Some(i) = o.iter().position(|x| x.is_nan()) {
        return Err(format!(
            "the default tile's output has NaN at element {i} ({} NaN of {})",
            o.iter().filter(|x| x.is_nan()).count(),
            o.len()
        ));
    }
    if let Some(i) = lse.and_then(|l| l.iter().position(|x| x.is_nan())) {
        return Err(format!("the default tile's lse has NaN at row {i}"));
    }
    Ok(())
}

/// Compares a candidate's O (and lse) with the trusted result: no NaN or infinity (the output
/// was poisoned with NaN, so NaN means an unwritten element), relative L2 error of O below
/// [`MAX_REL_L2`], lse within [`MAX_LSE_ABS`] with fully masked rows (`-inf`) matching exactly.
pub fn gate(
    o: &[f32],
    reference: &[f32],
    lse: Option<(&[f32], &[f32])>,
) -> Result<GateReport, String> {
    if o.len() != reference.len() {
        return Err(format!(
            "output has {} elements, the trusted output {}",
            o.len(),
            reference.len()
        ));
    }
    let bad = o.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        let first = o.iter().position(|x| !x.is_finite()).unwrap_or(0);
        return Err(format!(
            "{bad} of {} output elements are NaN or infinite (first at {first}: {})",
            o.len(),
            o[first]
        ));
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&a, &b) in o.iter().zip(reference) {
        let d = a as f64 - b as f64;
        diff += d * d;
        norm += b as f64 * b as f64;
    }
    let rel_l2 = if norm > 0.0 {
        (diff / norm).sqrt()
    } else {
        diff.sqrt()
    };
    if rel_l2.is_nan() || rel_l2 >= MAX_REL_L2 {
        return Err(format!(
            "relative L2 error {rel_l2:.3e} against the default tile (limit {MAX_REL_L2:.0e})"
        ));
    }
    let mut lse_max_abs = None;
    if let Some((got, want)) = lse {
        if got.len() != want.len() {
            return Err(format!(
                "lse has {} rows, the trusted lse {}",
                got.len(),
                want.len()
            ));
        }
        let mut worst = 0.0f64;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if g.is_nan() {
                return Err(format!("lse row {i} was not written (NaN)"));
            }
            if w.is_infinite() || g.is_infinite() {
                if g != w {
                    return Err(format!("lse row {i} is {g}, the trusted lse {w}"));
                }
                continue;
            }
            worst = worst.max((g as f64 - w as f64).abs());
        }
        if worst > MAX_LSE_ABS {
            return Err(format!(
                "lse differs by up to {worst:.3e} from the default tile's (limit {MAX_LSE_ABS:.0e})"
            ));
        }
        lse_max_abs = Some(worst);
    }
    Ok(GateReport {
        rel_l2,
        lse_max_abs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Vec<f32> {
        (0..1000).map(|i| ((i as f32) * 0.37).sin()).collect()
    }

    #[test]
    fn close_outputs_pass() {
        let r = reference();
        let o: Vec<f32> = r.iter().map(|x| x * 1.001 + 1e-4).collect();
        let g = gate(&o, &r, None).unwrap();
        assert!(g.rel_l2 < 2e-3 && g.rel_l2 > 0.0);
        assert_eq!(g.lse_max_abs, None);
        assert_eq!(gate(&r, &r, None).unwrap().rel_l2, 0.0);
    }

    #[test]
    fn wrong_or_unwritten_outputs_fail() {
        let r = reference();
        let far: Vec<f32> = r.iter().map(|x| x * 1.05).collect();
        assert!(gate(&far, &r, None).unwrap_err().contains("relative L2"));
        // One element left at the NaN poison fails even though the L2 error would be tiny.
        let mut poisoned = r.clone();
        poisoned[417] = f32::NAN;
        let e = gate(&poisoned, &r, None).unwrap_err();
        assert!(e.contains("1 of 1000") && e.contains("417"), "{e}");
        let mut inf = r.clone();
        inf[3] = f32::INFINITY;
        assert!(gate(&inf, &r, None).is_err());
        assert!(gate(&r[..10], &r, None).unwrap_err().contains("elements"));
    }

    #[test]
    fn lse_is_checked_with_masked_rows() {
        let r = reference();
        let want = [1.0, f32::NEG_INFINITY, 3.5];
        let ok = [1.0005, f32::NEG_INFINITY, 3.5];
        let g = gate(&r, &r, Some((&ok, &want))).unwrap();
        assert!((g.lse_max_abs.unwrap() - 5e-4).abs() < 1e-6);
        let unwritten = [1.0, f32::NAN, 3.5];
        assert!(gate(&r, &r, Some((&unwritten, &want)))
            .unwrap_err()
            .contains("row 1"));
        let finite_for_masked = [1.0, 0.0, 3.5];
        assert!(gate(&r, &r, Some((&finite_for_masked, &want))).is_err());
        let off = [1.0, f32::NEG_INFINITY, 3.6];
        assert!(gate(&r, &r, Some((&off, &want))).is_err());
    }

    #[test]
    fn the_reference_must_be_fully_written() {
        let mut r = reference();
        check_reference(&r, Some(&[0.0, f32::NEG_INFINITY])).unwrap();
        r[5] = f32::NAN;
        assert!(check_reference(&r, None).unwrap_err().contains("element 5"));
        assert!(check_reference(&reference(), Some(&[f32::NAN])).is_err());
    }
}
