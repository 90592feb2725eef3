//! Mixed heads: a kind per query head; streaming heads read sink and window, block-sparse
//! heads the block list (with `causal`, also causal).

use super::{block_sparse, streaming, wrong_arguments, Extent, HostVariant};
use crate::error::{invalid, Result};
use crate::masks::{dense_density, HeadKind};
use crate::params::VariantBlock;
use crate::plan::{LaunchDesc, MaskArg, PlanContext};
use flashgen_codegen::block::IntPtr;
use flashgen_codegen::variants::mixed::Params;
use flashgen_codegen::AttentionSpec;

pub struct Mixed;

/// The variant's row of the host table ([`host`](super::host)).
pub const HOST: Mixed = Mixed;

impl HostVariant for Mixed {
    fn arguments(&self) -> &'static str {
        "head kinds"
    }

    fn plan(&self, cx: &PlanContext, d: &LaunchDesc) -> Result<VariantBlock> {
        let MaskArg::Mixed {
            heads,
            streaming,
            block_list,
        } = &d.mask
        else {
            return Err(wrong_arguments(cx.spec.variant));
        };
        let hq = cx.geometry.heads_q;
        if heads.kinds.len() != hq {
            return Err(invalid(
                "head_kind",
                format!(
                    "has {} entries, expected one per query head ({hq})",
                    heads.kinds.len()
                ),
            ));
        }
        if heads.kinds_dev.len < hq || heads.order_dev.len < hq {
            return Err(invalid(
                "head_kind",
                "device copy is shorter than the host copy",
            ));
        }
        // Each part is written when a head reads it, and zero otherwise.
        let mut params = Params {
            head_kind: IntPtr(heads.kinds_dev.ptr),
            head_order: IntPtr(heads.order_dev.ptr),
            ..Params::default()
        };
        if heads.kinds.contains(&HeadKind::Streaming) {
            let s = streaming
                .ok_or_else(|| invalid("streaming", "streaming heads need sink and window"))?;
            params.streaming = streaming::args(&s, cx.geometry.max_sk);
        }
        if heads.kinds.contains(&HeadKind::BlockSparse) {
            let list = block_list
                .as_ref()
                .ok_or_else(|| invalid("block_list", "block-sparse heads need a block list"))?;
            params.list = block_sparse::plan_list(cx, list)?;
        }
        Ok(VariantBlock::new(&params))
    }

    fn density(&self, spec: &AttentionSpec, d: &LaunchDesc, e: &Extent) -> f64 {
        let MaskArg::Mixed {
            heads,
            streaming,
            block_list,
        } = &d.mask
        else {
            return dense_density(e.sq, e.sk, spec.causal);
        };
        let per_head = heads.kinds.iter().enumerate().map(|(h, kind)| match kind {
            HeadKind::Dense => dense_density(e.sq, e.sk, false),
            HeadKind::DenseCausal => dense_density(e.sq, e.sk, true),
            HeadKind::Streaming => streaming.as_ref().map_or(0.0, |p| p.density(e.sq, e.sk)),
            HeadKind::BlockSparse => block_list.as_ref().map_or(0.0, |l| {
                block_sparse::head_density(l, h, heads.kinds.len(), e, spec.causal)
            }),
        });
        per_head.sum::<f64>() / heads.kinds.len().max(1) as f64
    }

    fn mask_blocks(&self, d: &LaunchDesc) -> Option<(usize, usize)> {
        match &d.mask {
            MaskArg::Mixed {
                heads,
                block_list: Some(list),
                ..
            } if heads.kinds.contains(&HeadKind::BlockSparse) => {
                Some((list.mask.block_q, list.mask.block_k))
            }
            _ => None,
        }
    }
}
