//! Spec validation: the single source of truth for what the templates can generate.

use crate::error::SpecError;
use crate::spec::{Arch, AttentionSpec, KernelSpec, Mma, TileConfig, HEAD_DIMS};

/// Accumulator registers per thread that leave room for fragments, addresses and softmax state
/// within the 255-register limit.
pub const MAX_ACCUMULATOR_REGISTERS: u32 = 192;

/// With two K/V stages the prefetch addresses of the next tile are live across the whole step;
/// measured with ptxas, tiles above this many accumulator registers then spill.
pub const MAX_ACCUMULATOR_REGISTERS_TWO_STAGES: u32 = 128;

/// Shared-memory rows are padded by 8 elements (16 bytes) so `ldmatrix` reads of 8 rows hit 8
/// different bank groups for every head dim, 96 included.
pub const SMEM_ROW_PAD: u32 = 8;

/// f32 accumulator registers per thread: the output tile (`rows x head_dim`) and the score tile
/// (`rows x block_n`) of the warp, spread over 32 lanes.
pub fn accumulator_registers(tile: &TileConfig, head_dim: u32) -> u32 {
    tile.m_tiles() * (head_dim / 2 + tile.block_n / 2)
}

/// Whether Q stays in registers for the whole KV loop (otherwise it is re-read from shared
/// memory with `ldmatrix` at each step, as FlashAttention-2 does for large tiles).
pub fn q_in_registers(tile: &TileConfig, head_dim: u32) -> bool {
    accumulator_registers(tile, head_dim) + tile.m_tiles() * head_dim / 4
        <= MAX_ACCUMULATOR_REGISTERS
}

/// Registers per thread of the pipelined `wgmma` loop's live tiles: the output and the score
/// accumulators in flight together with the packed P of the previous tile (`block_n / 4`).
/// Above this, ptxas spills (the score tile of d256 n128 alone leaves too little).
pub const MAX_PIPELINED_REGISTERS: u32 = 176;

/// Registers per thread of the pipelined loop's live tiles (see [`MAX_PIPELINED_REGISTERS`]).
pub fn pipelined_registers(tile: &TileConfig, head_dim: u32) -> u32 {
    head_dim / 2 + tile.block_n / 2 + tile.block_n / 4
}

/// Head dims the `wgmma` mainloop supports: rows are split into 128-byte swizzle atoms.
pub const WGMMA_HEAD_DIMS: [u32; 3] = [64, 128, 256];

/// Dynamic shared memory of one CTA: the Q tile (reused to stage O) and `stages` K and V tiles.
/// `mma.sync` tiles pad rows by 16 bytes; `wgmma` tiles are swizzled instead and need 1 KiB
/// alignment, allocated as slack.
pub fn shared_memory_bytes(tile: &TileConfig, head_dim: u32) -> u32 {
    let rows = tile.block_m + 2 * tile.stages * tile.block_n;
    match tile.mma {
        Mma::Sync => rows * (head_dim + SMEM_ROW_PAD) * 2,
        Mma::Wgmma | Mma::WgmmaPipelined => rows * head_dim * 2 + 1024,
    }
}

/// Shared memory one CTA of a kernel needs over the per-block limit it was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedMemoryExceeded {
    pub needed: u32,
    pub limit: u32,
}

/// The shared-memory fit check of every kernel: its `dynamic` shared memory (an attention
/// kernel's is [`shared_memory_bytes`] of its tile) plus the `static_bytes` ptxas reports once
/// it is compiled (0 before) against `limit`, the per-block limit. `limit` is the device's
/// reported opt-in limit wherever a device is present (the runtime, the tuner's prune, the
/// module loader) and the arch's table ([`Arch::max_shared_bytes_per_block`]) only offline
/// ([`validate`]). Returns the bytes needed.
pub fn fits_shared_memory(
    dynamic: u32,
    static_bytes: u32,
    limit: u32,
) -> Result<u32, SharedMemoryExceeded> {
    match dynamic.checked_add(static_bytes) {
        Some(needed) if needed <= limit => Ok(needed),
        needed => Err(SharedMemoryExceeded {
            // A sum past u32 fits no device.
            needed: needed.unwrap_or(u32::MAX),
            limit,
        }),
    }
}

