//! Decode kernels over a paged KV cache (after LServe): their specs, text form, variant table
//! and rendering.
//!
//! A decode spec names the variant (which pages a split visits and which need the elementwise
//! mask), the head dim, the element type of Q and O, the KV cache's element type, the page size
//! and the row tile (the query rows of one GQA group, `(hq / hkv) * q_len`, padded to 16, 32 or
//! 64). Text form: `decode-dense,d128,bf16,p64[,kv-bf16][,r16]`; the KV dtype defaults to the
//! query dtype and the row tile to 16 (the runtime picks the smallest that holds a launch's
//! group).
//!
//! Every variant is one row of [`DECODE_VARIANTS`] plus one hook file under
//! `templates/decode/variants/`; the kernel skeleton `templates/decode/decode.cu` is shared.

use crate::error::SpecError;
use crate::render::hex;
use crate::spec::{Arch, DType};
use crate::KernelSource;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::OnceLock;
use tera::{Context, Tera};

/// The decode variants: which cached tokens the new tokens attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecodeVariant {
    /// Every cached token at or before the query's position.
    Dense,
    /// Sink plus recent tokens (`sink`, `recent` at launch); other pages are never read.
    Streaming,
    /// The pages of a page selection per (sequence, kv head), plus every page newer than the
    /// selection.
    Selected,
    /// Per kv head, streaming or selected, in one launch.
    Mixed,
}

/// What the kernel of a decode variant reads besides Q and the paged cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeVariantInfo {
    pub variant: DecodeVariant,
    /// The name in spec text (`decode-<name>`).
    pub name: &'static str,
    /// The hook file under `templates/decode/variants/`.
    pub hooks: &'static str,
    /// Reads `sink` and `recent`.
    pub streaming: bool,
    /// Reads a page selection.
    pub selection: bool,
    /// Reads a kind per kv head.
    pub head_kinds: bool,
}

/// The variant table: the one place a decode variant's name, hook file and flags are written.
pub const DECODE_VARIANTS: [DecodeVariantInfo; 4] = [
    DecodeVariantInfo {
        variant: DecodeVariant::Dense,
        name: "dense",
        hooks: "decode/variants/dense.cuh",
        streaming: false,
        selection: false,
        head_kinds: false,
    },
    DecodeVariantInfo {
        variant: DecodeVariant::Streaming,
        name: "streaming",
        hooks: "decode/variants/streaming.cuh",
        streaming: true,
        selection: false,
        head_kinds: false,
    },
    DecodeVariantInfo {
        variant: DecodeVariant::Selected,
        name: "selected",
        hooks: "decode/variants/selected.cuh",
        streaming: false,
        selection: true,
        head_kinds: false,
    },
    DecodeVariantInfo {
        variant: DecodeVariant::Mixed,
        name: "mixed",
        hooks: "decode/variants/mixed.cuh",
        streaming: true,
        selection: true,
        head_kinds: true,
    },
];

impl DecodeVariant {
    pub const ALL: [DecodeVariant; 4] = [
        DecodeVariant::Dense,
        DecodeVariant::Streaming,
        DecodeVariant::Selected,
        DecodeVariant::Mixed,
    ];

    /// The variant's row of [`DECODE_VARIANTS`].
    pub fn info(self) -> &'static DecodeVariantInfo {
        DECODE_VARIANTS
            .iter()
            .find(|i| i.variant == self)
            .expect("every decode variant has a row in DECODE_VARIANTS")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }
}

impl fmt::Display for DecodeVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Storage format of one pool of the paged KV cache (K or V). The 16-bit formats hold the
/// query dtype's values unchanged; the others are quantized and dequantized inside the decode
/// kernels, which read a half (int8, fp8) or a quarter (int4) of the bytes.
///
/// | format | code | value | scales |
/// |---|---|---|---|
/// | `Bf16`, `F16` | the element | the element | none |
/// | `Int8` | i8, -127 ..= 127 | `s * c` | one f32 per kv head (per tensor: the same for all) |
/// | `Int8Token` | u8, 0 ..= 255 | `s * c + z` | f32 `(s, z)` per token per kv head |
/// | `Int4Token` | u4, 0 ..= 15 | `s * c + z` | f32 `(s, z)` per token per kv head |
/// | `Fp8` | e4m3 (no inf) | `s * e4m3(c)` | one f32 per kv head (per tensor: the same for all) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KvDtype {
    #[serde(rename = "bf16")]
    Bf16,
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "int8")]
    Int8,
    #[serde(rename = "int8tok")]
    Int8Token,
    #[serde(rename = "int4tok")]
    Int4Token,
    #[serde(rename = "fp8")]
    Fp8,
}

/// How a format's codes are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvScaling {
    /// 16-bit values, no scale.
    None,
    /// One f32 scale per kv head, given when the cache is made (static calibration).
    PerHead,
    /// An f32 scale and zero point per token per kv head, computed by the append kernel.
    PerToken,
}

