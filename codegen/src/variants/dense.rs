//! Dense attention, optionally causal.

use super::{LaunchArgs, Schedule, TilePrefs, Variant, VariantInfo};

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
    // d256: measured by a full tune on an H100, 1.16-1.25x over m128n128w8s1.
    tiles: TilePrefs {
        wgmma_d256_two_warpgroups: true,
        ..TilePrefs::STANDARD
    },
};
