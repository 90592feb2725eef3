//! Block-sparse attention over a BSR block list; with `causal` also only keys at or before the
//! query's position.

use super::{LaunchArgs, Schedule, TilePrefs, Variant, VariantInfo, BLOCK_K, BLOCK_Q};
use crate::block::IntPtr;

crate::param_block! {
    /// A BSR block list as the block-sparse schedule reads it (`vp.list`); also a part of the
    /// mixed variant's block.
    pub struct BlockListArgs as "BlockListArgs" {
        /// Mask block sizes in tokens.
        pub block_q: i32,
        pub block_k: i32,
        /// Lists (1 = one shared by all heads) and the capacity of a list row.
        pub list_heads: i32,
        pub max_blocks: i32,
        /// In block rows.
        pub list_batch_stride: i64,
        pub list_head_stride: i64,
        /// `[batch, list_heads, q_blocks]`.
        pub kv_count: IntPtr,
        /// `[batch, list_heads, q_blocks, max_blocks]`.
        pub kv_index: IntPtr,
    }
}

crate::param_block! {
    /// The block-sparse kernel's parameters.
    pub struct Params as "VariantParams" {
        pub list: BlockListArgs,
    }
}

pub const INFO: VariantInfo = VariantInfo {
    variant: Variant::BlockSparse,
    name: "block-sparse",
    summary: "the keys in the listed blocks of a block list; with `causal` also causal",
    causal: true,
    varlen: true,
    args: LaunchArgs::BlockList,
    schedule_file: Some((
        "variants/block_sparse.cuh",
        include_str!("../../../templates/variants/block_sparse.cuh"),
    )),
    includes: &["variants/block_sparse.cuh"],
    schedule: Schedule::One("BlockSparseSchedule<CAUSAL>"),
    params: &[BLOCK_Q, BLOCK_K],
    block: &Params::LAYOUT,
    tiles: TilePrefs::STANDARD,
};
