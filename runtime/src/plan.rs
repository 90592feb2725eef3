//! Launch planning: validates a launch against its spec (shapes, strides, alignment, buffer
//! sizes, dtype, variant arguments) and produces the kernel parameters and grid. Pure: pointers
//! are plain numbers here, so every check runs without a GPU.

use crate::custom::{CustomArgs, CustomBlocks};
use crate::error::{invalid, Result};
use crate::layout::Layout;
use crate::masks::{BlockMask, HeadKind, StreamingParams};
use crate::params::{FlashParams, VariantBlock};
use crate::variants;
use flashgen_codegen::{
    validate_arch_free, validate_attention, AttentionSpec, DType, KernelSpec, TileConfig, REGISTRY,
};

/// A device buffer: address and length in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub ptr: u64,
    pub len: usize,
}

/// A tensor argument: its buffer and layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorArg {
    pub buffer: Buffer,
    pub layout: Layout,
}

/// Varlen arguments: device `cu_seqlens` and the same values on the host for validation. The
/// safe API builds this from a [`DeviceVarlen`](crate::DeviceVarlen), whose two copies are one
/// upload.
#[derive(Clone, Copy, Debug)]
pub struct VarlenArg<'a> {
    pub cu_seqlens_q: Buffer,
    pub cu_seqlens_k: Buffer,
    pub host_q: &'a [i32],
    pub host_k: &'a [i32],
}

/// A block list on the device, with its host copy (used for validation; the safe API builds this
/// from a [`DeviceBlockMask`](crate::DeviceBlockMask)).
#[derive(Clone, Copy, Debug)]
pub struct BlockListArg<'a> {
    pub mask: &'a BlockMask,
    pub kv_count: Buffer,
    pub kv_index: Buffer,
}

/// Per-head kinds on the device, with the host copy.
#[derive(Clone, Copy, Debug)]
pub struct HeadKindsArg<'a> {
    pub kinds: &'a [HeadKind],
    pub kinds_dev: Buffer,
    pub order_dev: Buffer,
}

/// A block classification on the device, with its host copy.
#[derive(Clone, Copy, Debug)]
pub struct CustomBlocksArg<'a> {
    pub blocks: &'a CustomBlocks,
    pub kv_count: Buffer,
    pub kv_index: Buffer,
    pub kv_full: Buffer,
}

/// The custom variant's arguments: the values of the definition's parameters, the device
/// addresses of the bound vectors (by vector identity) and the mask's block classification
/// (which [`plan`] requires; the safe API builds one when none is given).
#[derive(Clone, Copy, Debug)]
pub struct CustomArg<'a> {
    pub args: &'a CustomArgs<'a>,
    /// `(DeviceVector::id, device address)` of each bound vector.
    pub pointers: &'a [(u64, u64)],
    pub blocks: Option<CustomBlocksArg<'a>>,
}

/// The variant's own arguments.
#[derive(Clone, Copy, Debug)]
pub enum MaskArg<'a> {
    /// Dense (the spec's `causal` flag decides).
    None,
    Streaming(StreamingParams),
    BlockSparse(BlockListArg<'a>),
    Mixed {
        heads: HeadKindsArg<'a>,
        /// For the streaming heads.
        streaming: Option<StreamingParams>,
        /// For the block-sparse heads.
        block_list: Option<BlockListArg<'a>>,
    },
    Custom(CustomArg<'a>),
}

/// Everything a launch needs, as plain data.
#[derive(Clone, Copy, Debug)]
pub struct LaunchDesc<'a> {
    pub dtype: DType,
    pub q: TensorArg,
    pub k: TensorArg,
    pub v: TensorArg,
    pub o: TensorArg,
    pub lse: Option<Buffer>,
    pub varlen: Option<VarlenArg<'a>>,
    pub scale: Option<f32>,
    pub mask: MaskArg<'a>,
    /// APB: the anchor and passing blocks' keys and values, `[batch, prefix, heads_kv, dim]`.
    pub prefix: Option<(TensorArg, TensorArg)>,
}

/// A validated launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The parameters every variant shares, the kernel's first parameter.
    pub params: FlashParams,
    /// The variant's own parameters, the kernel's second.
    pub variant: VariantBlock,
    /// (query tiles, query heads, batch); `None` when there is nothing to compute.
    pub grid: Option<(u32, u32, u32)>,
}

const ELEMENT_ALIGN: usize = 8; // 16-byte async copies of 2-byte elements

