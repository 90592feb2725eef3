//! The custom variant's host side: device vectors bound to a definition's parameters, the
//! parameter struct the kernels read ([`ExprArgs`], mirroring `FgExprArgs`), and the mask's
//! block classification ([`CustomBlocks`]: empty, partial and full blocks, FlexAttention's
//! `create_block_mask`) built on the GPU by the definition's own classification kernel, with a
//! CPU classification ([`classify_cpu`]) through codegen's evaluator for checks and tests.

use crate::error::{invalid, DriverContext, Result};
use crate::masks::BlockMask;
use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use flashgen_codegen::expr::{
    eval, Bindings, CustomMods, ExprArgs, Kind, ParamType, Value, Var, VectorData,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The query and key block sizes of a classification the runtime builds itself: FlexAttention's
/// default, a multiple of every tile's `block_m` and `block_n`.
pub const DEFAULT_BLOCK: usize = 128;

/// The element type of a device vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VectorType {
    I32,
    F32,
}

#[derive(Clone, Debug)]
enum HostData {
    I32(Vec<i32>),
    F32(Vec<f32>),
}

#[derive(Debug)]
enum DevData {
    I32(CudaSlice<i32>),
    F32(CudaSlice<f32>),
}

/// A vector a definition reads (`doc: [i32]`, `slope: [f32]`), uploaded once and immutable:
/// the host copy always equals what the kernels read, and a block classification made with it
/// stays valid for as long as the vector lives. Each upload has its own identity
/// ([`id`](Self::id)), which keys cached classifications.
#[derive(Debug)]
pub struct DeviceVector {
    id: u64,
    host: HostData,
    dev: DevData,
}

static NEXT_VECTOR: AtomicU64 = AtomicU64::new(1);

impl DeviceVector {
    pub(crate) fn upload_i32(stream: &Arc<CudaStream>, data: &[i32]) -> Result<Self> {
        check_len(data.len())?;
        Ok(DeviceVector {
            id: NEXT_VECTOR.fetch_add(1, Ordering::Relaxed),
            host: HostData::I32(data.to_vec()),
            dev: DevData::I32(
                stream
                    .clone_htod(data)
                    .while_(|| "uploading a vector".into())?,
            ),
        })
    }

    pub(crate) fn upload_f32(stream: &Arc<CudaStream>, data: &[f32]) -> Result<Self> {
        check_len(data.len())?;
        Ok(DeviceVector {
            id: NEXT_VECTOR.fetch_add(1, Ordering::Relaxed),
            host: HostData::F32(data.to_vec()),
            dev: DevData::F32(
                stream
                    .clone_htod(data)
                    .while_(|| "uploading a vector".into())?,
            ),
        })
    }

    /// This upload's identity, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn len(&self) -> usize {
        match &self.host {
            HostData::I32(v) => v.len(),
            HostData::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn element(&self) -> VectorType {
        match self.host {
            HostData::I32(_) => VectorType::I32,
            HostData::F32(_) => VectorType::F32,
        }
    }

    /// The values as uploaded.
    pub fn data(&self) -> VectorData<'_> {
        match &self.host {
            HostData::I32(v) => VectorData::I32(v),
            HostData::F32(v) => VectorData::F32(v),
        }
    }

    pub(crate) fn device_ptr<'s>(
        &'s self,
        stream: &'s CudaStream,
    ) -> (u64, cudarc::driver::SyncOnDrop<'s>) {
        use cudarc::driver::DevicePtr;
        match &self.dev {
            DevData::I32(s) => s.device_ptr(stream),
            DevData::F32(s) => s.device_ptr(stream),
        }
    }
}

fn check_len(len: usize) -> Result<()> {
    if len > i32::MAX as usize {
        return Err(invalid(
            "vector",
            format!("has {len} elements; at most 2^31 - 1"),
        ));
    }
    Ok(())
}

/// A value bound to a definition's parameter at launch.
#[derive(Clone, Copy, Debug)]
pub enum CustomValue<'a> {
    /// For an `i32` parameter.
    Int(i32),
    /// For an `f32` parameter.
    Float(f32),
    /// For a `[i32]` or `[f32]` parameter.
    Vector(&'a DeviceVector),
}

