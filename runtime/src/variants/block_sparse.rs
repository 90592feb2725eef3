//! Block-sparse attention over a BSR block list (with `causal`, also causal).

use super::{wrong_arguments, Extent, HostVariant};
use crate::error::{invalid, Result};
use crate::masks::{dense_density, BlockMask};
use crate::params::VariantBlock;
use crate::plan::{BlockListArg, Geometry, LaunchDesc, MaskArg, PlanContext};
use flashgen_codegen::block::IntPtr;
use flashgen_codegen::variants::block_sparse::{BlockListArgs, Params};
use flashgen_codegen::AttentionSpec;

pub struct BlockSparse;

/// The variant's row of the host table ([`host`](super::host)).
pub const HOST: BlockSparse = BlockSparse;

/// Checks a block list against the launch and, with `cx.tile`, its block sizes against the
/// kernel's tile; returns it as the kernel reads it.
pub(super) fn plan_list(cx: &PlanContext, list: &BlockListArg) -> Result<BlockListArgs> {
    let m = list.mask;
    let Geometry {
        batch,
        heads_q,
        heads_kv,
        max_sq,
        max_sk,
    } = cx.geometry;
    m.validate(batch, heads_q, heads_kv, max_sq, max_sk)?;
    if list.kv_count.len < m.kv_count.len() || list.kv_index.len < m.kv_index.len() {
        return Err(invalid(
            "block_list",
            "device copy is shorter than the host copy",
        ));
    }
    if let Some(tile) = cx.tile {
        super::check_blocks_fit(m.block_q, m.block_k, tile)?;
    }
    Ok(list_args(m, list.kv_count.ptr, list.kv_index.ptr))
}

/// A block list as the kernel reads it: its geometry and the device addresses of its counts
/// and indices (checked by the caller).
pub(super) fn list_args(m: &BlockMask, kv_count: u64, kv_index: u64) -> BlockListArgs {
    BlockListArgs {
        block_q: m.block_q as i32,
        block_k: m.block_k as i32,
        list_heads: m.heads as i32,
        max_blocks: m.max_blocks as i32,
        list_batch_stride: (m.heads * m.q_blocks) as i64,
        list_head_stride: m.q_blocks as i64,
        kv_count: IntPtr(kv_count),
        kv_index: IntPtr(kv_index),
    }
}

/// The kept fraction of query head `head` (of `heads_q`) under a block list, measured on the
/// first batch entry.
pub(super) fn head_density(
    list: &BlockListArg<'_>,
    head: usize,
    heads_q: usize,
    e: &Extent,
    causal: bool,
) -> f64 {
    let h = list.mask.list_head(head, heads_q);
    list.mask.density(0, h, e.sq, e.sk, causal)
}

impl HostVariant for BlockSparse {
    fn arguments(&self) -> &'static str {
        "a block list"
    }

    fn plan(&self, cx: &PlanContext, d: &LaunchDesc) -> Result<VariantBlock> {
        match &d.mask {
            MaskArg::BlockSparse(list) => Ok(VariantBlock::new(&Params {
                list: plan_list(cx, list)?,
            })),
            _ => Err(wrong_arguments(cx.spec.variant)),
        }
    }

    fn density(&self, spec: &AttentionSpec, d: &LaunchDesc, e: &Extent) -> f64 {
        let MaskArg::BlockSparse(list) = &d.mask else {
            return dense_density(e.sq, e.sk, spec.causal);
        };
        // Every list is read by the same number of query heads: average over the lists.
        let heads = e.heads_q.max(1);
        let lists = list.mask.heads.clamp(1, heads);
        let per_list = heads / lists;
        (0..lists)
            .map(|l| head_density(list, l * per_list, e.heads_q, e, spec.causal))
            .sum::<f64>()
            / lists as f64
    }

    fn mask_blocks(&self, d: &LaunchDesc) -> Option<(usize, usize)> {
        match &d.mask {
            MaskArg::BlockSparse(list) => Some((list.mask.block_q, list.mask.block_k)),
            _ => None,
        }
    }
}
