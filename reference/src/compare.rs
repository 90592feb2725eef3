//! Comparing kernel outputs with the reference: relative L2 error, NaN and poison detection,
//! and a log-sum-exp check that treats `-inf == -inf` as equal.
//!
//! Outputs may be f32, f64, bf16 or f16; every value is widened to f64 first. A *poison* value
//! is the sentinel a test fills an output buffer with before the kernel runs; elements still
//! holding it afterwards were never written. It is compared after widening, so choose one that
//! the output type represents exactly (NaN, an infinity, or e.g. -1e30 only for f32 outputs).

use std::fmt;

use crate::layout::Element;

/// `||out - reference||_2 / ||reference||_2`. When the reference is all zeros the denominator
/// is taken as 1, so the result is the absolute L2 error (0 exactly when `out` is all zeros).
/// Any NaN in `out` makes the result NaN.
///
/// # Panics
/// If the lengths differ.
pub fn relative_error<T: Element>(out: &[T], reference: &[f64]) -> f64 {
    assert_eq!(
        out.len(),
        reference.len(),
        "relative_error: output has {} elements, reference {}",
        out.len(),
        reference.len()
    );
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&o, &r) in out.iter().zip(reference) {
        let d = o.to_f64() - r;
        diff += d * d;
        norm += r * r;
    }
    l2_ratio(diff, norm)
}

fn l2_ratio(diff_sq: f64, norm_sq: f64) -> f64 {
    if norm_sq == 0.0 {
        diff_sq.sqrt()
    } else {
        (diff_sq / norm_sq).sqrt()
    }
}

/// Number of NaN values.
pub fn count_nan<T: Element>(values: &[T]) -> usize {
    values.iter().filter(|v| v.to_f64().is_nan()).count()
}

/// Bounds for [`check_close`].
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerance {
    /// Bound on the relative L2 error.
    pub rel: f64,
    /// Bound on the largest elementwise absolute error (`f64::INFINITY`: none).
    pub abs: f64,
    /// The sentinel the output was filled with before the kernel ran, if any.
    pub poison: Option<f32>,
    /// Row-major dimensions used to print indices, e.g. `[batch, seq, heads, d]`.
    pub shape: Option<Vec<usize>>,
}

impl Tolerance {
    /// A relative L2 bound only.
    pub fn rel(rel: f64) -> Self {
        Tolerance {
            rel,
            abs: f64::INFINITY,
            poison: None,
            shape: None,
        }
    }

    /// Adds a bound on the largest elementwise absolute error.
    pub fn with_abs(mut self, abs: f64) -> Self {
        self.abs = abs;
        self
    }

    /// Reports elements still holding `poison` as unwritten (and fails on them).
    pub fn with_poison(mut self, poison: f32) -> Self {
        self.poison = Some(poison);
        self
    }

    /// Prints indices as multi-indices of `shape`.
    pub fn with_shape(mut self, shape: &[usize]) -> Self {
        self.shape = Some(shape.to_vec());
        self
    }
}

/// What a comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Elements compared (the shorter length if they differ).
    pub len: usize,
    /// Relative L2 error over the elements that are finite in both (see [`relative_error`]).
    pub rel_error: f64,
    /// Largest absolute error over the elements that are finite in both.
    pub max_abs_error: f64,
    /// Where it occurs.
    pub max_abs_index: Option<usize>,
    /// Output value there.
    pub out_at_max: f64,
    /// Reference value there.
    pub ref_at_max: f64,
    /// NaN outputs (NaNs equal to a NaN poison count as unwritten instead).
    pub nan_count: usize,
    /// First NaN output.
    pub first_nan: Option<usize>,
    /// Elements where output and reference are not the same infinity although one of them is
    /// infinite (e.g. lse finite where -inf was expected, or an infinite output).
    pub inf_mismatch: usize,
    /// First such element.
    pub first_inf_mismatch: Option<usize>,
    /// Elements still holding the poison value.
    pub unwritten: usize,
    /// First such element.
    pub first_unwritten: Option<usize>,
    /// Dimensions used to print indices.
    pub shape: Option<Vec<usize>>,
}

impl Report {
    /// `index` as a multi-index of the report's shape, or plain when there is none (or the
    /// shape does not cover it).
    pub fn describe_index(&self, index: usize) -> String {
        match &self.shape {
            Some(shape) if index < shape.iter().product::<usize>() => {
                let mut rest = index;
                let mut coords = vec![0; shape.len()];
                for (c, &dim) in coords.iter_mut().zip(shape).rev() {
                    *c = rest % dim;
                    rest /= dim;
                }
                format!("{index} {coords:?}")
            }
            _ => index.to_string(),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} elements, relative L2 error {:.3e}",
            self.len, self.rel_error
        )?;
        if let Some(i) = self.max_abs_index {
            write!(
                f,
                ", max abs error {:.3e} at {} (out {}, ref {})",
                self.max_abs_error,
                self.describe_index(i),
                self.out_at_max,
                self.ref_at_max
            )?;
        }
        if let Some(i) = self.first_nan {
            write!(
                f,
                ", {} NaN (first at {})",
                self.nan_count,
                self.describe_index(i)
            )?;
        }
        if let Some(i) = self.first_inf_mismatch {
            write!(
                f,
                ", {} infinity mismatches (first at {})",
                self.inf_mismatch,
                self.describe_index(i)
            )?;
        }
        if let Some(i) = self.first_unwritten {
            write!(
                f,
                ", {} unwritten (first at {})",
                self.unwritten,
                self.describe_index(i)
            )?;
        }
        Ok(())
    }
}

