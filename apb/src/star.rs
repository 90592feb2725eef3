//! Star attention, the APB paper's baseline: host 0 runs causal attention over its block,
//! host `r > 0` attends to the anchor block (broadcast by host 0) and its own block (causal),
//! with no passing blocks. It runs on the same APB kernel and communicators as
//! [`apb_prefill`](super::prefill::apb_prefill).

use super::prefill::{
    alloc, attend, check_block, share_anchor, validate, ApbParams, HostBlock, PrefillShape,
    SeqSplit,
};
use crate::error::Result;
use crate::multigpu::Communicator;
use cudarc::driver::CudaSlice;
use flashgen_runtime::{Element, Runtime};

/// Star-attention prefill of one layer on this host; returns O of its block. `params.passing`
/// is ignored (star attention passes nothing on).
pub fn star_prefill<T: Element>(
    rt: &Runtime,
    comm: &dyn Communicator,
    shape: &PrefillShape,
    params: &ApbParams,
    block: HostBlock<'_, T>,
) -> Result<CudaSlice<T>> {
    let (rank, hosts) = (comm.rank(), comm.world_size());
    let split = SeqSplit::new(shape.n, hosts)?;
    let params = ApbParams {
        passing: 0,
        ..*params
    };
    validate(shape, &split, &params)?;
    let rows = split.len(rank);
    check_block(shape, rows, &block)?;
    let mut o = alloc::<T>(rt, shape.q_layout(rows).numel())?;
    if hosts == 1 {
        attend(rt, shape, rows, &block, None, params.scale, &mut o)?;
        return Ok(o);
    }
    let anchor = share_anchor(rt, comm, shape, &split, &params, &block)?;
    if rank == 0 {
        attend(rt, shape, rows, &block, None, params.scale, &mut o)?;
        return Ok(o);
    }
    // The anchor, `[batch, anchor, heads_kv, dim]`, is the whole prefix (empty when the
    // anchor is).
    let (pk, pv) = (&anchor.k, &anchor.v);
    attend(
        rt,
        shape,
        rows,
        &block,
        Some((pk, pv, params.anchor)),
        params.scale,
        &mut o,
    )?;
    Ok(o)
}
