//! What a kernel is: the variant, the problem constants baked into the code, and the tile config.

use crate::expr::{CustomMods, Definition};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of Q, K, V and O. Accumulation is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Bf16,
    F16,
}

impl DType {
    pub const ALL: [DType; 2] = [DType::Bf16, DType::F16];

    pub fn name(self) -> &'static str {
        match self {
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
        }
    }

    pub fn size_bytes(self) -> usize {
        2
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub use crate::variants::Variant;

/// Which tensor-core instructions the mainloop uses.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mma {
    /// Warp-level `mma.sync` with `ldmatrix` (sm_80 and newer).
    #[default]
    Sync,
    /// Warpgroup-level asynchronous `wgmma` reading swizzled shared memory (sm_90a).
    Wgmma,
    /// `wgmma` with the two GEMMs of neighbouring KV tiles in flight together: each warpgroup
    /// issues S = Q K^T of tile j and O += P V of tile j - 1, then runs the mask and softmax of
    /// tile j while P V still runs on the tensor cores (FlashAttention-3's intra-warpgroup
    /// overlap). With `stages = 1` K(j + 1) and V(j) are fetched as soon as their buffer's
    /// last reader retires; with 2 they are double-buffered a whole step ahead (sm_90a).
    #[serde(rename = "wgmma-pipelined")]
    WgmmaPipelined,
}

impl Mma {
    /// Whether the mainloop uses `wgmma` (and so swizzled shared memory, sm_90a only).
    pub fn is_wgmma(self) -> bool {
        matches!(self, Mma::Wgmma | Mma::WgmmaPipelined)
    }

    /// The suffix of the tile name (`m64n128w4s2-wgmma-pipelined`); empty for `mma.sync`.
    pub fn suffix(self) -> &'static str {
        match self {
            Mma::Sync => "",
            Mma::Wgmma => "-wgmma",
            Mma::WgmmaPipelined => "-wgmma-pipelined",
        }
    }

    /// The name used in tile(...) declarations: `sync`, `wgmma` or `wgmma-pipelined`.
    pub fn name(self) -> &'static str {
        match self {
            Mma::Sync => "sync",
            Mma::Wgmma => "wgmma",
            Mma::WgmmaPipelined => "wgmma-pipelined",
        }
    }
}

/// Head dims the templates are written for.
pub const HEAD_DIMS: [u32; 5] = [32, 64, 96, 128, 256];

/// How a CTA tiles the problem. `block_m` query rows and `block_n` keys per step; `warps` warps,
/// each owning `block_m / warps` query rows (16 or 32, one or two MMA row tiles); `stages` K/V
/// buffers in shared memory (1: K and V loads overlap each other's compute, FlashAttention-2
/// style; 2: the next K/V tile is prefetched whole while this one is computed); `mma` the
/// tensor-core instructions (each group of 4 warps issues `wgmma` for 64 rows with `Wgmma`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TileConfig {
    pub block_m: u32,
    pub block_n: u32,
    pub warps: u32,
    pub stages: u32,
    #[serde(default)]
    pub mma: Mma,
}

impl TileConfig {
    pub const BLOCK_M: [u32; 2] = [64, 128];
    pub const BLOCK_N: [u32; 3] = [32, 64, 128];
    pub const WARPS: [u32; 2] = [4, 8];
    pub const STAGES: [u32; 2] = [1, 2];

    pub const MMA: [Mma; 3] = [Mma::Sync, Mma::Wgmma, Mma::WgmmaPipelined];

    /// An `mma.sync` tile.
    pub const fn new(block_m: u32, block_n: u32, warps: u32, stages: u32) -> Self {
        TileConfig {
            block_m,
            block_n,
            warps,
            stages,
            mma: Mma::Sync,
        }
    }

    pub const fn with_mma(mut self, mma: Mma) -> Self {
        self.mma = mma;
        self
    }

    pub fn threads(&self) -> u32 {
        self.warps * 32
    }

