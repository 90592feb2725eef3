//! flashgen-apb: the multi-host APB prefill (sequence-parallel attention over anchor, passing
//! and local blocks) on top of the runtime's kernels: KV compressors, the communicators between
//! hosts (NCCL, simulated), the APB, ring and star prefill, and the loading of the libraries
//! they need beyond the runtime's (libcublas, libnccl). APB's own kernels are rendered by
//! codegen (`flashgen_codegen::apb`) and loaded through the runtime's module table like every
//! other kernel.
//!
//! A host's *local block* is its slice of the sequence. Compression picks, per kv head, the
//! `lp` most important KV pairs of the local block (kept in position order) and writes them to
//! a compact block that later hosts attend to as their *passing* block ([`KvCompressor`]).

pub mod blas;
pub mod compressor;
pub mod error;
pub mod kernels;
pub mod merge;
pub mod multigpu;
pub mod prefill;
pub mod ring;
pub mod scorer;
pub mod select;
pub mod star;
pub mod validate;

pub use compressor::{
    GivenScores, GivenSelection, QueryAware, RetainingHeads, RetainingHeadsWeights,
};
pub use error::{Error, Result};
pub use kernels::ApbModule;
pub use scorer::{Activation, LOGIT_BUDGET_BYTES, POOL_WIDTH};
pub use select::{gather, order_key, select_row, select_rows, top_k};

use cudarc::driver::CudaSlice;
use flashgen_runtime::{Element, Runtime, Tensor};

/// What a compressor may read about one host's local block.
pub struct LocalBlock<'a, T> {
    /// Queries of the local block, `[batch, local, heads_q, d]`.
    pub q: Tensor<'a, T>,
    /// Keys of the local block, `[batch, local, heads_kv, d]`.
    pub k: Tensor<'a, T>,
    /// Values of the local block, `[batch, local, heads_kv, d]`.
    pub v: Tensor<'a, T>,
    /// The query tokens embedded at the end of the anchor block, `[batch, nq, heads_q, d]`
    /// (what a query-aware scorer attends from); `None` when the caller has none.
    pub anchor_query: Option<Tensor<'a, T>>,
}

/// Selects and gathers the passing block of one host.
pub trait KvCompressor<T: Element>: Send + Sync {
    /// Writes the `lp` selected KV pairs of every kv head of `local`, in position order, to
    /// `out_k` and `out_v` (contiguous `[batch, lp, heads_kv, d]`), and returns the selected
    /// positions within the local block, `[batch, heads_kv, lp]` ascending, on the device
    /// (nothing is copied to the host, so the prefill does not synchronise). `lp` is at most
    /// the local length; the outputs hold exactly `batch * lp * heads_kv * d` elements.
    fn compress(
        &self,
        rt: &Runtime,
        local: &LocalBlock<'_, T>,
        lp: usize,
        out_k: &mut CudaSlice<T>,
        out_v: &mut CudaSlice<T>,
    ) -> Result<CudaSlice<i32>>;
}
