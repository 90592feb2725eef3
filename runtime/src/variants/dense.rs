//! Dense attention: no arguments of its own; the spec's `causal` flag decides the mask.

use super::{wrong_arguments, Extent, HostVariant};
use crate::error::Result;
use crate::masks::dense_density;
use crate::params::VariantBlock;
use crate::plan::{LaunchDesc, MaskArg, PlanContext};
use flashgen_codegen::variants::dense::Params;
use flashgen_codegen::AttentionSpec;

pub struct Dense;

/// The variant's row of the host table ([`host`](super::host)).
pub const HOST: Dense = Dense;

impl HostVariant for Dense {
    fn arguments(&self) -> &'static str {
        "none"
    }

    fn plan(&self, cx: &PlanContext, d: &LaunchDesc) -> Result<VariantBlock> {
        match d.mask {
            MaskArg::None => Ok(VariantBlock::new(&Params {})),
            _ => Err(wrong_arguments(cx.spec.variant)),
        }
    }

    fn density(&self, spec: &AttentionSpec, _: &LaunchDesc, e: &Extent) -> f64 {
        dense_density(e.sq, e.sk, spec.causal)
    }
}
