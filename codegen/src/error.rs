//! Validation and parse errors. Each names the offending field and what is allowed, so the CLI,
//! the runtime and the proc-macro can show it as is.

use crate::spec::{Arch, TileConfig, Variant};
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("head_dim = {got} is not supported; allowed values: 32, 64, 96, 128, 256")]
    HeadDim { got: u32 },

    #[error("tile.block_m = {got} is not supported; allowed values: 64, 128")]
    BlockM { got: u32 },

    #[error("tile.block_n = {got} is not supported; allowed values: 32, 64, 128")]
    BlockN { got: u32 },

    #[error("tile.warps = {got} is not supported; allowed values: 4, 8")]
    Warps { got: u32 },

    #[error("tile.stages = {got} is not supported; allowed values: 1, 2")]
    Stages { got: u32 },

    #[error(
        "tile.warps = {warps} splits tile.block_m = {block_m} into {rows} rows per warp; \
         allowed: 16 or 32 rows per warp, i.e. (block_m, warps) in (64, 4), (128, 4), (128, 8)"
    )]
    RowsPerWarp { block_m: u32, warps: u32, rows: u32 },

    #[error(
        "tile {tile} needs about {needed} accumulator registers per thread at head_dim {head_dim}; \
         at most {max} fit without spilling (128 with 2 stages): use 16 rows per warp, a smaller \
         block_n or 1 stage"
    )]
    Registers {
        tile: TileConfig,
        head_dim: u32,
        needed: u32,
        max: u32,
    },

    #[error(
        "tile {tile} at head_dim {head_dim} needs {needed} bytes of shared memory; \
         {arch} allows at most {max} per block: use a smaller block_m, block_n or stages"
    )]
    SharedMemory {
        tile: TileConfig,
        head_dim: u32,
        arch: Arch,
        needed: u32,
        max: u32,
    },

    #[error("tile.mma = wgmma does not fit: {reason}; allowed: mma.sync tiles anywhere, wgmma tiles on sm_90a with 16 rows per warp and head_dim 64, 128 or 256")]
    WgmmaTile { reason: String },

    #[error("arch = {arch} is not supported; allowed: compute capability 8.0 or newer (sm_80, sm_86, sm_89, sm_90a, ...)")]
    Arch { arch: Arch },

    #[error(
        "unknown arch `{input}`; allowed values: {} (also written as compute capability, \
         e.g. 8.6 or 86; sm_90 is sm_90a)",
        Arch::known_names()
    )]
    UnknownArch { input: String },

    #[error("varlen = true does not apply to variant {variant}; allowed for: dense, streaming, block-sparse, mixed, custom")]
    VarlenNotApplicable { variant: Variant },

    #[error("causal = true does not apply to variant {variant}; allowed for: dense, block-sparse, mixed (streaming and apb are causal by definition)")]
    CausalNotApplicable { variant: Variant },

    #[error("variant {variant} takes no mask or score definition; only custom does")]
    DefinitionNotApplicable { variant: Variant },

    #[error("cannot parse `{input}`: {reason}")]
    Parse { input: String, reason: String },
}

impl SpecError {
    /// The spec field the error is about (as written in specs and in the proc-macro).
    pub fn field(&self) -> &'static str {
        match self {
            SpecError::HeadDim { .. } => "head_dim",
            SpecError::BlockM { .. } | SpecError::RowsPerWarp { .. } => "block_m",
            SpecError::BlockN { .. } => "block_n",
            SpecError::Warps { .. } => "warps",
            SpecError::Stages { .. } => "stages",
            SpecError::Registers { .. } | SpecError::SharedMemory { .. } => "tile",
            SpecError::WgmmaTile { .. } => "mma",
            SpecError::Arch { .. } | SpecError::UnknownArch { .. } => "arch",
            SpecError::CausalNotApplicable { .. } => "causal",
            SpecError::VarlenNotApplicable { .. } => "varlen",
            SpecError::DefinitionNotApplicable { .. } => "definition",
            SpecError::Parse { .. } => "spec",
        }
    }
}
