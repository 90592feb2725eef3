//! An f64 CPU reference of flashgen's attention semantics, shared by every test of the project.
//!
//! Inputs are read as f32, f64, bf16 or f16 ([`Element`]) and widened to f64; everything after
//! that is computed in f64, so the reference is exact to about 1e-15 relative.
//!
//! # Semantics
//!
//! Q is `[batch, sq, hq, d]`, K and V `[batch, sk, hkv, d]` (BSHD, or any strided layout such
//! as BHSD through [`Layout`]), or packed `[tokens, heads, d]` over `cu_seqlens` for varlen
//! batches ([`VarlenLayout`]). `hq % hkv == 0`; query head `h` reads KV head `h / (hq / hkv)`.
//!
//! For each row, `S_j = scale * q·k_j` over the keys `j` the mask makes visible,
//! `O = sum_j softmax(S)_j v_j` and `lse = ln(sum_j exp(S_j))` (natural log, of the scaled
//! scores). `scale` defaults to `1/sqrt(d)`. A row with no visible key yields `O = 0` and
//! `lse = -inf`, never NaN.
//!
//! Query `i` of a sequence with `sq` queries and `sk` keys sits at `pos = i + sk - sq`
//! (bottom-right alignment); in a varlen batch each sequence uses its own lengths.
//!
//! | [`Mask`] | key `j` visible to query `i` |
//! |---|---|
//! | `Dense { causal }` | always; with `causal`: `j <= pos` |
//! | `Streaming { sink, window }` | `j <= pos` and (`j < sink` or `pos - j < window`) |
//! | `BlockSparse` | `(i / block_q, j / block_k)` listed in the BSR list; with `causal` also `j <= pos` |
//! | `Mixed { head_kind, .. }` | per query head `h`, the rule of `head_kind[h]` |
//! | `Apb { anchor, passing }` | keys `[anchor | passing | local]`, `sq = local`: `j < anchor + passing`, or `j - anchor - passing <= i` |
//! | custom ([`attention_custom`]) | `mask(b, h, pos, j)`; a score modifier replaces `scale * q.k` (the expressions read by [`ExprProgram`]) |
//!
//! Block lists use the BSR form ([`BsrList`]): `kv_count[b, h, qb]` and
//! `kv_index[b, h, qb, max_blocks]` (strictly ascending), with a batch or head dimension of 1
//! shared by all. Invalid lists are rejected with a [`MaskError`].
//!
//! # Output layout
//!
//! [`Output::o`] is `[batch, sq, hq, dv]` (varlen: `[total_q, hq, dv]`) and [`Output::lse`] is
//! `[batch, hq, sq]` (varlen: `[hq, total_q]`).
//!
//! # Example
//!
//! ```
//! use flashgen_reference::{attention_bshd, check_close, Mask, Precision, Rng, Shape, Tolerance};
//!
//! let shape = Shape::new(1, 128, 256, 4, 2, 64);
//! let mut rng = Rng::fresh(); // seed printed; FLASHGEN_SEED=<seed> reproduces
//! let q = rng.normal_vec_in(shape.q_len(), Precision::Bf16);
//! let k = rng.normal_vec_in(shape.kv_len(), Precision::Bf16);
//! let v = rng.normal_vec_in(shape.kv_len(), Precision::Bf16);
//! let reference = attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap();
//!
//! // A kernel's output (here: the reference itself, rounded to bf16).
//! let out: Vec<f32> = reference.o.iter().map(|&x| Precision::Bf16.round(x as f32)).collect();
//! let report = check_close(&out, &reference.o, &Tolerance::rel(1e-2)).unwrap();
//! assert!(report.rel_error < 4e-3);
//! ```

#![warn(missing_docs)]

pub mod attention;
pub mod compare;
pub mod decode;
pub mod expr;
pub mod layout;
pub mod mask;
pub mod merge;
pub mod precision;
pub mod quant;
pub mod random;

pub use attention::{
    attention, attention_bshd, attention_custom, attention_custom_varlen, attention_varlen,
    AttentionError, CustomMask, MaskFn, Output, Rows, ScoreFn, Shape,
};
pub use compare::{check_close, check_lse, count_nan, relative_error, Mismatch, Report, Tolerance};
pub use decode::{
    decode_attention, page_scores, page_scores_stored, select_pages, select_pages_stored,
    DecodeOutput, DecodeRule, PagedKv,
};
pub use expr::{BoundProgram, ExprArg, ExprParseError, ExprProgram, Val};
pub use layout::{Element, Layout, LayoutError, Tensor, VarlenLayout, VarlenTensor};
pub use mask::{BlockMatrix, BlockSparse, BsrList, HeadKind, Mask, MaskError};
pub use merge::{log_add_exp, merge};
pub use precision::{from_bf16, from_f16, round_bf16, round_f16, to_bf16, to_f16, Precision};
pub use random::{Rng, SEED_ENV};

/// The `half` crate, for the bf16 and f16 types the reference reads.
pub use half;
