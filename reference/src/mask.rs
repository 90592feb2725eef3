//! The visibility rule of every attention variant.
//!
//! Query `i` of a sequence with `sq` queries and `sk` keys sits at position
//! `pos = i + sk - sq` (bottom-right alignment); `pos` is negative for the first `sq - sk`
//! queries when `sq > sk`, and such rows see no key under any causal rule.

use std::ops::Range;

use thiserror::Error;

/// An invalid mask, or a mask that does not fit the problem it is applied to.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MaskError {
    /// Block sizes must be positive.
    #[error("block sizes must be positive, got block_q = {block_q}, block_k = {block_k}")]
    ZeroBlockSize {
        /// Query block size.
        block_q: usize,
        /// Key block size.
        block_k: usize,
    },
    /// An array of the block list has the wrong number of elements.
    #[error("{field} has {actual} elements, expected {expected}")]
    ListLength {
        /// Which array.
        field: &'static str,
        /// Elements its dimensions call for.
        expected: usize,
        /// Elements it has.
        actual: usize,
    },
    /// `kv_count[b, h, qb]` is negative or larger than `max_blocks`.
    #[error("kv_count[{b}, {h}, {qb}] = {count} is outside 0..={max_blocks}")]
    CountOutOfRange {
        /// Batch index in the list.
        b: usize,
        /// Head index in the list.
        h: usize,
        /// Query block.
        qb: usize,
        /// The count.
        count: i32,
        /// The list's `max_blocks`.
        max_blocks: usize,
    },
    /// `kv_index[b, h, qb, slot]` is not a key block index.
    #[error("kv_index[{b}, {h}, {qb}, {slot}] = {index} is outside 0..{k_blocks}")]
    IndexOutOfRange {
        /// Batch index in the list.
        b: usize,
        /// Head index in the list.
        h: usize,
        /// Query block.
        qb: usize,
        /// Slot in the row.
        slot: usize,
        /// The index.
        index: i32,
        /// Number of key blocks.
        k_blocks: usize,
    },
    /// `kv_index[b, h, qb, ..count]` is not strictly ascending.
    #[error(
        "kv_index[{b}, {h}, {qb}, {slot}] = {index} does not exceed the previous entry {previous}"
    )]
    NotAscending {
        /// Batch index in the list.
        b: usize,
        /// Head index in the list.
        h: usize,
        /// Query block.
        qb: usize,
        /// Slot in the row.
        slot: usize,
        /// The entry before.
        previous: i32,
        /// The offending entry.
        index: i32,
    },
    /// The block list's batch dimension is neither 1 nor the problem's batch.
    #[error("block list has batch dimension {list}, expected 1 or {batch}")]
    ListBatch {
        /// The list's batch dimension.
        list: usize,
        /// The problem's batch.
        batch: usize,
    },
    /// The block list's head dimension is neither 1 nor the number of query heads divided by
    /// the query heads per list.
    #[error("block list has head dimension {list} read by {group} query heads each, expected 1 or hq / {group} with hq = {hq}")]
    ListHeads {
        /// The list's head dimension.
        list: usize,
        /// Query heads per list head.
        group: usize,
        /// Number of query heads.
        hq: usize,
    },
    /// The block list covers fewer tokens than the sequence has.
    #[error("block list covers {blocks} {axis} blocks of {block_size} tokens, fewer than the {seq} tokens of the sequence")]
    ListCoverage {
        /// "query" or "key".
        axis: &'static str,
        /// Blocks in the list.
        blocks: usize,
        /// Block size.
        block_size: usize,
        /// Sequence length.
        seq: usize,
    },
    /// A mixed mask needs one kind per query head.
    #[error("mixed mask has {kinds} head kinds, expected hq = {hq}")]
    MixedHeadCount {
        /// Kinds given.
        kinds: usize,
        /// Number of query heads.
        hq: usize,
    },
    /// A mixed mask has a block-sparse head but no block list.
    #[error("head {head} of the mixed mask is block-sparse, but the mask has no block list")]
    MixedMissingList {
        /// The first block-sparse head.
        head: usize,
    },
    /// APB needs `sk = anchor + passing + L` with `sq <= L` local keys.
    #[error("APB needs sq <= L local keys (sk = anchor + passing + L), got anchor {anchor} + passing {passing} + sq {sq} > sk {sk}")]
    ApbLength {
        /// Anchor length.
        anchor: usize,
        /// Passing length.
        passing: usize,
        /// Query (local block) length.
        sq: usize,
        /// Key length.
        sk: usize,
    },
}

