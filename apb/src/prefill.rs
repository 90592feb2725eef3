//! APB prefill of one attention layer on N hosts (sequence parallel).
//!
//! The sequence of `n` tokens is split into N contiguous local blocks ([`SeqSplit`]); host `r`
//! holds block `r` of Q, K and V. Per layer:
//!
//! 1. host 0 broadcasts the anchor block (the first `A` keys and values of the sequence, and
//!    optionally the last `anchor_query` queries of it, for query-aware compressors);
//! 2. every host but the last compresses its local block to `lp` KV pairs per kv head with a
//!    [`KvCompressor`] (the last host's block would be read by nobody);
//! 3. one all-gather of the compressed blocks;
//! 4. host 0 runs plain causal attention over its block; host `r > 0` runs the APB kernel over
//!    keys `[anchor | passing blocks of hosts 0..r | local block]` (anchor and passing fully
//!    visible, local causal).
//!
//! Outputs stay sharded: host `r` returns O of its own block.

use super::{KvCompressor, LocalBlock};
use crate::error::{invalid, DriverContext, Result};
use crate::multigpu::Communicator;
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use flashgen_codegen::{AttentionSpec, KernelSpec, Variant};
use flashgen_runtime::Layout;
use flashgen_runtime::{AttentionArgs, Element, Runtime, Tensor, TensorMut};

/// How `n` tokens are split over `hosts` hosts: host `r` holds `[start(r), start(r) + len(r))`,
/// the first `n % hosts` hosts one token more than the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSplit {
    pub n: usize,
    pub hosts: usize,
}

impl SeqSplit {
    /// Every host needs at least one token.
    pub fn new(n: usize, hosts: usize) -> Result<Self> {
        if hosts == 0 {
            return Err(invalid("hosts", "there must be at least one host"));
        }
        if n < hosts {
            return Err(invalid(
                "n",
                format!("{n} tokens cannot give each of {hosts} hosts at least one"),
            ));
        }
        Ok(SeqSplit { n, hosts })
    }

    /// Tokens of host `r`.
    pub fn len(&self, r: usize) -> usize {
        self.n / self.hosts + usize::from(r < self.n % self.hosts)
    }

    /// First token of host `r`.
    pub fn start(&self, r: usize) -> usize {
        r * (self.n / self.hosts) + r.min(self.n % self.hosts)
    }

    /// The longest local block.
    pub fn max_len(&self) -> usize {
        self.len(0)
    }
}

/// The whole problem: `batch` sequences of `n` tokens, Q with `heads_q` heads, K and V with
/// `heads_kv`, head dim `dim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillShape {
    pub batch: usize,
    pub n: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub dim: usize,
}

impl PrefillShape {
    /// Layout of `rows` tokens of Q (or O), contiguous BSHD.
    pub fn q_layout(&self, rows: usize) -> Layout {
        Layout::bshd(self.batch, rows, self.heads_q, self.dim)
    }

    /// Layout of `rows` tokens of K or V, contiguous BSHD.
    pub fn kv_layout(&self, rows: usize) -> Layout {
        Layout::bshd(self.batch, rows, self.heads_kv, self.dim)
    }

    fn check(&self) -> Result<()> {
        if self.batch == 0 || self.heads_q == 0 || self.heads_kv == 0 || self.dim == 0 {
            return Err(invalid(
                "shape",
                format!("batch, heads and dim must be positive: {self:?}"),
            ));
        }
        if !self.heads_q.is_multiple_of(self.heads_kv) {
            return Err(invalid(
                "heads_q",
                format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.heads_q, self.heads_kv
                ),
            ));
        }
        Ok(())
    }
}

/// APB's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApbParams {
    /// Anchor length `A`: the first `A` tokens, which every host attends to.
    pub anchor: usize,
    /// Passing length `lp`: KV pairs per kv head each host passes on.
    pub passing: usize,
    /// Queries at the end of the anchor block handed to the compressor (0: none).
    pub anchor_query: usize,
    /// Softmax scale; `1/sqrt(dim)` when `None`.
    pub scale: Option<f32>,
}

