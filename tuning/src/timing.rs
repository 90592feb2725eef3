//! Timing statistics and the decision between candidates: medians of repeated CUDA-event
//! timings, their spread, input-set rotation against a warm L2, and the rule that keeps the
//! default unless a candidate beats it by more than the noise, both timed interleaved in the
//! same run. Pure functions; the GPU side ([`crate::gpu::time_launches`]) supplies the samples.

use flashgen_codegen::TileConfig;

/// How much to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimingParams {
    /// Warm-up of the first pass, which only ranks the candidates (the decision's own
    /// re-timing warms up for [`WARMUP_TIME`](crate::gpu::WARMUP_TIME)).
    pub warmup_time: std::time::Duration,
    /// Timed launches per candidate in the first pass.
    pub reps: usize,
    /// Interleaved rounds of the final re-timing (one launch of each finalist per round): the
    /// samples every reported time and the decision come from.
    pub remeasure_rounds: usize,
    /// Finalists besides the default: the fastest of the first pass.
    pub max_contenders: usize,
    /// At most this many input sets are rotated.
    pub max_input_sets: usize,
}

impl TimingParams {
    pub const FULL: TimingParams = TimingParams {
        warmup_time: std::time::Duration::from_millis(50),
        reps: 15,
        remeasure_rounds: 25,
        max_contenders: 3,
        max_input_sets: 32,
    };

    pub const QUICK: TimingParams = TimingParams {
        warmup_time: std::time::Duration::from_millis(30),
        reps: 9,
        remeasure_rounds: 15,
        max_contenders: 2,
        max_input_sets: 32,
    };
}

/// A candidate replaces the default only when the median of its per-round time ratios to the
/// default is below `1 - margin`, with the margin at least this (and at least the ratios' own
/// noise).
pub const MIN_MARGIN: f64 = 0.01;

/// Median of samples (mean of the middle two for an even count); NaN when empty.
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Spread of samples: slowest over fastest (1 for fewer than two samples, infinite when the
/// fastest is not positive).
pub fn spread(samples: &[f64]) -> f64 {
    if samples.len() < 2 {
        return 1.0;
    }
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if min <= 0.0 {
        f64::INFINITY
    } else {
        max / min
    }
}

/// Input sets to rotate so that no launch finds its inputs in L2: one when the problem's
/// buffers are at least twice the L2 size; otherwise enough that the other sets touched
/// between two uses of a set add up to twice the L2 size (capped at `max`).
pub fn input_sets(problem_bytes: usize, l2_bytes: usize, max: usize) -> usize {
    let max = max.max(1);
    if problem_bytes == 0 || problem_bytes >= 2 * l2_bytes {
        return 1;
    }
    ((2 * l2_bytes).div_ceil(problem_bytes) + 1).clamp(1, max)
}

/// The timings of one candidate: a tile, or a decode launch's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement<C = TileConfig> {
    pub tile: C,
    /// Milliseconds of the first timed repeats.
    pub samples: Vec<f64>,
    /// Milliseconds of the alternating re-measurement (empty when it was not needed).
    pub alternating: Vec<f64>,
}

impl<C> Measurement<C> {
    pub fn new(tile: C, samples: Vec<f64>) -> Self {
        Measurement {
            tile,
            samples,
            alternating: Vec::new(),
        }
    }

    /// The samples the result is based on: the alternating ones when there are any.
    pub fn basis(&self) -> &[f64] {
        if self.alternating.is_empty() {
            &self.samples
        } else {
            &self.alternating
        }
    }

    pub fn median_ms(&self) -> f64 {
        median(self.basis())
    }

    pub fn spread(&self) -> f64 {
        spread(self.basis())
    }
}

/// Indices by median (fastest first; the index breaks ties).
pub fn ranking<C>(ms: &[Measurement<C>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ms.len()).collect();
    order.sort_by(|&a, &b| {
        ms[a]
            .median_ms()
            .total_cmp(&ms[b].median_ms())
            .then(a.cmp(&b))
    });
    order
}

/// The finalists after the first pass: the default first, then the `max` fastest others.
pub fn finalists<C>(ms: &[Measurement<C>], default: usize, max: usize) -> Vec<usize> {
    let mut out = vec![default];
    out.extend(ranking(ms).into_iter().filter(|&i| i != default).take(max));
    out
}

/// The launch order of the interleaved re-timing: `rounds` rounds of one launch of each
/// finalist, the order rotating every round so that none always runs first.
pub fn interleaved(finalists: &[usize], rounds: usize) -> Vec<usize> {
    let f = finalists.len();
    (0..rounds * f)
        .map(|i| finalists[(i / f + i % f) % f])
        .collect()
}

/// Quantile of samples (linear between order statistics); NaN when empty.
fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let x = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (x - lo as f64)
}