/// A block list in BSR form, as FlexAttention's BlockMask and Block-Sparse-Attention use it:
/// `kv_count[b, h, qb]` key blocks are kept for query block `qb`, namely
/// `kv_index[b, h, qb, ..kv_count]` (strictly ascending). Entries of `kv_index` past the count
/// are padding and never read. `batch` and `heads` may be 1 to share one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BsrList {
    /// Batch dimension (1 or the problem's batch).
    pub batch: usize,
    /// Head dimension (1 or the number of query heads).
    pub heads: usize,
    /// Number of query blocks.
    pub q_blocks: usize,
    /// Number of key blocks (bound on every index).
    pub k_blocks: usize,
    /// Slots per row of `kv_index`.
    pub max_blocks: usize,
    /// `[batch, heads, q_blocks]`.
    pub kv_count: Vec<i32>,
    /// `[batch, heads, q_blocks, max_blocks]`.
    pub kv_index: Vec<i32>,
}

impl BsrList {
    /// Checks array lengths, counts (`0 <= count <= max_blocks`) and indices (in
    /// `0..k_blocks`, strictly ascending).
    pub fn validate(&self) -> Result<(), MaskError> {
        let rows = self.batch * self.heads * self.q_blocks;
        if self.kv_count.len() != rows {
            return Err(MaskError::ListLength {
                field: "kv_count",
                expected: rows,
                actual: self.kv_count.len(),
            });
        }
        if self.kv_index.len() != rows * self.max_blocks {
            return Err(MaskError::ListLength {
                field: "kv_index",
                expected: rows * self.max_blocks,
                actual: self.kv_index.len(),
            });
        }
        for b in 0..self.batch {
            for h in 0..self.heads {
                for qb in 0..self.q_blocks {
                    let row = (b * self.heads + h) * self.q_blocks + qb;
                    let count = self.kv_count[row];
                    let count_ok = usize::try_from(count)
                        .map(|c| c <= self.max_blocks)
                        .unwrap_or(false);
                    if !count_ok {
                        return Err(MaskError::CountOutOfRange {
                            b,
                            h,
                            qb,
                            count,
                            max_blocks: self.max_blocks,
                        });
                    }
                    let slots = &self.kv_index[row * self.max_blocks..][..count as usize];
                    for (slot, &index) in slots.iter().enumerate() {
                        let in_range = usize::try_from(index)
                            .map(|k| k < self.k_blocks)
                            .unwrap_or(false);
                        if !in_range {
                            return Err(MaskError::IndexOutOfRange {
                                b,
                                h,
                                qb,
                                slot,
                                index,
                                k_blocks: self.k_blocks,
                            });
                        }
                        if slot > 0 && index <= slots[slot - 1] {
                            return Err(MaskError::NotAscending {
                                b,
                                h,
                                qb,
                                slot,
                                previous: slots[slot - 1],
                                index,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The kept key blocks of row `(b, h, qb)` (indices into this list, not broadcast).
    pub fn row(&self, b: usize, h: usize, qb: usize) -> &[i32] {
        let row = (b * self.heads + h) * self.q_blocks + qb;
        let count = usize::try_from(self.kv_count[row]).unwrap_or(0);
        &self.kv_index[row * self.max_blocks..][..count]
    }
}

/// A dense boolean block matrix `[batch, heads, q_blocks, k_blocks]` (`true` = kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMatrix {
    /// Batch dimension.
    pub batch: usize,
    /// Head dimension.
    pub heads: usize,
    /// Number of query blocks.
    pub q_blocks: usize,
    /// Number of key blocks.
    pub k_blocks: usize,
    /// Row-major `[batch, heads, q_blocks, k_blocks]`.
    pub keep: Vec<bool>,
}

impl BlockMatrix {
    /// A matrix with every block set to `value`.
    pub fn filled(
        batch: usize,
        heads: usize,
        q_blocks: usize,
        k_blocks: usize,
        value: bool,
    ) -> Self {
        BlockMatrix {
            batch,
            heads,
            q_blocks,
            k_blocks,
            keep: vec![value; batch * heads * q_blocks * k_blocks],
        }
    }

    fn index(&self, b: usize, h: usize, qb: usize, kb: usize) -> usize {
        ((b * self.heads + h) * self.q_blocks + qb) * self.k_blocks + kb
    }

    /// Whether block `(qb, kb)` of `(b, h)` is kept.
    pub fn get(&self, b: usize, h: usize, qb: usize, kb: usize) -> bool {
        self.keep[self.index(b, h, qb, kb)]
    }

    /// Keeps or drops block `(qb, kb)` of `(b, h)`.
    pub fn set(&mut self, b: usize, h: usize, qb: usize, kb: usize, value: bool) {
        let index = self.index(b, h, qb, kb);
        self.keep[index] = value;
    }

    /// The BSR form with `max_blocks = k_blocks`; unused slots are padded with 0.
    pub fn to_bsr(&self) -> BsrList {
        let rows = self.batch * self.heads * self.q_blocks;
        let mut kv_count = Vec::with_capacity(rows);
        let mut kv_index = vec![0i32; rows * self.k_blocks];
        for row in 0..rows {
            let keep = &self.keep[row * self.k_blocks..][..self.k_blocks];
            let mut count = 0;
            for (kb, _) in keep.iter().enumerate().filter(|(_, &k)| k) {
                kv_index[row * self.k_blocks + count] = to_i32(kb);
                count += 1;
            }
            kv_count.push(to_i32(count));
        }
        BsrList {
            batch: self.batch,
            heads: self.heads,
            q_blocks: self.q_blocks,
            k_blocks: self.k_blocks,
            max_blocks: self.k_blocks,
            kv_count,
            kv_index,
        }
    }
}

fn to_i32(value: usize) -> i32 {
    i32::try_from(value).expect("block index exceeds i32::MAX")
}

/// A block-sparse mask: key `j` is visible to query `i` iff block `(i / block_q, j / block_k)`
/// is listed; with `causal` also `j <= pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSparse {
    block_q: usize,
    block_k: usize,
    causal: bool,
    list: BsrList,
    kept: Vec<bool>,
    /// Consecutive query heads that read one list head (1: one list per query head; the GQA
    /// ratio: one list per kv head). Unused when the list has one head.
    heads_per_list: usize,
}

impl BlockSparse {
    /// Validates `list` (see [`BsrList::validate`]) and builds the mask.
    pub fn new(
        block_q: usize,
        block_k: usize,
        causal: bool,
        list: BsrList,
    ) -> Result<Self, MaskError> {
        if block_q == 0 || block_k == 0 {
            return Err(MaskError::ZeroBlockSize { block_q, block_k });
        }
        list.validate()?;
        let rows = list.batch * list.heads * list.q_blocks;
        let mut kept = vec![false; rows * list.k_blocks];
        for row in 0..rows {
            let count = list.kv_count[row] as usize;
            for &kb in &list.kv_index[row * list.max_blocks..][..count] {
                kept[row * list.k_blocks + kb as usize] = true;
            }
        }
        Ok(BlockSparse {
            block_q,
            block_k,
            causal,
            list,
            kept,
            heads_per_list: 1,
        })
    }

    /// One list head per group of `group` consecutive query heads (one list per kv head when
    /// `group` is the GQA ratio): query head `h` reads list head `h / group`.
    pub fn per_group(mut self, group: usize) -> Self {
        self.heads_per_list = group.max(1);
        self
    }

    /// From a dense boolean block matrix.
    pub fn from_matrix(
        block_q: usize,
        block_k: usize,
        causal: bool,
        matrix: &BlockMatrix,
    ) -> Result<Self, MaskError> {
        let expected = matrix.batch * matrix.heads * matrix.q_blocks * matrix.k_blocks;
        if matrix.keep.len() != expected {
            return Err(MaskError::ListLength {
                field: "keep",
                expected,
                actual: matrix.keep.len(),
            });
        }
        Self::new(block_q, block_k, causal, matrix.to_bsr())
    }

    /// Every block of an `sq x sk` problem listed, one list shared by all batches and heads.
    pub fn all_blocks(
        block_q: usize,
        block_k: usize,
        causal: bool,
        sq: usize,
        sk: usize,
    ) -> Result<Self, MaskError> {
        if block_q == 0 || block_k == 0 {
            return Err(MaskError::ZeroBlockSize { block_q, block_k });
        }
        let matrix = BlockMatrix::filled(1, 1, sq.div_ceil(block_q), sk.div_ceil(block_k), true);
        Self::from_matrix(block_q, block_k, causal, &matrix)
    }

    /// Query block size.
    pub fn block_q(&self) -> usize {
        self.block_q
    }

    /// Key block size.
    pub fn block_k(&self) -> usize {
        self.block_k
    }

    /// Whether the causal rule applies on top of the block list.
    pub fn causal(&self) -> bool {
        self.causal
    }

    /// The block list.
    pub fn list(&self) -> &BsrList {
        &self.list
    }

    /// The list row used by batch `b`, query head `h` (broadcast over a dimension of size 1).
    fn list_coords(&self, b: usize, h: usize) -> Option<(usize, usize)> {
        let lb = if self.list.batch == 1 { 0 } else { b };
        let lh = if self.list.heads == 1 {
            0
        } else {
            h / self.heads_per_list
        };
        (lb < self.list.batch && lh < self.list.heads).then_some((lb, lh))
    }

    /// Whether key block `kb` is listed for query block `qb` of batch `b`, query head `h`.
    pub fn is_listed(&self, b: usize, h: usize, qb: usize, kb: usize) -> bool {
        match self.list_coords(b, h) {
            Some((lb, lh)) if qb < self.list.q_blocks && kb < self.list.k_blocks => {
                let row = (lb * self.list.heads + lh) * self.list.q_blocks + qb;
                self.kept[row * self.list.k_blocks + kb]
            }
            _ => false,
        }
    }

    fn check(&self, batch: usize, hq: usize, sq: usize, sk: usize) -> Result<(), MaskError> {
        if self.list.batch != 1 && self.list.batch != batch {
            return Err(MaskError::ListBatch {
                list: self.list.batch,
                batch,
            });
        }
        if self.list.heads != 1 && self.list.heads * self.heads_per_list != hq {
            return Err(MaskError::ListHeads {
                list: self.list.heads,
                group: self.heads_per_list,
                hq,
            });
        }
        if self.list.q_blocks * self.block_q < sq {
            return Err(MaskError::ListCoverage {
                axis: "query",
                blocks: self.list.q_blocks,
                block_size: self.block_q,
                seq: sq,
            });
        }
        if self.list.k_blocks * self.block_k < sk {
            return Err(MaskError::ListCoverage {
                axis: "key",
                blocks: self.list.k_blocks,
                block_size: self.block_k,
                seq: sk,
            });
        }
        Ok(())
    }
}

/// The rule of one query head inside a [`Mask::Mixed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// Every key visible.
    Dense,
    /// Keys `j <= pos` visible.
    DenseCausal,
    /// A-shaped: `j <= pos` and (`j < sink` or `pos - j < window`).
    Streaming {
        /// Number of sink tokens at the start.
        sink: usize,
        /// Local window length (the query's own position included).
        window: usize,
    },
    /// The mixed mask's block list (with its `causal` flag).
    BlockSparse,
}

/// The visibility rule of an attention launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// Every key visible; with `causal`, keys `j <= pos`.
    Dense {
        /// Apply the causal rule.
        causal: bool,
    },
    /// A-shaped streaming mask: `j <= pos` and (`j < sink` or `pos - j < window`).
    Streaming {
        /// Number of sink tokens at the start.
        sink: usize,
        /// Local window length (the query's own position included).
        window: usize,
    },
    /// Listed blocks only (see [`BlockSparse`]).
    BlockSparse(BlockSparse),
    /// One rule per query head, all in one launch.
    Mixed {
        /// `head_kind[h]` is the rule of query head `h` (`hq` entries).
        head_kind: Vec<HeadKind>,
        /// The block list used by [`HeadKind::BlockSparse`] heads; its head dimension is 1 or
        /// `hq` (indexed by query head).
        block_sparse: Option<BlockSparse>,
    },
    /// APB: keys are `[anchor (A) | passing (P) | local (L)]`, queries are the last `sq <= L`
    /// queries of the local block (`sk = A + P + L`). Anchor and passing keys are always
    /// visible; local key `j' = j - A - P` is visible iff `j' <= i + L - sq` (bottom-right, as
    /// every other rule).
    Apb {
        /// Anchor length A.
        anchor: usize,
        /// Passing length P.
        passing: usize,
    },
}

/// The rule that decides one row, after resolving mixed heads.
#[derive(Clone, Copy)]
enum Rule<'a> {
    None,
    Dense { causal: bool },
    Streaming { sink: usize, window: usize },
    Block(&'a BlockSparse),
    Apb { prefix: usize },
}

fn position(i: usize, sq: usize, sk: usize) -> i64 {
    i as i64 + sk as i64 - sq as i64
}

/// Appends `r` to sorted, disjoint `out`, merging with the last range where they touch.
fn push_range(out: &mut Vec<Range<usize>>, r: Range<usize>) {
    if r.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut() {
        if r.start <= last.end {
            last.end = last.end.max(r.end);
            return;
        }
    }
    out.push(r);
}

/// `pos + 1` clamped to `0..=sk`: the end of the causal key range.
fn causal_end(pos: i64, sk: usize) -> usize {
    (pos + 1).clamp(0, sk as i64) as usize
}

impl Mask {
    /// Plain attention, every key visible.
    pub fn dense() -> Self {
        Mask::Dense { causal: false }
    }

    /// Causal attention (bottom-right aligned).
    pub fn causal() -> Self {
        Mask::Dense { causal: true }
    }

    /// A-shaped streaming attention.
    pub fn streaming(sink: usize, window: usize) -> Self {
        Mask::Streaming { sink, window }
    }

    /// APB local-block attention over `[anchor | passing | local]` keys.
    pub fn apb(anchor: usize, passing: usize) -> Self {
        Mask::Apb { anchor, passing }
    }

    fn rule(&self, h: usize) -> Rule<'_> {
        match self {
            Mask::Dense { causal } => Rule::Dense { causal: *causal },
            Mask::Streaming { sink, window } => Rule::Streaming {
                sink: *sink,
                window: *window,
            },
            Mask::BlockSparse(bs) => Rule::Block(bs),
            Mask::Apb { anchor, passing } => Rule::Apb {
                prefix: anchor + passing,
            },
            Mask::Mixed {
                head_kind,
                block_sparse,
            } => match head_kind.get(h) {
                None => Rule::None,
                Some(HeadKind::Dense) => Rule::Dense { causal: false },
                Some(HeadKind::DenseCausal) => Rule::Dense { causal: true },
                Some(&HeadKind::Streaming { sink, window }) => Rule::Streaming { sink, window },
                Some(HeadKind::BlockSparse) => match block_sparse {
                    Some(bs) => Rule::Block(bs),
                    None => Rule::None,
                },
            },
        }
    }

    /// Whether key `j` is visible to query `i` of batch element `b`, query head `h`, in a
    /// sequence with `sq` queries and `sk` keys. Indices outside `0..sq` / `0..sk` are never
    /// visible.
    pub fn visible(&self, b: usize, h: usize, i: usize, j: usize, sq: usize, sk: usize) -> bool {
        if i >= sq || j >= sk {
            return false;
        }
        let pos = position(i, sq, sk);
        let j_signed = j as i64;
        match self.rule(h) {
            Rule::None => false,
            Rule::Dense { causal } => !causal || j_signed <= pos,
            Rule::Streaming { sink, window } => {
                let window = i64::try_from(window).unwrap_or(i64::MAX);
                j_signed <= pos && (j < sink || pos - j_signed < window)
            }
            Rule::Block(bs) => {
                bs.is_listed(b, h, i / bs.block_q, j / bs.block_k)
                    && (!bs.causal || j_signed <= pos)
            }
            Rule::Apb { prefix } => j < prefix || j_signed <= pos,
        }
    }

    /// The keys visible to query `i` (of batch `b`, query head `h`) as sorted, disjoint,
    /// non-empty ranges, written to `out` (cleared first). Agrees with [`Mask::visible`].
    #[allow(clippy::too_many_arguments)]
    pub fn visible_ranges(
        &self,
        b: usize,
        h: usize,
        i: usize,
        sq: usize,
        sk: usize,
        out: &mut Vec<Range<usize>>,
    ) {
        out.clear();
        if i >= sq || sk == 0 {
            return;
        }
        let pos = position(i, sq, sk);
        match self.rule(h) {
            Rule::None => {}
            Rule::Dense { causal: false } => push_range(out, 0..sk),
            Rule::Dense { causal: true } => push_range(out, 0..causal_end(pos, sk)),
            Rule::Streaming { sink, window } => {
                let end = causal_end(pos, sk);
                push_range(out, 0..sink.min(end));
                let window = i64::try_from(window).unwrap_or(i64::MAX);
                let start = pos
                    .saturating_sub(window)
                    .saturating_add(1)
                    .clamp(0, end as i64) as usize;
                push_range(out, start..end);
            }
            Rule::Block(bs) => {
                let Some((lb, lh)) = bs.list_coords(b, h) else {
                    return;
                };
                let qb = i / bs.block_q;
                if qb >= bs.list.q_blocks {
                    return;
                }
                let end = if bs.causal { causal_end(pos, sk) } else { sk };
                for &kb in bs.list.row(lb, lh, qb) {
                    let start = kb as usize * bs.block_k;
                    push_range(out, start.min(end)..(start + bs.block_k).min(end));
                }
            }
            Rule::Apb { prefix } => push_range(out, 0..causal_end(pos, sk).max(prefix.min(sk))),
        }
    }

    /// Checks that the mask fits a problem: `batch` elements, `hq` query heads, and one
    /// element's `sq` / `sk` (call once per element for varlen batches).
    pub fn check(&self, batch: usize, hq: usize, sq: usize, sk: usize) -> Result<(), MaskError> {
        match self {
            Mask::Dense { .. } | Mask::Streaming { .. } => Ok(()),
            Mask::BlockSparse(bs) => bs.check(batch, hq, sq, sk),
            Mask::Mixed {
                head_kind,
                block_sparse,
            } => {
                if head_kind.len() != hq {
                    return Err(MaskError::MixedHeadCount {
                        kinds: head_kind.len(),
                        hq,
                    });
                }
                let first_block_head = head_kind.iter().position(|k| *k == HeadKind::BlockSparse);
                match (first_block_head, block_sparse) {
                    (Some(head), None) => Err(MaskError::MixedMissingList { head }),
                    (Some(_), Some(bs)) => bs.check(batch, hq, sq, sk),
                    (None, _) => Ok(()),
                }
            }
            &Mask::Apb { anchor, passing } => {
                if anchor + passing + sq <= sk {
                    Ok(())
                } else {
                    Err(MaskError::ApbLength {
                        anchor,
                        passing,
                        sq,
                        sk,
                    })
                }
            }
        }
    }

    /// Number of visible `(i, j)` pairs of batch element `b` summed over `hq` query heads; the
    /// useful-FLOP count of a launch is `4 * d * ` the sum of this over the batch.
    pub fn visible_pairs(&self, b: usize, hq: usize, sq: usize, sk: usize) -> u64 {
        let mut ranges = Vec::new();
        let mut total = 0u64;
        for h in 0..hq {
            for i in 0..sq {
                self.visible_ranges(b, h, i, sq, sk, &mut ranges);
                total += ranges.iter().map(|r| r.len() as u64).sum::<u64>();
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(mask: &Mask, b: usize, h: usize, i: usize, sq: usize, sk: usize) -> Vec<usize> {
        (0..sk)
            .filter(|&j| mask.visible(b, h, i, j, sq, sk))
            .collect()
    }

    fn from_ranges(mask: &Mask, b: usize, h: usize, i: usize, sq: usize, sk: usize) -> Vec<usize> {
        let mut ranges = Vec::new();
        mask.visible_ranges(b, h, i, sq, sk, &mut ranges);
        for pair in ranges.windows(2) {
            assert!(
                pair[0].end < pair[1].start,
                "ranges not disjoint and sorted: {ranges:?}"
            );
        }
        assert!(ranges.iter().all(|r| !r.is_empty()));
        ranges.into_iter().flatten().collect()
    }

    fn assert_ranges_match(mask: &Mask, batch: usize, hq: usize, sq: usize, sk: usize) {
        for b in 0..batch {
            for h in 0..hq {
                for i in 0..sq {
                    assert_eq!(
                        brute(mask, b, h, i, sq, sk),
                        from_ranges(mask, b, h, i, sq, sk),
                        "mask {mask:?} b {b} h {h} i {i} sq {sq} sk {sk}"
                    );
                }
            }
        }
    }

    fn checkerboard(batch: usize, heads: usize, qb: usize, kb: usize) -> BlockMatrix {
        let mut m = BlockMatrix::filled(batch, heads, qb, kb, false);
        for b in 0..batch {
            for h in 0..heads {
                for q in 0..qb {
                    for k in 0..kb {
                        m.set(b, h, q, k, (q * 7 + k * 3 + h + 2 * b) % 3 != 0);
                    }
                }
            }
        }
        m
    }

    #[test]
    fn ranges_agree_with_visible() {
        let shapes = [
            (1, 1),
            (5, 5),
            (3, 9),
            (9, 3),
            (0, 4),
            (4, 0),
            (17, 33),
            (33, 17),
        ];
        for &(sq, sk) in &shapes {
            for mask in [
                Mask::dense(),
                Mask::causal(),
                Mask::streaming(0, 0),
                Mask::streaming(2, 3),
                Mask::streaming(3, 2),
                Mask::streaming(0, 4),
                Mask::streaming(100, 1),
                Mask::streaming(1, usize::MAX),
            ] {
                assert_ranges_match(&mask, 1, 1, sq, sk);
            }
            for causal in [false, true] {
                let m = checkerboard(2, 3, sq.div_ceil(4), sk.div_ceil(5));
                let bs = BlockSparse::from_matrix(4, 5, causal, &m).unwrap();
                assert_ranges_match(&Mask::BlockSparse(bs.clone()), 2, 3, sq, sk);
                let mixed = Mask::Mixed {
                    head_kind: vec![
                        HeadKind::Dense,
                        HeadKind::BlockSparse,
                        HeadKind::Streaming { sink: 1, window: 2 },
                    ],
                    block_sparse: Some(bs),
                };
                assert_ranges_match(&mixed, 2, 3, sq, sk);
            }
        }
        for (a, p, l) in [(0, 0, 5), (2, 3, 4), (4, 0, 1), (0, 3, 3), (3, 3, 0)] {
            assert_ranges_match(&Mask::apb(a, p), 1, 1, l, a + p + l);
        }
    }

    #[test]
    fn causal_alignment_is_bottom_right() {
        let m = Mask::causal();
        // sq < sk: the last query sees every key.
        assert!(m.visible(0, 0, 2, 9, 3, 10));
        assert!(!m.visible(0, 0, 0, 8, 3, 10));
        assert!(m.visible(0, 0, 0, 7, 3, 10));
        // sq > sk: the first sq - sk queries see nothing.
        assert!(!m.visible(0, 0, 1, 0, 5, 3));
        assert!(m.visible(0, 0, 2, 0, 5, 3));
        assert!(!m.visible(0, 0, 2, 1, 5, 3));
        assert_eq!(m.visible_pairs(0, 1, 5, 3), 1 + 2 + 3);
    }

    #[test]
    fn streaming_examples() {
        let m = Mask::streaming(2, 3);
        let row: Vec<usize> = (0..10).filter(|&j| m.visible(0, 0, 9, j, 10, 10)).collect();
        assert_eq!(row, vec![0, 1, 7, 8, 9]);
        let row: Vec<usize> = (0..10).filter(|&j| m.visible(0, 0, 3, j, 10, 10)).collect();
        assert_eq!(row, vec![0, 1, 2, 3]);
    }

    #[test]
    fn apb_examples() {
        let m = Mask::apb(2, 3);
        // sq = 4, sk = 9: query 1 sees anchor+passing (0..5) and local 0..=1 (keys 5, 6).
        let row: Vec<usize> = (0..9).filter(|&j| m.visible(0, 0, 1, j, 4, 9)).collect();
        assert_eq!(row, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(m.check(1, 1, 4, 9), Ok(()));
        // Fewer queries than local keys: the last two of L = 4, bottom-right aligned, so query
        // 0 sits at local position 2 and sees local keys 0..=2 (keys 5..=7).
        let row: Vec<usize> = (0..9).filter(|&j| m.visible(0, 0, 0, j, 2, 9)).collect();
        assert_eq!(row, vec![0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(m.check(1, 1, 2, 9), Ok(()));
        assert_ranges_match(&m, 1, 1, 2, 9);
        // More queries than local keys is no APB launch.
        assert!(matches!(
            m.check(1, 1, 4, 8),
            Err(MaskError::ApbLength { .. })
        ));
    }

    fn list(count: Vec<i32>, index: Vec<i32>, max_blocks: usize, k_blocks: usize) -> BsrList {
        BsrList {
            batch: 1,
            heads: 1,
            q_blocks: count.len(),
            k_blocks,
            max_blocks,
            kv_count: count,
            kv_index: index,
        }
    }

    #[test]
    fn bsr_validation_errors() {
        let ok = list(vec![2, 0], vec![0, 3, 9, 9], 2, 4);
        assert!(BlockSparse::new(2, 2, false, ok.clone()).is_ok());
        assert_eq!(
            BlockSparse::new(0, 2, false, ok).unwrap_err(),
            MaskError::ZeroBlockSize {
                block_q: 0,
                block_k: 2
            }
        );
        assert_eq!(
            BlockSparse::new(2, 2, false, list(vec![1, 0], vec![4, 0, 0, 0], 2, 4)).unwrap_err(),
            MaskError::IndexOutOfRange {
                b: 0,
                h: 0,
                qb: 0,
                slot: 0,
                index: 4,
                k_blocks: 4
            }
        );
        assert!(matches!(
            BlockSparse::new(2, 2, false, list(vec![1, 0], vec![-1, 0, 0, 0], 2, 4)).unwrap_err(),
            MaskError::IndexOutOfRange { index: -1, .. }
        ));
        assert_eq!(
            BlockSparse::new(2, 2, false, list(vec![0, 2], vec![0, 0, 2, 2], 2, 4)).unwrap_err(),
            MaskError::NotAscending {
                b: 0,
                h: 0,
                qb: 1,
                slot: 1,
                previous: 2,
                index: 2
            }
        );
        assert!(matches!(
            BlockSparse::new(2, 2, false, list(vec![0, 2], vec![0, 0, 3, 1], 2, 4)).unwrap_err(),
            MaskError::NotAscending {
                previous: 3,
                index: 1,
                ..
            }
        ));
        assert_eq!(
            BlockSparse::new(2, 2, false, list(vec![3, 0], vec![0, 1, 2, 3], 2, 4)).unwrap_err(),
            MaskError::CountOutOfRange {
                b: 0,
                h: 0,
                qb: 0,
                count: 3,
                max_blocks: 2
            }
        );
        assert!(matches!(
            BlockSparse::new(2, 2, false, list(vec![-1, 0], vec![0; 4], 2, 4)).unwrap_err(),
            MaskError::CountOutOfRange { count: -1, .. }
        ));
        assert!(matches!(
            BlockSparse::new(2, 2, false, list(vec![0, 0], vec![0; 3], 2, 4)).unwrap_err(),
            MaskError::ListLength {
                field: "kv_index",
                ..
            }
        ));
    }

    #[test]
    fn one_list_per_kv_head_is_read_by_its_group() {
        // Two list heads over 4 query heads: heads 0, 1 read list 0 (block 0 only), heads 2, 3
        // read list 1 (block 1 only).
        let mut matrix = BlockMatrix::filled(1, 2, 1, 2, false);
        matrix.set(0, 0, 0, 0, true);
        matrix.set(0, 1, 0, 1, true);
        let bs = BlockSparse::from_matrix(4, 4, false, &matrix)
            .unwrap()
            .per_group(2);
        let mask = Mask::BlockSparse(bs);
        assert_eq!(mask.check(1, 4, 4, 8), Ok(()));
        for (h, keys) in [(0, 0..4), (1, 0..4), (2, 4..8), (3, 4..8)] {
            let row: Vec<usize> = (0..8).filter(|&j| mask.visible(0, h, 1, j, 4, 8)).collect();
            assert_eq!(row, keys.collect::<Vec<_>>(), "head {h}");
        }
        assert_ranges_match(&mask, 1, 4, 4, 8);
        // Two lists of two heads each describe 4 query heads, not 2 or 8.
        for hq in [2, 8] {
            assert!(matches!(
                mask.check(1, hq, 4, 8),
                Err(MaskError::ListHeads { group: 2, .. })
            ));
        }
    }

    #[test]
    fn block_list_must_fit_problem() {
        let bs =
            BlockSparse::from_matrix(4, 4, false, &BlockMatrix::filled(2, 3, 2, 2, true)).unwrap();
        let mask = Mask::BlockSparse(bs);
        assert_eq!(mask.check(2, 3, 8, 8), Ok(()));
        assert!(matches!(
            mask.check(3, 3, 8, 8),
            Err(MaskError::ListBatch { .. })
        ));
        assert!(matches!(
            mask.check(2, 4, 8, 8),
            Err(MaskError::ListHeads { .. })
        ));
        assert!(matches!(
            mask.check(2, 3, 9, 8),
            Err(MaskError::ListCoverage { axis: "query", .. })
        ));
        assert!(matches!(
            mask.check(2, 3, 8, 9),
            Err(MaskError::ListCoverage { axis: "key", .. })
        ));
        let mixed = Mask::Mixed {
            head_kind: vec![HeadKind::Dense, HeadKind::BlockSparse],
            block_sparse: None,
        };
        assert_eq!(
            mixed.check(1, 2, 4, 4),
            Err(MaskError::MixedMissingList { head: 1 })
        );
        assert!(matches!(
            mixed.check(1, 3, 4, 4),
            Err(MaskError::MixedHeadCount { .. })
        ));
    }

    #[test]
    fn matrix_round_trips_through_bsr() {
        let m = checkerboard(2, 3, 4, 5);
        let bs = BlockSparse::from_matrix(8, 8, false, &m).unwrap();
        for b in 0..2 {
            for h in 0..3 {
                for q in 0..4 {
                    for k in 0..5 {
                        assert_eq!(bs.is_listed(b, h, q, k), m.get(b, h, q, k));
                    }
                }
            }
        }
    }
}
