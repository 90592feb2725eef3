//! Block-sparse attention over a BSR block list; with `causal` also only keys at or before the
//! query's position.

use super::{LaunchArgs, Schedule, Variant, VariantInfo, BLOCK_K, BLOCK_Q};

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
};