impl KvDtype {
    pub const ALL: [KvDtype; 6] = [
        KvDtype::Bf16,
        KvDtype::F16,
        KvDtype::Int8,
        KvDtype::Int8Token,
        KvDtype::Int4Token,
        KvDtype::Fp8,
    ];
    /// The quantized formats.
    pub const QUANTIZED: [KvDtype; 4] = [
        KvDtype::Int8,
        KvDtype::Int8Token,
        KvDtype::Int4Token,
        KvDtype::Fp8,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::Bf16 => "bf16",
            KvDtype::F16 => "f16",
            KvDtype::Int8 => "int8",
            KvDtype::Int8Token => "int8tok",
            KvDtype::Int4Token => "int4tok",
            KvDtype::Fp8 => "fp8",
        }
    }

    /// Parses a format name (`fp16` is `f16`).
    pub fn parse(text: &str) -> Option<KvDtype> {
        match text {
            "fp16" => Some(KvDtype::F16),
            _ => KvDtype::ALL.into_iter().find(|k| k.name() == text),
        }
    }

    /// Bits of one stored code.
    pub fn bits(self) -> usize {
        match self {
            KvDtype::Bf16 | KvDtype::F16 => 16,
            KvDtype::Int8 | KvDtype::Int8Token | KvDtype::Fp8 => 8,
            KvDtype::Int4Token => 4,
        }
    }

    /// Bytes of one token's row of one kv head (`head_dim` codes).
    pub fn row_bytes(self, head_dim: usize) -> usize {
        head_dim * self.bits() / 8
    }

    pub fn scaling(self) -> KvScaling {
        match self {
            KvDtype::Bf16 | KvDtype::F16 => KvScaling::None,
            KvDtype::Int8 | KvDtype::Fp8 => KvScaling::PerHead,
            KvDtype::Int8Token | KvDtype::Int4Token => KvScaling::PerToken,
        }
    }

    pub fn is_quantized(self) -> bool {
        self.scaling() != KvScaling::None
    }

    /// The 16-bit type a 16-bit format stores.
    pub fn native(self) -> Option<DType> {
        match self {
            KvDtype::Bf16 => Some(DType::Bf16),
            KvDtype::F16 => Some(DType::F16),
            _ => None,
        }
    }

    /// The KV dtype that stores `dtype` unchanged.
    pub fn of(dtype: DType) -> KvDtype {
        match dtype {
            DType::Bf16 => KvDtype::Bf16,
            DType::F16 => KvDtype::F16,
        }
    }

    /// Whether a cache serving `dtype` queries can store this format (a 16-bit format must be
    /// the query dtype; quantized formats serve both).
    pub fn serves(self, dtype: DType) -> bool {
        self.native().is_none_or(|d| d == dtype)
    }

    /// The code the templates switch on (`K_FMT`, `V_FMT`).
    fn template_code(self) -> u32 {
        match self {
            KvDtype::Bf16 | KvDtype::F16 => 0,
            KvDtype::Int8 => 1,
            KvDtype::Int8Token => 2,
            KvDtype::Int4Token => 3,
            KvDtype::Fp8 => 4,
        }
    }
}

impl fmt::Display for KvDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The formats of a cache's K and V pools (they may differ, e.g. int4 keys with int8 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KvDtypes {
    pub k: KvDtype,
    pub v: KvDtype,
}

impl KvDtypes {
    /// K and V in one format.
    pub fn same(kv: KvDtype) -> Self {
        KvDtypes { k: kv, v: kv }
    }

    pub fn new(k: KvDtype, v: KvDtype) -> Self {
        KvDtypes { k, v }
    }

    /// The pairs `DecodeSpec::all` covers besides the 16-bit cache: every quantized format for
    /// K and V, int4 keys with int8 values, and a quantized pool beside a 16-bit one.
    pub fn quantized_pairs(dtype: DType) -> Vec<KvDtypes> {
        let native = KvDtype::of(dtype);
        let mut out: Vec<KvDtypes> = KvDtype::QUANTIZED.map(KvDtypes::same).to_vec();
        out.push(KvDtypes::new(KvDtype::Int4Token, KvDtype::Int8Token));
        out.push(KvDtypes::new(native, KvDtype::Int4Token));
        out.push(KvDtypes::new(KvDtype::Int8Token, native));
        out
    }

    /// The part of a kernel name: `bf16` or `int4tok_int8tok`.
    fn ident(&self) -> String {
        if self.k == self.v {
            self.k.name().to_string()
        } else {
            format!("{}_{}", self.k.name(), self.v.name())
        }
    }
}

impl fmt::Display for KvDtypes {
    /// `int8` when K and V agree, else `k-int4tok,v-int8tok`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.k == self.v {
            f.write_str(self.k.name())
        } else {
            write!(f, "k-{},v-{}", self.k, self.v)
        }
    }
}

/// Shared-memory row pitch (bytes) of a K tile of quantized codes: the kernel reads 16 codes per
/// thread per row (int8 and fp8: one 16-byte load, int4: 8 bytes), and the pitch keeps the
/// eight rows a warp reads at once on distinct banks.
pub fn k_smem_pitch(kv: KvDtype, head_dim: u32) -> u32 {
    let row = kv.row_bytes(head_dim as usize) as u32;
    match kv.bits() {
        16 => 2 * (head_dim + 8),
        8 => padded_pitch(row, 64, 128),
        _ => padded_pitch(row, 32, 64),
    }
}

