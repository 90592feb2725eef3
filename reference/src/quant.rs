//! Quantized KV cache formats on the host: quantize, dequantize, the int4 packing, the
//! directed rounding of the page statistics, and each format's round-trip error bound.
//!
//! Written from the format definitions alone (the kernels' code is not consulted), in the f32
//! operations the definitions name, so that codes, scales and dequantized values are exactly
//! the kernels' when the kernels follow the definitions:
//!
//! | format | quantize `x` (f32) | dequantize code `c` |
//! |---|---|---|
//! | int8, scale `s` | `clamp(rne(x / s), -127, 127)`; NaN -> 0 | `s * c` |
//! | int8tok / int4tok over a row `x` (one token, one kv head) | `mn = min x`, `mx = max x`, `s = (mx - mn) / L` (`L` = 255 or 15; if `mx - mn` overflows, `mx / L - mn / L`), `c = clamp(rne((x - mn) / s), 0, L)` (`x / s - mn / s` where `x - mn` overflows; `c = 0` when `s = 0`), zero point `z = mn` | `fma(s, c, z)` |
//! | fp8 (e4m3), scale `s` | `e4m3_rne_satfinite(x / s)`; NaN -> 0 | `s * e4m3(c)` |
//!
//! `rne` rounds to nearest, ties to even. e4m3 has 4 exponent bits (bias 7), 3 mantissa bits,
//! subnormals, no infinities; its largest finite value is 448 and code 0x7f is NaN (never
//! produced). int4 codes are packed two per byte, eight per little-endian 32-bit word: code `j`
//! of a word sits in nibble `j / 2 + 4 * (j % 2)` (codes 0, 2, 4, 6 in the low half-word, 1, 3,
//! 5, 7 in the high one), so that one mask of a word yields two adjacent codes.

use crate::precision::Precision;

/// A pool's storage format (mirrors the runtime's `KvDtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvFormat {
    /// 16-bit values of the cache's dtype.
    Native,
    /// Symmetric int8, one scale per kv head.
    Int8,
    /// Asymmetric u8 per token per kv head.
    Int8Token,
    /// Asymmetric u4 per token per kv head.
    Int4Token,
    /// e4m3, one scale per kv head.
    Fp8,
}

impl KvFormat {
    /// Bits of a code.
    pub fn bits(self) -> usize {
        match self {
            KvFormat::Native => 16,
            KvFormat::Int4Token => 4,
            _ => 8,
        }
    }

    /// Largest code of the asymmetric formats (255 or 15).
    pub fn levels(self) -> Option<u32> {
        match self {
            KvFormat::Int8Token => Some(255),
            KvFormat::Int4Token => Some(15),
            _ => None,
        }
    }
}

/// One token-head row quantized asymmetrically.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRow {
    /// Codes, one per element, `0 ..= levels`.
    pub codes: Vec<u8>,
    /// Scale `s`.
    pub scale: f32,
    /// Zero point `z` (the row's minimum).
    pub zero: f32,
}

/// Quantizes one row with `levels` (255 or 15) steps.
pub fn quantize_row(x: &[f32], levels: u32) -> TokenRow {
    let mn = x.iter().copied().fold(f32::INFINITY, f32::min);
    let mx = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let l = levels as f32;
    let range = mx - mn;
    let scale = if range.is_finite() {
        range / l
    } else {
        mx / l - mn / l
    };
    let codes = x
        .iter()
        .map(|&v| {
            if scale == 0.0 {
                return 0;
            }
            let d = v - mn;
            let t = if d.is_finite() {
                d / scale
            } else {
                v / scale - mn / scale
            };
            // NaN compares false both ways: it becomes 0.
            let r = t.round_ties_even();
            if r >= l {
                levels as u8
            } else if r > 0.0 {
                r as u8
            } else {
                0
            }
        })
        .collect();
    TokenRow {
        codes,
        scale,
        zero: mn,
    }
}

