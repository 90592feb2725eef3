//! CUDA-event timing shared by the benchmark binaries.

use flashgen_runtime::cudarc::driver::sys::CUevent_flags;
use flashgen_runtime::Runtime;

/// Untimed launches before timing: at least this long, so that the GPU has left its idle clocks
/// (the first case of a run otherwise reads several percent slow).
const WARMUP_TIME: std::time::Duration = std::time::Duration::from_millis(200);

/// Median milliseconds of `f` over `reps` launches on the runtime's stream, after at least
/// `warmup` untimed ones and at least `WARMUP_TIME` of them. Each launch is timed by its own
/// pair of events, so one slow launch moves the median, not the mean.
pub fn median_ms(
    rt: &Runtime,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> flashgen_runtime::Result<()>,
) -> flashgen_runtime::Result<f64> {
    let ctx = rt.context();
    let stream = rt.stream();
    let warm_start = std::time::Instant::now();
    let mut warmed = 0;
    while warmed < warmup || warm_start.elapsed() < WARMUP_TIME {
        f()?;
        stream.synchronize().expect("sync");
        warmed += 1;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .expect("event");
        let end = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .expect("event");
        start.record(stream).expect("record");
        f()?;
        end.record(stream).expect("record");
        end.synchronize().expect("sync");
        times.push(start.elapsed_ms(&end).expect("elapsed") as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}
