//! Host tensor descriptions: fixed-length `[batch, seq, heads, d]` tensors addressed through
//! element strides (BSHD by default, BHSD or anything else through strides), and packed varlen
//! tensors `[total_tokens, heads, d]` split into sequences by `cu_seqlens`.

use thiserror::Error;

/// An element type the reference can read. Every value is widened to f64 before use.
pub trait Element: Copy + Send + Sync + 'static {
    /// The value as f64 (exact for every implementing type).
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Element for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

impl Element for half::bf16 {
    fn to_f64(self) -> f64 {
        half::bf16::to_f64(self)
    }
}

impl Element for half::f16 {
    fn to_f64(self) -> f64 {
        half::f16::to_f64(self)
    }
}

/// A malformed layout description.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// `cu_seqlens` needs at least one entry (`batch + 1` entries in all).
    #[error("cu_seqlens is empty: it needs batch + 1 entries, starting with 0")]
    CuSeqlensEmpty,
    /// `cu_seqlens[0]` must be 0.
    #[error("cu_seqlens[0] is {first}, expected 0")]
    CuSeqlensStart {
        /// The first entry.
        first: i64,
    },
    /// `cu_seqlens` must be non-decreasing.
    #[error("cu_seqlens decreases at index {index}: {previous} then {value}")]
    CuSeqlensDecreasing {
        /// Index of the offending entry.
        index: usize,
        /// The entry before it.
        previous: i64,
        /// The offending entry.
        value: i64,
    },
}

/// A fixed-length tensor `[batch, seq, heads, dim]` with element strides for each axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Batch size.
    pub batch: usize,
    /// Sequence length (number of tokens per batch element).
    pub seq: usize,
    /// Number of heads.
    pub heads: usize,
    /// Head dimension.
    pub dim: usize,
    /// Element strides of the (batch, seq, head, dim) axes.
    pub strides: [usize; 4],
}

impl Layout {
    /// Contiguous BSHD: `[batch, seq, heads, dim]` row-major (the default layout).
    pub fn bshd(batch: usize, seq: usize, heads: usize, dim: usize) -> Self {
        Layout {
            batch,
            seq,
            heads,
            dim,
            strides: [seq * heads * dim, heads * dim, dim, 1],
        }
    }

    /// Contiguous BHSD: `[batch, heads, seq, dim]` row-major, described by strides.
    pub fn bhsd(batch: usize, seq: usize, heads: usize, dim: usize) -> Self {
        Layout {
            batch,
            seq,
            heads,
            dim,
            strides: [heads * seq * dim, dim, seq * dim, 1],
        }
    }

    /// Any strided layout; `strides` are the element strides of (batch, seq, head, dim).
    pub fn with_strides(
        batch: usize,
        seq: usize,
        heads: usize,
        dim: usize,
        strides: [usize; 4],
    ) -> Self {
        Layout {
            batch,
            seq,
            heads,
            dim,
            strides,
        }
    }

    /// Element offset of `[b, s, h, d]`.
    pub fn offset(&self, b: usize, s: usize, h: usize, d: usize) -> usize {
        b * self.strides[0] + s * self.strides[1] + h * self.strides[2] + d * self.strides[3]
    }

    /// Number of logical elements, `batch * seq * heads * dim`.
    pub fn numel(&self) -> usize {
        self.batch * self.seq * self.heads * self.dim
    }

    /// Smallest buffer length that holds every element (0 for an empty tensor).
    pub fn required_len(&self) -> usize {
        if self.numel() == 0 {
            0
        } else {
            self.offset(self.batch - 1, self.seq - 1, self.heads - 1, self.dim - 1) + 1
        }
    }

    /// Gathers a logical tensor into a new buffer of this layout. `value(b, s, h, d)` gives each
    /// element; elements of the buffer that no index reaches are left at `fill`.
    pub fn materialize<T: Copy>(
        &self,
        fill: T,
        mut value: impl FnMut(usize, usize, usize, usize) -> T,
    ) -> Vec<T> {
        let mut out = vec![fill; self.required_len()];
        for b in 0..self.batch {
            for s in 0..self.seq {
                for h in 0..self.heads {
                    for d in 0..self.dim {
                        out[self.offset(b, s, h, d)] = value(b, s, h, d);
                    }
                }
            }
        }
        out
    }
}

/// A packed varlen tensor `[total_tokens, heads, dim]`: sequence `b` holds tokens
/// `cu_seqlens[b] .. cu_seqlens[b + 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarlenLayout {
    cu_seqlens: Vec<usize>,
    /// Number of heads.
    pub heads: usize,
    /// Head dimension.
    pub dim: usize,
    /// Element strides of the (token, head, dim) axes.
    pub strides: [usize; 3],
}

impl VarlenLayout {
    /// A contiguous packed layout over `cu_seqlens` (int32, `batch + 1` entries, starting at 0,
    /// non-decreasing), as kernels receive it.
    pub fn packed(cu_seqlens: &[i32], heads: usize, dim: usize) -> Result<Self, LayoutError> {
        let wide: Vec<i64> = cu_seqlens.iter().map(|&c| i64::from(c)).collect();
        let cu = validate_cu_seqlens(&wide)?;
        Ok(VarlenLayout {
            cu_seqlens: cu,
            heads,
            dim,
            strides: [heads * dim, dim, 1],
        })
    }

    /// A contiguous packed layout holding sequences of the given lengths.
    pub fn from_lengths(lengths: &[usize], heads: usize, dim: usize) -> Self {
        let mut cu = Vec::with_capacity(lengths.len() + 1);
        let mut total = 0;
        cu.push(0);
        for &len in lengths {
            total += len;
            cu.push(total);
        }
        VarlenLayout {
            cu_seqlens: cu,
            heads,
            dim,
            strides: [heads * dim, dim, 1],
        }
    }

