//! Timing statistics and the decision between candidates: medians of repeated CUDA-event
//! timings, their spread, input-set rotation against a warm L2, and re-measurement of
//! candidates whose medians are within noise of each other. Pure functions; the GPU side
//! supplies the samples.

use flashgen_codegen::TileConfig;

/// How much to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimingParams {
    /// Untimed launches before timing (over every input set).
    pub warmup: usize,
    /// The warm-up lasts at least this long: the GPU idles while tiles compile and its clocks
    /// drop, so a few launches are not enough to bring them back.
    pub warmup_time: std::time::Duration,
    /// Timed launches per candidate.
    pub reps: usize,
    /// Alternating rounds when candidates are within noise (one launch of each per round).
    pub remeasure_rounds: usize,
    /// At most this many candidates are re-measured against each other.
    pub max_contenders: usize,
    /// At most this many input sets are rotated.
    pub max_input_sets: usize,
}

impl TimingParams {
    pub const FULL: TimingParams = TimingParams {
        warmup: 5,
        warmup_time: std::time::Duration::from_millis(30),
        reps: 21,
        remeasure_rounds: 15,
        max_contenders: 4,
        max_input_sets: 32,
    };

    pub const QUICK: TimingParams = TimingParams {
        warmup: 3,
        warmup_time: std::time::Duration::from_millis(20),
        reps: 11,
        remeasure_rounds: 9,
        max_contenders: 3,
        max_input_sets: 32,
    };
}

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

/// The timings of one candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub tile: TileConfig,
    /// Milliseconds of the first timed repeats.
    pub samples: Vec<f64>,
    /// Milliseconds of the alternating re-measurement (empty when it was not needed).
    pub alternating: Vec<f64>,
}

impl Measurement {
    pub fn new(tile: TileConfig, samples: Vec<f64>) -> Self {
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

/// Whether two medians are within noise: the slower over the faster is no more than the larger
/// of the two spreads.
pub fn within_noise(a: &Measurement, b: &Measurement) -> bool {
    let (ma, mb) = (a.median_ms(), b.median_ms());
    let (lo, hi) = if ma <= mb { (ma, mb) } else { (mb, ma) };
    if lo <= 0.0 || !lo.is_finite() || !hi.is_finite() {
        return false;
    }
    hi / lo <= a.spread().max(b.spread())
}

/// Indices by median (fastest first; the index breaks ties).
pub fn ranking(ms: &[Measurement]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ms.len()).collect();
    order.sort_by(|&a, &b| {
        ms[a]
            .median_ms()
            .total_cmp(&ms[b].median_ms())
            .then(a.cmp(&b))
    });
    order
}

/// The fastest candidate and those within noise of it (at most `max`), fastest first.
pub fn contenders(ms: &[Measurement], max: usize) -> Vec<usize> {
    let order = ranking(ms);
    let Some(&best) = order.first() else {
        return Vec::new();
    };
    let mut out = vec![best];
    for &i in &order[1..] {
        if out.len() >= max.max(1) {
            break;
        }
        if within_noise(&ms[best], &ms[i]) {
            out.push(i);
        }
    }
    out
}

/// How the winner was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub winner: usize,
    pub runner_up: Option<usize>,
    /// The candidates that were within noise of the fastest (one when the result was clear).
    pub contenders: Vec<usize>,
    /// Whether the contenders were re-measured alternately.
    pub remeasured: bool,
    /// Whether the winner beat the runner-up in at least two thirds of the alternating rounds
    /// (always true when no re-measurement was needed).
    pub confident: bool,
}

