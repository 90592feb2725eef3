//! APB: the local block's queries over KV = [anchor | passing | local], the first two read from
//! a separate prefix buffer. It is causal attention with the queries at the local block: with
//! pos = i + prefix_len, every prefix key is visible and local key j' iff j' <= i, which is the
//! dense causal schedule over the concatenated keys.

use super::{LaunchArgs, Schedule, Variant, VariantInfo};

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
};
