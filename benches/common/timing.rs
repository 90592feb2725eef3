//! CUDA-event timing shared by the benchmark binaries: the tuner's own timing function
//! ([`flashgen_tuning::gpu::time_launches`]: a warm-up of at least
//! [`WARMUP_TIME`](flashgen_tuning::gpu::WARMUP_TIME), then back-to-back launches each timed
//! between CUDA events) and its statistic (the median), so that a benchmark row and a tune of
//! the same kernel measure the same thing.

#![allow(dead_code)]

use flashgen_runtime::Runtime;
use flashgen_tuning::gpu::{
    l2_bytes, problem_bytes, time_launches, time_launches_flushed, WARMUP_TIME,
};
use flashgen_tuning::timing::{input_sets, median, TimingParams};
use flashgen_tuning::{TuneTarget, Tuner};

/// Timed launches per row: as many as the tuner's final re-timing gives each finalist.
pub const REPS: usize = TimingParams::FULL.remeasure_rounds;

/// The seed of the benchmarks' random inputs: the tuner's.
pub fn seed() -> u64 {
    Tuner::default().seed
}

/// Input sets to rotate for a target, as the tuner does: enough that no launch finds its
/// inputs in L2.
pub fn input_sets_for(rt: &Runtime, target: &TuneTarget) -> Result<usize, String> {
    Ok(input_sets(
        problem_bytes(target),
        l2_bytes(rt)?,
        TimingParams::FULL.max_input_sets,
    ))
}

/// Median milliseconds of [`REPS`] launches, `launch(i)` issuing launch `i`.
pub fn median_ms_at(
    rt: &Runtime,
    launch: impl FnMut(usize) -> Result<(), String>,
) -> Result<f64, String> {
    time_launches(rt, WARMUP_TIME, REPS, launch).map(|s| median(&s))
}

/// Median milliseconds of `f` over `reps` launches (at least one), timed as
/// [`median_ms_at`]. A failing `f` returns its error; a failing CUDA event panics.
pub fn median_ms<E: std::fmt::Display>(
    rt: &Runtime,
    reps: usize,
    f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    median_keeping_error(f, |launch| {
        time_launches(rt, WARMUP_TIME, reps.max(1), launch)
    })
}

/// Median milliseconds of `f` timed as the peers' `do_bench` times theirs
/// ([`time_launches_flushed`]: an L2 flush before each launch, gaps not counted), after
/// `warmup` untimed launches. A failing `f` returns its error; a failing CUDA call panics.
pub fn flushed_median_ms<E: std::fmt::Display>(
    rt: &Runtime,
    warmup: usize,
    reps: usize,
    f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    median_keeping_error(f, |launch| time_launches_flushed(rt, warmup, reps, launch))
}

/// The median of what `timer` measures of `f`, with `f`'s first error returned as it was (the
/// timers take launches that fail with text).
fn median_keeping_error<E: std::fmt::Display>(
    mut f: impl FnMut() -> Result<(), E>,
    timer: impl FnOnce(&mut dyn FnMut(usize) -> Result<(), String>) -> Result<Vec<f64>, String>,
) -> Result<f64, E> {
    let mut failure = None;
    let samples = timer(&mut |_| {
        f().map_err(|e| {
            let text = e.to_string();
            failure = Some(e);
            text
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(median(&samples.expect("CUDA event timing")))
}