/// A comparison that failed: every reason, and the full report.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// "output" or "lse".
    pub what: &'static str,
    /// Each failed condition, in words.
    pub problems: Vec<String>,
    /// What the comparison found.
    pub report: Box<Report>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} mismatch: {} [{}]",
            self.what,
            self.problems.join("; "),
            self.report
        )
    }
}

impl std::error::Error for Mismatch {}

fn is_poison(x: f64, poison: Option<f32>) -> bool {
    match poison {
        Some(p) if p.is_nan() => x.is_nan(),
        Some(p) => x == f64::from(p),
        None => false,
    }
}

fn scan<T: Element>(
    out: &[T],
    reference: &[f64],
    poison: Option<f32>,
    shape: Option<Vec<usize>>,
) -> Report {
    let mut report = Report {
        len: out.len().min(reference.len()),
        rel_error: 0.0,
        max_abs_error: 0.0,
        max_abs_index: None,
        out_at_max: 0.0,
        ref_at_max: 0.0,
        nan_count: 0,
        first_nan: None,
        inf_mismatch: 0,
        first_inf_mismatch: None,
        unwritten: 0,
        first_unwritten: None,
        shape,
    };
    let (mut diff_sq, mut norm_sq) = (0.0f64, 0.0f64);
    for (index, (&o, &r)) in out.iter().zip(reference).enumerate() {
        let x = o.to_f64();
        if is_poison(x, poison) {
            report.unwritten += 1;
            report.first_unwritten.get_or_insert(index);
        } else if x.is_nan() || r.is_nan() {
            report.nan_count += 1;
            report.first_nan.get_or_insert(index);
        } else if x.is_infinite() || r.is_infinite() {
            if x != r {
                report.inf_mismatch += 1;
                report.first_inf_mismatch.get_or_insert(index);
            }
        } else {
            let d = x - r;
            diff_sq += d * d;
            norm_sq += r * r;
            if report.max_abs_index.is_none() || d.abs() > report.max_abs_error {
                report.max_abs_error = d.abs();
                report.max_abs_index = Some(index);
                report.out_at_max = x;
                report.ref_at_max = r;
            }
        }
    }
    report.rel_error = l2_ratio(diff_sq, norm_sq);
    report
}

fn common_problems(out_len: usize, ref_len: usize, report: &Report) -> Vec<String> {
    let mut problems = Vec::new();
    if out_len != ref_len {
        problems.push(format!(
            "output has {out_len} elements, reference {ref_len}"
        ));
    }
    if report.unwritten > 0 {
        problems.push(format!(
            "{} elements unwritten (still poison)",
            report.unwritten
        ));
    }
    if report.nan_count > 0 {
        problems.push(format!("{} NaN", report.nan_count));
    }
    if report.inf_mismatch > 0 {
        problems.push(format!("{} infinity mismatches", report.inf_mismatch));
    }
    problems
}

/// Compares an output with the reference. Fails on a length mismatch, unwritten (poison)
/// elements, NaN, an infinite output, a relative L2 error above `tol.rel`, or an elementwise
/// absolute error above `tol.abs`.
pub fn check_close<T: Element>(
    out: &[T],
    reference: &[f64],
    tol: &Tolerance,
) -> Result<Report, Mismatch> {
    let report = scan(out, reference, tol.poison, tol.shape.clone());
    let mut problems = common_problems(out.len(), reference.len(), &report);
    if report.rel_error.is_nan() || report.rel_error > tol.rel {
        problems.push(format!(
            "relative L2 error {:.3e} exceeds {:.3e}",
            report.rel_error, tol.rel
        ));
    }
    if report.max_abs_error > tol.abs {
        problems.push(format!(
            "max abs error {:.3e} exceeds {:.3e}",
            report.max_abs_error, tol.abs
        ));
    }
    finish("output", problems, report)
}

/// Compares a log-sum-exp output with the reference: `-inf` must match `-inf` exactly (rows
/// with no visible key), finite values must agree within `abs`. Fails also on a length
/// mismatch, NaN, and elements still holding `poison`.
pub fn check_lse<T: Element>(
    out: &[T],
    reference: &[f64],
    abs: f64,
    poison: Option<f32>,
) -> Result<Report, Mismatch> {
    let report = scan(out, reference, poison, None);
    let mut problems = common_problems(out.len(), reference.len(), &report);
    if report.max_abs_error > abs {
        problems.push(format!(
            "max abs error {:.3e} exceeds {:.3e}",
            report.max_abs_error, abs
        ));
    }
    finish("lse", problems, report)
}