/// Shared-memory row pitch (bytes) of a V tile of quantized codes: a thread reads the codes of
/// its output columns of four keys two rows apart; pitch = 16 (mod 64) bytes.
pub fn v_smem_pitch(kv: KvDtype, head_dim: u32) -> u32 {
    let row = kv.row_bytes(head_dim as usize) as u32;
    if kv.bits() == 16 {
        2 * (head_dim + 8)
    } else {
        padded_pitch(row, 16, 64)
    }
}

/// The smallest pitch >= `row` with `pitch % modulus == rem`.
fn padded_pitch(row: u32, rem: u32, modulus: u32) -> u32 {
    let mut p = row;
    while p % modulus != rem {
        p += 16;
    }
    p
}

/// Page sizes of the paged cache, in tokens.
pub const PAGE_SIZES: [u32; 4] = [16, 32, 64, 128];
/// Tokens per logical page (the unit of the page statistics and of the kernels' KV blocks).
pub const LOGICAL_PAGE: u32 = 16;
/// Head dims of the decode kernels.
pub const DECODE_HEAD_DIMS: [u32; 3] = [64, 128, 256];
/// Row tiles: query rows of one GQA group (`(hq / hkv) * q_len`), padded.
pub const DECODE_ROWS: [u32; 3] = [16, 32, 64];
/// Most new tokens per sequence in one decode launch (speculative decoding).
pub const MAX_Q_LEN: usize = 8;
/// Threads per CTA of the decode kernel (4 warps).
pub const DECODE_THREADS: u32 = 128;
/// Tokens per KV tile of the decode kernel (four logical pages).
pub const DECODE_BLOCK_N: u32 = 64;
/// Shared memory the decode kernel over 16-bit pools aims to stay under, so that two CTAs share
/// an SM on sm_80 and sm_90.
const DECODE_SMEM_TARGET: u32 = 112 * 1024;
/// The same when both pools are quantized: smaller, for more CTAs per SM. Those kernels are bound by
/// the latency of their per-tile work, not by bytes in flight; on an H200 at b8 s32k, 48 KiB
/// (2-3 stages, 4 CTAs per SM) ran int8 at 216 us against 230 us at 112 KiB (5-6 stages, 2 CTAs),
/// int4tok at 265 against 300; 16-bit pools gained nothing from it.
const DECODE_SMEM_TARGET_QUANTIZED: u32 = 48 * 1024;

/// One decode attention kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DecodeSpec {
    pub variant: DecodeVariant,
    pub head_dim: u32,
    /// Element type of Q and O.
    pub dtype: DType,
    /// Storage formats of the paged cache's K and V pools.
    pub kv_dtype: KvDtypes,
    pub page_size: u32,
    /// Query rows per CTA: 16, 32 or 64.
    pub rows: u32,
}

impl DecodeSpec {
    /// A spec with the KV cache in `dtype` and a 16-row tile.
    pub fn new(variant: DecodeVariant, head_dim: u32, dtype: DType, page_size: u32) -> Self {
        DecodeSpec {
            variant,
            head_dim,
            dtype,
            kv_dtype: KvDtypes::same(KvDtype::of(dtype)),
            page_size,
            rows: 16,
        }
    }

    pub fn with_rows(mut self, rows: u32) -> Self {
        self.rows = rows;
        self
    }

    /// K and V in one format.
    pub fn with_kv_dtype(mut self, kv_dtype: KvDtype) -> Self {
        self.kv_dtype = KvDtypes::same(kv_dtype);
        self
    }

    pub fn with_kv_dtypes(mut self, kv_dtypes: KvDtypes) -> Self {
        self.kv_dtype = kv_dtypes;
        self
    }

    /// Whether the K or the V pool is quantized.
    pub fn quantized(&self) -> bool {
        self.kv_dtype.k.is_quantized() || self.kv_dtype.v.is_quantized()
    }

    /// The smallest row tile that holds `rows` query rows at `head_dim`, if any does.
    pub fn rows_for(rows: usize, head_dim: u32) -> Option<u32> {
        DECODE_ROWS
            .into_iter()
            .find(|&r| rows <= r as usize && r <= Self::max_rows(head_dim))
    }

    /// The largest row tile at a head dim: at d256 a warp holding 64 rows' scores of a whole
    /// tile plus its output spills on sm_80, so d256 takes at most 32 rows per kv head.
    pub fn max_rows(head_dim: u32) -> u32 {
        if head_dim >= 256 {
            32
        } else {
            64
        }
    }