/// Checks the tile alone (no arch): legal values and register fit.
pub fn validate_tile(tile: &TileConfig, head_dim: u32) -> Result<(), SpecError> {
    if !TileConfig::BLOCK_M.contains(&tile.block_m) {
        return Err(SpecError::BlockM { got: tile.block_m });
    }
    if !TileConfig::BLOCK_N.contains(&tile.block_n) {
        return Err(SpecError::BlockN { got: tile.block_n });
    }
    if !TileConfig::WARPS.contains(&tile.warps) {
        return Err(SpecError::Warps { got: tile.warps });
    }
    if !TileConfig::STAGES.contains(&tile.stages) {
        return Err(SpecError::Stages { got: tile.stages });
    }
    let rows = tile.block_m / tile.warps;
    if !tile.block_m.is_multiple_of(tile.warps) || !(rows == 16 || rows == 32) {
        return Err(SpecError::RowsPerWarp {
            block_m: tile.block_m,
            warps: tile.warps,
            rows,
        });
    }
    if tile.mma.is_wgmma() {
        if rows != 16 {
            return Err(SpecError::WgmmaTile {
                reason: format!(
                    "a warpgroup of 4 warps owns 64 rows, so 16 rows per warp; tile.block_m = {} \
                     over tile.warps = {} gives {rows}",
                    tile.block_m, tile.warps
                ),
            });
        }
        if !WGMMA_HEAD_DIMS.contains(&head_dim) {
            return Err(SpecError::WgmmaTile {
                reason: format!("head_dim = {head_dim}; wgmma tiles support 64, 128, 256"),
            });
        }
    }
    if tile.mma == Mma::WgmmaPipelined {
        let needed = pipelined_registers(tile, head_dim);
        if needed > MAX_PIPELINED_REGISTERS {
            return Err(SpecError::WgmmaTile {
                reason: format!(
                    "the pipelined loop keeps O, S and the previous P live, {needed} registers \
                     per thread at head_dim {head_dim} and block_n {}; at most \
                     {MAX_PIPELINED_REGISTERS} fit: use a smaller block_n",
                    tile.block_n
                ),
            });
        }
        return Ok(());
    }
    let needed = accumulator_registers(tile, head_dim);
    let max = if tile.stages > 1 {
        MAX_ACCUMULATOR_REGISTERS_TWO_STAGES
    } else {
        MAX_ACCUMULATOR_REGISTERS
    };
    if needed > max {
        return Err(SpecError::Registers {
            tile: *tile,
            head_dim,
            needed,
            max,
        });
    }
    Ok(())
}

/// Checks a spec for an arch offline, against the arch's shared-memory table
/// ([`Arch::max_shared_bytes_per_block`]); with a device present, [`validate_with_limit`]
/// checks against the device's reported limit instead. Errors name the field and the allowed
/// values.
pub fn validate(spec: &KernelSpec, arch: Arch) -> Result<(), SpecError> {
    validate_with_limit(spec, arch, arch.max_shared_bytes_per_block())
}

/// Checks a spec for an arch whose per-block shared memory is `smem_limit` bytes (the device's
/// reported opt-in limit), through [`fits_shared_memory`].
pub fn validate_with_limit(
    spec: &KernelSpec,
    arch: Arch,
    smem_limit: u32,
) -> Result<(), SpecError> {
    if !arch.is_supported() {
        return Err(SpecError::Arch { arch });
    }
    validate_arch_free(spec)?;
    if spec.tile.mma.is_wgmma() && arch.sm_name() != "sm_90a" {
        return Err(SpecError::WgmmaTile {
            reason: format!("wgmma needs sm_90a; {arch} supports mma.sync tiles only"),
        });
    }
    fits_shared_memory(
        shared_memory_bytes(&spec.tile, spec.head_dim),
        0,
        smem_limit,
    )
    .map_err(|e| SpecError::SharedMemory {
        tile: spec.tile,
        head_dim: spec.head_dim,
        arch,
        needed: e.needed,
        max: e.limit,
    })?;
    Ok(())
}

/// The checks that do not depend on the target GPU (what the proc-macro can check at build time).
pub fn validate_arch_free(spec: &KernelSpec) -> Result<(), SpecError> {
    validate_attention(&spec.attention())?;
    validate_tile(&spec.tile, spec.head_dim)
}

/// The checks of a spec without its tile: the head dim, and the flags its variant accepts.
pub fn validate_attention(spec: &AttentionSpec) -> Result<(), SpecError> {
    if !HEAD_DIMS.contains(&spec.head_dim) {
        return Err(SpecError::HeadDim { got: spec.head_dim });
    }
    if spec.causal && !spec.variant.accepts_causal() {
        return Err(SpecError::CausalNotApplicable {
            variant: spec.variant,
        });
    }
    if spec.varlen && !spec.variant.accepts_varlen() {
        return Err(SpecError::VarlenNotApplicable {
            variant: spec.variant,
        });
    }
    if spec.definition.is_some() && !spec.variant.takes_definition() {
        return Err(SpecError::DefinitionNotApplicable {
            variant: spec.variant,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DType, Variant};

    #[test]
    fn one_shared_memory_check_offline_and_on_a_device() {
        assert_eq!(fits_shared_memory(1000, 24, 1024), Ok(1024));
        assert_eq!(
            fits_shared_memory(1000, 25, 1024),
            Err(SharedMemoryExceeded {
                needed: 1025,
                limit: 1024
            })
        );
        assert!(fits_shared_memory(u32::MAX, 1, u32::MAX).is_err());
        // Offline the arch's table decides; with a device, the device's limit.
        let arch = Arch::SM80;
        let spec = AttentionSpec::new(Variant::Dense, 128, DType::Bf16, false);
        let tile = crate::default_tile(&spec, arch);
        let spec = spec.with_tile(tile);
        let needed = shared_memory_bytes(&tile, 128);
        assert!(needed <= arch.max_shared_bytes_per_block());
        assert!(validate(&spec, arch).is_ok());
        assert!(validate_with_limit(&spec, arch, needed).is_ok());
        match validate_with_limit(&spec, arch, needed - 1) {
            Err(SpecError::SharedMemory { needed: n, max, .. }) => {
                assert_eq!((n, max), (needed, needed - 1))
            }
            other => panic!("{other:?}"),
        }
    }
}
