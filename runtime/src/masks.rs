//! Host-side mask descriptions and builders: BSR block lists (the FlexAttention /
//! Block-Sparse-Attention layout), streaming (A-shape) parameters, per-head kinds, and the exact
//! kept fraction (density) of each.

use thiserror::Error;

/// Errors in a block list or mask parameters, found before anything reaches the GPU.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MaskError {
    #[error("block list: {what} has {got} entries, expected {expected}")]
    Length {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error(
        "block list: kv_count[{batch}, {head}, {q_block}] = {count} is outside 0..={max_blocks}"
    )]
    Count {
        batch: usize,
        head: usize,
        q_block: usize,
        count: i32,
        max_blocks: usize,
    },
    #[error(
        "block list: kv_index[{batch}, {head}, {q_block}, {slot}] = {index} is outside 0..{kv_blocks} \
         (key blocks of {block_k} tokens over {kv_blocks} blocks)"
    )]
    IndexRange {
        batch: usize,
        head: usize,
        q_block: usize,
        slot: usize,
        index: i32,
        kv_blocks: usize,
        block_k: usize,
    },
    #[error(
        "block list: kv_index[{batch}, {head}, {q_block}, ..] is not strictly ascending at slot {slot} \
         ({prev} then {index})"
    )]
    NotAscending {
        batch: usize,
        head: usize,
        q_block: usize,
        slot: usize,
        prev: i32,
        index: i32,
    },
    #[error("block list: {field} = {got} must be positive")]
    NotPositive { field: &'static str, got: usize },
    #[error("block list: heads = {got}; allowed: 1 (shared by all heads), {heads_kv} (one per kv head) or {heads_q} (one per query head)")]
    Heads {
        got: usize,
        heads_q: usize,
        heads_kv: usize,
    },
    #[error("block list: {field} = {got} does not fit the kernel's 32-bit arithmetic (at most 2^31 - 1)")]
    TooLarge { field: &'static str, got: usize },
    #[error("block list covers {have} {what} in blocks of {block}, but the sequence needs {need}")]
    Coverage {
        what: &'static str,
        have: usize,
        need: usize,
        block: usize,
    },
}

/// A BSR block list: query block `qb` of (batch `b`, list head `h`) sees the key blocks
/// `kv_index[b, h, qb, 0..kv_count[b, h, qb]]`, strictly ascending. `heads == 1` shares one list
/// across all query heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMask {
    pub batch: usize,
    pub heads: usize,
    pub q_blocks: usize,
    pub kv_blocks: usize,
    pub block_q: usize,
    pub block_k: usize,
    pub max_blocks: usize,
    /// `[batch, heads, q_blocks]`
    pub kv_count: Vec<i32>,
    /// `[batch, heads, q_blocks, max_blocks]`; slots past the count are ignored (kept at 0).
    pub kv_index: Vec<i32>,
}

impl BlockMask {
    /// From a dense boolean block matrix `[batch, heads, q_blocks, kv_blocks]` (row-major).
    pub fn from_dense(
        keep: &[bool],
        batch: usize,
        heads: usize,
        q_blocks: usize,
        kv_blocks: usize,
        block_q: usize,
        block_k: usize,
    ) -> Result<Self, MaskError> {
        check_positive("block_q", block_q)?;
        check_positive("block_k", block_k)?;
        check_i32("kv_blocks", kv_blocks)?;
        let expected = checked_product(&[batch, heads, q_blocks, kv_blocks])?;
        if keep.len() != expected {
            return Err(MaskError::Length {
                what: "dense block mask",
                got: keep.len(),
                expected,
            });
        }
        let rows = batch * heads * q_blocks;
        let mut lists: Vec<Vec<i32>> = Vec::with_capacity(rows);
        for row in 0..rows {
            let cells = &keep[row * kv_blocks..(row + 1) * kv_blocks];
            lists.push(
                cells
                    .iter()
                    .enumerate()
                    .filter(|(_, &k)| k)
                    .map(|(j, _)| j as i32)
                    .collect(),
            );
        }
        Ok(Self::from_rows(
            lists, batch, heads, q_blocks, kv_blocks, block_q, block_k,
        ))
    }