    /// Every spec the decode templates generate (for compile checks): each variant, head dim,
    /// dtype, page size and row tile over a 16-bit cache and over each pair of
    /// [`KvDtypes::quantized_pairs`].
    pub fn all() -> Vec<DecodeSpec> {
        let mut out = Vec::new();
        for variant in DecodeVariant::ALL {
            for head_dim in DECODE_HEAD_DIMS {
                for dtype in DType::ALL {
                    let mut pairs = vec![KvDtypes::same(KvDtype::of(dtype))];
                    pairs.extend(KvDtypes::quantized_pairs(dtype));
                    for kv in pairs {
                        for page_size in PAGE_SIZES {
                            for rows in DECODE_ROWS {
                                if rows > Self::max_rows(head_dim) {
                                    continue;
                                }
                                out.push(
                                    DecodeSpec::new(variant, head_dim, dtype, page_size)
                                        .with_kv_dtypes(kv)
                                        .with_rows(rows),
                                );
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The `extern "C"` name of the attention kernel.
    pub fn kernel_name(&self) -> String {
        format!(
            "fg_decode_{}_d{}_{}_kv{}_p{}_r{}",
            self.variant.name(),
            self.head_dim,
            self.dtype.name(),
            self.kv_dtype.ident(),
            self.page_size,
            self.rows
        )
    }

    /// Checks every field; the error names the field and the allowed values.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: &str, got: String, allowed: &str| SpecError::Parse {
            input: self.to_string(),
            reason: format!(
                "{field} = {got} is not supported by decode kernels; allowed: {allowed}"
            ),
        };
        if !DECODE_HEAD_DIMS.contains(&self.head_dim) {
            return Err(bad("head_dim", self.head_dim.to_string(), "64, 128, 256"));
        }
        if !PAGE_SIZES.contains(&self.page_size) {
            return Err(bad(
                "page_size",
                self.page_size.to_string(),
                "16, 32, 64, 128",
            ));
        }
        if !DECODE_ROWS.contains(&self.rows) || self.rows > Self::max_rows(self.head_dim) {
            return Err(bad(
                "rows",
                self.rows.to_string(),
                "16, 32, 64 (at most 32 at head_dim 256)",
            ));
        }
        for (field, kv) in [("k_dtype", self.kv_dtype.k), ("v_dtype", self.kv_dtype.v)] {
            if !kv.serves(self.dtype) {
                return Err(bad(
                    field,
                    kv.to_string(),
                    "the query dtype (a 16-bit pool is read as stored), int8, int8tok, int4tok, fp8",
                ));
            }
        }
        Ok(())
    }

    /// Bytes of one pipeline stage: a K and a V tile of `DECODE_BLOCK_N` padded rows, and the
    /// tiles' per-token scales and zero points (8 bytes a token) for per-token formats.
    fn stage_bytes(&self) -> u32 {
        let (k, v) = (self.kv_dtype.k, self.kv_dtype.v);
        let params = |kv: KvDtype| {
            if kv.scaling() == KvScaling::PerToken {
                DECODE_BLOCK_N * 8
            } else {
                0
            }
        };
        DECODE_BLOCK_N * (k_smem_pitch(k, self.head_dim) + v_smem_pitch(v, self.head_dim))
            + params(k)
            + params(v)
    }

    /// Pipeline stages for `arch`: as many as fit the shared-memory target (at most 4; 6 for
    /// a quantized cache, whose smaller tiles need more of them in flight), at least 2 where
    /// the arch allows them.
    pub fn stages(&self, arch: Arch) -> u32 {
        let stage = self.stage_bytes();
        // Both pools quantized: a 16-bit pool beside a quantized one was not measured faster.
        let target = if self.kv_dtype.k.is_quantized() && self.kv_dtype.v.is_quantized() {
            DECODE_SMEM_TARGET_QUANTIZED
        } else {
            DECODE_SMEM_TARGET
        };
        let budget = target
            .min(arch.max_shared_bytes_per_block())
            .saturating_sub(self.q_bytes());
        let most = if self.quantized() { 6 } else { 4 };
        let fit = (budget / stage).min(most);
        if fit >= 2 {
            fit
        } else if 2 * stage + self.q_bytes() <= arch.max_shared_bytes_per_block() {
            2
        } else {
            1
        }
    }

    /// Bytes of the query tile in shared memory (and, for per-token keys, the rows' sums).
    fn q_bytes(&self) -> u32 {
        self.rows * (self.head_dim + 8) * 2 + self.rows * 4
    }

    /// Dynamic shared memory of the attention kernel on `arch`.
    pub fn shared_bytes(&self, arch: Arch) -> u32 {
        let pipeline = self.stages(arch) * self.stage_bytes();
        // The cross-warp combine reuses the pipeline buffers: 4 warps x 16 rows x d f32.
        let combine = 4 * 16 * self.head_dim * 4 + 2 * 4 * 16 * 4;
        pipeline.max(combine) + self.q_bytes()
    }
}

impl fmt::Display for DecodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "decode-{},d{},{},p{}",
            self.variant, self.head_dim, self.dtype, self.page_size
        )?;
        let native = KvDtype::of(self.dtype);
        let KvDtypes { k, v } = self.kv_dtype;
        if k == v && k != native {
            write!(f, ",kv-{k}")?;
        } else if k != v {
            if k != native {
                write!(f, ",k-{k}")?;
            }
            if v != native {
                write!(f, ",v-{v}")?;
            }
        }
        write!(f, ",r{}", self.rows)
    }
}

/// Parses `decode-<variant>,d<head_dim>,<dtype>,p<page_size>[,kv-<fmt>|,k-<fmt>,v-<fmt>][,r<rows>]`
/// and validates it. `kv-<fmt>` sets both pools' format, `k-` and `v-` one each (the other
/// stays the query dtype); formats: bf16, f16, int8, int8tok, int4tok, fp8.
pub fn parse_decode_spec(text: &str) -> Result<DecodeSpec, SpecError> {
    let err = |reason: String| SpecError::Parse {
        input: text.to_string(),
        reason,
    };
    let mut parts = text.split(',').map(str::trim).filter(|p| !p.is_empty());
    let first = parts.next().ok_or_else(|| err("empty spec".into()))?;
    let name = first
        .strip_prefix("decode-")
        .ok_or_else(|| err("a decode spec starts with decode-<variant>".into()))?;
    let variant = DecodeVariant::ALL
        .into_iter()
        .find(|v| v.name() == name)
        .ok_or_else(|| {
            err(format!(
                "decode variant `{name}` is unknown; allowed: {}",
                DECODE_VARIANTS.map(|i| i.name).join(", ")
            ))
        })?;
    let mut head_dim = None;
    let mut dtype = None;
    let mut page_size = None;
    let mut kv_both: Option<KvDtype> = None;
    let mut k_only: Option<KvDtype> = None;
    let mut v_only: Option<KvDtype> = None;
    let mut rows = None;
    let num = |t: &str, what: &str| {
        t.parse::<u32>()
            .map_err(|_| err(format!("{what} must be a number, got `{t}`")))
    };
    let parse_dtype = |t: &str| match t {
        "bf16" => Some(DType::Bf16),
        "f16" | "fp16" => Some(DType::F16),
        _ => None,
    };
    for part in parts {
        let slot_taken = |taken: bool, what: &str| {
            if taken {
                Err(err(format!("{what} is given twice")))
            } else {
                Ok(())
            }
        };
        if let Some(d) = parse_dtype(part) {
            slot_taken(dtype.is_some(), "dtype")?;
            dtype = Some(d);
        } else if let Some((slot, t)) = [
            ("kv-", &mut kv_both),
            ("k-", &mut k_only),
            ("v-", &mut v_only),
        ]
        .into_iter()
        .find_map(|(prefix, slot)| part.strip_prefix(prefix).map(|t| (slot, t)))
        {
            slot_taken(slot.is_some(), "a KV dtype")?;
            let kv = KvDtype::parse(t).ok_or_else(|| {
                err(format!(
                    "KV dtype `{t}` is unknown; allowed: {}",
                    KvDtype::ALL.map(KvDtype::name).join(", ")
                ))
            })?;
            *slot = Some(kv);
        } else if let Some(t) = part.strip_prefix('d') {
            slot_taken(head_dim.is_some(), "head_dim")?;
            head_dim = Some(num(t, "head_dim")?);
        } else if let Some(t) = part.strip_prefix('p') {
            slot_taken(page_size.is_some(), "page_size")?;
            page_size = Some(num(t, "page_size")?);
        } else if let Some(t) = part.strip_prefix('r') {
            slot_taken(rows.is_some(), "rows")?;
            rows = Some(num(t, "rows")?);
        } else {
            return Err(err(format!(
                "unknown part `{part}`; allowed: d<head_dim>, bf16|f16, p<page_size>, kv-<fmt>, k-<fmt>, v-<fmt>, r<rows>"
            )));
        }
    }
    let dtype = dtype.ok_or_else(|| err("the dtype (bf16 or f16) is missing".into()))?;
    if kv_both.is_some() && (k_only.is_some() || v_only.is_some()) {
        return Err(err(
            "kv-<fmt> sets both pools; give it alone or give k-<fmt> and v-<fmt>".into(),
        ));
    }
    let native = KvDtype::of(dtype);
    let kv_dtype = match kv_both {
        Some(kv) => KvDtypes::same(kv),
        None => KvDtypes::new(k_only.unwrap_or(native), v_only.unwrap_or(native)),
    };
    let spec = DecodeSpec {
        variant,
        head_dim: head_dim.ok_or_else(|| err("the head dim (d<n>) is missing".into()))?,
        dtype,
        kv_dtype,
        page_size: page_size.ok_or_else(|| err("the page size (p<n>) is missing".into()))?,
        rows: rows.unwrap_or(16),
    };
    spec.validate()?;
    Ok(spec)
}

/// Head dims of the decode part of the default set (the prefill default set's).
pub const DEFAULT_DECODE_HEAD_DIMS: [u32; 2] = [64, 128];
/// Page size of the decode part of the default set (LServe's).
pub const DEFAULT_PAGE_SIZE: u32 = 64;

/// The decode part of the built-in default set (what `flashgen compile --default-set` builds
/// besides the attention kernels, and the decode targets the tuner tunes): every decode
/// variant at head dims 64 and 128, bf16 queries, pages of 64 tokens and the 16-row tile (GQA
/// up to 16 at one new token), over every KV dtype [`DecodeSpec::all`] has for them.
pub fn decode_default_set() -> Vec<DecodeSpec> {
    decode_default_set_for(DType::Bf16)
}

/// [`decode_default_set`] with queries of `dtype`.
///
/// Its caches: the 16-bit one and the per-token quantized formats (int8tok, int4tok), which need
/// nothing from the engine but the tokens. The per-tensor formats (int8, fp8) take calibrated
/// scales that only the engine knows, so their kernels are compiled on first use.
pub fn decode_default_set_for(dtype: DType) -> Vec<DecodeSpec> {
    let caches = [
        KvDtypes::same(KvDtype::of(dtype)),
        KvDtypes::same(KvDtype::Int8Token),
        KvDtypes::same(KvDtype::Int4Token),
    ];
    DecodeSpec::all()
        .into_iter()
        .filter(|s| {
            DEFAULT_DECODE_HEAD_DIMS.contains(&s.head_dim)
                && s.dtype == dtype
                && s.page_size == DEFAULT_PAGE_SIZE
                && s.rows == DECODE_ROWS[0]
                && caches.contains(&s.kv_dtype)
        })
        .collect()
}

/// The decode templates, embedded at build time (names are paths under `templates/`). They
/// share the device library with the prefill kernels but not its digest: editing a decode
/// template leaves the prefill kernels' cache entries and tuned configs alone (decode kernels
/// are cached by the hash of their rendered source).
pub const DECODE_TEMPLATES: &[(&str, &str)] = &[
    (
        "device/types.cuh",
        include_str!("../../templates/device/types.cuh"),
    ),
    (
        "device/mma.cuh",
        include_str!("../../templates/device/mma.cuh"),
    ),
    (
        "decode/decode.cu",
        include_str!("../../templates/decode/decode.cu"),
    ),
    (
        "decode/variants/dense.cuh",
        include_str!("../../templates/decode/variants/dense.cuh"),
    ),
    (
        "decode/variants/streaming.cuh",
        include_str!("../../templates/decode/variants/streaming.cuh"),
    ),
    (
        "decode/variants/selected.cuh",
        include_str!("../../templates/decode/variants/selected.cuh"),
    ),
    (
        "decode/variants/mixed.cuh",
        include_str!("../../templates/decode/variants/mixed.cuh"),
    ),
    (
        "decode/append.cu",
        include_str!("../../templates/decode/append.cu"),
    ),
    (
        "device/topk.cuh",
        include_str!("../../templates/device/topk.cuh"),
    ),
    (
        "device/pdl.cuh",
        include_str!("../../templates/device/pdl.cuh"),
    ),
    (
        "decode/select.cu",
        include_str!("../../templates/decode/select.cu"),
    ),
];

fn tera() -> &'static Tera {
    static TERA: OnceLock<Tera> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut tera = Tera::default();
        tera.add_raw_templates(DECODE_TEMPLATES.iter().copied())
            .expect("embedded decode templates parse (checked by the codegen tests)");
        tera
    })
}