pub(crate) fn check_tensor(name: &'static str, t: &TensorArg, head_dim: u32) -> Result<()> {
    let l = &t.layout;
    if l.dim != head_dim as usize {
        return Err(invalid(
            name,
            format!(
                "head dim is {}, the kernel was generated for {head_dim}",
                l.dim
            ),
        ));
    }
    if l.strides[3] != 1 {
        return Err(invalid(
            name,
            format!(
                "the head dim must be contiguous (stride 1), got stride {}",
                l.strides[3]
            ),
        ));
    }
    let extents = [l.batch, l.seq, l.heads];
    for ((axis, stride), extent) in ["batch", "seq", "heads"].iter().zip(l.strides).zip(extents) {
        // An axis of extent 1 is never stepped along: its stride does not matter.
        if extent > 1 && stride % ELEMENT_ALIGN != 0 {
            return Err(invalid(
                name,
                format!(
                    "{axis} stride {stride} is not a multiple of 8 elements (rows are copied in 16-byte chunks)"
                ),
            ));
        }
    }
    if !t.buffer.ptr.is_multiple_of(16) {
        return Err(invalid(
            name,
            format!("base address {:#x} is not 16-byte aligned", t.buffer.ptr),
        ));
    }
    check_buffer_len(name, t.buffer.len, l)?;
    if l.seq > i32::MAX as usize || l.heads > 65_535 || l.batch > 65_535 {
        return Err(invalid(name, "sequence, head or batch count out of range"));
    }
    Ok(())
}

/// The score scale: `explicit`, or `1/sqrt(head_dim)`; finite and positive.
pub(crate) fn softmax_scale(explicit: Option<f32>, head_dim: u32) -> Result<f32> {
    let scale = explicit.unwrap_or(1.0 / (head_dim as f32).sqrt());
    if !scale.is_finite() || scale <= 0.0 {
        return Err(invalid(
            "scale",
            format!("must be finite and positive, got {scale}"),
        ));
    }
    Ok(scale)
}

/// A buffer of `len` elements must hold every element its layout addresses.
pub(crate) fn check_buffer_len(name: &'static str, len: usize, l: &Layout) -> Result<()> {
    let need = l.required_len();
    if len < need {
        return Err(invalid(
            name,
            format!("buffer has {len} elements, its layout addresses {need}"),
        ));
    }
    Ok(())
}

/// Checks a host `cu_seqlens` copy: `batch + 1` entries, starting at 0, non-decreasing, within
/// the packed token count. Returns the largest sequence length.
fn check_cu_seqlens(
    name: &'static str,
    cu: &[i32],
    batch: usize,
    tokens: usize,
    dev: Buffer,
) -> Result<usize> {
    crate::device_index::check_cu_seqlens(name, cu)?;
    if cu.len() != batch + 1 {
        return Err(invalid(
            name,
            format!(
                "has {} entries, expected batch + 1 = {}",
                cu.len(),
                batch + 1
            ),
        ));
    }
    if dev.len < cu.len() {
        return Err(invalid(
            name,
            format!("device copy has {} entries, expected {}", dev.len, cu.len()),
        ));
    }
    let max_len = cu
        .windows(2)
        .map(|p| (p[1] - p[0]) as usize)
        .max()
        .unwrap_or(0);
    if cu[batch] as usize > tokens {
        return Err(invalid(
            name,
            format!(
                "ends at {} but the packed tensor has {tokens} tokens",
                cu[batch]
            ),
        ));
    }
    Ok(max_len)
}

/// The sequence geometry of a checked launch.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub batch: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub max_sq: usize,
    /// Keys of the longest sequence (APB: of the local block, the prefix not included).
    pub max_sk: usize,
}

/// What a variant's [`plan`](crate::variants::HostVariant::plan) is given: the spec, the
/// launch's checked geometry and the kernel's tile, when the arguments are checked against it.
pub struct PlanContext<'s> {
    pub spec: &'s AttentionSpec,
    pub geometry: Geometry,
    /// The kernel's tile, which the arguments must fit (mask block sizes); `None` while a
    /// launch is checked before its tile is chosen ([`check_launch`]).
    pub tile: Option<&'s TileConfig>,
}

/// Validates a launch of `spec` and builds its parameters. The spec itself is checked with
/// [`validate_arch_free`]; whether it fits the device is the loader's check.
pub fn plan(spec: &KernelSpec, d: &LaunchDesc) -> Result<Plan> {
    validate_arch_free(spec)?;
    plan_validated(spec, d)
}

