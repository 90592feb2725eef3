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