/// Digest of the decode templates.
pub fn decode_template_digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| {
        let mut h = Sha256::new();
        for (name, text) in DECODE_TEMPLATES {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        hex(&h.finalize())
    })
}

fn base_context(dtype: DType) -> Context {
    let mut ctx = Context::new();
    ctx.insert("dtype", dtype.name());
    ctx.insert("mma", "sync");
    ctx
}

/// Renders the attention kernel of a validated decode spec.
pub fn render_decode(spec: &DecodeSpec, arch: Arch) -> Result<KernelSource, tera::Error> {
    let mut ctx = base_context(spec.dtype);
    ctx.insert("kernel_name", &spec.kernel_name());
    ctx.insert("spec", &spec.to_string());
    ctx.insert("variant", spec.variant.name());
    ctx.insert("hooks", spec.variant.info().hooks);
    ctx.insert("head_dim", &spec.head_dim);
    ctx.insert("kv_dtype", &spec.kv_dtype.to_string());
    insert_formats(&mut ctx, spec.kv_dtype, spec.head_dim);
    ctx.insert("q_bytes", &spec.q_bytes());
    ctx.insert("page_size", &spec.page_size);
    ctx.insert("rows", &spec.rows);
    ctx.insert("stages", &spec.stages(arch));
    ctx.insert("block_n", &DECODE_BLOCK_N);
    ctx.insert("threads", &DECODE_THREADS);
    let hooks = tera().render(spec.variant.info().hooks, &ctx)?;
    ctx.insert("hooks_code", &hooks);
    let code = tera().render("decode/decode.cu", &ctx)?;
    Ok(KernelSource {
        kernel_name: spec.kernel_name(),
        code,
        threads: DECODE_THREADS,
        shared_bytes: spec.shared_bytes(arch),
    })
}

