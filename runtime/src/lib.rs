//! flashgen-runtime: compiles generated kernels with NVRTC (to CUBIN for the device's exact
//! arch), caches them in memory and on disk, and launches them over device buffers with every
//! argument validated first.
//!
//! ```no_run
//! use flashgen_codegen::{DType, KernelSpec, Variant};
//! use flashgen_runtime::{AttentionArgs, Layout, Runtime, Tensor, TensorMut};
//! use half::bf16;
//!
//! # fn main() -> flashgen_runtime::Result<()> {
//! let rt = Runtime::new(0)?;
//! let spec = KernelSpec::new(Variant::Dense, 128, DType::Bf16, true, rt.arch());
//! let (b, s, h, d) = (1, 4096, 32, 128);
//! let layout = Layout::bshd(b, s, h, d);
//! let zeros = vec![bf16::ZERO; layout.numel()];
//! let q = rt.stream().clone_htod(&zeros).unwrap();
//! let k = rt.stream().clone_htod(&zeros).unwrap();
//! let v = rt.stream().clone_htod(&zeros).unwrap();
//! let mut o = rt.stream().alloc_zeros::<bf16>(layout.numel()).unwrap();
//! rt.attention(
//!     &spec,
//!     AttentionArgs::new(
//!         Tensor { data: &q, layout },
//!         Tensor { data: &k, layout },
//!         Tensor { data: &v, layout },
//!         TensorMut { data: &mut o, layout },
//!     ),
//! )?;
//! # Ok(()) }
//! ```

pub mod cache;
pub mod compile;
pub mod config;
pub mod custom;
mod custom_launch;
pub mod decode;
pub mod device_index;
pub mod driver;
pub mod error;
mod files;
pub mod layout;
pub mod libs;
pub mod masks;
pub mod module;
pub mod params;
pub mod plan;
pub mod runtime;
pub mod tuned;
pub mod variants;

pub use cache::{CacheHit, CacheSource, KernelCache};
pub use compile::{
    compile, compile_options, compile_phases, nvrtc_version, CompilePhases, CompiledKernel,
    ResourceReport,
};
pub use config::{ConfigError, GpuIdentity, ShapeKey, TunedConfig};
pub use custom::{
    BlocksKey, CustomArgs, CustomBlocks, CustomValue, DeviceCustomBlocks, DeviceVector, VectorType,
};
pub use custom_launch::CustomShape;
pub use device_index::{DeviceBlockMask, DeviceHeadKinds, DeviceVarlen};
pub use driver::{device_count, driver_version};
pub use error::{Error, Result};
pub use layout::Layout;
pub use masks::{
    dense_density, heavy_first_order, BlockMask, HeadKind, MaskError, StreamingParams,
};
pub use module::{LoadedKernel, LoadedModule, ModuleKey};
pub use params::{FlashParams, VariantBlock};
pub use plan::{check_launch, plan, Plan};
pub use runtime::{AttentionArgs, DeviceInfo, Element, Mask, Runtime, Tensor, TensorMut};
pub use tuned::TileSource;

/// Re-exported so users name device buffers with the same cudarc the runtime uses.
pub use cudarc;
