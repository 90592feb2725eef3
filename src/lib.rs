//! flashgen: generated FlashAttention kernels for long-context LLM inference.
//!
//! This crate gathers the pieces: [`codegen`] (kernel specs, validation, CUDA rendering),
//! [`runtime`] (NVRTC compile, kernel cache, launches), [`apb`] (the multi-host APB prefill:
//! KV compressors, communicators, APB, ring and star prefill), [`tuning`] and the
//! [`attention_kernel!`] macro, which declares kernels as typed handles checked at compile time:
//!
//! ```no_run
//! use flashgen::half::bf16;
//! use flashgen::{attention_kernel, Layout, Runtime, Tensor, TensorMut};
//!
//! attention_kernel! {
//!     /// Llama-style causal prefill with the log-sum-exp for merging partial results.
//!     pub struct Prefill: dense(causal), head_dim = 128, dtype = bf16, lse, gqa = 4;
//!     pub struct LlamaStreaming: streaming(sink = 128, window = 2048), head_dim = 128,
//!         dtype = bf16, gqa = 4;
//! }
//!
//! # fn main() -> flashgen::Result<()> {
//! let rt = Runtime::new(0)?;
//! let prefill = Prefill::new(&rt)?;
//! let (q_layout, kv_layout) = (Layout::bshd(1, 4096, 32, 128), Layout::bshd(1, 4096, 8, 128));
//! let s = rt.stream();
//! let q = s.alloc_zeros::<bf16>(q_layout.numel()).unwrap();
//! let k = s.alloc_zeros::<bf16>(kv_layout.numel()).unwrap();
//! let v = s.alloc_zeros::<bf16>(kv_layout.numel()).unwrap();
//! let mut o = s.alloc_zeros::<bf16>(q_layout.numel()).unwrap();
//! let mut lse = s.alloc_zeros::<f32>(32 * 4096).unwrap();
//! prefill.forward(
//!     &rt,
//!     Tensor { data: &q, layout: q_layout },
//!     Tensor { data: &k, layout: kv_layout },
//!     Tensor { data: &v, layout: kv_layout },
//!     TensorMut { data: &mut o, layout: q_layout },
//!     &mut lse,
//! )?;
//! # Ok(()) }
//! ```

pub use flashgen_apb as apb;
pub use flashgen_codegen as codegen;
pub use flashgen_macros::attention_kernel;
pub use flashgen_runtime as runtime;
pub use flashgen_tuning as tuning;
/// The element types of tensors (`half::bf16`, `half::f16`).
pub use half;

pub use flashgen_codegen::{Arch, DType, KernelSpec, TileConfig, Variant};
pub use flashgen_runtime::{
    BlockMask, DeviceBlockMask, DeviceHeadKinds, DeviceVarlen, Error, HeadKind, Layout, Result,
    Runtime, StreamingParams, Tensor, TensorMut,
};

/// Support for the code `attention_kernel!` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    use flashgen_runtime::{DeviceBlockMask, Error, Layout, Result};

    /// The declared query heads per kv head against the tensors'.
    pub fn check_gqa(gqa: Option<usize>, q: &Layout, k: &Layout) -> Result<()> {
        match gqa {
            Some(g) if q.heads != g * k.heads => Err(Error::InvalidArgument {
                arg: "gqa",
                reason: format!(
                    "the kernel was declared with gqa = {g} query heads per kv head; q has {} \
                     heads and k has {} (expected q heads = {})",
                    q.heads,
                    k.heads,
                    g * k.heads
                ),
            }),
            _ => Ok(()),
        }
    }

    /// A paged cache against a declared decode kernel: head dim, page size and KV dtype.
    pub fn check_decode_cache(
        spec: &flashgen_codegen::DecodeSpec,
        config: &flashgen_runtime::decode::KvCacheConfig,
    ) -> Result<()> {
        let declared = (
            spec.head_dim as usize,
            spec.page_size as usize,
            spec.kv_dtype,
        );
        let got = (config.head_dim, config.page_size, config.kv_dtype);
        if got != declared {
            return Err(Error::InvalidArgument {
                arg: "cache",
                reason: format!(
                    "the cache holds head dim {}, pages of {} tokens, {} elements; the kernel \
                     was declared as {spec} (head dim {}, pages of {}, {})",
                    got.0, got.1, got.2, declared.0, declared.1, declared.2
                ),
            });
        }
        Ok(())
    }

    /// The declared query heads per kv head of a decode kernel against q and the cache.
    pub fn check_decode_gqa(gqa: Option<usize>, q: &Layout, heads_kv: usize) -> Result<()> {
        match gqa {
            Some(g) if q.heads != g * heads_kv => Err(Error::InvalidArgument {
                arg: "gqa",
                reason: format!(
                    "the kernel was declared with gqa = {g} query heads per kv head; q has {} \
                     heads and the cache {heads_kv} (expected q heads = {})",
                    q.heads,
                    g * heads_kv
                ),
            }),
            _ => Ok(()),
        }
    }

    /// A block list's block sizes against the declared ones.
    pub fn check_block_list(list: &DeviceBlockMask, block_q: usize, block_k: usize) -> Result<()> {
        let m = list.mask();
        if (m.block_q, m.block_k) != (block_q, block_k) {
            return Err(Error::InvalidArgument {
                arg: "block_list",
                reason: format!(
                    "the block list is in blocks of {} x {}; the kernel was declared with \
                     block_q = {block_q}, block_k = {block_k}",
                    m.block_q, m.block_k
                ),
            });
        }
        Ok(())
    }
}