/// The values of a definition's parameters, by name: `CustomArgs::new().vector("doc", &doc)
/// .int("window", 1024)`. Every declared parameter needs one value of its type (checked at
/// launch).
#[derive(Clone, Debug, Default)]
pub struct CustomArgs<'a> {
    values: Vec<(String, CustomValue<'a>)>,
}

impl<'a> CustomArgs<'a> {
    pub fn new() -> Self {
        CustomArgs::default()
    }

    pub fn int(mut self, name: &str, value: i32) -> Self {
        self.values
            .push((name.to_string(), CustomValue::Int(value)));
        self
    }

    pub fn float(mut self, name: &str, value: f32) -> Self {
        self.values
            .push((name.to_string(), CustomValue::Float(value)));
        self
    }

    pub fn vector(mut self, name: &str, vector: &'a DeviceVector) -> Self {
        self.values
            .push((name.to_string(), CustomValue::Vector(vector)));
        self
    }

    pub fn values(&self) -> &[(String, CustomValue<'a>)] {
        &self.values
    }
}

/// What a parameter was bound to, as the block classification's key records it: scalars by
/// value, vectors by identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyValue {
    Int(i32),
    /// f32 bits.
    Float(u32),
    Vector(u64),
}

/// Everything a block classification depends on: the definition, the sequences, the bound
/// values and the block sizes. A launch uses a classification only if its own key is equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlocksKey {
    /// The definition's canonical text.
    pub definition: String,
    pub heads_q: usize,
    /// `(sq, sk)` of each sequence of the batch.
    pub lengths: Vec<(usize, usize)>,
    pub varlen: bool,
    /// By parameter name order.
    pub bindings: Vec<(String, KeyValue)>,
    pub block_q: usize,
    pub block_k: usize,
}

impl BlocksKey {
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }

    /// Query blocks (over the longest sequence's queries) and key blocks (its keys).
    pub fn blocks(&self) -> (usize, usize) {
        let sq = self.lengths.iter().map(|l| l.0).max().unwrap_or(0);
        let sk = self.lengths.iter().map(|l| l.1).max().unwrap_or(0);
        (sq.div_ceil(self.block_q), sk.div_ceil(self.block_k))
    }
}

/// Checks `args` against the definition's declarations (every parameter bound once with a
/// value of its type, nothing else bound) and returns the values in parameter order.
pub fn bind<'a>(mods: &CustomMods, args: &CustomArgs<'a>) -> Result<Vec<CustomValue<'a>>> {
    for (n, (name, _)) in args.values.iter().enumerate() {
        if mods.param(name).is_none() {
            let declared: Vec<_> = mods.params().iter().map(|p| p.name.as_str()).collect();
            return Err(invalid(
                "custom",
                format!(
                    "`{name}` is no parameter of the definition (declared: {})",
                    list_or_none(&declared)
                ),
            ));
        }
        if args.values[..n].iter().any(|(m, _)| m == name) {
            return Err(invalid(
                "custom",
                format!("parameter `{name}` is bound twice"),
            ));
        }
    }
    let mut out = Vec::with_capacity(mods.params().len());
    for p in mods.params() {
        let Some((_, value)) = args.values.iter().find(|(n, _)| *n == p.name) else {
            return Err(invalid(
                "custom",
                format!(
                    "parameter `{}: {}` has no value (CustomArgs::{})",
                    p.name,
                    p.ty.name(),
                    method(p.ty)
                ),
            ));
        };
        let fits = matches!(
            (p.ty, value),
            (ParamType::Int, CustomValue::Int(_)) | (ParamType::Float, CustomValue::Float(_))
        ) || matches!((p.ty, value), (ParamType::IntVec, CustomValue::Vector(v)) if v.element() == VectorType::I32)
            || matches!((p.ty, value), (ParamType::FloatVec, CustomValue::Vector(v)) if v.element() == VectorType::F32);
        if !fits {
            return Err(invalid(
                "custom",
                format!(
                    "parameter `{}` is declared {}, bound to {}",
                    p.name,
                    p.ty.name(),
                    describe(value)
                ),
            ));
        }
        out.push(*value);
    }
    Ok(out)
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn method(ty: ParamType) -> &'static str {
    match ty {
        ParamType::Int => "int",
        ParamType::Float => "float",
        _ => "vector",
    }
}