    /// From FlexAttention's `kv_num_blocks` `[batch, heads, q_blocks]` and `kv_indices`
    /// `[batch, heads, q_blocks, max]` (and optionally its `full_kv_num_blocks` /
    /// `full_kv_indices` of the same shapes, merged in: flashgen decides per tile itself whether
    /// the elementwise mask is needed). Rows are sorted and de-duplicated; indices are checked.
    #[allow(clippy::too_many_arguments)]
    pub fn from_flex(
        kv_num_blocks: &[i32],
        kv_indices: &[i32],
        full: Option<(&[i32], &[i32])>,
        batch: usize,
        heads: usize,
        q_blocks: usize,
        max: usize,
        kv_blocks: usize,
        block_q: usize,
        block_k: usize,
    ) -> Result<Self, MaskError> {
        check_positive("block_q", block_q)?;
        check_positive("block_k", block_k)?;
        let rows = checked_product(&[batch, heads, q_blocks])?;
        let mut parts = vec![(kv_num_blocks, kv_indices)];
        if let Some(full) = full {
            parts.push(full);
        }
        let mut lists: Vec<Vec<i32>> = vec![Vec::new(); rows];
        for (counts, indices) in parts {
            if counts.len() != rows {
                return Err(MaskError::Length {
                    what: "kv_num_blocks",
                    got: counts.len(),
                    expected: rows,
                });
            }
            if Some(indices.len()) != rows.checked_mul(max) {
                return Err(MaskError::Length {
                    what: "kv_indices",
                    got: indices.len(),
                    expected: rows.saturating_mul(max),
                });
            }
            for (row, list) in lists.iter_mut().enumerate() {
                let (b, h, qb) = (
                    row / (heads * q_blocks),
                    row / q_blocks % heads,
                    row % q_blocks,
                );
                let count = counts[row];
                if count < 0 || count as usize > max {
                    return Err(MaskError::Count {
                        batch: b,
                        head: h,
                        q_block: qb,
                        count,
                        max_blocks: max,
                    });
                }
                for slot in 0..count as usize {
                    let index = indices[row * max + slot];
                    if index < 0 || index as usize >= kv_blocks {
                        return Err(MaskError::IndexRange {
                            batch: b,
                            head: h,
                            q_block: qb,
                            slot,
                            index,
                            kv_blocks,
                            block_k,
                        });
                    }
                    list.push(index);
                }
            }
        }
        for list in &mut lists {
            list.sort_unstable();
            list.dedup();
        }
        Ok(Self::from_rows(
            lists, batch, heads, q_blocks, kv_blocks, block_q, block_k,
        ))
    }

    /// The blocks that meet a streaming (A-shaped) mask: a coarse block-sparse equivalent, for
    /// engines that express every head as a block list.
    pub fn streaming(
        params: StreamingParams,
        sq: usize,
        sk: usize,
        block_q: usize,
        block_k: usize,
    ) -> Result<Self, MaskError> {
        check_positive("block_q", block_q)?;
        check_positive("block_k", block_k)?;
        let q_blocks = sq.div_ceil(block_q);
        let kv_blocks = sk.div_ceil(block_k);
        check_i32("kv_blocks", kv_blocks)?;
        let mut lists = Vec::with_capacity(q_blocks);
        for qb in 0..q_blocks {
            let rows = qb * block_q..((qb + 1) * block_q).min(sq);
            let list = (0..kv_blocks)
                .filter(|&kb| {
                    let keys = kb * block_k..((kb + 1) * block_k).min(sk);
                    rows.clone()
                        .any(|i| params.visible_count_in(i, sq, sk, keys.clone()) > 0)
                })
                .map(|kb| kb as i32)
                .collect();
            lists.push(list);
        }
        Ok(Self::from_rows(
            lists, 1, 1, q_blocks, kv_blocks, block_q, block_k,
        ))
    }