/// Checks a prefill's arguments without touching a GPU.
pub fn validate(shape: &PrefillShape, split: &SeqSplit, params: &ApbParams) -> Result<()> {
    shape.check()?;
    if split.n != shape.n {
        return Err(invalid(
            "split",
            format!("splits {} tokens, the shape has {}", split.n, shape.n),
        ));
    }
    SeqSplit::new(split.n, split.hosts)?;
    if params.anchor > split.len(0) {
        return Err(invalid(
            "anchor",
            format!(
                "anchor of {} tokens is longer than host 0's block of {} (n = {}, {} hosts)",
                params.anchor,
                split.len(0),
                split.n,
                split.hosts
            ),
        ));
    }
    if params.anchor_query > params.anchor {
        return Err(invalid(
            "anchor_query",
            format!(
                "{} anchor queries but the anchor has {} tokens",
                params.anchor_query, params.anchor
            ),
        ));
    }
    // Hosts 0..N-1 compress; the shortest of them bounds lp.
    if split.hosts > 1 {
        let shortest = split.len(split.hosts - 2);
        if params.passing > shortest {
            return Err(invalid(
                "passing",
                format!(
                    "passing length {} exceeds the local block of {shortest} tokens",
                    params.passing
                ),
            ));
        }
    }
    if let Some(s) = params.scale {
        if !s.is_finite() {
            return Err(invalid("scale", format!("must be finite, got {s}")));
        }
    }
    Ok(())
}

/// One host's inputs: its local block of Q `[batch, len, heads_q, dim]`, K and V
/// `[batch, len, heads_kv, dim]`, contiguous.
pub struct HostBlock<'a, T> {
    pub q: &'a CudaSlice<T>,
    pub k: &'a CudaSlice<T>,
    pub v: &'a CudaSlice<T>,
}

/// What a host of an APB prefill returns.
pub struct ApbOutput<T> {
    /// O of the host's block, `[batch, len, heads_q, dim]`.
    pub o: CudaSlice<T>,
    /// The positions (within the local block) the compressor selected, `[batch, heads_kv, lp]`;
    /// `None` on the last host, which does not compress, and when `lp` is 0.
    pub selected: Option<CudaSlice<i32>>,
}

/// Checks that a host's block holds what its layout addresses.
pub(crate) fn check_block<T>(
    shape: &PrefillShape,
    rows: usize,
    block: &HostBlock<'_, T>,
) -> Result<()> {
    let q = shape.q_layout(rows).numel();
    let kv = shape.kv_layout(rows).numel();
    for (name, have, need) in [
        ("q", block.q.len(), q),
        ("k", block.k.len(), kv),
        ("v", block.v.len(), kv),
    ] {
        if have != need {
            return Err(invalid(
                name,
                format!("the local block of {rows} tokens has {need} elements; the buffer {have}"),
            ));
        }
    }
    Ok(())
}

/// `len` elements from `src[src_at..]` to `dst[dst_at..]` on the runtime's stream.
pub(crate) fn copy<T: Element>(
    rt: &Runtime,
    src: &CudaSlice<T>,
    src_at: usize,
    dst: &mut CudaSlice<T>,
    dst_at: usize,
    len: usize,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    if src_at + len > src.len() || dst_at + len > dst.len() {
        return Err(invalid(
            "copy",
            format!(
                "{len} elements from {src_at} of {} to {dst_at} of {}",
                src.len(),
                dst.len()
            ),
        ));
    }
    rt.stream()
        .memcpy_dtod(
            &src.slice(src_at..src_at + len),
            &mut dst.slice_mut(dst_at..dst_at + len),
        )
        .while_(|| "copying within a host".into())
}

pub(crate) fn alloc<T: DeviceRepr + ValidAsZeroBits>(
    rt: &Runtime,
    len: usize,
) -> Result<CudaSlice<T>> {
    // One element at least: a zero-length device allocation is not a valid buffer.
    rt.stream()
        .alloc_zeros::<T>(len.max(1))
        .while_(|| format!("allocating {len} elements"))
}

/// The anchor block on every host.
pub(crate) struct Anchor<T> {
    pub k: CudaSlice<T>,
    pub v: CudaSlice<T>,
    /// The last `anchor_query` queries of the anchor, `[batch, anchor_query, heads_q, dim]`.
    pub q: Option<CudaSlice<T>>,
}

/// Host 0 copies the anchor out of its block and broadcasts it; every host returns it.
pub(crate) fn share_anchor<T: Element>(
    rt: &Runtime,
    comm: &dyn Communicator,
    shape: &PrefillShape,
    split: &SeqSplit,
    params: &ApbParams,
    block: &HostBlock<'_, T>,
) -> Result<Anchor<T>> {
    let (b, a, nq) = (shape.batch, params.anchor, params.anchor_query);
    let kv_row = shape.heads_kv * shape.dim;
    let q_row = shape.heads_q * shape.dim;
    let mut k = alloc::<T>(rt, b * a * kv_row)?;
    let mut v = alloc::<T>(rt, b * a * kv_row)?;
    let mut q = if nq > 0 {
        Some(alloc::<T>(rt, b * nq * q_row)?)
    } else {
        None
    };
    if comm.rank() == 0 {
        let l0 = split.len(0);
        for bi in 0..b {
            copy(
                rt,
                block.k,
                bi * l0 * kv_row,
                &mut k,
                bi * a * kv_row,
                a * kv_row,
            )?;
            copy(
                rt,
                block.v,
                bi * l0 * kv_row,
                &mut v,
                bi * a * kv_row,
                a * kv_row,
            )?;
            if let Some(q) = q.as_mut() {
                let from = bi * l0 * q_row + (a - nq) * q_row;
                copy(rt, block.q, from, q, bi * nq * q_row, nq * q_row)?;
            }
        }
    }
    if a > 0 && split.hosts > 1 {
        comm.broadcast(&mut k, b * a * kv_row, 0)?;
        comm.broadcast(&mut v, b * a * kv_row, 0)?;
        if let Some(q) = q.as_mut() {
            comm.broadcast(q, b * nq * q_row, 0)?;
        }
    }
    Ok(Anchor { k, v, q })
}

