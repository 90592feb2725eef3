//! Mixed heads (LServe): each query head is dense, dense-causal, streaming or block-sparse, all
//! in one launch; `causal` applies to the block-sparse heads. The kernel entry dispatches on
//! the head's kind to a mainloop specialised to that kind's schedule.

use super::block_sparse::BlockListArgs;
use super::streaming::StreamingArgs;
use super::{
    HeadCase, LaunchArgs, Schedule, TilePrefs, Variant, VariantInfo, BLOCK_K, BLOCK_Q, SINK, WINDOW,
};
use crate::block::IntPtr;

crate::param_block! {
    /// The streaming heads' part, the block-sparse heads' part (each zero when no head is of
    /// its kind) and the heads' kinds.
    pub struct Params as "VariantParams" {
        pub streaming: StreamingArgs,
        pub list: BlockListArgs,
        /// `HeadKind` of each query head.
        pub head_kind: IntPtr,
        /// The order the heads are launched in.
        pub head_order: IntPtr,
    }
}

pub const INFO: VariantInfo = VariantInfo {
    variant: Variant::Mixed,
    name: "mixed",
    summary: "a kind per query head (dense, dense-causal, streaming, block-sparse); `causal` \
              for the block-sparse heads",
    causal: true,
    varlen: true,
    args: LaunchArgs::HeadKinds,
    schedule_file: Some((
        "variants/mixed.cuh",
        include_str!("../../../templates/variants/mixed.cuh"),
    )),
    includes: &[
        "variants/dense.cuh",
        "variants/streaming.cuh",
        "variants/block_sparse.cuh",
        "variants/mixed.cuh",
    ],
    // The values of `HeadKind` (templates/variants/mixed.cuh and flashgen_runtime::HeadKind).
    schedule: Schedule::PerHead(&[
        HeadCase {
            kind: "HEAD_DENSE",
            schedule: "DenseSchedule<false>",
        },
        HeadCase {
            kind: "HEAD_DENSE_CAUSAL",
            schedule: "DenseSchedule<true>",
        },
        HeadCase {
            kind: "HEAD_STREAMING",
            schedule: "StreamingSchedule",
        },
        HeadCase {
            kind: "HEAD_BLOCK_SPARSE",
            schedule: "BlockSparseSchedule<CAUSAL>",
        },
    ]),
    params: &[SINK, WINDOW, BLOCK_Q, BLOCK_K],
    block: &Params::LAYOUT,
    // Four kind-specialised mainloops: two 16-row tiles per warp no longer fit in registers
    // (ptxas spills).
    tiles: TilePrefs {
        sync_eight_warps: true,
        ..TilePrefs::STANDARD
    },
};
