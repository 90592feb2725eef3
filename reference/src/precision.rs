//! Rounding to the kernels' input types, so the reference sees exactly the values the GPU sees.

use half::{bf16, f16};

/// An element type of kernel inputs and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// IEEE single precision (rounding is the identity).
    F32,
    /// bfloat16: 8 exponent bits, 8 significant bits.
    Bf16,
    /// IEEE half precision: 5 exponent bits, 11 significant bits.
    F16,
}

impl Precision {
    /// `x` rounded to this type (round to nearest even) and widened back to f32.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Bf16 => round_bf16(x),
            Precision::F16 => round_f16(x),
        }
    }

    /// Rounds every element in place.
    pub fn round_slice(self, xs: &mut [f32]) {
        if self != Precision::F32 {
            xs.iter_mut().for_each(|x| *x = self.round(*x));
        }
    }

    /// A rounded copy.
    pub fn rounded(self, xs: &[f32]) -> Vec<f32> {
        xs.iter().map(|&x| self.round(x)).collect()
    }

    /// Unit roundoff (half the distance from 1 to the next value): 2^-24, 2^-8, 2^-11.
    pub fn unit_roundoff(self) -> f64 {
        match self {
            Precision::F32 => 2f64.powi(-24),
            Precision::Bf16 => 2f64.powi(-8),
            Precision::F16 => 2f64.powi(-11),
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 | Precision::F16 => 2,
        }
    }
}

/// `x` rounded to bf16 and widened back.
pub fn round_bf16(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

/// `x` rounded to f16 and widened back (values beyond ±65504 become infinite).
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Converts to bf16 (round to nearest even).
pub fn to_bf16(xs: &[f32]) -> Vec<bf16> {
    xs.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// Converts to f16 (round to nearest even).
pub fn to_f16(xs: &[f32]) -> Vec<f16> {
    xs.iter().map(|&x| f16::from_f32(x)).collect()
}

/// Widens bf16 values to f32 (exact).
pub fn from_bf16(xs: &[bf16]) -> Vec<f32> {
    xs.iter().map(|x| x.to_f32()).collect()
}

/// Widens f16 values to f32 (exact).
pub fn from_f16(xs: &[f16]) -> Vec<f32> {
    xs.iter().map(|x| x.to_f32()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_exact_and_idempotent() {
        // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even gives 1.
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(
            round_bf16(1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2.0 * 2f32.powi(-7)
        );
        assert_eq!(round_f16(1.0 + 2f32.powi(-11)), 1.0);
        assert_eq!(round_f16(1.0 + 2f32.powi(-10)), 1.0 + 2f32.powi(-10));
        assert_eq!(round_f16(1e6), f32::INFINITY);
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            for x in [0.1f32, -3.7, 1e-3, 123.456] {
                let r = p.round(x);
                assert_eq!(p.round(r), r);
                assert!(f64::from((r - x).abs()) <= p.unit_roundoff() * f64::from(x.abs()));
            }
        }
        let xs = [0.1f32, -2.3];
        assert_eq!(from_bf16(&to_bf16(&xs)), Precision::Bf16.rounded(&xs));
        assert_eq!(from_f16(&to_f16(&xs)), Precision::F16.rounded(&xs));
        let mut ys = xs;
        Precision::Bf16.round_slice(&mut ys);
        assert_eq!(ys.to_vec(), Precision::Bf16.rounded(&xs));
    }
}
