//! APB: the local block's queries over the anchor and passing blocks (a separate prefix
//! buffer, fully visible) and the local keys (causal).

use super::{wrong_arguments, Extent, HostVariant};
use crate::error::{invalid, Result};
use crate::masks::dense_density;
use crate::params::VariantBlock;
use crate::plan::{check_tensor, LaunchDesc, MaskArg, PlanContext};
use flashgen_codegen::block::DataPtr;
use flashgen_codegen::variants::apb::Params;
use flashgen_codegen::AttentionSpec;

pub struct Apb;

/// The variant's row of the host table ([`host`](super::host)).
pub const HOST: Apb = Apb;

impl HostVariant for Apb {
    fn arguments(&self) -> &'static str {
        "none, a prefix"
    }

    fn prefix_len(&self, d: &LaunchDesc) -> usize {
        d.prefix.as_ref().map_or(0, |(pk, _)| pk.layout.seq)
    }

    fn plan(&self, cx: &PlanContext, d: &LaunchDesc) -> Result<VariantBlock> {
        let spec = cx.spec;
        let g = &cx.geometry;
        if !matches!(d.mask, MaskArg::None) {
            return Err(wrong_arguments(spec.variant));
        }
        if g.max_sq > g.max_sk {
            return Err(invalid(
                "q",
                format!(
                    "APB queries are the last of the local block: {} queries over {} local keys",
                    g.max_sq, g.max_sk
                ),
            ));
        }
        let Some((pk, pv)) = &d.prefix else {
            // An empty prefix (host 0 of a multi-host prefill): the kernel reads no prefix row,
            // so the pointers are never used.
            return Ok(VariantBlock::new(&Params {
                prefix_k: DataPtr(d.k.buffer.ptr),
                prefix_v: DataPtr(d.v.buffer.ptr),
                ..Params::default()
            }));
        };
        check_tensor("prefix_k", pk, spec.head_dim)?;
        check_tensor("prefix_v", pv, spec.head_dim)?;
        let (lk, lv) = (&pk.layout, &pv.layout);
        let (batch, hkv) = (g.batch, g.heads_kv);
        if (lk.batch, lk.heads) != (batch, hkv)
            || (lv.batch, lv.seq, lv.heads) != (lk.batch, lk.seq, lk.heads)
        {
            return Err(invalid(
                "prefix",
                format!(
                    "prefix keys and values must both be [batch = {batch}, prefix, heads_kv = {hkv}, {}]",
                    spec.head_dim
                ),
            ));
        }
        Ok(VariantBlock::new(&Params {
            prefix_k: DataPtr(pk.buffer.ptr),
            prefix_v: DataPtr(pv.buffer.ptr),
            prefix_k_batch_stride: lk.strides[0] as i64,
            prefix_k_row_stride: lk.strides[1] as i64,
            prefix_k_head_stride: lk.strides[2] as i64,
            prefix_v_batch_stride: lv.strides[0] as i64,
            prefix_v_row_stride: lv.strides[1] as i64,
            prefix_v_head_stride: lv.strides[2] as i64,
            prefix_len: lk.seq as i32,
        }))
    }

    /// The prefix fully visible, the local block causal.
    fn density(&self, _: &AttentionSpec, _: &LaunchDesc, e: &Extent) -> f64 {
        let sk = e.sk + e.prefix;
        if e.sq == 0 || sk == 0 {
            return 0.0;
        }
        let visible =
            e.sq as f64 * e.prefix as f64 + dense_density(e.sq, e.sk, true) * (e.sq * e.sk) as f64;
        visible / (e.sq as f64 * sk as f64)
    }
}