fn describe(v: &CustomValue) -> String {
    match v {
        CustomValue::Int(_) => "an i32".into(),
        CustomValue::Float(_) => "an f32".into(),
        CustomValue::Vector(v) => format!("a vector of {:?}", v.element()).to_lowercase(),
    }
}

/// The bound values as the classification key records them.
pub fn key_bindings(mods: &CustomMods, values: &[CustomValue]) -> Vec<(String, KeyValue)> {
    mods.params()
        .iter()
        .zip(values)
        .map(|(p, v)| {
            let k = match v {
                CustomValue::Int(x) => KeyValue::Int(*x),
                CustomValue::Float(x) => KeyValue::Float(x.to_bits()),
                CustomValue::Vector(v) => KeyValue::Vector(v.id()),
            };
            (p.name.clone(), k)
        })
        .collect()
}

/// The launch-time length check of vectors: a vector read at a bare index (`doc[q]`,
/// `slope[h]`) must cover that index's range, positions `0..max_sk` for `q` and `k`, query heads
/// for `h`, sequences for `b`. Reads at other indices are guarded in the kernel (0 outside).
pub fn check_vector_lengths(
    mods: &CustomMods,
    values: &[CustomValue],
    batch: usize,
    heads_q: usize,
    max_sk: usize,
) -> Result<()> {
    for (i, (p, v)) in mods.params().iter().zip(values).enumerate() {
        let CustomValue::Vector(vector) = v else {
            continue;
        };
        for var in [Var::B, Var::H, Var::Q, Var::K] {
            let read_at = |e: &flashgen_codegen::expr::Expr| matches!(&e.kind, Kind::Load(j, index) if *j == i && matches!(index.kind, Kind::Var(x) if x == var));
            let reads = [mods.mask(), mods.score()]
                .into_iter()
                .flatten()
                .any(|e| e.any(&read_at));
            let need = match var {
                Var::B => batch,
                Var::H => heads_q,
                _ => max_sk,
            };
            if reads && vector.len() < need {
                return Err(invalid(
                    "custom",
                    format!(
                        "vector `{}` is read at `{}` but has {} elements; the launch needs {need} ({})",
                        p.name,
                        var.name(),
                        vector.len(),
                        match var {
                            Var::B => "sequences",
                            Var::H => "query heads",
                            _ => "positions 0..sk",
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The kernels' parameter struct of bound values, with the vectors' device addresses.
pub fn expr_args(mods: &CustomMods, values: &[CustomValue], pointers: &[u64]) -> ExprArgs {
    let mut a = ExprArgs::default();
    let mut vec_at = 0;
    for (p, v) in mods.params().iter().zip(values) {
        match v {
            CustomValue::Int(x) => a.set_scalar(p.slot, *x),
            CustomValue::Float(x) => a.set_scalar(p.slot, x.to_bits() as i32),
            CustomValue::Vector(vector) => {
                let ptr = pointers.get(vec_at).copied().unwrap_or(0);
                a.set_vector(p.slot, ptr, vector.len() as i32);
                vec_at += 1;
            }
        }
    }
    a
}

/// A block classification: the non-empty blocks as a BSR block list (each row ascending) and
/// the full ones as bits, `full[b, h, qb, kb / 32] >> (kb % 32) & 1` (words of
/// `ceil(kv_blocks / 32)` per row), with the key it was built for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomBlocks {
    pub list: BlockMask,
    pub full: Vec<u32>,
    pub key: BlocksKey,
}

impl CustomBlocks {
    /// Words of full bits per block row.
    pub fn words(&self) -> usize {
        self.list.kv_blocks.div_ceil(32).max(1)
    }

    /// Whether block `kb` of row `(b, h, qb)` is full.
    pub fn is_full(&self, b: usize, h: usize, qb: usize, kb: usize) -> bool {
        let row = (b * self.list.heads + h) * self.list.q_blocks + qb;
        (self.full[row * self.words() + kb / 32] >> (kb % 32)) & 1 == 1
    }

    /// The visited fraction of the `sq x sk` pairs of the longest sequence of the first batch
    /// entry, averaged over the lists: listed blocks over all blocks.
    pub fn density(&self) -> f64 {
        let l = &self.list;
        let rows = l.heads * l.q_blocks;
        if rows == 0 || l.kv_blocks == 0 {
            return 0.0;
        }
        let listed: i64 = l.kv_count[..rows].iter().map(|&c| c as i64).sum();
        listed as f64 / (rows * l.kv_blocks) as f64
    }
}

/// The list heads of a definition: one list per query head if the mask reads `h`, else one
/// shared list.
pub fn list_heads(mods: &CustomMods, heads_q: usize) -> usize {
    if mods.mask().is_some_and(|m| m.uses(Var::H)) {
        heads_q
    } else {
        1
    }
}

/// The classification on the CPU, through codegen's evaluator (the kernel's arithmetic).
pub fn classify_cpu(
    mods: &CustomMods,
    key: &BlocksKey,
    values: &[VectorData],
) -> Result<CustomBlocks> {
    let heads = list_heads(mods, key.heads_q);
    let (q_blocks, kv_blocks) = key.blocks();
    let batch = key.batch();
    let words = kv_blocks.div_ceil(32).max(1);
    let rows = batch * heads * q_blocks;
    let mut count = vec![0i32; rows];
    let mut index = vec![0i32; rows * kv_blocks.max(1)];
    let mut full = vec![0u32; rows * words];
    for (b, &(sq, sk)) in key.lengths.iter().enumerate() {
        for h in 0..heads {
            for qb in 0..q_blocks {
                let row = (b * heads + h) * q_blocks + qb;
                let rows_in =
                    (qb * key.block_q..((qb + 1) * key.block_q).min(sq)).collect::<Vec<_>>();
                if rows_in.is_empty() {
                    continue;
                }
                for kb in 0..sk.div_ceil(key.block_k) {
                    let (mut seen, mut hidden) = (false, false);
                    for &i in &rows_in {
                        for j in kb * key.block_k..((kb + 1) * key.block_k).min(sk) {
                            let env = Bindings {
                                b: b as i32,
                                h: h as i32,
                                q: (i + sk) as i32 - sq as i32,
                                k: j as i32,
                                s: 0.0,
                                params: values,
                            };
                            let v = mods
                                .mask()
                                .is_none_or(|m| eval::eval(m, &env) == Value::Bool(true));
                            seen |= v;
                            hidden |= !v;
                        }
                    }
                    if seen {
                        index[row * kv_blocks + count[row] as usize] = kb as i32;
                        count[row] += 1;
                        if !hidden {
                            full[row * words + kb / 32] |= 1 << (kb % 32);
                        }
                    }
                }
            }
        }
    }
    let list = BlockMask {
        batch,
        heads,
        q_blocks,
        kv_blocks,
        block_q: key.block_q,
        block_k: key.block_k,
        max_blocks: kv_blocks.max(1),
        kv_count: count,
        kv_index: index,
    };
    Ok(CustomBlocks {
        list,
        full,
        key: key.clone(),
    })
}

/// `FgBlocksParams` of `templates/custom_blocks.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlocksParams {
    pub cu_seqlens_q: u64,
    pub cu_seqlens_k: u64,
    pub kv_count: u64,
    pub kv_index: u64,
    pub kv_full: u64,
    pub seqlen_q: i32,
    pub seqlen_k: i32,
    pub block_q: i32,
    pub block_k: i32,
    pub q_blocks: i32,
    pub kv_blocks: i32,
    pub words: i32,
    pub heads: i32,
    pub varlen: i32,
    pub unused: i32,
    pub expr: ExprArgs,
}

// SAFETY: plain old data with the C layout the template declares.
unsafe impl DeviceRepr for BlocksParams {}

/// A block classification on the device, with the host copy it equals (downloaded from the
/// kernel that built it, or uploaded from a caller's [`CustomBlocks`]). Immutable.
pub struct DeviceCustomBlocks {
    blocks: CustomBlocks,
    kv_count: CudaSlice<i32>,
    kv_index: CudaSlice<i32>,
    kv_full: CudaSlice<u32>,
}

impl DeviceCustomBlocks {
    pub(crate) fn from_parts(
        blocks: CustomBlocks,
        kv_count: CudaSlice<i32>,
        kv_index: CudaSlice<i32>,
        kv_full: CudaSlice<u32>,
    ) -> Self {
        DeviceCustomBlocks {
            blocks,
            kv_count,
            kv_index,
            kv_full,
        }
    }

    /// Checks a caller's classification's structure and uploads it.
    pub(crate) fn upload(stream: &Arc<CudaStream>, blocks: &CustomBlocks) -> Result<Self> {
        blocks.list.validate_structure()?;
        let rows = blocks.list.kv_count.len();
        if blocks.full.len() != rows * blocks.words() {
            return Err(invalid(
                "custom_blocks",
                format!(
                    "full has {} words, expected {}",
                    blocks.full.len(),
                    rows * blocks.words()
                ),
            ));
        }
        Ok(DeviceCustomBlocks {
            blocks: blocks.clone(),
            kv_count: stream
                .clone_htod(&blocks.list.kv_count)
                .while_(|| "uploading kv_count".into())?,
            kv_index: stream
                .clone_htod(&blocks.list.kv_index)
                .while_(|| "uploading kv_index".into())?,
            kv_full: stream
                .clone_htod(&blocks.full)
                .while_(|| "uploading kv_full".into())?,
        })
    }

    /// The classification, as the kernel reads it.
    pub fn blocks(&self) -> &CustomBlocks {
        &self.blocks
    }

    pub(crate) fn device(&self) -> (&CudaSlice<i32>, &CudaSlice<i32>, &CudaSlice<u32>) {
        (&self.kv_count, &self.kv_index, &self.kv_full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `FgBlocksParams` of the classification template has the Rust struct's layout.
    #[test]
    fn blocks_params_match_the_template_struct() {
        assert_eq!(std::mem::size_of::<ExprArgs>(), 64);
        assert_eq!(std::mem::size_of::<BlocksParams>(), 80 + 64);
        assert_eq!(std::mem::offset_of!(BlocksParams, expr), 80);
        let (_, template) = flashgen_codegen::render::CUSTOM_BLOCKS_TEMPLATE;
        let start = template.find("struct FgBlocksParams {").expect("declared");
        let end = start + template[start..].find("};").expect("closed") + 2;
        let code = format!(
            "typedef long long fg_i64;\n{}\n{}\n\
             static_assert(sizeof(FgBlocksParams) == {}, \"size\");\n\
             static_assert(__INTADDR__(&(((FgBlocksParams*)0)->expr)) == 80, \"expr\");\n\
             extern \"C\" __global__ void flashgen_abi_check(const FgBlocksParams a) {{}}\n",
            flashgen_codegen::expr::args::declaration(),
            &template[start..end],
            std::mem::size_of::<BlocksParams>()
        );
        let source = flashgen_codegen::KernelSource {
            kernel_name: "flashgen_abi_check".into(),
            code,
            threads: 32,
            shared_bytes: 0,
        };
        if crate::libs::nvrtc_present() {
            crate::compile::compile(&source, flashgen_codegen::Arch::SM80)
                .expect("FgExprArgs layout");
        }
    }

    #[test]
    fn cpu_classification_of_a_causal_mask() {
        let mods = CustomMods::parse("mask = k <= q").unwrap();
        let key = BlocksKey {
            definition: mods.canonical().into(),
            heads_q: 2,
            lengths: vec![(300, 300)],
            varlen: false,
            bindings: vec![],
            block_q: 128,
            block_k: 128,
        };
        let c = classify_cpu(&mods, &key, &[]).unwrap();
        assert_eq!(c.list.heads, 1);
        assert_eq!(c.list.kv_count, vec![1, 2, 3]);
        assert!(!c.is_full(0, 0, 0, 0));
        assert!(c.is_full(0, 0, 1, 0) && !c.is_full(0, 0, 1, 1));
        assert!(c.is_full(0, 0, 2, 1) && !c.is_full(0, 0, 2, 2));
        c.list.validate_structure().unwrap();
    }
}
