//! flashgen-tuning: the autotuner. For each target (a spec without its tile, a problem shape and
//! a mask) it takes the tile search space from codegen, prunes it before any launch (validation,
//! the device's shared-memory limit, and the NVRTC resource report: no spills), compiles the
//! candidates on CPU threads through the kernel cache while the GPU times what is ready, checks
//! every candidate's output against the default tile's before it may win, times with CUDA
//! events through the one timing function the benchmarks use too ([`gpu::time_launches`]:
//! back-to-back launches after a warm-up, medians, rotated input sets), re-times the default and
//! the fastest candidates interleaved and keeps the default unless one beats it by more than the
//! noise ([`timing::decide`]), and reports winners that become a
//! [`flashgen_runtime::TunedConfig`]. Decode kernels are tuned the same way over their launch
//! parameters (row tile, split count; [`decode`]).
//!
//! ```no_run
//! use flashgen_runtime::Runtime;
//! use flashgen_tuning::{default_targets, tune, TuneOptions};
//!
//! let rt = Runtime::new(0)?;
//! let report = tune(&rt, &default_targets(), &TuneOptions { quick: true, ..Default::default() })?;
//! report.to_config().save("tuned.toml")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod decode;
pub mod gate;
pub mod gpu;
pub mod prune;
pub mod space;
pub mod target;
pub mod timing;
pub mod tuner;

pub use decode::{
    decode_candidates, default_decode_targets, DecodeCandidate, DecodeProblem, DecodeTarget,
    DecodeTargetReport, DecodeTimed, DECODE_PROBLEMS,
};
pub use gate::{gate, GateReport, MAX_LSE_ABS, MAX_REL_L2};
pub use prune::{
    check_compiled, check_static, compile_pipeline, prune, Candidate, CompileOutcome, PruneReason,
    PruneResult, Pruned,
};
pub use space::{candidate_tiles, static_score, QUICK_PER_MMA};
pub use target::{default_targets, Shape, TargetMask, TuneTarget, DEFAULT_STREAMING};
pub use timing::{Decision, Measurement, TimingParams};
pub use tuner::{
    tune, TargetReport, TimedTile, TuneError, TuneEvent, TuneOptions, TuneReport, Tuner,
};