/// The local queries over `[prefix | local keys]` with the APB kernel when a prefix (keys,
/// values, length) is given, else over the local keys with the dense causal kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend<T: Element>(
    rt: &Runtime,
    shape: &PrefillShape,
    rows: usize,
    block: &HostBlock<'_, T>,
    prefix: Option<(&CudaSlice<T>, &CudaSlice<T>, usize)>,
    scale: Option<f32>,
    o: &mut CudaSlice<T>,
) -> Result<KernelSpec> {
    let (ql, kvl) = (shape.q_layout(rows), shape.kv_layout(rows));
    let variant = if prefix.is_some() {
        Variant::Apb
    } else {
        Variant::Dense
    };
    let spec = AttentionSpec::new(
        variant,
        shape.dim as u32,
        T::DTYPE,
        variant == Variant::Dense,
    );
    let mut args = AttentionArgs::new(
        Tensor {
            data: block.q,
            layout: ql,
        },
        Tensor {
            data: block.k,
            layout: kvl,
        },
        Tensor {
            data: block.v,
            layout: kvl,
        },
        TensorMut {
            data: o,
            layout: ql,
        },
    );
    if let Some((pk, pv, len)) = prefix {
        let pl = shape.kv_layout(len);
        args = args.prefix(
            Tensor {
                data: pk,
                layout: pl,
            },
            Tensor {
                data: pv,
                layout: pl,
            },
        );
    }
    if let Some(s) = scale {
        args = args.scale(s);
    }
    Ok(rt.attention_tuned(&spec, args)?)
}

