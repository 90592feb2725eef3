//! APB: the local block's queries over KV = [anchor | passing | local], the first two read from
//! a separate prefix buffer. It is causal attention with the queries at the local block: with
//! pos = i + prefix_len, every prefix key is visible and local key j' iff j' <= i, which is the
//! dense causal schedule over the concatenated keys.

use super::{LaunchArgs, Schedule, TilePrefs, Variant, VariantInfo};
use crate::block::DataPtr;

crate::param_block! {
    /// The anchor and passing blocks: `[batch, prefix_len, heads_kv, head_dim]` keys and
    /// values with their strides in elements, read by the kernel's segmented key loads.
    pub struct Params as "VariantParams" {
        pub prefix_k: DataPtr,
        pub prefix_v: DataPtr,
        pub prefix_k_batch_stride: i64,
        pub prefix_k_row_stride: i64,
        pub prefix_k_head_stride: i64,
        pub prefix_v_batch_stride: i64,
        pub prefix_v_row_stride: i64,
        pub prefix_v_head_stride: i64,
        pub prefix_len: i32,
    }
}

pub const INFO: VariantInfo = VariantInfo {
    variant: Variant::Apb,
    name: "apb",
    summary: "queries of the local block over a separate anchor+passing prefix and the local keys",
    causal: false,
    varlen: false,
    args: LaunchArgs::Prefix,
    schedule_file: None,
    includes: &["variants/dense.cuh"],
    schedule: Schedule::One("DenseSchedule<true>"),
    params: &[],
    block: &Params::LAYOUT,
    // The dense causal schedule: dense's tiles.
    tiles: TilePrefs {
        wgmma_d256_two_warpgroups: true,
        ..TilePrefs::STANDARD
    },
};
