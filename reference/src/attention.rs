//! Exact attention in f64: `O = softmax(scale * Q K^T + mask) V` and its log-sum-exp, for
//! fixed-length and varlen batches, with GQA/MQA.
//!
//! The computation is tiled like a CPU flash attention (a tile of query rows against blocks of
//! keys, so K and V blocks stay in cache), visits only visible keys, and runs work units of
//! `(batch, kv head, query chunk)` on scoped threads. The softmax is exact: each row's scores are
//! kept, so no online rescaling takes place.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;

use crate::layout::{Element, Layout, LayoutError, Tensor, VarlenLayout, VarlenTensor};
use crate::mask::{Mask, MaskError};

/// Query rows per work unit.
const CHUNK_ROWS: usize = 64;
/// Query rows that share each pass over a key block.
const TILE_ROWS: usize = 16;
/// Keys per block (64 keys of d = 256 in f64 are 128 KiB for K and as much for V).
const KEY_BLOCK: usize = 64;
/// Below this many multiply-adds a call runs on the calling thread alone.
const PARALLEL_WORK: usize = 1 << 22;

/// An attention problem that does not fit together.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AttentionError {
    /// A malformed layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A mask that is invalid or does not fit the problem.
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// A buffer is shorter than its layout requires.
    #[error("{tensor}: buffer has {len} elements, its layout needs {needed}")]
    BufferTooShort {
        /// "q", "k" or "v".
        tensor: &'static str,
        /// Elements in the buffer.
        len: usize,
        /// Elements the layout addresses.
        needed: usize,
    },
    /// Two dimensions that must agree do not.
    #[error("{what} disagree: {left} vs {right}")]
    ShapeMismatch {
        /// Which dimensions, e.g. "batch of q and k".
        what: &'static str,
        /// The first value.
        left: usize,
        /// The second value.
        right: usize,
    },
    /// K and V sequence lengths differ for one batch element of a varlen batch.
    #[error("batch element {b}: k has {k} tokens, v has {v}")]
    KvSeqlen {
        /// Batch element.
        b: usize,
        /// Tokens of K.
        k: usize,
        /// Tokens of V.
        v: usize,
    },
    /// The number of query heads must be a positive multiple of the number of KV heads.
    #[error("hq = {hq} must be a positive multiple of hkv = {hkv}")]
    Gqa {
        /// Query heads.
        hq: usize,
        /// KV heads.
        hkv: usize,
    },
    /// A head dimension of 0.
    #[error("{tensor} has head dimension 0")]
    ZeroDim {
        /// "q" or "v".
        tensor: &'static str,
    },
    /// The scale must be finite.
    #[error("scale must be finite, got {0}")]
    Scale(f64),
}

/// How the rows of an [`Output`] are grouped into sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    /// `batch` sequences of `seq` queries: O is `[batch, seq, hq, dv]`, lse `[batch, hq, seq]`.
    Fixed {
        /// Batch size.
        batch: usize,
        /// Queries per sequence.
        seq: usize,
    },
    /// Packed sequences: O is `[total_q, hq, dv]`, lse `[hq, total_q]`.
    Varlen {
        /// Cumulative query lengths (`batch + 1` entries, first 0).
        cu_seqlens: Vec<usize>,
    },
}

/// The reference result.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// O, contiguous: `[batch, sq, hq, dv]` (fixed) or `[total_q, hq, dv]` (varlen).
    pub o: Vec<f64>,
    /// Natural log-sum-exp of the scaled scores over visible keys, `-inf` for a row without
    /// one: `[batch, hq, sq]` (fixed) or `[hq, total_q]` (varlen).
    pub lse: Vec<f64>,
    /// Query heads (hq).
    pub heads: usize,
    /// Head dimension of O (that of V).
    pub dim: usize,
    /// Sequence grouping.
    pub rows: Rows,
}

impl Output {
    fn empty(rows: Rows, heads: usize, dim: usize) -> Self {
        let total = match &rows {
            Rows::Fixed { batch, seq } => batch * seq,
            Rows::Varlen { cu_seqlens } => *cu_seqlens.last().unwrap_or(&0),
        };
        Output {
            o: vec![0.0; total * heads * dim],
            lse: vec![f64::NEG_INFINITY; total * heads],
            heads,
            dim,
            rows,
        }
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        match &self.rows {
            Rows::Fixed { batch, .. } => *batch,
            Rows::Varlen { cu_seqlens } => cu_seqlens.len() - 1,
        }
    }

