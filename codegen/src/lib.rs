//! flashgen-codegen: kernel specs, their validation, the tile search space, and rendering of
//! CUDA C++ from the embedded templates: the attention kernels from their specs and APB's modules
//! ([`apb`]), through one tera pipeline. Pure Rust with no CUDA dependency, so the proc-macro and
//! the CLI can use it anywhere.

pub mod apb;
pub mod block;
pub mod decode;
pub mod error;
pub mod expr;
pub mod render;
pub mod space;
pub mod spec;
pub mod text;
pub mod validate;
pub mod variants;

pub use apb::ApbModule;
pub use decode::{
    parse_decode_spec, render_append, render_decode, render_selector, DecodeSpec, DecodeVariant,
    KvDtype, KvDtypes, KvScaling,
};
pub use error::SpecError;
pub use render::{apb_template_digest, render, spec_hash, template_digest, KernelSource};
pub use space::{default_set, default_tile, default_tile_for_blocks, search_space};
pub use spec::{Arch, AttentionSpec, DType, KernelSpec, Mma, TileConfig, Variant, HEAD_DIMS};
pub use text::{parse_arch, parse_attention_spec, parse_spec, parse_tile};
pub use validate::{
    fits_shared_memory, shared_memory_bytes, validate, validate_arch_free, validate_attention,
    validate_with_limit, SharedMemoryExceeded,
};
pub use variants::{LaunchArgs, VariantInfo, REGISTRY};

/// Version of the kernel ABI (the parameter struct the runtime passes); bumped on any change.
pub const KERNEL_ABI_VERSION: u32 = 4;