/// [`plan`] of a spec its caller has validated (for the arch it launches on).
pub(crate) fn plan_validated(spec: &KernelSpec, d: &LaunchDesc) -> Result<Plan> {
    plan_checked(&spec.attention(), Some(&spec.tile), d)
}

/// A launch checked by [`check_launch`]: its parameters, waiting for the tile.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedLaunch {
    plan: Plan,
    blocks: Option<(usize, usize)>,
}

impl CheckedLaunch {
    /// The plan of the launch with `tile`: the checks of the tile against the arguments (mask
    /// block sizes) and the grid, without re-checking the rest.
    pub fn with_tile(&self, tile: &TileConfig) -> Result<Plan> {
        if let Some((block_q, block_k)) = self.blocks {
            variants::check_blocks_fit(block_q, block_k, tile)?;
        }
        let mut plan = self.plan.clone();
        plan.grid = plan.grid.map(|(_, heads, batch)| {
            let rows = plan.params.seqlen_q as usize;
            (rows.div_ceil(tile.block_m as usize) as u32, heads, batch)
        });
        Ok(plan)
    }
}

/// Every check of [`plan`] that does not depend on a tile: what must hold before a launch's
/// shape is measured to choose a tile. The spec is checked with [`validate_attention`];
/// [`CheckedLaunch::with_tile`] then gives the plan for the chosen tile.
pub fn check_launch(spec: &AttentionSpec, d: &LaunchDesc) -> Result<CheckedLaunch> {
    validate_attention(spec)?;
    let plan = plan_checked(spec, None, d)?;
    Ok(CheckedLaunch {
        plan,
        blocks: variants::host(spec.variant).mask_blocks(d),
    })
}