    /// Queries of sequence `b`.
    pub fn seqlen(&self, b: usize) -> usize {
        match &self.rows {
            Rows::Fixed { seq, .. } => *seq,
            Rows::Varlen { cu_seqlens } => cu_seqlens[b + 1] - cu_seqlens[b],
        }
    }

    /// Total query rows over all sequences.
    pub fn total_rows(&self) -> usize {
        match &self.rows {
            Rows::Fixed { batch, seq } => batch * seq,
            Rows::Varlen { cu_seqlens } => *cu_seqlens.last().unwrap_or(&0),
        }
    }

    /// Offset in `o` of the first element of row `(b, h, i)`.
    pub fn o_offset(&self, b: usize, h: usize, i: usize) -> usize {
        let token = match &self.rows {
            Rows::Fixed { seq, .. } => b * seq + i,
            Rows::Varlen { cu_seqlens } => cu_seqlens[b] + i,
        };
        (token * self.heads + h) * self.dim
    }

    /// Offset in `lse` of row `(b, h, i)`.
    pub fn lse_offset(&self, b: usize, h: usize, i: usize) -> usize {
        match &self.rows {
            Rows::Fixed { seq, .. } => (b * self.heads + h) * seq + i,
            Rows::Varlen { cu_seqlens } => h * cu_seqlens.last().unwrap_or(&0) + cu_seqlens[b] + i,
        }
    }

    /// O of query `i`, head `h`, sequence `b` (`dim` values).
    pub fn o_row(&self, b: usize, h: usize, i: usize) -> &[f64] {
        &self.o[self.o_offset(b, h, i)..][..self.dim]
    }

    /// lse of query `i`, head `h`, sequence `b`.
    pub fn lse_at(&self, b: usize, h: usize, i: usize) -> f64 {
        self.lse[self.lse_offset(b, h, i)]
    }

    /// O of a fixed-length output laid out in `layout` (e.g. BHSD, to compare with a kernel
    /// that writes that layout); buffer elements that no index reaches hold `fill`.
    ///
    /// # Panics
    /// If the output is varlen or `layout`'s dimensions differ from the output's.
    pub fn o_in_layout(&self, layout: &Layout, fill: f64) -> Vec<f64> {
        let Rows::Fixed { batch, seq } = self.rows else {
            panic!("o_in_layout needs a fixed-length output");
        };
        assert_eq!(
            (layout.batch, layout.seq, layout.heads, layout.dim),
            (batch, seq, self.heads, self.dim),
            "layout dimensions differ from the output's [batch, seq, heads, dim]"
        );
        layout.materialize(fill, |b, s, h, d| self.o[self.o_offset(b, h, s) + d])
    }
}

/// The dimensions of a contiguous BSHD problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Batch size.
    pub batch: usize,
    /// Queries per sequence.
    pub sq: usize,
    /// Keys per sequence.
    pub sk: usize,
    /// Query heads.
    pub hq: usize,
    /// KV heads.
    pub hkv: usize,
    /// Head dimension (of Q, K, V and O).
    pub d: usize,
}

impl Shape {
    /// All dimensions at once.
    pub fn new(batch: usize, sq: usize, sk: usize, hq: usize, hkv: usize, d: usize) -> Self {
        Shape {
            batch,
            sq,
            sk,
            hq,
            hkv,
            d,
        }
    }

    /// BSHD layout of Q (and O).
    pub fn q_layout(&self) -> Layout {
        Layout::bshd(self.batch, self.sq, self.hq, self.d)
    }

    /// BSHD layout of K and V.
    pub fn kv_layout(&self) -> Layout {
        Layout::bshd(self.batch, self.sk, self.hkv, self.d)
    }

    /// Elements of Q (and O).
    pub fn q_len(&self) -> usize {
        self.batch * self.sq * self.hq * self.d
    }

