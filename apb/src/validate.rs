//! Checks of a compression call before anything runs: the local block's shapes agree, buffers
//! hold what their layouts address, `lp` is in range, outputs are exactly sized, and every size
//! a kernel takes as a 32-bit int fits one. Plain descriptors in, so it runs without a GPU.

use crate::error::{invalid, Result};
use flashgen_runtime::Layout;

/// A tensor as validation sees it: its layout and the length of its buffer in elements.
#[derive(Clone, Copy, Debug)]
pub struct TensorDesc {
    pub layout: Layout,
    pub len: usize,
}

/// The sizes of a validated local block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShape {
    pub batch: usize,
    pub local: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub dim: usize,
}

impl BlockShape {
    /// Rows of the selection: one per (batch, kv head).
    pub fn rows(&self) -> usize {
        self.batch * self.heads_kv
    }

    /// Elements of one compressed K (or V) block of `lp` pairs.
    pub fn compressed_len(&self, lp: usize) -> usize {
        self.batch * lp * self.heads_kv * self.dim
    }

    /// Elements of a score buffer, `[batch, heads_kv, local]`.
    pub fn scores_len(&self) -> usize {
        self.batch * self.heads_kv * self.local
    }
}

const I32_MAX: usize = i32::MAX as usize;

fn check_tensor(arg: &'static str, t: &TensorDesc) -> Result<()> {
    let l = &t.layout;
    if [l.batch, l.seq, l.heads, l.dim].contains(&0) {
        return Err(invalid(arg, format!("has an empty dimension: {l:?}")));
    }
    let need = l.required_len();
    if t.len < need {
        return Err(invalid(
            arg,
            format!(
                "buffer holds {} elements; its layout addresses {need}",
                t.len
            ),
        ));
    }
    if need > i64::MAX as usize {
        return Err(invalid(arg, "layout addresses more than 2^63 elements"));
    }
    Ok(())
}

/// Checks q, k and v of a local block against each other.
pub fn check_block(q: &TensorDesc, k: &TensorDesc, v: &TensorDesc) -> Result<BlockShape> {
    check_tensor("local.q", q)?;
    check_tensor("local.k", k)?;
    check_tensor("local.v", v)?;
    let (ql, kl, vl) = (&q.layout, &k.layout, &v.layout);
    if (kl.batch, kl.seq, kl.heads, kl.dim) != (vl.batch, vl.seq, vl.heads, vl.dim) {
        return Err(invalid(
            "local.v",
            format!(
                "is [{}, {}, {}, {}]; local.k is [{}, {}, {}, {}]",
                vl.batch, vl.seq, vl.heads, vl.dim, kl.batch, kl.seq, kl.heads, kl.dim
            ),
        ));
    }
    if (ql.batch, ql.seq, ql.dim) != (kl.batch, kl.seq, kl.dim) {
        return Err(invalid(
            "local.q",
            format!(
                "is [{}, {}, _, {}]; local.k is [{}, {}, _, {}] (batch, local length and head \
                 dim must agree)",
                ql.batch, ql.seq, ql.dim, kl.batch, kl.seq, kl.dim
            ),
        ));
    }
    if ql.heads % kl.heads != 0 {
        return Err(invalid(
            "local.q",
            format!(
                "{} query heads are not a multiple of {} kv heads",
                ql.heads, kl.heads
            ),
        ));
    }
    let shape = BlockShape {
        batch: kl.batch,
        local: kl.seq,
        heads_q: ql.heads,
        heads_kv: kl.heads,
        dim: kl.dim,
    };
    if shape.local > I32_MAX || shape.dim > I32_MAX || shape.heads_q > I32_MAX {
        return Err(invalid("local", "sizes must fit in 32 bits"));
    }
    if shape.rows() > I32_MAX || shape.scores_len() > I32_MAX * 64 {
        return Err(invalid("local", "too many (batch, kv head) rows"));
    }
    Ok(shape)
}

