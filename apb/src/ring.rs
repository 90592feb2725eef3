//! Ring attention (exact causal attention over N hosts), the APB paper's baseline: host `r`
//! attends causally to its own block, then receives the K/V blocks of the earlier hosts one
//! per step from host `r - 1` (NCCL send/recv), attends fully to each and merges the partial
//! results through their log-sum-exp. Blocks of later hosts are invisible under the causal
//! mask, so they are neither computed nor sent: at step `s`, host `r >= s` receives block
//! `r - s` and host `r + 1 >= s` forwards block `r - s + 1`.

use super::merge::{finish, merge_into, MergeShape};
use super::prefill::{alloc, check_block, validate, ApbParams, HostBlock, PrefillShape, SeqSplit};
use crate::error::Result;
use crate::multigpu::Communicator;
use cudarc::driver::CudaSlice;
use flashgen_codegen::{AttentionSpec, Variant};
use flashgen_runtime::{AttentionArgs, Element, Runtime, Tensor, TensorMut};

/// What a host of a ring-attention prefill returns.
pub struct RingOutput<T> {
    /// O of the host's block, `[batch, len, heads_q, dim]`.
    pub o: CudaSlice<T>,
    /// Its log-sum-exp, `[batch, heads_q, len]`.
    pub lse: CudaSlice<f32>,
}

/// Local queries over `k`, `v` (`sk` tokens), dense (causal or not), with lse.
#[allow(clippy::too_many_arguments)]
fn partial<T: Element>(
    rt: &Runtime,
    shape: &PrefillShape,
    q: &CudaSlice<T>,
    rows: usize,
    k: &CudaSlice<T>,
    v: &CudaSlice<T>,
    sk: usize,
    causal: bool,
    scale: Option<f32>,
    o: &mut CudaSlice<T>,
    lse: &mut CudaSlice<f32>,
) -> Result<()> {
    let spec =
        AttentionSpec::new(Variant::Dense, shape.dim as u32, T::DTYPE, causal).with_lse(true);
    let (ql, kvl) = (shape.q_layout(rows), shape.kv_layout(sk));
    let mut args = AttentionArgs::new(
        Tensor {
            data: q,
            layout: ql,
        },
        Tensor {
            data: k,
            layout: kvl,
        },
        Tensor {
            data: v,
            layout: kvl,
        },
        TensorMut {
            data: o,
            layout: ql,
        },
    )
    .lse(lse);
    if let Some(s) = scale {
        args = args.scale(s);
    }
    rt.attention_tuned(&spec, args)?;
    Ok(())
}

/// Ring-attention prefill of one layer on this host. Only `params.scale` is used.
pub fn ring_prefill<T: Element>(
    rt: &Runtime,
    comm: &dyn Communicator,
    shape: &PrefillShape,
    params: &ApbParams,
    block: HostBlock<'_, T>,
) -> Result<RingOutput<T>> {
    let (r, hosts) = (comm.rank(), comm.world_size());
    let split = SeqSplit::new(shape.n, hosts)?;
    let params = ApbParams {
        anchor: 0,
        passing: 0,
        anchor_query: 0,
        scale: params.scale,
    };
    validate(shape, &split, &params)?;
    let rows = split.len(r);
    check_block(shape, rows, &block)?;
    let ms = MergeShape {
        batch: shape.batch,
        rows,
        heads: shape.heads_q,
        dim: shape.dim,
    };
    let mut part_o = alloc::<T>(rt, ms.o_len())?;
    let mut part_lse = alloc::<f32>(rt, ms.lse_len())?;
    let mut acc_o = alloc::<f32>(rt, ms.o_len())?;
    let mut acc_lse = alloc::<f32>(rt, ms.lse_len())?;
    let scale = params.scale;
    let (q, k, v) = (block.q, block.k, block.v);
    partial(
        rt,
        shape,
        q,
        rows,
        k,
        v,
        rows,
        true,
        scale,
        &mut part_o,
        &mut part_lse,
    )?;
    merge_into(rt, ms, &mut acc_o, &mut acc_lse, &part_o, &part_lse, true)?;

    let kv_len = |host: usize| shape.kv_layout(split.len(host)).numel();
    let cap = shape.kv_layout(split.max_len()).numel();
    let mut bufs = if hosts > 1 {
        vec![
            (alloc::<T>(rt, cap)?, alloc::<T>(rt, cap)?),
            (alloc::<T>(rt, cap)?, alloc::<T>(rt, cap)?),
        ]
    } else {
        Vec::new()
    };
    for s in 1..hosts {
        let (lo, hi) = bufs.split_at_mut(1);
        // Step s receives into bufs[(s - 1) % 2] and forwards what step s - 1 received.
        let (cur, next) = if s % 2 == 1 {
            (&hi[0], &mut lo[0])
        } else {
            (&lo[0], &mut hi[0])
        };
        let mut sends = Vec::new();
        if r + 1 < hosts && r + 1 >= s {
            let origin = r + 1 - s;
            let (sk, sv) = if s == 1 { (k, v) } else { (&cur.0, &cur.1) };
            sends.push((r + 1, sk, kv_len(origin)));
            sends.push((r + 1, sv, kv_len(origin)));
        }
        let receives = r >= s;
        let count = if receives { kv_len(r - s) } else { 0 };
        let (nk, nv) = (&mut next.0, &mut next.1);
        let mut recvs = Vec::new();
        if receives {
            recvs.push((r - 1, nk, count));
            recvs.push((r - 1, nv, count));
        }
        comm.exchange(&sends, &mut recvs)?;
        drop(recvs);
        if receives {
            let sk = split.len(r - s);
            let (nk, nv) = (&next.0, &next.1);
            partial(
                rt,
                shape,
                q,
                rows,
                nk,
                nv,
                sk,
                false,
                scale,
                &mut part_o,
                &mut part_lse,
            )?;
            merge_into(rt, ms, &mut acc_o, &mut acc_lse, &part_o, &part_lse, false)?;
        }
    }
    let mut o = alloc::<T>(rt, ms.o_len())?;
    finish(rt, &acc_o, &mut o, ms.o_len())?;
    Ok(RingOutput { o, lse: acc_lse })
}
