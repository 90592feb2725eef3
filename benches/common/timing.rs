//! CUDA-event timing shared by the benchmark binaries: the tuner's launch timer
//! ([`flashgen_tuning::gpu::time_launches`]) with the benchmarks' longer warm-up.

use flashgen_runtime::Runtime;
use flashgen_tuning::gpu::time_launches;
use flashgen_tuning::timing::median;

/// Untimed launches before timing: at least this long, so that the GPU has left its idle clocks
/// (the first case of a run otherwise reads several percent slow).
const WARMUP_TIME: std::time::Duration = std::time::Duration::from_millis(200);

/// Median milliseconds of `f` over `reps` launches on the runtime's stream, after at least
/// `warmup` untimed ones and at least `WARMUP_TIME` of them. Each launch is timed by its own
/// pair of events, so one slow launch moves the median, not the mean. A failing `f` returns its
/// error; a failing CUDA event panics.
pub fn median_ms<E: std::fmt::Display>(
    rt: &Runtime,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    let mut failure = None;
    let samples = time_launches(rt, warmup.max(1), WARMUP_TIME, reps.max(1), 1, |_| {
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