    /// Query rows owned by one warp.
    pub fn rows_per_warp(&self) -> u32 {
        self.block_m / self.warps
    }

    /// 16-row MMA tiles per warp.
    pub fn m_tiles(&self) -> u32 {
        self.rows_per_warp() / 16
    }
}

impl fmt::Display for TileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "m{}n{}w{}s{}",
            self.block_m, self.block_n, self.warps, self.stages
        )?;
        f.write_str(self.mma.suffix())
    }
}

/// A GPU architecture, as compute capability. 9.0 compiles for `sm_90a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Arch {
    pub major: u32,
    pub minor: u32,
}

impl Arch {
    pub const SM80: Arch = Arch::new(8, 0);
    pub const SM86: Arch = Arch::new(8, 6);
    pub const SM89: Arch = Arch::new(8, 9);
    pub const SM90: Arch = Arch::new(9, 0);

    pub const fn new(major: u32, minor: u32) -> Self {
        Arch { major, minor }
    }

    /// The `-arch` value NVRTC compiles CUBIN for. Hopper gets the `a` target so arch-specific
    /// instructions are available and the binary is exact for the chip.
    pub fn sm_name(&self) -> String {
        if self.major == 9 && self.minor == 0 {
            "sm_90a".to_string()
        } else {
            format!("sm_{}{}", self.major, self.minor)
        }
    }

    /// Largest dynamic shared memory one block may opt into, in bytes.
    pub fn max_shared_bytes_per_block(&self) -> u32 {
        match (self.major, self.minor) {
            (8, 0) | (8, 7) => 166_912,
            (9, _) | (10, _) => 232_448,
            _ => 101_376,
        }
    }

    /// Tensor-core `mma.sync` with bf16 needs sm_80.
    pub fn is_supported(&self) -> bool {
        self.major >= 8
    }

    /// The archs a written arch (`--arch`, spec files) may name: the GPUs of compute
    /// capability 8.0 or newer that NVRTC 13 compiles CUBIN for (sm_101 is sm_110 since CUDA 13).
    pub const KNOWN: [Arch; 10] = [
        Arch::SM80,
        Arch::SM86,
        Arch::new(8, 7),
        Arch::SM89,
        Arch::SM90,
        Arch::new(10, 0),
        Arch::new(10, 3),
        Arch::new(11, 0),
        Arch::new(12, 0),
        Arch::new(12, 1),
    ];

    /// Whether this is one of [`Arch::KNOWN`].
    pub fn is_known(&self) -> bool {
        Arch::KNOWN.contains(self)
    }

    /// The names of [`Arch::KNOWN`], comma-separated, for messages.
    pub fn known_names() -> String {
        let names: Vec<String> = Arch::KNOWN.iter().map(Arch::sm_name).collect();
        names.join(", ")
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sm_name())
    }
}

/// What an attention kernel computes: its variant, head dim, dtype and flags; a [`KernelSpec`]
/// is a spec with a tile. Its text form is `variant,d<head_dim>,dtype[,causal][,lse][,varlen]`
/// (`Display`, [`parse_attention_spec`](crate::parse_attention_spec)): the key of tuned config
/// entries and what the macro declares when no tile is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttentionSpec {
    pub variant: Variant,
    pub head_dim: u32,
    pub dtype: DType,
    /// Bottom-right aligned causal mask (`j <= i + sk - sq`).
    pub causal: bool,
    /// Also write the log-sum-exp of each query row.
    pub lse: bool,
    /// Packed varlen batch addressed through `cu_seqlens_q/k`.
    pub varlen: bool,
    /// The custom variant's mask and score modifier (`None`: every key visible, scores as
    /// they are). Only the custom variant has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Definition>,
}

impl AttentionSpec {
    pub fn new(variant: Variant, head_dim: u32, dtype: DType, causal: bool) -> Self {
        AttentionSpec {
            variant,
            head_dim,
            dtype,
            causal,
            lse: false,
            varlen: false,
            definition: None,
        }
    }