fn finish(what: &'static str, problems: Vec<String>, report: Report) -> Result<Report, Mismatch> {
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(Mismatch {
            what,
            problems,
            report: Box::new(report),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_values() {
        assert_eq!(relative_error(&[1.0f32, 2.0], &[1.0, 2.0]), 0.0);
        let e = relative_error(&[3.0f32, 4.0], &[0.0, 5.0]);
        assert!((e - (9.0f64 + 1.0).sqrt() / 5.0).abs() < 1e-12);
        // Zero reference: absolute L2 error.
        assert_eq!(relative_error(&[0.0f32, 0.0], &[0.0, 0.0]), 0.0);
        assert!((relative_error(&[3.0f32, 4.0], &[0.0, 0.0]) - 5.0).abs() < 1e-12);
        assert!(relative_error(&[f32::NAN, 0.0], &[1.0, 0.0]).is_nan());
        assert_eq!(count_nan(&[f32::NAN, 1.0, f32::NAN]), 2);
    }

    #[test]
    #[should_panic(expected = "relative_error")]
    fn relative_error_length_mismatch_panics() {
        relative_error(&[1.0f32], &[1.0, 2.0]);
    }

    #[test]
    fn check_close_passes_and_fails() {
        let reference = [1.0, -2.0, 3.0, 0.5];
        let good = [1.001f32, -2.0, 3.0, 0.5];
        let report = check_close(&good, &reference, &Tolerance::rel(1e-3)).unwrap();
        assert_eq!(report.max_abs_index, Some(0));
        assert!(report.max_abs_error > 0.0009 && report.max_abs_error < 0.0011);

        let err = check_close(&good, &reference, &Tolerance::rel(1e-6)).unwrap_err();
        assert!(err.problems[0].contains("relative L2 error"), "{err}");
        let err = check_close(&good, &reference, &Tolerance::rel(1.0).with_abs(1e-4)).unwrap_err();
        assert!(err.to_string().contains("max abs error"), "{err}");

        let with_nan = [1.0f32, f32::NAN, 3.0, 0.5];
        let err = check_close(&with_nan, &reference, &Tolerance::rel(1.0)).unwrap_err();
        assert_eq!(err.report.nan_count, 1);
        assert_eq!(err.report.first_nan, Some(1));

        let with_inf = [1.0f32, -2.0, f32::INFINITY, 0.5];
        let err = check_close(&with_inf, &reference, &Tolerance::rel(1.0)).unwrap_err();
        assert_eq!(err.report.inf_mismatch, 1);

        let err = check_close(&good[..3], &reference, &Tolerance::rel(1.0)).unwrap_err();
        assert!(err.problems[0].contains("3 elements"), "{err}");
    }

    #[test]
    fn poison_reports_unwritten() {
        let reference = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let out = [1.0f32, -1e30, 3.0, 4.0, -1e30, 6.0];
        let tol = Tolerance::rel(1.0).with_poison(-1e30).with_shape(&[2, 3]);
        let err = check_close(&out, &reference, &tol).unwrap_err();
        assert_eq!(err.report.unwritten, 2);
        assert_eq!(err.report.first_unwritten, Some(1));
        assert!(
            err.to_string().contains("unwritten (first at 1 [0, 1])"),
            "{err}"
        );

        let out = [1.0f32, f32::NAN, 3.0, 4.0, 5.0, 6.0];
        let err =
            check_close(&out, &reference, &Tolerance::rel(1.0).with_poison(f32::NAN)).unwrap_err();
        assert_eq!((err.report.unwritten, err.report.nan_count), (1, 0));

        let written = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let report = check_close(&written, &reference, &tol).unwrap();
        assert_eq!(report.unwritten, 0);
    }

    #[test]
    fn lse_treats_matching_neg_inf_as_equal() {
        let reference = [f64::NEG_INFINITY, 1.5, -0.25];
        let out = [f32::NEG_INFINITY, 1.5001, -0.25];
        let report = check_lse(&out, &reference, 1e-3, None).unwrap();
        assert!(report.max_abs_error < 2e-4);

        let finite_for_empty = [0.0f32, 1.5, -0.25];
        let err = check_lse(&finite_for_empty, &reference, 1e-3, None).unwrap_err();
        assert_eq!(err.report.inf_mismatch, 1);
        let plus_inf = [f32::INFINITY, 1.5, -0.25];
        assert!(check_lse(&plus_inf, &reference, 1e-3, None).is_err());
        let empty_for_finite = [f32::NEG_INFINITY, f32::NEG_INFINITY, -0.25];
        assert!(check_lse(&empty_for_finite, &reference, 1e-3, None).is_err());
        let off = [f32::NEG_INFINITY, 1.6, -0.25];
        assert!(check_lse(&off, &reference, 1e-3, None).is_err());
        let unwritten = [f32::NEG_INFINITY, f32::MAX, -0.25];
        let err = check_lse(&unwritten, &reference, 1e-3, Some(f32::MAX)).unwrap_err();
        assert_eq!(err.report.unwritten, 1);
        let nan = [f32::NEG_INFINITY, f32::NAN, -0.25];
        assert!(check_lse(&nan, &reference, 1e-3, None).is_err());
    }
}
