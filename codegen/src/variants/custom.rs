//! A user-defined mask and score modifier: the spec's definition ([`crate::expr`]), rendered
//! into the kernel. The mask's block classification (empty, partial or full blocks, built on
//! the GPU from the same expression) is the schedule's block list; only partial blocks
//! evaluate the mask per element, and the score modifier runs on every visited score.

use super::{LaunchArgs, Schedule, Variant, VariantInfo};

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
};