/// Threads per CTA of the append kernel.
pub const APPEND_THREADS: u32 = 256;
/// Threads per CTA of the page-scoring kernel.
pub const SCORE_THREADS: u32 = 256;

/// Groups of 8 logical pages a warp of the page-scoring kernel scores at a head dim: each lane
/// holds 64 registers of statistics whatever the head dim (4 groups at d64, 1 at d256).
pub fn score_groups(head_dim: u32) -> u32 {
    (256 / head_dim).max(1)
}

/// Logical pages (16 tokens) one CTA of the page-scoring kernel scores at a head dim: the
/// launch covers a sequence's logical pages with `ceil(logical / this)` CTAs per kv head.
pub fn score_logical_per_cta(head_dim: u32) -> u32 {
    SCORE_THREADS / 32 * score_groups(head_dim) * 8
}
/// Threads per CTA of the page top-k kernel (one CTA per (sequence, kv head); each thread keeps
/// four scores in registers, so a row of up to 2048 pages is read once).
pub const SELECT_THREADS: u32 = 512;

/// The formats' template constants: `K_FMT`/`V_FMT` (0 16-bit, 1 int8, 2 int8tok, 3 int4tok,
/// 4 fp8), their bits and shared-memory pitches.
fn insert_formats(ctx: &mut Context, kv: KvDtypes, head_dim: u32) {
    ctx.insert("k_fmt", &kv.k.template_code());
    ctx.insert("v_fmt", &kv.v.template_code());
    ctx.insert("k_bits", &kv.k.bits());
    ctx.insert("v_bits", &kv.v.bits());
    ctx.insert("k_pitch", &k_smem_pitch(kv.k, head_dim));
    ctx.insert("v_pitch", &v_smem_pitch(kv.v, head_dim));
}

