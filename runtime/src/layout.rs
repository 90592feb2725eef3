//! Tensor layouts in elements: a logical `[batch, seq, heads, dim]` with strides, so BSHD, BHSD
//! and packed varlen tensors (`[tokens, heads, dim]` as batch 1) are all one type.

/// Layout of a Q, K, V or O tensor, strides in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub dim: usize,
    /// Strides of (batch, seq, heads, dim).
    pub strides: [usize; 4],
}

impl Layout {
    /// `[batch, seq, heads, dim]`, contiguous (the default).
    pub fn bshd(batch: usize, seq: usize, heads: usize, dim: usize) -> Self {
        Layout {
            batch,
            seq,
            heads,
            dim,
            strides: [seq * heads * dim, heads * dim, dim, 1],
        }
    }

    /// `[batch, heads, seq, dim]`, contiguous.
    pub fn bhsd(batch: usize, seq: usize, heads: usize, dim: usize) -> Self {
        Layout {
            batch,
            seq,
            heads,
            dim,
            strides: [heads * seq * dim, dim, seq * dim, 1],
        }
    }

    /// A packed varlen tensor `[tokens, heads, dim]`; sequences are cut by `cu_seqlens`.
    pub fn packed(tokens: usize, heads: usize, dim: usize) -> Self {
        let mut l = Self::bshd(1, tokens, heads, dim);
        l.strides[0] = 0;
        l
    }

    /// Any strides (batch, seq, heads, dim).
    pub fn with_strides(mut self, strides: [usize; 4]) -> Self {
        self.strides = strides;
        self
    }

    /// Elements a buffer needs so that every addressed element is inside it. Saturates at
    /// `usize::MAX` when the layout addresses more than memory can hold, so no buffer passes.
    pub fn required_len(&self) -> usize {
        let dims = [self.batch, self.seq, self.heads, self.dim];
        if dims.contains(&0) {
            return 0;
        }
        dims.iter().zip(self.strides).fold(1usize, |acc, (&n, s)| {
            acc.saturating_add((n - 1).saturating_mul(s))
        })
    }

    /// Elements of the logical tensor.
    pub fn numel(&self) -> usize {
        self.batch * self.seq * self.heads * self.dim
    }

    /// Offset of an element.
    pub fn offset(&self, b: usize, s: usize, h: usize, d: usize) -> usize {
        b * self.strides[0] + s * self.strides[1] + h * self.strides[2] + d * self.strides[3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_lengths() {
        assert_eq!(Layout::bshd(2, 3, 4, 8).required_len(), 2 * 3 * 4 * 8);
        assert_eq!(Layout::bhsd(2, 3, 4, 8).required_len(), 2 * 3 * 4 * 8);
        assert_eq!(Layout::bshd(2, 0, 4, 8).required_len(), 0);
        // A row stride padded to 16 elements: the last row needs only 8.
        let padded = Layout::bshd(1, 3, 1, 8).with_strides([48, 16, 16, 1]);
        assert_eq!(padded.required_len(), 2 * 16 + 8);
        assert_eq!(Layout::packed(10, 2, 64).required_len(), 10 * 2 * 64);
        let l = Layout::bhsd(2, 3, 4, 8);
        assert_eq!(l.offset(1, 2, 3, 4), 96 + 2 * 8 + 3 * 24 + 4);
    }

    #[test]
    fn absurd_strides_saturate_instead_of_wrapping() {
        let huge = Layout::bshd(3, 3, 4, 8).with_strides([usize::MAX / 2 + 1, 32, 8, 1]);
        assert_eq!(huge.required_len(), usize::MAX);
        let many = Layout::bshd(usize::MAX, 2, 1, 8);
        assert_eq!(many.required_len(), usize::MAX);
        // An axis of extent 1 is never stepped along: its stride does not count.
        let single = Layout::bshd(1, 3, 4, 8).with_strides([usize::MAX, 32, 8, 1]);
        assert_eq!(single.required_len(), 2 * 32 + 3 * 8 + 8);
    }
}