    /// Elements of K (and of V).
    pub fn kv_len(&self) -> usize {
        self.batch * self.sk * self.hkv * self.d
    }

    /// Elements of lse.
    pub fn lse_len(&self) -> usize {
        self.batch * self.hq * self.sq
    }

    /// `1 / sqrt(d)`, the default scale.
    pub fn default_scale(&self) -> f64 {
        1.0 / (self.d as f64).sqrt()
    }
}

/// Attention over contiguous BSHD buffers described by `shape`. `scale` defaults to
/// `1/sqrt(d)`.
pub fn attention_bshd<T: Element>(
    q: &[T],
    k: &[T],
    v: &[T],
    shape: &Shape,
    mask: &Mask,
    scale: Option<f64>,
) -> Result<Output, AttentionError> {
    let (ql, kvl) = (shape.q_layout(), shape.kv_layout());
    attention(
        Tensor::new(q, &ql),
        Tensor::new(k, &kvl),
        Tensor::new(v, &kvl),
        mask,
        scale,
    )
}

/// Attention over fixed-length strided tensors. Q is `[batch, sq, hq, d]`, K `[batch, sk, hkv,
/// d]`, V `[batch, sk, hkv, dv]`; query head `h` reads KV head `h / (hq / hkv)`. `scale`
/// defaults to `1/sqrt(d)`. O is returned as `[batch, sq, hq, dv]`, lse as `[batch, hq, sq]`.
pub fn attention<T: Element>(
    q: Tensor<'_, T>,
    k: Tensor<'_, T>,
    v: Tensor<'_, T>,
    mask: &Mask,
    scale: Option<f64>,
) -> Result<Output, AttentionError> {
    let (problem, rows) = fixed_problem(q, k, v, mask, scale)?;
    mask.check(q.layout.batch, q.layout.heads, q.layout.seq, k.layout.seq)?;
    Ok(problem.run(rows))
}

/// The checked problem and rows of fixed-length tensors (shapes as [`attention`]).
fn fixed_problem<'a, T: Element>(
    q: Tensor<'a, T>,
    k: Tensor<'a, T>,
    v: Tensor<'a, T>,
    mask: &'a Mask,
    scale: Option<f64>,
) -> Result<(Problem<'a, T>, Rows), AttentionError> {
    let (ql, kl, vl) = (q.layout, k.layout, v.layout);
    same("batch of q and k", ql.batch, kl.batch)?;
    same("batch of q and v", ql.batch, vl.batch)?;
    same("sequence length of k and v", kl.seq, vl.seq)?;
    for (name, data, layout) in [("q", q.data, ql), ("k", k.data, kl), ("v", v.data, vl)] {
        buffer_fits(name, data.len(), layout.required_len())?;
    }
    let sides = [
        Side::fixed(q.data, ql),
        Side::fixed(k.data, kl),
        Side::fixed(v.data, vl),
    ];
    let rows = Rows::Fixed {
        batch: ql.batch,
        seq: ql.seq,
    };
    Ok((Problem::new(sides, mask, scale)?, rows))
}

/// Attention over packed varlen tensors: Q `[total_q, hq, d]` over `cu_seqlens_q`, K and V
/// `[total_k, hkv, d]` over `cu_seqlens_k`. Each sequence uses its own lengths for positions.
/// O is returned as `[total_q, hq, dv]`, lse as `[hq, total_q]`.
pub fn attention_varlen<T: Element>(
    q: VarlenTensor<'_, T>,
    k: VarlenTensor<'_, T>,
    v: VarlenTensor<'_, T>,
    mask: &Mask,
    scale: Option<f64>,
) -> Result<Output, AttentionError> {
    let (problem, rows) = varlen_problem(q, k, v, mask, scale)?;
    for b in 0..q.layout.batch() {
        mask.check(
            q.layout.batch(),
            q.layout.heads,
            q.layout.seqlen(b),
            k.layout.seqlen(b),
        )?;
    }
    Ok(problem.run(rows))
}