/// APB prefill of one attention layer on this host (rank `comm.rank()` of
/// `comm.world_size()`). Every host calls it with the same shape and parameters, its own
/// local block (`split.len(rank)` tokens) and its own compressor.
pub fn apb_prefill<T: Element>(
    rt: &Runtime,
    comm: &dyn Communicator,
    shape: &PrefillShape,
    params: &ApbParams,
    compressor: &dyn KvCompressor<T>,
    block: HostBlock<'_, T>,
) -> Result<ApbOutput<T>> {
    let (rank, hosts) = (comm.rank(), comm.world_size());
    let split = SeqSplit::new(shape.n, hosts)?;
    validate(shape, &split, params)?;
    let rows = split.len(rank);
    check_block(shape, rows, &block)?;
    let mut o = alloc::<T>(rt, shape.q_layout(rows).numel())?;
    if hosts == 1 {
        attend(rt, shape, rows, &block, None, params.scale, &mut o)?;
        return Ok(ApbOutput { o, selected: None });
    }

    let anchor = share_anchor(rt, comm, shape, &split, params, &block)?;
    let (b, lp, a) = (shape.batch, params.passing, params.anchor);
    let kv_row = shape.heads_kv * shape.dim;
    // Compressed K then V of one host, `[2, batch, lp, heads_kv, dim]`.
    let m = b * lp * kv_row;
    let mut selected = None;
    let mut gathered = None;
    if lp > 0 {
        let mut send = alloc::<T>(rt, 2 * m)?;
        if rank + 1 < hosts {
            let mut ck = alloc::<T>(rt, m)?;
            let mut cv = alloc::<T>(rt, m)?;
            let kvl = shape.kv_layout(rows);
            let local = LocalBlock {
                q: Tensor {
                    data: block.q,
                    layout: shape.q_layout(rows),
                },
                k: Tensor {
                    data: block.k,
                    layout: kvl,
                },
                v: Tensor {
                    data: block.v,
                    layout: kvl,
                },
                anchor_query: anchor.q.as_ref().map(|q| Tensor {
                    data: q,
                    layout: shape.q_layout(params.anchor_query),
                }),
            };
            let idx = compressor.compress(rt, &local, lp, &mut ck, &mut cv)?;
            if idx.len() < b * shape.heads_kv * lp {
                return Err(invalid(
                    "compressor",
                    format!(
                        "returned {} selected positions, expected batch * heads_kv * lp = {}",
                        idx.len(),
                        b * shape.heads_kv * lp
                    ),
                ));
            }
            selected = Some(idx);
            copy(rt, &ck, 0, &mut send, 0, m)?;
            copy(rt, &cv, 0, &mut send, m, m)?;
        }
        let mut all = alloc::<T>(rt, hosts * 2 * m)?;
        comm.all_gather(&send, 2 * m, &mut all)?;
        gathered = Some(all);
    }

    if rank == 0 {
        attend(rt, shape, rows, &block, None, params.scale, &mut o)?;
        return Ok(ApbOutput { o, selected });
    }
    // Prefix = [anchor | passing blocks of hosts 0..rank], `[batch, a + rank * lp, heads_kv, dim]`.
    let p = a + rank * lp;
    let mut pk = alloc::<T>(rt, b * p * kv_row)?;
    let mut pv = alloc::<T>(rt, b * p * kv_row)?;
    for bi in 0..b {
        let at = bi * p * kv_row;
        copy(rt, &anchor.k, bi * a * kv_row, &mut pk, at, a * kv_row)?;
        copy(rt, &anchor.v, bi * a * kv_row, &mut pv, at, a * kv_row)?;
        if let Some(all) = &gathered {
            for s in 0..rank {
                let dst = at + (a + s * lp) * kv_row;
                let src = s * 2 * m + bi * lp * kv_row;
                copy(rt, all, src, &mut pk, dst, lp * kv_row)?;
                copy(rt, all, src + m, &mut pv, dst, lp * kv_row)?;
            }
        }
    }
    attend(
        rt,
        shape,
        rows,
        &block,
        Some((&pk, &pv, p)),
        params.scale,
        &mut o,
    )?;
    Ok(ApbOutput { o, selected })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n: usize) -> PrefillShape {
        PrefillShape {
            batch: 1,
            n,
            heads_q: 4,
            heads_kv: 2,
            dim: 64,
        }
    }

    fn params(anchor: usize, passing: usize) -> ApbParams {
        ApbParams {
            anchor,
            passing,
            anchor_query: 0,
            scale: None,
        }
    }

    fn err(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn splits_cover_the_sequence_unevenly() {
        let s = SeqSplit::new(10, 4).unwrap();
        let lens: Vec<usize> = (0..4).map(|r| s.len(r)).collect();
        assert_eq!(lens, [3, 3, 2, 2]);
        let starts: Vec<usize> = (0..4).map(|r| s.start(r)).collect();
        assert_eq!(starts, [0, 3, 6, 8]);
        assert_eq!(s.max_len(), 3);
        assert!(SeqSplit::new(3, 0).is_err());
        assert!(err(SeqSplit::new(3, 4).map(|_| ())).contains("at least one"));
    }

    #[test]
    fn validation_names_the_bad_argument() {
        let sp = |n, h| SeqSplit { n, hosts: h };
        assert!(validate(&shape(100), &sp(100, 4), &params(25, 25)).is_ok());
        assert!(validate(&shape(100), &sp(100, 1), &params(0, 0)).is_ok());
        // N = 0 and n < N.
        assert!(err(validate(&shape(100), &sp(100, 0), &params(0, 0))).contains("hosts"));
        assert!(err(validate(&shape(3), &sp(3, 4), &params(0, 0))).contains("`n`"));
        // anchor longer than host 0's block, or than n.
        assert!(err(validate(&shape(100), &sp(100, 4), &params(26, 1))).contains("anchor"));
        assert!(err(validate(&shape(10), &sp(10, 1), &params(11, 0))).contains("anchor"));
        // lp longer than a compressing host's block (uneven: hosts 0..2 have 26, 25, 25).
        assert!(err(validate(&shape(101), &sp(101, 4), &params(1, 26))).contains("passing"));
        assert!(validate(&shape(101), &sp(101, 4), &params(1, 25)).is_ok());
        // More anchor queries than anchor tokens.
        let mut p = params(4, 1);
        p.anchor_query = 5;
        assert!(err(validate(&shape(100), &sp(100, 2), &p)).contains("anchor_query"));
        // Heads, dims, scale, and a split of another length.
        let mut s = shape(100);
        s.heads_q = 3;
        assert!(err(validate(&s, &sp(100, 2), &params(1, 1))).contains("heads_q"));
        s = shape(100);
        s.dim = 0;
        assert!(err(validate(&s, &sp(100, 2), &params(1, 1))).contains("shape"));
        let mut p = params(1, 1);
        p.scale = Some(f32::NAN);
        assert!(err(validate(&shape(100), &sp(100, 2), &p)).contains("scale"));
        assert!(err(validate(&shape(100), &sp(99, 2), &params(1, 1))).contains("split"));
    }
}
