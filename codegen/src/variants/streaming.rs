//! Streaming heads (LServe): an A-shaped mask of sink tokens plus a local window, causal by
//! definition; `sink` and `window` are launch arguments.

use super::{Schedule, Variant, VariantInfo, SINK, WINDOW};

pub const INFO: VariantInfo = VariantInfo {
    variant: Variant::Streaming,
    name: "streaming",
    summary: "sink tokens plus a local window (causal by definition; sink and window at launch)",
    causal: false,
    varlen: true,
    prefix: false,
    includes: &["variants/streaming.cuh"],
    schedule: Schedule::One("StreamingSchedule"),
    params: &[SINK, WINDOW],
};
