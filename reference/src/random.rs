//! Fresh random inputs: a small SplitMix64 generator, seeded from the clock by default (the seed
//! is printed so a failure can be reproduced with `FLASHGEN_SEED=<seed>`) or explicitly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::mask::BlockMatrix;
use crate::precision::Precision;

/// The environment variable that fixes the seed of [`Rng::fresh`].
pub const SEED_ENV: &str = "FLASHGEN_SEED";

/// A SplitMix64 generator with uniform and normal sampling.
#[derive(Debug, Clone)]
pub struct Rng {
    seed: u64,
    state: u64,
    spare_normal: Option<f64>,
}

impl Rng {
    /// A generator with an explicit seed (same seed, same stream).
    pub fn new(seed: u64) -> Self {
        Rng {
            seed,
            state: seed,
            spare_normal: None,
        }
    }

    /// A generator seeded from `FLASHGEN_SEED` when set (decimal or `0x` hex), else from the
    /// clock; the seed goes to stderr (shown by the test harness when a test fails).
    ///
    /// # Panics
    /// If `FLASHGEN_SEED` is set but is not a u64.
    pub fn fresh() -> Self {
        let seed = match std::env::var(SEED_ENV) {
            Ok(text) => parse_seed(&text)
                .unwrap_or_else(|| panic!("{SEED_ENV}={text:?} is not a u64 (decimal or 0x hex)")),
            Err(_) => clock_seed(),
        };
        eprintln!(
            "flashgen-reference: random seed {seed} (rerun with {SEED_ENV}={seed} to reproduce)"
        );
        Rng::new(seed)
    }

    /// The seed this generator started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n`.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `range` (inclusive bounds).
    pub fn range_inclusive(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `p`.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.next_f64(); // (0, 1]: the log is finite
        let u2 = self.next_f64();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        self.spare_normal = Some(radius * angle.sin());
        radius * angle.cos()
    }

    /// `n` values from N(0, 1).
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        self.normal_vec_with(n, 0.0, 1.0)
    }

    /// `n` values from N(`mean`, `std`²).
    ///
    /// # Panics
    /// If `std` is not positive (the values would all be equal).
    pub fn normal_vec_with(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        assert!(std > 0.0, "normal_vec_with needs std > 0, got {std}");
        (0..n)
            .map(|_| (mean + std * self.normal()) as f32)
            .collect()
    }

    /// `n` values uniform in `[lo, hi)`.
    ///
    /// # Panics
    /// If `lo >= hi`.
    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        assert!(lo < hi, "uniform_vec needs lo < hi, got {lo}..{hi}");
        (0..n).map(|_| self.uniform(lo, hi) as f32).collect()
    }

    /// `n` values from N(0, 1) rounded to `precision`: exactly what a kernel fed with that
    /// type reads.
    pub fn normal_vec_in(&mut self, n: usize, precision: Precision) -> Vec<f32> {
        let mut values = self.normal_vec(n);
        precision.round_slice(&mut values);
        values
    }

    /// A random block matrix: each block kept with probability `density`.
    pub fn block_matrix(
        &mut self,
        batch: usize,
        heads: usize,
        q_blocks: usize,
        k_blocks: usize,
        density: f64,
    ) -> BlockMatrix {
        let mut m = BlockMatrix::filled(batch, heads, q_blocks, k_blocks, false);
        m.keep.iter_mut().for_each(|k| *k = self.bernoulli(density));
        m
    }

    /// An independent generator derived from this one (its seed is drawn from this stream).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn clock_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // One SplitMix64 step mixes the clock, the call count and the process id.
    let mut mix =
        Rng::new(nanos ^ count.rotate_left(32) ^ u64::from(std::process::id()).rotate_left(48));
    mix.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert_eq!(a.normal_vec(100), b.normal_vec(100));
        assert_eq!(a.seed(), 42);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        // Seed 0 is as good as any other.
        let zeros = Rng::new(0).normal_vec(16);
        assert!(zeros.iter().any(|&x| x != 0.0));
    }

    #[test]
    fn fresh_generators_differ() {
        if std::env::var(SEED_ENV).is_err() {
            assert_ne!(Rng::fresh().seed(), Rng::fresh().seed());
        }
    }

    #[test]
    fn parse_seed_forms() {
        assert_eq!(parse_seed("123"), Some(123));
        assert_eq!(parse_seed(" 0x1f "), Some(31));
        assert_eq!(parse_seed("x"), None);
    }

    #[test]
    fn normal_and_uniform_statistics() {
        let mut rng = Rng::new(7);
        let n = 200_000;
        let xs = rng.normal_vec(n);
        let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
        let var = xs
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let us = rng.uniform_vec(n, -2.0, 3.0);
        assert!(us.iter().all(|&u| (-2.0..3.0).contains(&u)));
        let mean = us.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        let counts = (0..60_000).fold([0usize; 3], |mut c, _| {
            c[rng.below(3)] += 1;
            c
        });
        assert!(
            counts.iter().all(|&c| (19_000..21_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn rounded_inputs_are_representable() {
        let mut rng = Rng::new(3);
        let xs = rng.normal_vec_in(1000, Precision::Bf16);
        assert!(xs.iter().all(|&x| Precision::Bf16.round(x) == x));
        let m = rng.block_matrix(1, 2, 10, 10, 0.3);
        let kept = m.keep.iter().filter(|&&k| k).count();
        assert!((30..=90).contains(&kept), "{kept}");
    }
}
