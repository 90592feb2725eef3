//! A user-defined mask and score modifier: the spec's definition ([`crate::expr`]), rendered
//! into the kernel. The mask's block classification (empty, partial or full blocks, built on
//! the GPU from the same expression) is the schedule's block list; only partial blocks
//! evaluate the mask per element, and the score modifier runs on every visited score.

use super::block_sparse::BlockListArgs;
use super::{LaunchArgs, Schedule, TilePrefs, Variant, VariantInfo};
use crate::block::IntPtr;
use crate::expr::ExprArgs;

crate::param_block! {
    /// The custom kernel's parameters.
    pub struct Params as "VariantParams" {
        /// The non-empty blocks of the classification, as a block list.
        pub list: BlockListArgs,
        /// A bit per full block: `[batch, list_heads, q_blocks, ceil(max_blocks / 32)]` words.
        pub kv_full: IntPtr,
        /// The definition's parameter values.
        pub expr: ExprArgs,
    }
}

pub const INFO: VariantInfo = VariantInfo {
    variant: Variant::Custom,
    name: "custom",
    summary:
        "a user-defined mask and score modifier over b, h, q, k and s (the definition in braces)",
    causal: false,
    varlen: true,
    args: LaunchArgs::Custom,
    schedule_file: Some((
        "variants/custom.cuh",
        include_str!("../../../templates/variants/custom.cuh"),
    )),
    includes: &["variants/custom.cuh"],
    schedule: Schedule::One("CustomSchedule"),
    params: &[],
    block: &Params::LAYOUT,
    // The schedule's state leaves too few registers for 32 query rows per warp at d128 in the
    // mma.sync loop (ptxas spills): 128-row tiles take 8 warps.
    tiles: TilePrefs {
        sync_eight_warps: true,
        ..TilePrefs::STANDARD
    },
};