/// [`plan`] of `spec`, with the checks of `tile` against the launch (mask block sizes) when
/// one is given; without one the grid's query tiles are rows, for
/// [`CheckedLaunch::with_tile`] to divide.
fn plan_checked(spec: &AttentionSpec, tile: Option<&TileConfig>, d: &LaunchDesc) -> Result<Plan> {
    if d.dtype != spec.dtype {
        return Err(invalid(
            "dtype",
            format!(
                "tensors are {}, the kernel was generated for {}",
                d.dtype, spec.dtype
            ),
        ));
    }
    for (name, t) in [("q", &d.q), ("k", &d.k), ("v", &d.v), ("o", &d.o)] {
        check_tensor(name, t, spec.head_dim)?;
    }
    let (q, k, v, o) = (&d.q.layout, &d.k.layout, &d.v.layout, &d.o.layout);
    if (o.batch, o.seq, o.heads) != (q.batch, q.seq, q.heads) {
        return Err(invalid("o", "must have q's shape"));
    }
    if (v.batch, v.seq, v.heads) != (k.batch, k.seq, k.heads) {
        return Err(invalid("v", "must have k's shape"));
    }
    if q.batch != k.batch {
        return Err(invalid(
            "k",
            format!("batch {} differs from q's {}", k.batch, q.batch),
        ));
    }
    let (hq, hkv) = (q.heads, k.heads);
    if hq == 0 {
        return Err(invalid("q", "has no heads"));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(invalid(
            "k",
            format!("query heads ({hq}) must be a positive multiple of kv heads ({hkv})"),
        ));
    }
    let scale = softmax_scale(d.scale, spec.head_dim)?;

    // Sequence geometry.
    let (batch, max_sq, max_sk, total_q, cu_q, cu_k) = match (&d.varlen, spec.varlen) {
        (Some(vl), true) => {
            if q.batch != 1 || k.batch != 1 {
                return Err(invalid(
                    "varlen",
                    "q, k, v and o must be packed [tokens, heads, dim] (Layout::packed)",
                ));
            }
            crate::device_index::check_cu_seqlens("cu_seqlens_q", vl.host_q)?;
            let batch = vl.host_q.len() - 1;
            let max_sq =
                check_cu_seqlens("cu_seqlens_q", vl.host_q, batch, q.seq, vl.cu_seqlens_q)?;
            let max_sk =
                check_cu_seqlens("cu_seqlens_k", vl.host_k, batch, k.seq, vl.cu_seqlens_k)?;
            (
                batch,
                max_sq,
                max_sk,
                q.seq,
                vl.cu_seqlens_q.ptr,
                vl.cu_seqlens_k.ptr,
            )
        }
        (None, false) => (q.batch, q.seq, k.seq, q.batch * q.seq, 0, 0),
        (Some(_), false) => {
            return Err(invalid(
                "varlen",
                "given, but the kernel was not generated with varlen",
            ))
        }
        (None, true) => {
            return Err(invalid(
                "varlen",
                "the kernel was generated with varlen: cu_seqlens are required",
            ))
        }
    };

    let host = variants::host(spec.variant);
    let info = spec.variant.info();
    if d.prefix.is_some() && !info.prefix() {
        let takers: Vec<_> = REGISTRY
            .iter()
            .filter(|i| i.prefix())
            .map(|i| i.name)
            .collect();
        return Err(invalid(
            "prefix",
            format!("only {} kernels take a prefix", takers.join(", ")),
        ));
    }
    // Keys before the local ones (APB's anchor and passing blocks).
    let prefix_len = host.prefix_len(d);
    // Query positions (i + sk - sq) and key indices are 32-bit in the kernel.
    if max_sq + max_sk + prefix_len > i32::MAX as usize {
        return Err(invalid(
            "seq",
            format!(
                "queries ({max_sq}) plus keys ({}) exceed 2^31 - 1 tokens",
                max_sk + prefix_len
            ),
        ));
    }
    let geometry = Geometry {
        batch,
        heads_q: hq,
        heads_kv: hkv,
        max_sq,
        max_sk,
    };

    // lse: [batch, hq, sq], or [hq, total_q] for varlen.
    let (lse_ptr, lse_batch_stride, lse_head_stride) = match (d.lse, spec.lse) {
        (Some(buf), true) => {
            let need = hq * total_q;
            if buf.len < need {
                return Err(invalid(
                    "lse",
                    format!("buffer has {} elements, needs {need}", buf.len),
                ));
            }
            if buf.ptr % 4 != 0 {
                return Err(invalid("lse", "base address is not 4-byte aligned"));
            }
            if spec.varlen {
                (buf.ptr, 0, total_q as i64)
            } else {
                (buf.ptr, (hq * max_sq) as i64, max_sq as i64)
            }
        }
        (None, false) => (0, 0, 0),
        (Some(_), false) => {
            return Err(invalid(
                "lse",
                "given, but the kernel was generated without lse output",
            ))
        }
        (None, true) => {
            return Err(invalid(
                "lse",
                "the kernel writes lse: an lse buffer is required",
            ))
        }
    };

    let mut p = FlashParams {
        q: d.q.buffer.ptr,
        k: d.k.buffer.ptr,
        v: d.v.buffer.ptr,
        o: d.o.buffer.ptr,
        lse: lse_ptr,
        cu_seqlens_q: cu_q,
        cu_seqlens_k: cu_k,
        q_batch_stride: q.strides[0] as i64,
        q_row_stride: q.strides[1] as i64,
        q_head_stride: q.strides[2] as i64,
        k_batch_stride: k.strides[0] as i64,
        k_row_stride: k.strides[1] as i64,
        k_head_stride: k.strides[2] as i64,
        v_batch_stride: v.strides[0] as i64,
        v_row_stride: v.strides[1] as i64,
        v_head_stride: v.strides[2] as i64,
        o_batch_stride: o.strides[0] as i64,
        o_row_stride: o.strides[1] as i64,
        o_head_stride: o.strides[2] as i64,
        lse_batch_stride,
        lse_head_stride,
        batch: batch as i32,
        heads_q: hq as i32,
        heads_kv: hkv as i32,
        seqlen_q: max_sq as i32,
        seqlen_k: max_sk as i32,
        scale_log2: scale * std::f32::consts::LOG2_E,
    };
    if spec.varlen {
        for s in [
            &mut p.q_batch_stride,
            &mut p.k_batch_stride,
            &mut p.v_batch_stride,
            &mut p.o_batch_stride,
        ] {
            *s = 0;
        }
    }

    // The variant's own arguments and parameters.
    let cx = PlanContext {
        spec,
        geometry,
        tile,
    };
    let variant = host.plan(&cx, d)?;

    let block_m = tile.map_or(1, |t| t.block_m as usize);
    let tiles = max_sq.div_ceil(block_m);
    let grid = if batch == 0 || tiles == 0 {
        None
    } else {
        Some((tiles as u32, hq as u32, batch as u32))
    };
    Ok(Plan {
        params: p,
        variant,
        grid,
    })
}