/// The append kernel of a cache serving `dtype` queries with pools `kv`: `fg_decode_append`
/// (quantizes and writes new K/V into their pages, with their per-token scales, and updates
/// the logical pages' key min/max from the values the cache returns).
pub fn render_append(dtype: DType, kv: KvDtypes) -> Result<KernelSource, tera::Error> {
    let mut ctx = base_context(dtype);
    ctx.insert("kv_dtype", &kv.to_string());
    insert_formats(&mut ctx, kv, 128);
    ctx.insert("threads", &APPEND_THREADS);
    let code = tera().render("decode/append.cu", &ctx)?;
    Ok(KernelSource {
        kernel_name: "fg_decode_append".into(),
        code,
        threads: APPEND_THREADS,
        shared_bytes: 0,
    })
}

/// The page selector for a query dtype and head dim: `fg_decode_page_scores` and
/// `fg_decode_page_select` (which runs the row top-k of `templates/device/topk.cuh`, shared with
/// APB's compression).
pub fn render_selector(dtype: DType, head_dim: u32) -> Result<KernelSource, tera::Error> {
    let mut ctx = base_context(dtype);
    ctx.insert("head_dim", &head_dim);
    ctx.insert("score_threads", &SCORE_THREADS);
    ctx.insert("score_groups", &score_groups(head_dim));
    ctx.insert("select_threads", &SELECT_THREADS);
    let code = tera().render("decode/select.cu", &ctx)?;
    Ok(KernelSource {
        kernel_name: "fg_decode_page_scores".into(),
        code,
        threads: SCORE_THREADS,
        shared_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_one_row_and_a_hook_file() {
        for v in DecodeVariant::ALL {
            assert_eq!(DECODE_VARIANTS.iter().filter(|i| i.variant == v).count(), 1);
            assert!(DECODE_TEMPLATES.iter().any(|(n, _)| *n == v.info().hooks));
        }
    }

    #[test]
    fn text_round_trips_and_defaults() {
        let s = parse_decode_spec("decode-dense,d128,bf16,p64").unwrap();
        assert_eq!(
            s,
            DecodeSpec::new(DecodeVariant::Dense, 128, DType::Bf16, 64)
        );
        assert_eq!(s.to_string(), "decode-dense,d128,bf16,p64,r16");
        for spec in DecodeSpec::all() {
            assert_eq!(parse_decode_spec(&spec.to_string()).unwrap(), spec);
        }
        let s = parse_decode_spec("decode-mixed, fp16, d64, p16, r64").unwrap();
        assert_eq!(s.dtype, DType::F16);
        assert_eq!(s.rows, 64);
    }

    #[test]
    fn bad_specs_name_the_field() {
        for (text, needle) in [
            ("decode-dense,d100,bf16,p64", "head_dim = 100"),
            ("decode-dense,d128,bf16,p48", "page_size = 48"),
            ("decode-dense,d128,bf16,p64,r8", "rows = 8"),
            ("decode-dense,d128,bf16,p64,kv-f16", "k_dtype = f16"),
            ("decode-dense,d128,bf16,p64,v-f16", "v_dtype = f16"),
            ("decode-dense,d128,bf16,p64,kv-int3", "KV dtype `int3`"),
            (
                "decode-dense,d128,bf16,p64,kv-int8,k-int4tok",
                "kv-<fmt> sets both",
            ),
            ("decode-dense,d128,bf16,p64,k-int8,k-int4tok", "given twice"),
            ("decode-sparse,d128,bf16,p64", "decode variant `sparse`"),
            ("decode-dense,d128,p64", "dtype"),
            ("decode-dense,bf16,p64", "head dim"),
            ("decode-dense,d128,bf16", "page size"),
            ("decode-dense,d128,bf16,p64,causal", "unknown part `causal`"),
            ("decode-dense,d128,bf16,bf16,p64", "dtype is given twice"),
            ("dense,d128,bf16", "decode-<variant>"),
        ] {
            let e = parse_decode_spec(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn the_default_set_has_every_variant_at_the_default_shapes() {
        let set = decode_default_set();
        for v in DecodeVariant::ALL {
            for d in DEFAULT_DECODE_HEAD_DIMS {
                assert!(set.iter().any(|s| s.variant == v
                    && s.head_dim == d
                    && s.kv_dtype == KvDtypes::same(KvDtype::Bf16)));
            }
        }
        assert!(set.iter().all(|s| s.validate().is_ok()
            && s.rows == 16
            && s.page_size == 64
            && s.dtype == DType::Bf16));
    }

    #[test]
    fn quantized_text_round_trips() {
        let s = parse_decode_spec("decode-dense,d128,bf16,p64,kv-int8").unwrap();
        assert_eq!(s.kv_dtype, KvDtypes::same(KvDtype::Int8));
        assert_eq!(s.to_string(), "decode-dense,d128,bf16,p64,kv-int8,r16");
        let s = parse_decode_spec("decode-mixed,d64,f16,p16,k-int4tok,v-int8tok,r32").unwrap();
        assert_eq!(
            s.kv_dtype,
            KvDtypes::new(KvDtype::Int4Token, KvDtype::Int8Token)
        );
        assert_eq!(
            s.to_string(),
            "decode-mixed,d64,f16,p16,k-int4tok,v-int8tok,r32"
        );
        // One pool quantized: the other is the query dtype.
        let s = parse_decode_spec("decode-selected,d256,bf16,p128,v-fp8").unwrap();
        assert_eq!(s.kv_dtype, KvDtypes::new(KvDtype::Bf16, KvDtype::Fp8));
        assert_eq!(parse_decode_spec(&s.to_string()).unwrap(), s);
        // Every pair of formats the query dtype allows round-trips.
        for dtype in DType::ALL {
            for k in KvDtype::ALL {
                for v in KvDtype::ALL {
                    let spec = DecodeSpec::new(DecodeVariant::Dense, 128, dtype, 64)
                        .with_kv_dtypes(KvDtypes::new(k, v));
                    if k.serves(dtype) && v.serves(dtype) {
                        assert_eq!(parse_decode_spec(&spec.to_string()).unwrap(), spec);
                    } else {
                        assert!(spec.validate().is_err());
                    }
                }
            }
        }
        assert!(DecodeSpec::all()
            .iter()
            .any(|s| s.kv_dtype.k == KvDtype::Int4Token));
    }

    #[test]
    fn smem_pitches_keep_rows_on_distinct_banks() {
        for d in DECODE_HEAD_DIMS {
            for kv in KvDtype::QUANTIZED {
                let (kp, vp) = (k_smem_pitch(kv, d), v_smem_pitch(kv, d));
                assert!(kp as usize >= kv.row_bytes(d as usize) && kp % 16 == 0);
                assert!(vp as usize >= kv.row_bytes(d as usize) && vp % 16 == 0);
                assert_eq!(vp % 64, 16);
                assert_eq!(
                    kp % if kv.bits() == 8 { 128 } else { 64 },
                    if kv.bits() == 8 { 64 } else { 32 }
                );
            }
        }
    }

    #[test]
    fn rows_fit_the_group() {
        assert_eq!(DecodeSpec::rows_for(1, 128), Some(16));
        assert_eq!(DecodeSpec::rows_for(16, 128), Some(16));
        assert_eq!(DecodeSpec::rows_for(17, 128), Some(32));
        assert_eq!(DecodeSpec::rows_for(64, 128), Some(64));
        assert_eq!(DecodeSpec::rows_for(65, 128), None);
        assert_eq!(DecodeSpec::rows_for(33, 256), None);
        assert!(parse_decode_spec("decode-dense,d256,bf16,p64,r64").is_err());
    }

    #[test]
    fn shared_memory_fits_every_arch() {
        for spec in DecodeSpec::all() {
            for arch in [Arch::SM80, Arch::SM86, Arch::SM90] {
                assert!(spec.stages(arch) >= 1);
                assert!(
                    spec.shared_bytes(arch) <= arch.max_shared_bytes_per_block(),
                    "{spec} on {arch}"
                );
            }
        }
        let d128 = DecodeSpec::new(DecodeVariant::Dense, 128, DType::Bf16, 64);
        assert!(d128.shared_bytes(Arch::SM90) * 2 <= 228 * 1024 - 2048);
        assert_eq!(d128.stages(Arch::SM90), 3);
    }

    #[test]
    fn every_template_renders() {
        for spec in DecodeSpec::all() {
            let src = render_decode(&spec, Arch::SM90).unwrap();
            assert!(src.code.contains(&format!("{}(", spec.kernel_name())));
            assert!(src.code.contains("fg_merge_if_last("));
            assert!(!src.code.contains("#include"));
        }
        for dtype in DType::ALL {
            for kv in KvDtypes::quantized_pairs(dtype) {
                let src = render_append(dtype, kv).unwrap();
                assert!(src.code.contains("fg_decode_append("));
            }
        }
        for dtype in DType::ALL {
            for d in DECODE_HEAD_DIMS {
                let src = render_selector(dtype, d).unwrap();
                assert!(src.code.contains("fg_decode_page_scores("));
                assert!(src.code.contains("fg_decode_page_select("));
                // The launch's grid counts the logical pages a CTA scores as the kernel does.
                let groups = format!("constexpr int SCORE_GROUPS = {};", score_groups(d));
                assert!(src.code.contains(&groups), "d{d}: {groups}");
                assert_eq!(score_logical_per_cta(d) % 8, 0);
                assert_eq!(score_groups(d) * d, 256, "64 statistic registers a lane");
            }
        }
    }
}