/// The value an asymmetric code stands for: `fma(s, c, z)` in f32.
pub fn dequantize_token(code: u8, scale: f32, zero: f32) -> f32 {
    scale.mul_add(f32::from(code), zero)
}

/// Symmetric int8 with scale `s`.
pub fn quantize_int8(x: f32, scale: f32) -> i8 {
    let r = (x / scale).round_ties_even();
    if r.is_nan() {
        0
    } else {
        r.clamp(-127.0, 127.0) as i8
    }
}

/// `s * c`.
pub fn dequantize_int8(code: i8, scale: f32) -> f32 {
    scale * f32::from(code)
}

/// The value of an e4m3 code (NaN for 0x7f and 0xff).
pub fn e4m3_value(code: u8) -> f32 {
    let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((code >> 3) & 0xf);
    let m = f32::from(code & 7);
    if code & 0x7f == 0x7f {
        return f32::NAN;
    }
    let mag = if e == 0 {
        m / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + m / 8.0) * 2f32.powi(e - 7)
    };
    sign * mag
}

/// The e4m3 code nearest to `y` (ties to the even code), saturating at +-448; NaN -> 0.
/// Found by search over the finite codes, independent of any bit manipulation.
pub fn e4m3_nearest(y: f32) -> u8 {
    if y.is_nan() {
        return 0;
    }
    let neg = y.is_sign_negative();
    let a = f64::from(y.abs());
    let mut best = 0u8;
    let mut best_err = f64::INFINITY;
    for code in 0u8..0x7f {
        let err = (f64::from(e4m3_value(code)) - a).abs();
        if err < best_err || (err == best_err && code % 2 == 0) {
            best = code;
            best_err = err;
        }
    }
    if neg {
        best | 0x80
    } else {
        best
    }
}

/// fp8 with scale `s`: the code of `x / s`.
pub fn quantize_fp8(x: f32, scale: f32) -> u8 {
    e4m3_nearest(x / scale)
}

/// `s * e4m3(c)`.
pub fn dequantize_fp8(code: u8, scale: f32) -> f32 {
    scale * e4m3_value(code)
}

