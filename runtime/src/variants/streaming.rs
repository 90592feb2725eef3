//! Streaming heads: sink tokens and a local window.

use super::{wrong_arguments, Extent, HostVariant};
use crate::error::Result;
use crate::masks::{dense_density, StreamingParams};
use crate::params::VariantBlock;
use crate::plan::{LaunchDesc, MaskArg, PlanContext};
use flashgen_codegen::variants::streaming::{Params, StreamingArgs};
use flashgen_codegen::AttentionSpec;

pub struct Streaming;

/// The variant's row of the host table ([`host`](super::host)).
pub const HOST: Streaming = Streaming;

/// Sink and window as the kernel takes them: clamped to the longest key sequence, which
/// changes no visible pair (no key lies `sk` or more before a query) and keeps the kernel's
/// 32-bit window arithmetic (`p_lo - window + 1`) from overflowing.
pub(super) fn args(s: &StreamingParams, max_sk: usize) -> StreamingArgs {
    let clamp = |v: usize| v.min(max_sk) as i32;
    StreamingArgs {
        sink: clamp(s.sink),
        window: clamp(s.window),
    }
}

impl HostVariant for Streaming {
    fn arguments(&self) -> &'static str {
        "sink/window"
    }

    fn plan(&self, cx: &PlanContext, d: &LaunchDesc) -> Result<VariantBlock> {
        match &d.mask {
            MaskArg::Streaming(s) => Ok(VariantBlock::new(&Params {
                streaming: args(s, cx.geometry.max_sk),
            })),
            _ => Err(wrong_arguments(cx.spec.variant)),
        }
    }

    fn density(&self, _: &AttentionSpec, d: &LaunchDesc, e: &Extent) -> f64 {
        match &d.mask {
            MaskArg::Streaming(s) => s.density(e.sq, e.sk),
            _ => dense_density(e.sq, e.sk, true),
        }
    }
}