/// Picks the winner. When the fastest median is clear of the others' noise it wins; otherwise
/// the contenders within noise are re-measured alternately (one launch of each per round, the
/// order rotating every round so none always runs first), and the lowest median of those
/// samples wins. If the winner then does not beat the runner-up in at least two thirds of the
/// rounds, the result is a tie, and `preferred` (the default tile) wins the tie if it is a
/// contender, so that a tie never changes the configuration by luck.
pub fn decide<E>(
    ms: &mut [Measurement],
    params: &TimingParams,
    preferred: Option<usize>,
    mut remeasure: impl FnMut(usize) -> Result<f64, E>,
) -> Result<Option<Decision>, E> {
    let order = ranking(ms);
    if order.is_empty() {
        return Ok(None);
    }
    let c = contenders(ms, params.max_contenders);
    if c.len() < 2 || params.remeasure_rounds == 0 {
        return Ok(Some(Decision {
            winner: order[0],
            runner_up: order.get(1).copied(),
            contenders: c,
            remeasured: false,
            confident: true,
        }));
    }
    for &i in &c {
        ms[i].alternating.clear();
    }
    for round in 0..params.remeasure_rounds {
        for k in 0..c.len() {
            let i = c[(round + k) % c.len()];
            let t = remeasure(i)?;
            ms[i].alternating.push(t);
        }
    }
    let mut ranked = c.clone();
    ranked.sort_by(|&a, &b| {
        ms[a]
            .median_ms()
            .total_cmp(&ms[b].median_ms())
            .then(a.cmp(&b))
    });
    let (first, second) = (ranked[0], ranked[1]);
    let wins = ms[first]
        .alternating
        .iter()
        .zip(&ms[second].alternating)
        .filter(|(a, b)| a < b)
        .count();
    let confident = wins * 3 >= params.remeasure_rounds * 2;
    let (winner, runner_up) = match preferred {
        Some(p) if !confident && c.contains(&p) && p != first => (p, first),
        _ => (first, second),
    };
    Ok(Some(Decision {
        winner,
        runner_up: Some(runner_up),
        contenders: c,
        remeasured: true,
        confident,
    }))
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

    #[test]
    fn a_clear_winner_is_not_remeasured() {
        let mut ms = vec![
            m(32, &[1.50, 1.52, 1.51]),
            m(64, &[1.00, 1.01, 1.02]),
            m(128, &[1.20, 1.21, 1.22]),
        ];
        let d = decide::<()>(&mut ms, &TimingParams::QUICK, Some(0), |_| {
            panic!("no re-measurement expected")
        })
        .unwrap()
        .unwrap();
        assert_eq!(d.winner, 1);
        assert_eq!(d.runner_up, Some(2));
        assert_eq!(d.contenders, vec![1]);
        assert!(!d.remeasured && d.confident);
    }

    #[test]
    fn noisy_first_samples_are_resolved_by_alternating_runs() {
        // Tile 0 looked faster by luck (one lucky sample pulls its median down, and its spread
        // covers tile 1); alternating runs show tile 1 is consistently faster.
        let mut ms = vec![
            m(32, &[0.95, 0.99, 1.30]),
            m(64, &[1.00, 1.00, 1.01]),
            m(128, &[2.00, 2.00, 2.01]),
        ];
        assert!(within_noise(&ms[0], &ms[1]));
        assert!(!within_noise(&ms[0], &ms[2]));
        assert_eq!(contenders(&ms, 4), vec![0, 1]);
        let mut calls = Vec::new();
        let d = decide::<()>(&mut ms, &TimingParams::QUICK, None, |i| {
            calls.push(i);
            Ok(if i == 0 { 1.05 } else { 0.98 })
        })
        .unwrap()
        .unwrap();
        assert_eq!(d.winner, 1);
        assert_eq!(d.runner_up, Some(0));
        assert!(d.remeasured && d.confident);
        // One launch of each per round, the first of a round alternating.
        let rounds = TimingParams::QUICK.remeasure_rounds;
        assert_eq!(calls.len(), 2 * rounds);
        assert_eq!(&calls[..4], &[0, 1, 1, 0]);
        assert_eq!(ms[1].median_ms(), 0.98);
        assert_eq!(ms[1].alternating.len(), rounds);
        // The slow candidate was never re-measured.
        assert!(ms[2].alternating.is_empty());
    }

    #[test]
    fn a_true_tie_goes_to_the_preferred_default() {
        let fresh = || vec![m(32, &[1.0, 1.0, 1.1]), m(64, &[1.01, 1.0, 1.1])];
        // Alternating samples: tile 1 has the lower median (0.99 against 1.00) but is faster in
        // only 5 of 9 rounds.
        let series = [
            [1.00, 0.99, 1.01, 1.00, 1.02, 0.99, 1.01, 1.00, 1.02],
            [0.99, 1.00, 0.98, 1.01, 0.99, 1.00, 0.98, 1.01, 0.99],
        ];
        let replay = || {
            let mut next = [0usize; 2];
            move |i: usize| -> Result<f64, ()> {
                let t = series[i][next[i]];
                next[i] += 1;
                Ok(t)
            }
        };
        let mut ms = fresh();
        let d = decide(&mut ms, &TimingParams::QUICK, Some(0), replay())
            .unwrap()
            .unwrap();
        assert!(d.remeasured && !d.confident);
        assert!(ms[1].median_ms() < ms[0].median_ms());
        assert_eq!((d.winner, d.runner_up), (0, Some(1)));
        // Without a preference the lower median wins, marked as not confident.
        let mut ms = fresh();
        let d = decide(&mut ms, &TimingParams::QUICK, None, replay())
            .unwrap()
            .unwrap();
        assert!(!d.confident);
        assert_eq!((d.winner, d.runner_up), (1, Some(0)));
        // A preferred tile that is not a contender does not matter.
        let mut ms = fresh();
        ms.push(m(128, &[3.0, 3.0, 3.0]));
        let d = decide(&mut ms, &TimingParams::QUICK, Some(2), replay())
            .unwrap()
            .unwrap();
        assert_eq!(d.winner, 1);
    }

    #[test]
    fn at_most_max_contenders_and_errors_propagate() {
        let mut ms: Vec<_> = (0..6)
            .map(|i| m(32, &[1.0 + i as f64 * 0.001, 1.1]))
            .collect();
        assert_eq!(contenders(&ms, 3).len(), 3);
        let e = decide(&mut ms, &TimingParams::QUICK, None, |_| {
            Err("launch failed")
        });
        assert_eq!(e.unwrap_err(), "launch failed");
        assert_eq!(
            decide::<()>(&mut [], &TimingParams::QUICK, None, |_| Ok(1.0)).unwrap(),
            None
        );
    }
}