/// Packs int4 codes (a multiple of 8) into bytes, eight per little-endian word.
pub fn pack_int4(codes: &[u8]) -> Vec<u8> {
    assert!(codes.len().is_multiple_of(8), "int4 rows hold whole words");
    let mut out = Vec::with_capacity(codes.len() / 2);
    for group in codes.chunks(8) {
        let mut word = 0u32;
        for (j, &c) in group.iter().enumerate() {
            word |= u32::from(c & 0xf) << (4 * (j / 2 + 4 * (j % 2)));
        }
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// The codes of packed int4 bytes (a multiple of 4).
pub fn unpack_int4(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for w in bytes.chunks(4) {
        let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        for j in 0..8 {
            out.push(((word >> (4 * (j / 2 + 4 * (j % 2)))) & 0xf) as u8);
        }
    }
    out
}

/// The smallest value of `p` that is `>= x` (a page statistic's max), as f32.
pub fn round_up(x: f32, p: Precision) -> f32 {
    let r = p.round(x);
    if r >= x || x.is_nan() {
        r
    } else if r == f32::NEG_INFINITY {
        // Below the largest negative value: that value.
        -match p {
            Precision::F32 => f32::MAX,
            Precision::Bf16 => half::bf16::MAX.to_f32(),
            Precision::F16 => half::f16::MAX.to_f32(),
        }
    } else {
        next_toward(r, f32::INFINITY, p)
    }
}

/// The largest value of `p` that is `<= x` (a page statistic's min), as f32.
pub fn round_down(x: f32, p: Precision) -> f32 {
    -round_up(-x, p)
}

/// The neighbour of `r` (a value of `p`) toward `target`, by stepping in f64 until `p`'s
/// rounding moves.
fn next_toward(r: f32, target: f32, p: Precision) -> f32 {
    let ulp = match p {
        Precision::F32 => return r.next_up_compat(),
        Precision::Bf16 => 2f64.powi(-7),
        Precision::F16 => 2f64.powi(-10),
    };
    let min_step = match p {
        Precision::Bf16 => 2f64.powi(-133),
        _ => 2f64.powi(-24),
    };
    let step = (f64::from(r).abs() * ulp).max(min_step);
    let dir = if target > r { 1.0 } else { -1.0 };
    let mut k = 1.0;
    loop {
        let c = p.round((f64::from(r) + dir * step * k * 0.5) as f32);
        if c != r {
            return c;
        }
        k += 1.0;
    }
}

trait NextUp {
    fn next_up_compat(self) -> f32;
}

impl NextUp for f32 {
    fn next_up_compat(self) -> f32 {
        if self.is_nan() || self == f32::INFINITY {
            return self;
        }
        if self == 0.0 {
            return f32::from_bits(1);
        }
        let b = self.to_bits();
        f32::from_bits(if self > 0.0 { b + 1 } else { b - 1 })
    }
}

/// The round-trip error bound of one element `x` (finite, within the format's range), given
/// the scale the element was quantized with:
/// - int8: `s / 2` for `|x| <= 127.5 s` (beyond: saturation at `127 s`);
/// - int8tok / int4tok: `s / 2` of the row's scale;
/// - fp8: `|x| / 16` for `2^-6 s <= |x| <= 448 s` (half an ulp of 3 mantissa bits), `2^-10 s`
///   below (subnormal spacing 2^-9);
///
/// each plus the f32 rounding of the quantize and dequantize arithmetic, bounded here by
/// `1e-4 s + 2^-22 m` with `m` the largest magnitude involved (`|x|`, and for the per-token
/// formats the row's `max(|mn|, |mx|)`).
pub fn error_bound(format: KvFormat, x: f32, scale: f32, row_magnitude: f32) -> f64 {
    let (x, s, m) = (
        f64::from(x),
        f64::from(scale),
        f64::from(row_magnitude.max(x.abs())),
    );
    let slop = 1e-4 * s + 2f64.powi(-22) * m;
    match format {
        KvFormat::Native => 0.0,
        KvFormat::Int8 | KvFormat::Int8Token | KvFormat::Int4Token => s / 2.0 + slop,
        KvFormat::Fp8 => {
            if x.abs() >= 2f64.powi(-6) * s {
                x.abs() / 16.0 + slop
            } else {
                s * 2f64.powi(-10) + slop
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Rng;

    #[test]
    fn e4m3_table_has_the_known_points() {
        assert_eq!(e4m3_value(0x7e), 448.0);
        assert_eq!(e4m3_value(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_value(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_value(0x38), 1.0);
        assert_eq!(e4m3_value(0xb8), -1.0);
        assert!(e4m3_value(0x7f).is_nan());
        assert_eq!(e4m3_nearest(1000.0), 0x7e);
        assert_eq!(e4m3_nearest(-1e30), 0xfe);
        assert_eq!(e4m3_nearest(f32::NAN), 0);
        // 1.0625 is halfway between 1.0 (0x38, even) and 1.125 (0x39): the even code.
        assert_eq!(e4m3_nearest(1.0625), 0x38);
        assert_eq!(e4m3_nearest(1.1875), 0x3a);
        assert_eq!(e4m3_nearest(-0.0), 0x80);
        // Every finite code round-trips.
        for c in (0u8..=255).filter(|c| c & 0x7f != 0x7f) {
            assert_eq!(e4m3_nearest(e4m3_value(c)), c, "{c:#x}");
        }
    }

    #[test]
    fn int4_packing_round_trips() {
        let codes: Vec<u8> = (0..32).map(|i| (i * 7 % 16) as u8).collect();
        let packed = pack_int4(&codes);
        assert_eq!(packed.len(), 16);
        assert_eq!(unpack_int4(&packed), codes);
        // Codes 0 and 1 sit in nibbles 0 and 4 of the first word.
        let p = pack_int4(&[1, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u32::from_le_bytes([p[0], p[1], p[2], p[3]]), 0x0002_0001);
    }

    #[test]
    fn every_format_stays_within_its_bound() {
        let mut rng = Rng::new(3);
        for magnitude in [1e-6f32, 1.0, 3e4, 1e30] {
            for _ in 0..200 {
                let row: Vec<f32> = (0..64)
                    .map(|_| Precision::Bf16.round(rng.normal() as f32 * magnitude))
                    .collect();
                let m = row.iter().fold(0f32, |a, &x| a.max(x.abs()));
                for levels in [255, 15] {
                    let fmt = if levels == 255 {
                        KvFormat::Int8Token
                    } else {
                        KvFormat::Int4Token
                    };
                    let q = quantize_row(&row, levels);
                    for (&x, &c) in row.iter().zip(&q.codes) {
                        assert!(u32::from(c) <= levels);
                        let err =
                            (f64::from(x) - f64::from(dequantize_token(c, q.scale, q.zero))).abs();
                        assert!(err <= error_bound(fmt, x, q.scale, m), "{x} {err} {q:?}");
                    }
                }
                let s = m / 127.0;
                let f = m / 448.0;
                for &x in &row {
                    let e8 =
                        (f64::from(x) - f64::from(dequantize_int8(quantize_int8(x, s), s))).abs();
                    assert!(e8 <= error_bound(KvFormat::Int8, x, s, m), "int8 {x}");
                    let ef =
                        (f64::from(x) - f64::from(dequantize_fp8(quantize_fp8(x, f), f))).abs();
                    assert!(ef <= error_bound(KvFormat::Fp8, x, f, m), "fp8 {x}");
                }
            }
        }
    }

    #[test]
    fn extremes() {
        // A constant row: scale 0, every code 0, exact.
        let q = quantize_row(&[3.5; 16], 255);
        assert_eq!(q.scale, 0.0);
        assert!(q.codes.iter().all(|&c| c == 0));
        assert_eq!(dequantize_token(0, q.scale, q.zero), 3.5);
        // A range that overflows f32 still quantizes the ends exactly to 0 and 15.
        let big = [-3.3e38f32, 3.3e38, 0.0, 1e38];
        let q = quantize_row(&big, 15);
        assert!(q.scale.is_finite());
        assert_eq!(q.codes[0], 0);
        assert_eq!(q.codes[1], 15);
        for (&x, &c) in big.iter().zip(&q.codes) {
            let err = (f64::from(x) - f64::from(dequantize_token(c, q.scale, q.zero))).abs();
            assert!(err <= error_bound(KvFormat::Int4Token, x, q.scale, 3.3e38));
        }
        // Negative zero and saturation.
        assert_eq!(quantize_int8(-0.0, 1.0), 0);
        assert_eq!(quantize_int8(1e9, 1.0), 127);
        assert_eq!(quantize_int8(-1e9, 1.0), -127);
        assert_eq!(quantize_int8(f32::NAN, 1.0), 0);
    }

    #[test]
    fn directed_rounding_brackets() {
        let mut rng = Rng::new(5);
        for _ in 0..2000 {
            let x = rng.normal() as f32 * 10f32.powi(rng.below(20) as i32 - 10);
            for p in [Precision::Bf16, Precision::F16] {
                let (u, d) = (round_up(x, p), round_down(x, p));
                assert!(u >= x && d <= x, "{x} {u} {d}");
                assert!(u > f32::NEG_INFINITY && d < f32::INFINITY, "{x} {u} {d}");
                assert_eq!(p.round(u), u);
                assert_eq!(p.round(d), d);
                // No value of p strictly between: u is the next one above d or equal to x.
                assert!(u == d || p.round((u + d) / 2.0) == u || p.round((u + d) / 2.0) == d);
            }
        }
        assert_eq!(round_up(1.0, Precision::Bf16), 1.0);
        assert_eq!(round_up(1.001, Precision::Bf16), 1.0078125);
        assert_eq!(round_down(1.001, Precision::Bf16), 1.0);
    }
}