/// How much faster `a` is than `b` in the interleaved rounds: the median of the per-round time
/// ratios `a / b` (each pair ran back to back, so drifts of the clock cancel) and their noise,
/// half the interquartile range of the ratios.
pub fn paired_ratio<C>(a: &Measurement<C>, b: &Measurement<C>) -> (f64, f64) {
    let ratios: Vec<f64> = a
        .alternating
        .iter()
        .zip(&b.alternating)
        .filter(|(_, &y)| y > 0.0)
        .map(|(&x, &y)| x / y)
        .collect();
    (
        median(&ratios),
        (quantile(&ratios, 0.75) - quantile(&ratios, 0.25)) / 2.0,
    )
}

/// Whether `a` is faster than `b` by more than the noise: the median per-round ratio is below
/// `1 - max(MIN_MARGIN, noise)`, and `a`'s median is below `b`'s.
pub fn clearly_faster<C>(a: &Measurement<C>, b: &Measurement<C>) -> bool {
    let (ratio, noise) = paired_ratio(a, b);
    ratio.is_finite() && ratio < 1.0 - MIN_MARGIN.max(noise) && a.median_ms() < b.median_ms()
}

/// How the winner was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub winner: usize,
    pub runner_up: Option<usize>,
    /// The default and the fastest candidates of the first pass, re-timed interleaved.
    pub finalists: Vec<usize>,
    /// Whether the winner beat the runner-up by more than the noise (a default that no
    /// candidate beat clearly is its own winner).
    pub confident: bool,
}

/// Picks the winner. The default (index `default`) and the `max_contenders` fastest others of
/// the first pass are re-timed interleaved in one run (`retime` times the launch order it is
/// given, [`interleaved`], and returns one sample per launch), so the default is always timed
/// with the same method and in the same run as its challengers. Among them the lowest median
/// wins only if it is [`clearly_faster`] than the default; otherwise the default wins. A
/// winner is therefore never slower than the default. Every reported time is a median of the
/// interleaved samples.
pub fn decide<C, E>(
    ms: &mut [Measurement<C>],
    params: &TimingParams,
    default: usize,
    retime: impl FnOnce(&[usize]) -> Result<Vec<f64>, E>,
) -> Result<Option<Decision>, E> {
    if default >= ms.len() {
        return Ok(None);
    }
    let finalists = finalists(ms, default, params.max_contenders);
    let rounds = params.remeasure_rounds.max(1);
    let order = interleaved(&finalists, rounds);
    let samples = retime(&order)?;
    for &i in &finalists {
        ms[i].alternating.clear();
    }
    for (&i, t) in order.iter().zip(samples) {
        ms[i].alternating.push(t);
    }
    Ok(Some(choose(ms, default, &finalists)))
}