    /// The same sequences with other element strides of (token, head, dim).
    pub fn with_strides(mut self, strides: [usize; 3]) -> Self {
        self.strides = strides;
        self
    }

    /// The cumulative sequence lengths (`batch + 1` entries, first 0).
    pub fn cu_seqlens(&self) -> &[usize] {
        &self.cu_seqlens
    }

    /// `cu_seqlens` as the int32 array a kernel takes.
    ///
    /// # Panics
    /// If a total exceeds `i32::MAX`.
    pub fn cu_seqlens_i32(&self) -> Vec<i32> {
        self.cu_seqlens
            .iter()
            .map(|&c| i32::try_from(c).expect("cu_seqlens entry exceeds i32::MAX"))
            .collect()
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.cu_seqlens.len() - 1
    }

    /// Length of sequence `b`.
    pub fn seqlen(&self, b: usize) -> usize {
        self.cu_seqlens[b + 1] - self.cu_seqlens[b]
    }

    /// Total number of tokens over all sequences.
    pub fn total_tokens(&self) -> usize {
        *self.cu_seqlens.last().expect("cu_seqlens is never empty")
    }

    /// Element offset of `[token, h, d]` (token counted over the whole packed tensor).
    pub fn offset(&self, token: usize, h: usize, d: usize) -> usize {
        token * self.strides[0] + h * self.strides[1] + d * self.strides[2]
    }

    /// Number of logical elements, `total_tokens * heads * dim`.
    pub fn numel(&self) -> usize {
        self.total_tokens() * self.heads * self.dim
    }

    /// Smallest buffer length that holds every element (0 for an empty tensor).
    pub fn required_len(&self) -> usize {
        if self.numel() == 0 {
            0
        } else {
            self.offset(self.total_tokens() - 1, self.heads - 1, self.dim - 1) + 1
        }
    }
}

fn validate_cu_seqlens(cu: &[i64]) -> Result<Vec<usize>, LayoutError> {
    let first = *cu.first().ok_or(LayoutError::CuSeqlensEmpty)?;
    if first != 0 {
        return Err(LayoutError::CuSeqlensStart { first });
    }
    for (index, pair) in cu.windows(2).enumerate() {
        if pair[1] < pair[0] {
            return Err(LayoutError::CuSeqlensDecreasing {
                index: index + 1,
                previous: pair[0],
                value: pair[1],
            });
        }
    }
    // Non-negative and non-decreasing from 0, so every entry fits a usize.
    Ok(cu.iter().map(|&c| c as usize).collect())
}

/// A borrowed fixed-length tensor: data plus its layout.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a, T: Element = f32> {
    /// The elements, addressed through `layout`.
    pub data: &'a [T],
    /// Shape and strides.
    pub layout: &'a Layout,
}

impl<'a, T: Element> Tensor<'a, T> {
    /// Pairs data with its layout.
    pub fn new(data: &'a [T], layout: &'a Layout) -> Self {
        Tensor { data, layout }
    }
}

/// A borrowed packed varlen tensor: data plus its layout.
#[derive(Debug, Clone, Copy)]
pub struct VarlenTensor<'a, T: Element = f32> {
    /// The elements, addressed through `layout`.
    pub data: &'a [T],
    /// Sequences, heads and strides.
    pub layout: &'a VarlenLayout,
}

impl<'a, T: Element> VarlenTensor<'a, T> {
    /// Pairs data with its layout.
    pub fn new(data: &'a [T], layout: &'a VarlenLayout) -> Self {
        VarlenTensor { data, layout }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bshd_and_bhsd_offsets() {
        let a = Layout::bshd(2, 3, 4, 5);
        assert_eq!(a.offset(1, 2, 3, 4), 119);
        assert_eq!(a.required_len(), 120);
        assert_eq!(a.offset(1, 1, 2, 3), ((3 + 1) * 4 + 2) * 5 + 3);
        let b = Layout::bhsd(2, 3, 4, 5);
        assert_eq!(b.offset(1, 2, 3, 4), 60 + 3 * 15 + 2 * 5 + 4);
        // [b, h, s, d] row-major.
        assert_eq!(b.offset(1, 1, 2, 3), ((4 + 2) * 3 + 1) * 5 + 3);
        assert_eq!(b.required_len(), 120);
        assert_eq!(Layout::bshd(0, 3, 4, 5).required_len(), 0);
    }

    #[test]
    fn cu_seqlens_validation() {
        assert_eq!(
            VarlenLayout::packed(&[], 1, 1),
            Err(LayoutError::CuSeqlensEmpty)
        );
        assert_eq!(
            VarlenLayout::packed(&[1, 2], 1, 1),
            Err(LayoutError::CuSeqlensStart { first: 1 })
        );
        assert_eq!(
            VarlenLayout::packed(&[0, 5, 3], 1, 1),
            Err(LayoutError::CuSeqlensDecreasing {
                index: 2,
                previous: 5,
                value: 3
            })
        );
        let l = VarlenLayout::packed(&[0, 5, 5, 9], 2, 3).unwrap();
        assert_eq!(l.batch(), 3);
        assert_eq!(l.seqlen(1), 0);
        assert_eq!(l.seqlen(2), 4);
        assert_eq!(l.total_tokens(), 9);
        assert_eq!(l.required_len(), 54);
        assert_eq!(l.cu_seqlens_i32(), vec![0, 5, 5, 9]);
        assert_eq!(l, VarlenLayout::from_lengths(&[5, 0, 4], 2, 3));
    }
}
