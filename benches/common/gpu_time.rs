//! Device time of short launches, measured the way `triton.testing.do_bench` measures the peers:
//! every timed launch is enqueued behind a write that evicts the L2 cache, between its own pair of
//! events, and the host never waits in between, so the events see only the launch's device time
//! and no launch finds its inputs in L2. The decode benchmark reports it beside the project's
//! stream timing (`timing.rs`) so that its ratios to the peers compare like with like.

use flashgen_runtime::cudarc::driver::sys::CUevent_flags;
use flashgen_runtime::Runtime;
use flashgen_tuning::timing::median;

/// Bytes written between timed launches: more than the L2 cache of any current GPU (50 MiB on
/// an H100/H200), as the peers' timer does.
const FLUSH_BYTES: usize = 256 << 20;

/// Median device milliseconds of `f` over `reps` launches, after `warmup` untimed ones. A
/// failing `f` returns its error; a failing CUDA call panics (a benchmark cannot go on without
/// its timer).
pub fn device_median_ms<E>(
    rt: &Runtime,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    let stream = rt.stream();
    let ctx = rt.context();
    let mut flush = stream
        .alloc_zeros::<u8>(FLUSH_BYTES)
        .expect("allocating the L2 flush buffer");
    for _ in 0..warmup {
        f()?;
    }
    stream.synchronize().expect("waiting for the warm-up");
    let event = || {
        ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .expect("creating an event")
    };
    let mut pairs = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        stream
            .memset_zeros(&mut flush)
            .expect("flushing the L2 cache");
        let (start, end) = (event(), event());
        start.record(stream).expect("recording an event");
        f()?;
        end.record(stream).expect("recording an event");
        pairs.push((start, end));
    }
    stream
        .synchronize()
        .expect("waiting for the timed launches");
    let samples: Vec<f64> = pairs
        .iter()
        .map(|(start, end)| start.elapsed_ms(end).expect("reading an event time") as f64)
        .collect();
    Ok(median(&samples))
}