    fn from_rows(
        lists: Vec<Vec<i32>>,
        batch: usize,
        heads: usize,
        q_blocks: usize,
        kv_blocks: usize,
        block_q: usize,
        block_k: usize,
    ) -> Self {
        let max_blocks = lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut kv_count = Vec::with_capacity(lists.len());
        let mut kv_index = vec![0; lists.len() * max_blocks];
        for (row, list) in lists.iter().enumerate() {
            kv_count.push(list.len() as i32);
            kv_index[row * max_blocks..row * max_blocks + list.len()].copy_from_slice(list);
        }
        BlockMask {
            batch,
            heads,
            q_blocks,
            kv_blocks,
            block_q,
            block_k,
            max_blocks,
            kv_count,
            kv_index,
        }
    }

    /// Checks the list's own structure: positive block sizes and dimensions, sizes that fit
    /// the kernel's 32-bit arithmetic, array lengths, counts within `0..=max_blocks`, indices
    /// within `0..kv_blocks` and strictly ascending. Whether it fits a launch (batch, heads,
    /// coverage of the sequence) is [`validate`](Self::validate)'s check.
    pub fn validate_structure(&self) -> Result<(), MaskError> {
        for (field, value) in [
            ("block_q", self.block_q),
            ("block_k", self.block_k),
            ("max_blocks", self.max_blocks),
            ("batch", self.batch),
            ("heads", self.heads),
        ] {
            check_positive(field, value)?;
            check_i32(field, value)?;
        }
        check_i32("q_blocks", self.q_blocks)?;
        check_i32("kv_blocks", self.kv_blocks)?;
        let rows = checked_product(&[self.batch, self.heads, self.q_blocks])?;
        if self.kv_count.len() != rows {
            return Err(MaskError::Length {
                what: "kv_count",
                got: self.kv_count.len(),
                expected: rows,
            });
        }
        let slots = checked_product(&[rows, self.max_blocks])?;
        if self.kv_index.len() != slots {
            return Err(MaskError::Length {
                what: "kv_index",
                got: self.kv_index.len(),
                expected: slots,
            });
        }
        for row in 0..rows {
            let (b, h, qb) = (
                row / (self.heads * self.q_blocks),
                row / self.q_blocks % self.heads,
                row % self.q_blocks,
            );
            let count = self.kv_count[row];
            if count < 0 || count as usize > self.max_blocks {
                return Err(MaskError::Count {
                    batch: b,
                    head: h,
                    q_block: qb,
                    count,
                    max_blocks: self.max_blocks,
                });
            }
            let list =
                &self.kv_index[row * self.max_blocks..row * self.max_blocks + count as usize];
            for (slot, &index) in list.iter().enumerate() {
                if index < 0 || index as usize >= self.kv_blocks {
                    return Err(MaskError::IndexRange {
                        batch: b,
                        head: h,
                        q_block: qb,
                        slot,
                        index,
                        kv_blocks: self.kv_blocks,
                        block_k: self.block_k,
                    });
                }
                if slot > 0 && list[slot - 1] >= index {
                    return Err(MaskError::NotAscending {
                        batch: b,
                        head: h,
                        q_block: qb,
                        slot,
                        prev: list[slot - 1],
                        index,
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks the structure ([`validate_structure`](Self::validate_structure)) and that the
    /// list fits a launch: `batch` entries, one list shared by all heads, one per GQA group
    /// (`heads_kv`) or one per query head (`heads_q`), and blocks that cover `sq` x `sk`. A
    /// list that passes can never make the kernel read out of bounds.
    pub fn validate(
        &self,
        batch: usize,
        heads_q: usize,
        heads_kv: usize,
        sq: usize,
        sk: usize,
    ) -> Result<(), MaskError> {
        self.validate_structure()?;
        if self.heads != 1 && self.heads != heads_kv && self.heads != heads_q {
            return Err(MaskError::Heads {
                got: self.heads,
                heads_q,
                heads_kv,
            });
        }
        if self.batch != batch {
            return Err(MaskError::Length {
                what: "block list batch",
                got: self.batch,
                expected: batch,
            });
        }
        let need_q = sq.div_ceil(self.block_q);
        if self.q_blocks < need_q {
            return Err(MaskError::Coverage {
                what: "query blocks",
                have: self.q_blocks,
                need: need_q,
                block: self.block_q,
            });
        }
        let need_k = sk.div_ceil(self.block_k);
        if self.kv_blocks != need_k {
            return Err(MaskError::Coverage {
                what: "key blocks",
                have: self.kv_blocks,
                need: need_k,
                block: self.block_k,
            });
        }
        Ok(())
    }

    /// The list head that query head `head` of `heads_q` reads: 0 for a shared list, the head's
    /// GQA group for one list per kv head, the head itself for one list per query head.
    pub fn list_head(&self, head: usize, heads_q: usize) -> usize {
        if self.heads <= 1 || heads_q < self.heads {
            0
        } else {
            head / (heads_q / self.heads)
        }
    }

    /// The listed key blocks of one block row (`head` is the list head: see
    /// [`list_head`](Self::list_head); any head of a shared list reads its one list). Empty for
    /// coordinates outside the list.
    pub fn row(&self, batch: usize, head: usize, q_block: usize) -> &[i32] {
        let h = if self.heads == 1 { 0 } else { head };
        if batch >= self.batch || h >= self.heads || q_block >= self.q_blocks {
            return &[];
        }
        let row = (batch * self.heads + h) * self.q_blocks + q_block;
        let count = self
            .kv_count
            .get(row)
            .map_or(0, |&c| (c.max(0) as usize).min(self.max_blocks));
        let start = row * self.max_blocks;
        self.kv_index.get(start..start + count).unwrap_or(&[])
    }

    /// Exact kept fraction of the `sq` x `sk` pairs of one (batch, head), with the optional
    /// causal rule applied inside the blocks.
    /// `head` is the list head ([`list_head`](Self::list_head)); a list that fails
    /// [`validate_structure`](Self::validate_structure) keeps what its rows read.
    pub fn density(&self, batch: usize, head: usize, sq: usize, sk: usize, causal: bool) -> f64 {
        if sq == 0 || sk == 0 || self.block_q == 0 || self.block_k == 0 {
            return 0.0;
        }
        let mut kept = 0u64;
        for i in 0..sq {
            let qb = i / self.block_q;
            let pos = i as i64 + sk as i64 - sq as i64;
            for &kb in self.row(batch, head, qb) {
                let lo = kb as i64 * self.block_k as i64;
                let mut hi = ((kb as i64 + 1) * self.block_k as i64).min(sk as i64);
                if causal {
                    hi = hi.min(pos + 1);
                }
                kept += (hi - lo).max(0) as u64;
            }
        }
        kept as f64 / (sq as f64 * sk as f64)
    }
}

/// Sink tokens and local window of a streaming head, in tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamingParams {
    pub sink: usize,
    pub window: usize,
}

impl StreamingParams {
    /// Keys of `keys` that query `i` sees (pos = i + sk - sq).
    fn visible_count_in(
        &self,
        i: usize,
        sq: usize,
        sk: usize,
        keys: std::ops::Range<usize>,
    ) -> usize {
        let pos = i as i64 + sk as i64 - sq as i64;
        if pos < 0 {
            return 0;
        }
        let (lo, hi) = (keys.start as i64, (keys.end as i64).min(pos + 1));
        if hi <= lo {
            return 0;
        }
        let sink_part = (hi.min(self.sink as i64) - lo).max(0);
        let win_lo = (pos - self.window as i64 + 1).max(self.sink as i64).max(lo);
        let win_part = (hi - win_lo).max(0);
        (sink_part + win_part) as usize
    }

    /// Exact kept fraction of the `sq` x `sk` pairs.
    pub fn density(&self, sq: usize, sk: usize) -> f64 {
        if sq == 0 || sk == 0 {
            return 0.0;
        }
        let kept: usize = (0..sq)
            .map(|i| self.visible_count_in(i, sq, sk, 0..sk))
            .sum();
        kept as f64 / (sq as f64 * sk as f64)
    }
}

/// Exact kept fraction of the dense or causal mask.
pub fn dense_density(sq: usize, sk: usize, causal: bool) -> f64 {
    if sq == 0 || sk == 0 {
        return 0.0;
    }
    if !causal {
        return 1.0;
    }
    let kept: i64 = (0..sq as i64)
        .map(|i| (i + sk as i64 - sq as i64 + 1).clamp(0, sk as i64))
        .sum();
    kept as f64 / (sq as f64 * sk as f64)
}

/// Kind of one query head in a mixed-heads launch (values match the kernel's `HeadKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum HeadKind {
    Dense = 0,
    DenseCausal = 1,
    Streaming = 2,
    BlockSparse = 3,
}

impl HeadKind {
    /// Relative cost used to order heads heavy-first: the work a head does grows with its kept
    /// area, so dense heads go before causal, block-sparse and streaming ones.
    pub fn launch_rank(self) -> u8 {
        match self {
            HeadKind::Dense => 0,
            HeadKind::DenseCausal => 1,
            HeadKind::BlockSparse => 2,
            HeadKind::Streaming => 3,
        }
    }
}

/// Launch order of the heads: heaviest kinds first, stable within a kind.
pub fn heavy_first_order(kinds: &[HeadKind]) -> Vec<i32> {
    let mut order: Vec<i32> = (0..kinds.len() as i32).collect();
    order.sort_by_key(|&h| kinds[h as usize].launch_rank());
    order
}

fn check_i32(field: &'static str, got: usize) -> Result<(), MaskError> {
    if got > i32::MAX as usize {
        Err(MaskError::TooLarge { field, got })
    } else {
        Ok(())
    }
}

/// The product of list dimensions, or an error when it does not fit in memory at all.
fn checked_product(dims: &[usize]) -> Result<usize, MaskError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(MaskError::TooLarge {
            field: "list size",
            got: usize::MAX,
        })
}

fn check_positive(field: &'static str, got: usize) -> Result<(), MaskError> {
    if got == 0 {
        Err(MaskError::NotPositive { field, got })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tril(n: usize) -> Vec<bool> {
        (0..n * n).map(|x| x % n <= x / n).collect()
    }

    #[test]
    fn dense_block_matrix_becomes_ascending_lists() {
        let m = BlockMask::from_dense(&tril(4), 1, 1, 4, 4, 64, 64).unwrap();
        assert_eq!(m.max_blocks, 4);
        assert_eq!(m.row(0, 7, 2), &[0, 1, 2]);
        assert_eq!(m.kv_count, vec![1, 2, 3, 4]);
        m.validate(1, 8, 8, 256, 256).unwrap();
    }

    #[test]
    fn flex_lists_are_sorted_merged_and_checked() {
        // Two query blocks, max 2 slots; the full list adds block 0 to row 1.
        let m = BlockMask::from_flex(
            &[1, 1],
            &[0, 0, 1, 0],
            Some((&[0, 1], &[0, 0, 0, 0])),
            1,
            1,
            2,
            2,
            2,
            128,
            128,
        )
        .unwrap();
        assert_eq!(m.row(0, 0, 0), &[0]);
        assert_eq!(m.row(0, 0, 1), &[0, 1]);
        let err = BlockMask::from_flex(&[1], &[5], None, 1, 1, 1, 1, 2, 128, 128).unwrap_err();
        assert!(
            matches!(err, MaskError::IndexRange { index: 5, .. }),
            "{err}"
        );
        let err = BlockMask::from_flex(&[3], &[0, 1], None, 1, 1, 1, 2, 2, 128, 128).unwrap_err();
        assert!(matches!(err, MaskError::Count { count: 3, .. }), "{err}");
    }

    #[test]
    fn validation_rejects_every_bad_list() {
        let good = BlockMask::from_dense(&tril(2), 1, 1, 2, 2, 128, 128).unwrap();
        good.validate(1, 4, 4, 256, 256).unwrap();

        let mut m = good.clone();
        m.kv_index[2] = 2; // row 1 slot 0 out of range
        assert!(matches!(
            m.validate(1, 4, 4, 256, 256),
            Err(MaskError::IndexRange { index: 2, .. })
        ));
        let mut m = good.clone();
        m.kv_index[2] = 1; // row 1 = [1, 1]
        assert!(matches!(
            m.validate(1, 4, 4, 256, 256),
            Err(MaskError::NotAscending { .. })
        ));
        let mut m = good.clone();
        m.kv_count[0] = 3;
        assert!(matches!(
            m.validate(1, 4, 4, 256, 256),
            Err(MaskError::Count { .. })
        ));
        let mut m = good.clone();
        m.kv_count[1] = -1;
        assert!(matches!(
            m.validate(1, 4, 4, 256, 256),
            Err(MaskError::Count { .. })
        ));
        assert!(matches!(
            good.validate(1, 4, 4, 257, 256),
            Err(MaskError::Coverage {
                what: "query blocks",
                ..
            })
        ));
        assert!(matches!(
            good.validate(1, 4, 4, 256, 300),
            Err(MaskError::Coverage {
                what: "key blocks",
                ..
            })
        ));
        assert!(matches!(
            good.validate(2, 4, 4, 256, 256),
            Err(MaskError::Length { .. })
        ));
        // Two lists: neither shared, one per kv head (1 here) nor one per query head (4).
        let two = BlockMask::from_dense(&[true; 8], 1, 2, 2, 2, 128, 128).unwrap();
        assert!(matches!(
            two.validate(1, 4, 1, 256, 256),
            Err(MaskError::Heads { .. })
        ));
        two.validate(1, 4, 2, 256, 256).unwrap();
        // A head count the arrays do not have is a length error first.
        let mut m = good.clone();
        m.heads = 2;
        assert!(matches!(
            m.validate(1, 4, 4, 256, 256),
            Err(MaskError::Length { .. })
        ));
        let mut m = good;
        m.kv_index.pop();
        assert!(matches!(
            m.validate(1, 4, 4, 256, 256),
            Err(MaskError::Length { .. })
        ));
    }

    #[test]
    fn densities_are_exact() {
        assert_eq!(dense_density(4, 4, true), 10.0 / 16.0);
        assert_eq!(dense_density(2, 4, true), 7.0 / 8.0); // rows at positions 2 and 3
        assert_eq!(dense_density(4, 2, true), 3.0 / 8.0); // rows at -2, -1, 0, 1
                                                          // sink 1, window 2 over 4x4: rows see {0}, {0,1}, {0,1,2}, {0,2,3}.
        let s = StreamingParams { sink: 1, window: 2 };
        assert_eq!(s.density(4, 4), 9.0 / 16.0);
        // A full block list with causal equals the causal density.
        let full = BlockMask::from_dense(&[true; 4], 1, 1, 2, 2, 3, 3).unwrap();
        assert_eq!(full.density(0, 0, 5, 6, true), dense_density(5, 6, true));
        assert_eq!(full.density(0, 0, 5, 6, false), 1.0);
    }

    #[test]
    fn streaming_blocks_cover_exactly_the_visible_pairs() {
        let s = StreamingParams { sink: 3, window: 5 };
        let (sq, sk) = (37, 41);
        let m = BlockMask::streaming(s, sq, sk, 8, 4).unwrap();
        m.validate(1, 1, 1, sq, sk).unwrap();
        for i in 0..sq {
            for j in 0..sk {
                let listed = m.row(0, 0, i / 8).contains(&((j / 4) as i32));
                let visible = s.visible_count_in(i, sq, sk, j..j + 1) == 1;
                assert!(
                    !visible || listed,
                    "pair ({i}, {j}) visible but its block is not listed"
                );
            }
        }
        // Every listed block holds at least one visible pair.
        for qb in 0..m.q_blocks {
            for &kb in m.row(0, 0, qb) {
                let rows = qb * 8..((qb + 1) * 8).min(sq);
                let keys = kb as usize * 4..((kb as usize + 1) * 4).min(sk);
                assert!(rows
                    .into_iter()
                    .any(|i| s.visible_count_in(i, sq, sk, keys.clone()) > 0));
            }
        }
    }

    #[test]
    fn heavy_heads_launch_first() {
        use HeadKind::*;
        let order = heavy_first_order(&[Streaming, DenseCausal, BlockSparse, Streaming, Dense]);
        assert_eq!(order, vec![4, 1, 2, 0, 3]);
    }
}
