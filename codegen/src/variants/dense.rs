//! Dense attention, optionally causal.

use super::{LaunchArgs, Schedule, Variant, VariantInfo};

crate::param_block! {
    /// No parameters of its own.
    pub struct Params as "VariantParams" {}
}

pub const INFO: VariantInfo = VariantInfo {
    variant: Variant::Dense,
    name: "dense",
    summary: "every key; with `causal` the keys at or before the query's position",
    causal: true,
    varlen: true,
    args: LaunchArgs::None,
    schedule_file: Some((
        "variants/dense.cuh",
        include_str!("../../../templates/variants/dense.cuh"),
    )),
    includes: &["variants/dense.cuh"],
    schedule: Schedule::One("DenseSchedule<CAUSAL>"),
    params: &[],
    block: &Params::LAYOUT,
};