/// The checked problem and rows of packed varlen tensors (shapes as [`attention_varlen`]).
fn varlen_problem<'a, T: Element>(
    q: VarlenTensor<'a, T>,
    k: VarlenTensor<'a, T>,
    v: VarlenTensor<'a, T>,
    mask: &'a Mask,
    scale: Option<f64>,
) -> Result<(Problem<'a, T>, Rows), AttentionError> {
    let (ql, kl, vl) = (q.layout, k.layout, v.layout);
    same("batch of q and k", ql.batch(), kl.batch())?;
    same("batch of q and v", ql.batch(), vl.batch())?;
    for b in 0..kl.batch() {
        if kl.seqlen(b) != vl.seqlen(b) {
            return Err(AttentionError::KvSeqlen {
                b,
                k: kl.seqlen(b),
                v: vl.seqlen(b),
            });
        }
    }
    for (name, data, layout) in [("q", q.data, ql), ("k", k.data, kl), ("v", v.data, vl)] {
        buffer_fits(name, data.len(), layout.required_len())?;
    }
    let sides = [
        Side::varlen(q.data, ql),
        Side::varlen(k.data, kl),
        Side::varlen(v.data, vl),
    ];
    let rows = Rows::Varlen {
        cu_seqlens: ql.cu_seqlens().to_vec(),
    };
    Ok((Problem::new(sides, mask, scale)?, rows))
}

fn same(what: &'static str, left: usize, right: usize) -> Result<(), AttentionError> {
    if left == right {
        Ok(())
    } else {
        Err(AttentionError::ShapeMismatch { what, left, right })
    }
}

fn buffer_fits(tensor: &'static str, len: usize, needed: usize) -> Result<(), AttentionError> {
    if len >= needed {
        Ok(())
    } else {
        Err(AttentionError::BufferTooShort {
            tensor,
            len,
            needed,
        })
    }
}

/// One of Q, K, V: where each sequence starts and how tokens, heads and dims are strided.
struct Side<'a, T> {
    data: &'a [T],
    starts: Vec<usize>,
    lens: Vec<usize>,
    strides: [usize; 3],
    heads: usize,
    dim: usize,
}

impl<'a, T: Element> Side<'a, T> {
    fn fixed(data: &'a [T], l: &Layout) -> Self {
        Side {
            data,
            starts: (0..l.batch).map(|b| b * l.strides[0]).collect(),
            lens: vec![l.seq; l.batch],
            strides: [l.strides[1], l.strides[2], l.strides[3]],
            heads: l.heads,
            dim: l.dim,
        }
    }

    fn varlen(data: &'a [T], l: &VarlenLayout) -> Self {
        let cu = l.cu_seqlens();
        Side {
            data,
            starts: cu[..cu.len() - 1]
                .iter()
                .map(|&t| t * l.strides[0])
                .collect(),
            lens: cu.windows(2).map(|w| w[1] - w[0]).collect(),
            strides: l.strides,
            heads: l.heads,
            dim: l.dim,
        }
    }

    /// Rows `rows` of head `h` of sequence `b`, times `scale`, as a contiguous
    /// `[rows.len(), dim]` f64 buffer.
    fn gather(&self, b: usize, h: usize, rows: Range<usize>, scale: f64, out: &mut Vec<f64>) {
        out.clear();
        out.reserve(rows.len() * self.dim);
        let [ts, hs, ds] = self.strides;
        for i in rows {
            let base = self.starts[b] + i * ts + h * hs;
            out.extend((0..self.dim).map(|d| self.data[base + d * ds].to_f64() * scale));
        }
    }
}

struct Problem<'a, T> {
    q: Side<'a, T>,
    k: Side<'a, T>,
    v: Side<'a, T>,
    mask: &'a Mask,
    scale: f64,
}

/// `(batch element, kv head, query rows)`: the rows of every query head of the group.
struct Unit {
    b: usize,
    g: usize,
    rows: Range<usize>,
}

/// O (`[group heads, rows, dv]`) and lse (`[group heads, rows]`) of one unit.
struct UnitOut {
    o: Vec<f64>,
    lse: Vec<f64>,
}