/// `lp` must be 1 ..= the local length.
pub fn check_lp(shape: &BlockShape, lp: usize) -> Result<()> {
    if lp == 0 {
        return Err(invalid("lp", "must be at least 1"));
    }
    if lp > shape.local {
        return Err(invalid(
            "lp",
            format!(
                "is {lp}, more than the local block's {} positions",
                shape.local
            ),
        ));
    }
    Ok(())
}

/// The compressed outputs must hold exactly `batch * lp * heads_kv * dim` elements each.
pub fn check_outputs(shape: &BlockShape, lp: usize, out_k: usize, out_v: usize) -> Result<()> {
    let want = shape.compressed_len(lp);
    for (arg, len) in [("out_k", out_k), ("out_v", out_v)] {
        if len != want {
            return Err(invalid(
                arg,
                format!(
                    "holds {len} elements; [batch {}, lp {lp}, heads_kv {}, dim {}] is {want}",
                    shape.batch, shape.heads_kv, shape.dim
                ),
            ));
        }
    }
    Ok(())
}

/// A caller's score buffer must be `[batch, heads_kv, local]` f32.
pub fn check_scores(shape: &BlockShape, len: usize) -> Result<()> {
    if len != shape.scores_len() {
        return Err(invalid(
            "scores",
            format!(
                "holds {len} values; [batch {}, heads_kv {}, local {}] is {}",
                shape.batch,
                shape.heads_kv,
                shape.local,
                shape.scores_len()
            ),
        ));
    }
    Ok(())
}

/// The anchor's query tokens, `[batch, nq, heads_q, dim]`; returns `nq`.
pub fn check_anchor_query(shape: &BlockShape, aq: Option<&TensorDesc>) -> Result<usize> {
    let aq = aq.ok_or_else(|| {
        invalid(
            "local.anchor_query",
            "the query-aware scorer needs the anchor's query tokens",
        )
    })?;
    check_tensor("local.anchor_query", aq)?;
    let l = &aq.layout;
    if (l.batch, l.heads, l.dim) != (shape.batch, shape.heads_q, shape.dim) {
        return Err(invalid(
            "local.anchor_query",
            format!(
                "is [{}, {}, {}, {}]; must be [batch {}, nq, heads_q {}, dim {}]",
                l.batch, l.seq, l.heads, l.dim, shape.batch, shape.heads_q, shape.dim
            ),
        ));
    }
    let group = shape.heads_q / shape.heads_kv;
    if l.seq.saturating_mul(group) > I32_MAX {
        return Err(invalid("local.anchor_query", "too many query tokens"));
    }
    Ok(l.seq)
}

