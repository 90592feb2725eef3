//! Dense attention, optionally causal.

use super::{Schedule, Variant, VariantInfo};

pub const INFO: VariantInfo = VariantInfo {
    variant: Variant::Dense,
    name: "dense",
    summary: "every key; with `causal` the keys at or before the query's position",
    causal: true,
    varlen: true,
    prefix: false,
    includes: &["variants/dense.cuh"],
    schedule: Schedule::One("DenseSchedule<CAUSAL>"),
    params: &[],
};