    /// A custom spec: the user-defined mask and score modifier of `mods`.
    pub fn custom(mods: &CustomMods, head_dim: u32, dtype: DType) -> Self {
        AttentionSpec::new(Variant::Custom, head_dim, dtype, false)
            .with_definition(Some(Definition::intern(mods)))
    }

    pub fn with_definition(mut self, definition: Option<Definition>) -> Self {
        self.definition = definition;
        self
    }

    /// The spec without its definition: the key of tuned config entries, which serve every
    /// definition of a custom spec alike.
    pub fn without_definition(mut self) -> Self {
        self.definition = None;
        self
    }

    pub fn with_lse(mut self, lse: bool) -> Self {
        self.lse = lse;
        self
    }

    pub fn with_varlen(mut self, varlen: bool) -> Self {
        self.varlen = varlen;
        self
    }

    /// The kernel of this spec with `tile`.
    pub fn with_tile(self, tile: TileConfig) -> KernelSpec {
        KernelSpec { spec: self, tile }
    }

    /// The kernel of this spec with the heuristic default tile for `arch`
    /// ([`default_tile`](crate::default_tile)).
    pub fn with_default_tile(self, arch: Arch) -> KernelSpec {
        self.with_tile(crate::space::default_tile(&self, arch))
    }
}

/// Everything that is baked into one generated kernel: an [`AttentionSpec`] (the fields other
/// than `tile`, [`KernelSpec::attention`]) and a tile. Its text form is the spec's followed by
/// the tile (`Display`, [`parse_spec`](crate::parse_spec)). The spec's fields read through
/// `Deref` (`kernel.variant`), so a kernel holds them once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelSpec {
    #[serde(flatten)]
    pub spec: AttentionSpec,
    pub tile: TileConfig,
}

impl std::ops::Deref for KernelSpec {
    type Target = AttentionSpec;
    fn deref(&self) -> &AttentionSpec {
        &self.spec
    }
}

impl std::ops::DerefMut for KernelSpec {
    fn deref_mut(&mut self) -> &mut AttentionSpec {
        &mut self.spec
    }
}

impl KernelSpec {
    /// The kernel of a spec with the heuristic default tile for `arch`: shorthand for
    /// `AttentionSpec::new(..).with_default_tile(arch)`. APIs that choose the tile themselves
    /// (`Runtime::attention_tuned`, the tuned config, the search space) take the
    /// [`AttentionSpec`] instead.
    pub fn new(variant: Variant, head_dim: u32, dtype: DType, causal: bool, arch: Arch) -> Self {
        AttentionSpec::new(variant, head_dim, dtype, causal).with_default_tile(arch)
    }

    /// The spec this kernel computes: everything but the tile.
    pub fn attention(&self) -> AttentionSpec {
        self.spec
    }

    pub fn with_lse(mut self, lse: bool) -> Self {
        self.lse = lse;
        self
    }

    pub fn with_varlen(mut self, varlen: bool) -> Self {
        self.varlen = varlen;
        self
    }

    pub fn with_tile(mut self, tile: TileConfig) -> Self {
        self.tile = tile;
        self
    }

    /// The C symbol of the generated kernel; unique per spec.
    pub fn kernel_name(&self) -> String {
        let mut name = format!(
            "flashgen_{}_d{}_{}_{}",
            self.variant.name().replace('-', "_"),
            self.head_dim,
            self.dtype,
            self.tile.to_string().replace('-', "_")
        );
        if self.causal {
            name.push_str("_causal");
        }
        if self.lse {
            name.push_str("_lse");
        }
        if self.varlen {
            name.push_str("_varlen");
        }
        // The definition's text is in the source and the cache key; the name carries its digest.
        if let Some(def) = self.definition {
            name.push_str("_x");
            name.push_str(&def.get().digest()[..16]);
        }
        name
    }
}