/// The retaining heads' GEMMs read each token's heads as one row: heads and dim contiguous, and
/// the batch a whole number of token rows on.
pub fn check_token_rows(arg: &'static str, t: &TensorDesc) -> Result<usize> {
    let l = &t.layout;
    let row = l.strides[1];
    let ok = l.strides[3] == 1
        && (l.heads == 1 || l.strides[2] == l.dim)
        && row >= l.heads * l.dim
        && (l.batch == 1 || l.strides[0] == l.seq * row)
        && row <= I32_MAX;
    if !ok {
        return Err(invalid(
            arg,
            format!(
                "retaining heads need rows of contiguous [heads, dim] per token with the batch \
                 stride seq x row stride (a BSHD tensor); strides are {:?}",
                l.strides
            ),
        ));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn desc(b: usize, s: usize, h: usize, d: usize) -> TensorDesc {
        let layout = Layout::bshd(b, s, h, d);
        TensorDesc {
            layout,
            len: layout.numel(),
        }
    }

    fn arg_of(r: Result<impl std::fmt::Debug>) -> &'static str {
        match r {
            Err(Error::InvalidArgument { arg, .. }) => arg,
            other => panic!("expected an argument error, got {other:?}"),
        }
    }

    #[test]
    fn a_consistent_block_passes() {
        let s = check_block(
            &desc(2, 100, 8, 64),
            &desc(2, 100, 2, 64),
            &desc(2, 100, 2, 64),
        )
        .unwrap();
        assert_eq!(
            s,
            BlockShape {
                batch: 2,
                local: 100,
                heads_q: 8,
                heads_kv: 2,
                dim: 64
            }
        );
        assert_eq!(s.rows(), 4);
        assert_eq!(s.compressed_len(10), 2 * 10 * 2 * 64);
        assert_eq!(s.scores_len(), 2 * 2 * 100);
    }

    #[test]
    fn wrong_shapes_are_argument_errors() {
        let q = desc(1, 100, 8, 64);
        let kv = desc(1, 100, 2, 64);
        assert_eq!(arg_of(check_block(&q, &kv, &desc(1, 99, 2, 64))), "local.v");
        assert_eq!(
            arg_of(check_block(&q, &kv, &desc(1, 100, 4, 64))),
            "local.v"
        );
        assert_eq!(
            arg_of(check_block(&desc(1, 100, 8, 128), &kv, &kv)),
            "local.q"
        );
        assert_eq!(
            arg_of(check_block(&desc(2, 100, 8, 64), &kv, &kv)),
            "local.q"
        );
        assert_eq!(
            arg_of(check_block(
                &desc(1, 100, 6, 64),
                &desc(1, 100, 4, 64),
                &desc(1, 100, 4, 64)
            )),
            "local.q"
        );
        assert_eq!(arg_of(check_block(&q, &desc(1, 0, 2, 64), &kv)), "local.k");
        let mut short = kv;
        short.len -= 1;
        assert_eq!(arg_of(check_block(&q, &kv, &short)), "local.v");
    }

    #[test]
    fn lp_must_be_within_the_local_block() {
        let s = check_block(
            &desc(1, 100, 8, 64),
            &desc(1, 100, 2, 64),
            &desc(1, 100, 2, 64),
        )
        .unwrap();
        assert_eq!(arg_of(check_lp(&s, 0)), "lp");
        assert_eq!(arg_of(check_lp(&s, 101)), "lp");
        assert!(check_lp(&s, 1).is_ok());
        assert!(check_lp(&s, 100).is_ok());
    }

    #[test]
    fn outputs_and_scores_must_be_exactly_sized() {
        let s = check_block(
            &desc(2, 100, 8, 64),
            &desc(2, 100, 2, 64),
            &desc(2, 100, 2, 64),
        )
        .unwrap();
        let n = s.compressed_len(7);
        assert!(check_outputs(&s, 7, n, n).is_ok());
        assert_eq!(arg_of(check_outputs(&s, 7, n + 1, n)), "out_k");
        assert_eq!(arg_of(check_outputs(&s, 7, n, n - 1)), "out_v");
        assert!(check_scores(&s, 400).is_ok());
        assert_eq!(arg_of(check_scores(&s, 399)), "scores");
    }

    #[test]
    fn the_anchor_query_must_match_the_block() {
        let s = check_block(
            &desc(2, 100, 8, 64),
            &desc(2, 100, 2, 64),
            &desc(2, 100, 2, 64),
        )
        .unwrap();
        assert_eq!(check_anchor_query(&s, Some(&desc(2, 5, 8, 64))).unwrap(), 5);
        assert_eq!(arg_of(check_anchor_query(&s, None)), "local.anchor_query");
        assert_eq!(
            arg_of(check_anchor_query(&s, Some(&desc(2, 5, 2, 64)))),
            "local.anchor_query"
        );
        assert_eq!(
            arg_of(check_anchor_query(&s, Some(&desc(2, 0, 8, 64)))),
            "local.anchor_query"
        );
    }

    #[test]
    fn token_rows_need_a_bshd_like_layout() {
        assert_eq!(
            check_token_rows("local.q", &desc(2, 10, 4, 32)).unwrap(),
            128
        );
        let padded = Layout::bshd(2, 10, 4, 32).with_strides([10 * 160, 160, 32, 1]);
        let padded = TensorDesc {
            layout: padded,
            len: padded.required_len(),
        };
        assert_eq!(check_token_rows("local.q", &padded).unwrap(), 160);
        let bhsd = Layout::bhsd(2, 10, 4, 32);
        let bhsd = TensorDesc {
            layout: bhsd,
            len: bhsd.numel(),
        };
        assert_eq!(arg_of(check_token_rows("local.k", &bhsd)), "local.k");
    }
}