/// The rule of [`decide`] over finalists whose interleaved samples are in `alternating`.
pub fn choose<C>(ms: &[Measurement<C>], default: usize, finalists: &[usize]) -> Decision {
    let mut ranked = finalists.to_vec();
    ranked.sort_by(|&a, &b| {
        ms[a]
            .median_ms()
            .total_cmp(&ms[b].median_ms())
            .then((a != default).cmp(&(b != default)))
            .then(a.cmp(&b))
    });
    let best = ranked[0];
    let winner = if best != default && clearly_faster(&ms[best], &ms[default]) {
        best
    } else {
        default
    };
    let runner_up = ranked.iter().copied().find(|&i| i != winner);
    let confident = match runner_up {
        Some(r) => clearly_faster(&ms[winner], &ms[r]),
        None => true,
    };
    Decision {
        winner,
        runner_up,
        finalists: finalists.to_vec(),
        confident,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(n: u32) -> TileConfig {
        TileConfig::new(64, n, 4, 1)
    }

    fn m(n: u32, samples: &[f64]) -> Measurement {
        Measurement::new(tile(n), samples.to_vec())
    }

    #[test]
    fn statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(spread(&[2.0, 1.0, 1.5]), 2.0);
        assert_eq!(spread(&[2.0]), 1.0);
        assert_eq!(spread(&[0.0, 1.0]), f64::INFINITY);
    }

    #[test]
    fn input_sets_cover_twice_the_l2() {
        let l2 = 50 << 20;
        assert_eq!(input_sets(512 << 20, l2, 32), 1);
        assert_eq!(input_sets(100 << 20, l2, 32), 1);
        // 30 MiB: between two uses of a set, the 4 others touch 120 MiB >= 100 MiB.
        assert_eq!(input_sets(30 << 20, l2, 32), 5);
        assert_eq!(input_sets(60 << 20, l2, 32), 3);
        assert_eq!(input_sets(1 << 10, l2, 32), 32);
        assert_eq!(input_sets(0, l2, 32), 1);
        for bytes in [1usize << 20, 7 << 20, 33 << 20, 99 << 20] {
            let n = input_sets(bytes, l2, 1000);
            assert!((n - 1) * bytes >= 2 * l2, "{bytes}: {n}");
            assert!((n - 2) * bytes < 2 * l2, "{bytes}: {n}");
        }
    }

    /// Interleaved samples for the finalists: `base[i] * (1 + jitter)`, the jitter shared by a
    /// round (a clock drift hits every finalist of the round alike) plus a small per-launch part.
    fn retime_with(base: Vec<f64>) -> impl FnOnce(&[usize]) -> Result<Vec<f64>, ()> {
        move |order: &[usize]| {
            let mut rng = crate::target::SplitMix(3);
            let mut drift = 0.0;
            let per_round = order.iter().collect::<std::collections::HashSet<_>>().len();
            Ok(order
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    if k % per_round == 0 {
                        drift = 0.06 * (rng.uniform() - 0.5);
                    }
                    base[i] * (1.0 + drift + 0.004 * (rng.uniform() - 0.5))
                })
                .collect())
        }
    }

    #[test]
    fn the_default_is_always_a_finalist_and_rounds_rotate() {
        let ms = vec![
            m(32, &[1.50, 1.52, 1.51]),
            m(64, &[1.00, 1.01, 1.02]),
            m(128, &[1.20, 1.21, 1.22]),
            m(64, &[1.10, 1.10, 1.10]),
        ];
        assert_eq!(finalists(&ms, 0, 2), vec![0, 1, 3]);
        assert_eq!(finalists(&ms, 1, 2), vec![1, 3, 2]);
        assert_eq!(finalists(&ms, 0, 0), vec![0]);
        assert_eq!(interleaved(&[5, 7], 3), vec![5, 7, 7, 5, 5, 7]);
        let order = interleaved(&[0, 1, 3], 6);
        for i in [0, 1, 3] {
            assert_eq!(order.iter().filter(|&&x| x == i).count(), 6);
        }
    }

    #[test]
    fn a_clearly_faster_candidate_replaces_the_default() {
        // The first pass ranks tile 1 first; the interleaved run confirms it 8% faster.
        let mut ms = vec![
            m(32, &[1.00, 1.01]),
            m(64, &[0.90, 0.91]),
            m(128, &[1.30, 1.31]),
        ];
        let d = decide(
            &mut ms,
            &TimingParams::QUICK,
            0,
            retime_with(vec![1.0, 0.92, 1.3]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.finalists, vec![0, 1, 2]);
        assert_eq!((d.winner, d.runner_up), (1, Some(0)));
        assert!(d.confident);
        assert!(ms[1].median_ms() < ms[0].median_ms() * 0.99);
        assert_eq!(
            ms[0].alternating.len(),
            TimingParams::QUICK.remeasure_rounds
        );
    }

    #[test]
    fn a_candidate_slower_than_the_default_never_wins() {
        // The first pass flattered tile 1 (0.95 against the default's 1.00), but timed
        // interleaved it is 1.9% slower: the mixed d128 case of a former full tune, whose
        // winner ran at 0.981x the default. The default is kept.
        let mut ms = vec![m(32, &[1.00, 1.00]), m(64, &[0.95, 0.95])];
        let d = decide(
            &mut ms,
            &TimingParams::FULL,
            0,
            retime_with(vec![1.0, 1.019]),
        )
        .unwrap()
        .unwrap();
        assert_eq!((d.winner, d.runner_up), (0, Some(1)));
        assert!(ms[0].median_ms() <= ms[1].median_ms());
    }

    #[test]
    fn a_gain_within_the_margin_keeps_the_default() {
        // 0.5% faster is below the 1% margin: the default stays, marked as a near tie.
        let mut ms = vec![m(32, &[1.00]), m(64, &[0.99])];
        let d = decide(
            &mut ms,
            &TimingParams::FULL,
            0,
            retime_with(vec![1.0, 0.995]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(d.winner, 0);
        assert!(!d.confident);
        // Noisy rounds widen the margin: 3% faster with per-round ratios spread +-10% is not
        // enough either.
        let mut ms = vec![m(32, &[1.00]), m(64, &[0.97])];
        let noisy = |order: &[usize]| -> Result<Vec<f64>, ()> {
            Ok(order
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    let wobble = [0.0, 0.2, -0.1, 0.15, -0.2, 0.05][(k / 2) % 6];
                    if i == 0 {
                        1.0
                    } else {
                        0.97 + wobble
                    }
                })
                .collect())
        };
        let d = decide(&mut ms, &TimingParams::QUICK, 0, noisy)
            .unwrap()
            .unwrap();
        let (ratio, noise) = paired_ratio(&ms[1], &ms[0]);
        assert!(ratio < 0.99 && noise > 0.03, "{ratio} {noise}");
        assert_eq!(d.winner, 0);
    }

    #[test]
    fn the_default_alone_wins_and_errors_propagate() {
        let mut ms = vec![m(32, &[1.0, 1.1])];
        let d = decide(&mut ms, &TimingParams::QUICK, 0, retime_with(vec![1.0]))
            .unwrap()
            .unwrap();
        assert_eq!((d.winner, d.runner_up, d.confident), (0, None, true));
        let mut ms: Vec<_> = (0..6).map(|i| m(32, &[1.0 + i as f64 * 0.01])).collect();
        let e = decide(&mut ms, &TimingParams::QUICK, 0, |_| Err("launch failed"));
        assert_eq!(e.unwrap_err(), "launch failed");
        assert_eq!(
            decide::<TileConfig, ()>(&mut [], &TimingParams::QUICK, 0, |_| Ok(vec![])).unwrap(),
            None
        );
    }
}
