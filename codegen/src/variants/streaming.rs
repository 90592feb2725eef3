//! Streaming heads (LServe): an A-shaped mask of sink tokens plus a local window, causal by
//! definition; `sink` and `window` are launch arguments.

use super::{LaunchArgs, Schedule, TilePrefs, Variant, VariantInfo, SINK, WINDOW};

crate::param_block! {
    /// Sink and window in tokens, as the streaming schedule reads them (`vp.streaming`); also a
    /// part of the mixed variant's block.
    pub struct StreamingArgs as "StreamingArgs" {
        pub sink: i32,
        pub window: i32,
    }
}

crate::param_block! {
    /// The streaming kernel's parameters.
    pub struct Params as "VariantParams" {
        pub streaming: StreamingArgs,
    }
}

pub const INFO: VariantInfo = VariantInfo {
    variant: Variant::Streaming,
    name: "streaming",
    summary: "sink tokens plus a local window (causal by definition; sink and window at launch)",
    causal: false,
    varlen: true,
    args: LaunchArgs::Streaming,
    schedule_file: Some((
        "variants/streaming.cuh",
        include_str!("../../../templates/variants/streaming.cuh"),
    )),
    includes: &["variants/streaming.cuh"],
    schedule: Schedule::One("StreamingSchedule"),
    params: &[SINK, WINDOW],
    block: &Params::LAYOUT,
    // 64-key tiles: 168 registers and 49 KiB let three CTAs share an SM, which hides the
    // prologue of its short CTAs (H200, s32768 sink 128 window 2048: 2.39 ms vs 2.50 ms at
    // 64x128 in the same run; a sweep of every tile also ranked 64x64 first).
    tiles: TilePrefs {
        wgmma_block_n: 64,
        ..TilePrefs::STANDARD
    },
};