impl<'a, T: Element> Problem<'a, T> {
    fn new(
        sides: [Side<'a, T>; 3],
        mask: &'a Mask,
        scale: Option<f64>,
    ) -> Result<Self, AttentionError> {
        let [q, k, v] = sides;
        let (hq, hkv) = (q.heads, k.heads);
        same("heads of k and v", hkv, v.heads)?;
        if hq == 0 || hkv == 0 || hq % hkv != 0 {
            return Err(AttentionError::Gqa { hq, hkv });
        }
        same("head dimension of q and k", q.dim, k.dim)?;
        if q.dim == 0 {
            return Err(AttentionError::ZeroDim { tensor: "q" });
        }
        if v.dim == 0 {
            return Err(AttentionError::ZeroDim { tensor: "v" });
        }
        let scale = scale.unwrap_or(1.0 / (q.dim as f64).sqrt());
        if !scale.is_finite() {
            return Err(AttentionError::Scale(scale));
        }
        Ok(Problem {
            q,
            k,
            v,
            mask,
            scale,
        })
    }

    fn run(&self, rows: Rows) -> Output {
        let (hq, hkv, dv) = (self.q.heads, self.k.heads, self.v.dim);
        let mut out = Output::empty(rows, hq, dv);
        let mut units = Vec::new();
        let mut work = 0usize;
        for b in 0..self.q.lens.len() {
            let (sq, sk) = (self.q.lens[b], self.k.lens[b]);
            work += sq * sk * hq * (self.q.dim + dv);
            for g in 0..hkv {
                for start in (0..sq).step_by(CHUNK_ROWS) {
                    units.push(Unit {
                        b,
                        g,
                        rows: start..(start + CHUNK_ROWS).min(sq),
                    });
                }
            }
        }
        let threads = if work < PARALLEL_WORK {
            1
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(units.len())
        };
        let results: Vec<(usize, UnitOut)> = if threads <= 1 {
            let mut scratch = Scratch::default();
            units
                .iter()
                .enumerate()
                .map(|(n, u)| (n, self.run_unit(u, &mut scratch)))
                .collect()
        } else {
            let next = AtomicUsize::new(0);
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut done = Vec::new();
                            let mut scratch = Scratch::default();
                            loop {
                                let n = next.fetch_add(1, Ordering::Relaxed);
                                let Some(unit) = units.get(n) else { break };
                                done.push((n, self.run_unit(unit, &mut scratch)));
                            }
                            done
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        let group = hq / hkv;
        for (n, result) in results {
            let unit = &units[n];
            let rows = unit.rows.len();
            for hh in 0..group {
                let h = unit.g * group + hh;
                for (r, i) in unit.rows.clone().enumerate() {
                    let src = &result.o[(hh * rows + r) * dv..][..dv];
                    let at = out.o_offset(unit.b, h, i);
                    out.o[at..at + dv].copy_from_slice(src);
                    let at = out.lse_offset(unit.b, h, i);
                    out.lse[at] = result.lse[hh * rows + r];
                }
            }
        }
        out
    }

    fn run_unit(&self, unit: &Unit, scratch: &mut Scratch) -> UnitOut {
        let Unit { b, g, ref rows } = *unit;
        let (sq, sk) = (self.q.lens[b], self.k.lens[b]);
        let group = self.q.heads / self.k.heads;
        let (n, dqk, dv) = (rows.len(), self.q.dim, self.v.dim);
        let mut out = UnitOut {
            o: vec![0.0; group * n * dv],
            lse: vec![f64::NEG_INFINITY; group * n],
        };
        let Scratch {
            kv_of,
            k: kbuf,
            v: vbuf,
            q: qbuf,
            scores,
            ranges,
            row_ptr,
            row,
        } = scratch;

        // Visible key ranges of every (head, row) of the unit, and their hull.
        ranges.clear();
        row_ptr.clear();
        row_ptr.push(0);
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        for hh in 0..group {
            for i in rows.clone() {
                self.mask.visible_ranges(b, g * group + hh, i, sq, sk, row);
                for r in row.iter() {
                    lo = lo.min(r.start);
                    hi = hi.max(r.end);
                }
                ranges.append(row);
                row_ptr.push(ranges.len());
            }
        }
        if lo >= hi {
            return out;
        }
        // K and V of this (sequence, kv head), kept for the worker's next unit.
        if *kv_of != Some((b, g)) {
            self.k.gather(b, g, 0..sk, 1.0, kbuf);
            self.v.gather(b, g, 0..sk, 1.0, vbuf);
            *kv_of = Some((b, g));
        }
        let span = hi - lo;
        scores.clear();
        scores.resize(TILE_ROWS * span, 0.0);
        let mut inv_sum = [0.0f64; TILE_ROWS];

        for hh in 0..group {
            self.q
                .gather(b, g * group + hh, rows.clone(), self.scale, qbuf);
            for t0 in (0..n).step_by(TILE_ROWS) {
                let t1 = (t0 + TILE_ROWS).min(n);
                let tile: Vec<&[Range<usize>]> = (t0..t1)
                    .map(|r| &ranges[row_ptr[hh * n + r]..row_ptr[hh * n + r + 1]])
                    .collect();

                // Scores of visible keys.
                for_each_block(lo, hi, &tile, |r, keys| {
                    let q_row = &qbuf[(t0 + r) * dqk..][..dqk];
                    let s_row = &mut scores[r * span..][..span];
                    scores_into(
                        q_row,
                        &kbuf[keys.start * dqk..keys.end * dqk],
                        &mut s_row[keys.start - lo..keys.end - lo],
                    );
                });

                // Exact softmax of each row: max, exp, sum, lse.
                for (r, row_ranges) in tile.iter().enumerate() {
                    if row_ranges.is_empty() {
                        continue;
                    }
                    let s_row = &mut scores[r * span..][..span];
                    let mut max = f64::NEG_INFINITY;
                    for range in row_ranges.iter() {
                        for &s in &s_row[range.start - lo..range.end - lo] {
                            max = max.max(s);
                        }
                    }
                    let mut sum = 0.0;
                    for range in row_ranges.iter() {
                        for s in &mut s_row[range.start - lo..range.end - lo] {
                            *s = (*s - max).exp();
                            sum += *s;
                        }
                    }
                    out.lse[hh * n + t0 + r] = max + sum.ln();
                    inv_sum[r] = 1.0 / sum;
                }

                // O = P V, normalised.
                for_each_block(lo, hi, &tile, |r, keys| {
                    let p_row = &scores[r * span..][..span];
                    let o_row = &mut out.o[(hh * n + t0 + r) * dv..][..dv];
                    accumulate(
                        o_row,
                        &p_row[keys.start - lo..keys.end - lo],
                        &vbuf[keys.start * dv..keys.end * dv],
                    );
                });
                for (r, row_ranges) in tile.iter().enumerate() {
                    if !row_ranges.is_empty() {
                        let o_row = &mut out.o[(hh * n + t0 + r) * dv..][..dv];
                        o_row.iter_mut().for_each(|x| *x *= inv_sum[r]);
                    }
                }
            }
        }
        out
    }
}

/// Per-worker buffers, reused from unit to unit.
#[derive(Default)]
struct Scratch {
    /// The (sequence, kv head) whose K and V are in `k` and `v`.
    kv_of: Option<(usize, usize)>,
    k: Vec<f64>,
    v: Vec<f64>,
    q: Vec<f64>,
    scores: Vec<f64>,
    ranges: Vec<Range<usize>>,
    row_ptr: Vec<usize>,
    row: Vec<Range<usize>>,
}

/// Calls `f(r, keys)` for every row `r` of `tile` and every run of its visible keys, key block
/// by key block over `lo..hi`, so that one block of K or V serves all rows of the tile.
fn for_each_block(
    lo: usize,
    hi: usize,
    tile: &[&[Range<usize>]],
    mut f: impl FnMut(usize, Range<usize>),
) {
    let mut cursor = vec![0usize; tile.len()];
    // Blocks aligned to multiples of KEY_BLOCK: a row is cut the same way whatever unit it is in,
    // so its result does not depend on the other rows and heads computed with it.
    let mut start = lo - lo % KEY_BLOCK;
    while start < hi {
        let end = (start + KEY_BLOCK).min(hi);
        for (r, row) in tile.iter().enumerate() {
            let mut c = cursor[r];
            while c < row.len() && row[c].end <= start {
                c += 1;
            }
            cursor[r] = c;
            while c < row.len() && row[c].start < end {
                f(r, row[c].start.max(start)..row[c].end.min(end));
                c += 1;
            }
        }
        start = end;
    }
}

/// `out[j] = q · k_j` for the rows `k_j` of `keys` (`out.len()` rows of `q.len()` values).
fn scores_into(q: &[f64], keys: &[f64], out: &mut [f64]) {
    let d = q.len();
    let mut quads = keys.chunks_exact(4 * d);
    let mut outs = out.chunks_exact_mut(4);
    for (k4, o4) in (&mut quads).zip(&mut outs) {
        o4.copy_from_slice(&dot4(q, k4));
    }
    for (k, o) in quads.remainder().chunks_exact(d).zip(outs.into_remainder()) {
        *o = dot(q, k);
    }
}

/// Dot products of `q` with four consecutive rows of `k4` (one load of `q` serves four keys).
#[inline]
fn dot4(q: &[f64], k4: &[f64]) -> [f64; 4] {
    let d = q.len();
    let (k0, rest) = k4.split_at(d);
    let (k1, rest) = rest.split_at(d);
    let (k2, k3) = rest.split_at(d);
    let mut acc = [[0.0f64; 2]; 4];
    let mut tail = [0.0f64; 4];
    let pairs = d / 2 * 2;
    for c in (0..pairs).step_by(2) {
        let (x0, x1) = (q[c], q[c + 1]);
        acc[0][0] += x0 * k0[c];
        acc[0][1] += x1 * k0[c + 1];
        acc[1][0] += x0 * k1[c];
        acc[1][1] += x1 * k1[c + 1];
        acc[2][0] += x0 * k2[c];
        acc[2][1] += x1 * k2[c + 1];
        acc[3][0] += x0 * k3[c];
        acc[3][1] += x1 * k3[c + 1];
    }
    if pairs < d {
        let x = q[pairs];
        tail = [x * k0[pairs], x * k1[pairs], x * k2[pairs], x * k3[pairs]];
    }
    [
        acc[0][0] + acc[0][1] + tail[0],
        acc[1][0] + acc[1][1] + tail[1],
        acc[2][0] + acc[2][1] + tail[2],
        acc[3][0] + acc[3][1] + tail[3],
    ]
}

#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `o += sum_j p[j] * v_j` over the rows `v_j` of `values`, four rows per pass over `o`.
fn accumulate(o: &mut [f64], p: &[f64], values: &[f64]) {
    let d = o.len();
    let mut quads = values.chunks_exact(4 * d);
    let mut weights = p.chunks_exact(4);
    for (v4, w) in (&mut quads).zip(&mut weights) {
        let (v0, rest) = v4.split_at(d);
        let (v1, rest) = rest.split_at(d);
        let (v2, v3) = rest.split_at(d);
        for (c, o) in o.iter_mut().enumerate() {
            *o += (w[0] * v0[c] + w[1] * v1[c]) + (w[2] * v2[c] + w[3] * v3[c]);
        }
    }
    for (v, &w) in quads.remainder().chunks_exact(d).zip(weights.remainder()) {
        for (o, &x) in o.iter_mut().zip(v) {
            *o += w * x;
        }
    }
}

/// The mask predicate of [`attention_custom`]: `(batch, query head, query position, key
/// position)`, with the query at its bottom-right aligned position `i + sk - sq`.
pub type MaskFn<'a> = &'a (dyn Fn(usize, usize, i64, i64) -> bool + Sync);

/// The score modifier of [`attention_custom`]: `(s, batch, query head, query position, key
/// position)` with `s = scale * q.k`; its result replaces `s` before the softmax.
pub type ScoreFn<'a> = &'a (dyn Fn(f64, usize, usize, i64, i64) -> f64 + Sync);

/// A user-defined mask and score modifier (the custom variant's semantics).
#[derive(Clone, Copy)]
pub struct CustomMask<'a> {
    /// Which keys each query sees.
    pub mask: MaskFn<'a>,
    /// What replaces each visible score; `None` keeps `scale * q.k`.
    pub score: Option<ScoreFn<'a>>,
}

/// Attention with a user-defined mask and score modifier over fixed-length tensors (shapes as
/// [`attention`]). A row whose keys are all masked out, or whose modified scores are all
/// `-inf`, yields O = 0 and lse = -inf.
pub fn attention_custom<T: Element>(
    q: Tensor<'_, T>,
    k: Tensor<'_, T>,
    v: Tensor<'_, T>,
    custom: &CustomMask<'_>,
    scale: Option<f64>,
) -> Result<Output, AttentionError> {
    let mask = Mask::dense();
    let (problem, rows) = fixed_problem(q, k, v, &mask, scale)?;
    Ok(problem.run_custom(custom, rows))
}

/// [`attention_custom`] over packed varlen tensors (shapes as [`attention_varlen`]); each
/// sequence's positions use its own lengths.
pub fn attention_custom_varlen<T: Element>(
    q: VarlenTensor<'_, T>,
    k: VarlenTensor<'_, T>,
    v: VarlenTensor<'_, T>,
    custom: &CustomMask<'_>,
    scale: Option<f64>,
) -> Result<Output, AttentionError> {
    let mask = Mask::dense();
    let (problem, rows) = varlen_problem(q, k, v, &mask, scale)?;
    Ok(problem.run_custom(custom, rows))
}

/// O (`[rows, dv]`) and lse of one (sequence, query head).
type RowsOut = (Vec<f64>, Vec<f64>);

impl<T: Element> Problem<'_, T> {
    /// Every (sequence, query head) on its own, every key tested: plain and exact.
    fn run_custom(&self, custom: &CustomMask<'_>, rows: Rows) -> Output {
        let (hq, hkv, dv, d) = (self.q.heads, self.k.heads, self.v.dim, self.q.dim);
        let mut out = Output::empty(rows, hq, dv);
        let units: Vec<(usize, usize)> = (0..self.q.lens.len())
            .flat_map(|b| (0..hq).map(move |h| (b, h)))
            .collect();
        let run = |&(b, h): &(usize, usize)| -> RowsOut {
            let (sq, sk) = (self.q.lens[b], self.k.lens[b]);
            let g = h / (hq / hkv);
            let (mut qb, mut kb, mut vb) = (Vec::new(), Vec::new(), Vec::new());
            self.q.gather(b, h, 0..sq, 1.0, &mut qb);
            self.k.gather(b, g, 0..sk, 1.0, &mut kb);
            self.v.gather(b, g, 0..sk, 1.0, &mut vb);
            let (mut o, mut lse) = (vec![0.0; sq * dv], vec![f64::NEG_INFINITY; sq]);
            let mut s = Vec::with_capacity(sk);
            for i in 0..sq {
                let pos = i as i64 + sk as i64 - sq as i64;
                s.clear();
                for j in 0..sk {
                    if (custom.mask)(b, h, pos, j as i64) {
                        let x = self.scale * dot(&qb[i * d..][..d], &kb[j * d..][..d]);
                        let x = custom.score.map_or(x, |f| f(x, b, h, pos, j as i64));
                        s.push((j, x));
                    }
                }
                let max = s.iter().fold(f64::NEG_INFINITY, |m, &(_, x)| m.max(x));
                if max == f64::NEG_INFINITY {
                    continue;
                }
                let sum: f64 = s.iter().map(|&(_, x)| (x - max).exp()).sum();
                lse[i] = max + sum.ln();
                let row = &mut o[i * dv..][..dv];
                for &(j, x) in &s {
                    let p = (x - max).exp() / sum;
                    for (o, &val) in row.iter_mut().zip(&vb[j * dv..][..dv]) {
                        *o += p * val;
                    }
                }
            }
            (o, lse)
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(units.len().max(1));
        let next = AtomicUsize::new(0);
        let results: Vec<(usize, RowsOut)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            let Some(unit) = units.get(n) else { break };
                            done.push((n, run(unit)));
                        }
                        done
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for (n, (o, lse)) in results {
            let (b, h) = units[n];
            for i in 0..self.q.lens[b] {
                let at = out.o_offset(b, h, i);
                out.o[at..at + dv].copy_from_slice(&o[i * dv..][..dv]);
                let at = out.lse_offset(b, h, i);
                out.lse[at] = lse[i];
            }
        }
        out
    }
}
