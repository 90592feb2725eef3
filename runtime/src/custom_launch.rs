//! The runtime's side of custom launches: uploads of vectors and classifications, and the
//! block classification built on the GPU (cached per definition, shape and bound values).

use crate::custom::{
    bind, list_heads, BlocksKey, BlocksParams, CustomArgs, CustomBlocks, CustomValue,
    DeviceCustomBlocks, DeviceVector, DEFAULT_BLOCK,
};
use crate::device_index::DeviceVarlen;
use crate::error::{invalid, DriverContext, Error, Result};
use crate::masks::BlockMask;
use crate::runtime::Runtime;
use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg, SyncOnDrop};
use flashgen_codegen::expr::CustomMods;
use flashgen_codegen::render::render_custom_blocks;
use flashgen_codegen::{AttentionSpec, Variant};
use std::sync::Arc;

/// Cached classifications per runtime; past this many, the cache starts over.
const MAX_CACHED: usize = 256;

/// The sequences a classification is built for.
#[derive(Clone, Copy)]
pub enum CustomShape<'a> {
    /// `batch` sequences of `sq` queries over `sk` keys.
    Fixed {
        batch: usize,
        heads_q: usize,
        sq: usize,
        sk: usize,
    },
    /// A packed varlen batch.
    Varlen {
        heads_q: usize,
        varlen: &'a DeviceVarlen,
    },
}

/// The definition, the checked bound values and the classification key of a request.
fn blocks_key<'v>(
    spec: &AttentionSpec,
    args: &CustomArgs<'v>,
    shape: CustomShape<'_>,
    block_q: usize,
    block_k: usize,
) -> Result<(&'static CustomMods, Vec<CustomValue<'v>>, BlocksKey)> {
    if spec.variant != Variant::Custom {
        return Err(invalid(
            "spec",
            format!("{} is not a custom spec", spec.variant),
        ));
    }
    if block_q == 0 || block_k == 0 || block_q > i32::MAX as usize || block_k > i32::MAX as usize {
        return Err(invalid(
            "custom_blocks",
            "block sizes must be positive 32-bit values",
        ));
    }
    let mods = crate::variants::custom_definition(spec);
    let values = bind(mods, args)?;
    let (heads_q, lengths, varlen) = match shape {
        CustomShape::Fixed {
            batch,
            heads_q,
            sq,
            sk,
        } => (heads_q, vec![(sq, sk); batch], false),
        CustomShape::Varlen { heads_q, varlen } => {
            let l = varlen
                .cu_seqlens_q()
                .windows(2)
                .zip(varlen.cu_seqlens_k().windows(2))
                .map(|(q, k)| ((q[1] - q[0]) as usize, (k[1] - k[0]) as usize))
                .collect();
            (heads_q, l, true)
        }
    };
    if heads_q == 0 || heads_q > 65_535 || lengths.is_empty() || lengths.len() > 65_535 {
        return Err(invalid(
            "custom_blocks",
            "heads and batch must be in 1..=65535",
        ));
    }
    let key = BlocksKey {
        definition: mods.canonical().to_string(),
        heads_q,
        lengths,
        varlen,
        bindings: crate::custom::key_bindings(mods, &values),
        block_q,
        block_k,
    };
    Ok((mods, values, key))
}

impl Runtime {
    /// Uploads an `[i32]` vector for a definition's parameter; the result is immutable.
    pub fn upload_vector_i32(&self, data: &[i32]) -> Result<DeviceVector> {
        DeviceVector::upload_i32(self.stream(), data)
    }

    /// Uploads an `[f32]` vector for a definition's parameter; the result is immutable.
    pub fn upload_vector_f32(&self, data: &[f32]) -> Result<DeviceVector> {
        DeviceVector::upload_f32(self.stream(), data)
    }

    /// Checks a caller's block classification's structure and uploads it (launches check its
    /// key against theirs).
    pub fn upload_custom_blocks(&self, blocks: &CustomBlocks) -> Result<DeviceCustomBlocks> {
        DeviceCustomBlocks::upload(self.stream(), blocks)
    }

    /// The block classification of a custom spec's mask for `shape` and the bound `args`, in
    /// blocks of 128 x 128: built on the GPU by the definition's classification kernel (the
    /// same mask function the attention kernel runs), or taken from this runtime's cache.
    pub fn custom_blocks(
        &self,
        spec: &AttentionSpec,
        args: &CustomArgs<'_>,
        shape: CustomShape<'_>,
    ) -> Result<Arc<DeviceCustomBlocks>> {
        self.custom_blocks_with(spec, args, shape, DEFAULT_BLOCK, DEFAULT_BLOCK)
    }

    /// [`custom_blocks`](Self::custom_blocks) in blocks of `block_q` x `block_k` (multiples of
    /// the tile a launch uses).
    pub fn custom_blocks_with(
        &self,
        spec: &AttentionSpec,
        args: &CustomArgs<'_>,
        shape: CustomShape<'_>,
        block_q: usize,
        block_k: usize,
    ) -> Result<Arc<DeviceCustomBlocks>> {
        let (mods, values, key) = blocks_key(spec, args, shape, block_q, block_k)?;
        if let Some(hit) = self.custom_cache().lock().expect("cache lock").get(&key) {
            return Ok(hit.clone());
        }
        let built = Arc::new(self.classify(spec, mods, key.clone(), &values, shape)?);
        let mut cache = self.custom_cache().lock().expect("cache lock");
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, built.clone());
        Ok(built)
    }

    /// [`custom_blocks_with`](Self::custom_blocks_with) without the cache: always runs the
    /// classification kernel (what a benchmark of block-mask creation times).
    pub fn custom_blocks_uncached(
        &self,
        spec: &AttentionSpec,
        args: &CustomArgs<'_>,
        shape: CustomShape<'_>,
        block_q: usize,
        block_k: usize,
    ) -> Result<DeviceCustomBlocks> {
        let (mods, values, key) = blocks_key(spec, args, shape, block_q, block_k)?;
        self.classify(spec, mods, key, &values, shape)
    }

    /// Runs the classification kernel for `key` over the bound values' device vectors.
    fn classify(
        &self,
        spec: &AttentionSpec,
        mods: &CustomMods,
        key: BlocksKey,
        values: &[CustomValue],
        shape: CustomShape<'_>,
    ) -> Result<DeviceCustomBlocks> {
        let varlen = match shape {
            CustomShape::Varlen { varlen, .. } => Some(varlen),
            CustomShape::Fixed { .. } => None,
        };
        let stream = self.stream();
        let mut guards: Vec<SyncOnDrop<'_>> = Vec::new();
        let mut pointers = Vec::new();
        for v in values {
            if let CustomValue::Vector(vector) = v {
                let (ptr, guard) = vector.device_ptr(stream);
                guards.push(guard);
                pointers.push(ptr);
            }
        }
        let cu = varlen.map(|vl| {
            let (q, gq) = vl.device_q().device_ptr(stream);
            let (k, gk) = vl.device_k().device_ptr(stream);
            guards.push(gq);
            guards.push(gk);
            (q, k)
        });
        let built = self.build_blocks(spec, mods, key, values, &pointers, cu);
        drop(guards);
        built
    }

    /// Runs the classification kernel and downloads its result.
    fn build_blocks(
        &self,
        spec: &AttentionSpec,
        mods: &CustomMods,
        key: BlocksKey,
        values: &[CustomValue],
        pointers: &[u64],
        cu_seqlens: Option<(u64, u64)>,
    ) -> Result<DeviceCustomBlocks> {
        let stream = self.stream();
        let heads = list_heads(mods, key.heads_q);
        let (q_blocks, kv_blocks) = key.blocks();
        let batch = key.batch();
        let max_blocks = kv_blocks.max(1);
        let words = kv_blocks.div_ceil(32).max(1);
        let rows = batch * heads * q_blocks;
        let alloc = |n: usize| {
            stream
                .alloc_zeros::<i32>(n.max(1))
                .while_(|| "allocating a block classification".into())
        };
        let mut kv_count = alloc(rows)?;
        let mut kv_index = alloc(rows * max_blocks)?;
        let mut kv_full = stream
            .alloc_zeros::<u32>((rows * words).max(1))
            .while_(|| "allocating a block classification".into())?;
        if rows > 0 {
            let source =
                render_custom_blocks(spec.definition).map_err(|e| Error::Render(e.to_string()))?;
            let module = self.load_source(&source)?;
            let function = module.function(&source.kernel_name)?;
            let (sq, sk) = key.lengths.first().copied().unwrap_or((0, 0));
            let mut params = BlocksParams {
                seqlen_q: sq as i32,
                seqlen_k: sk as i32,
                block_q: key.block_q as i32,
                block_k: key.block_k as i32,
                q_blocks: q_blocks as i32,
                kv_blocks: max_blocks as i32,
                words: words as i32,
                heads: heads as i32,
                varlen: cu_seqlens.is_some() as i32,
                expr: crate::custom::expr_args(mods, values, pointers),
                ..BlocksParams::default()
            };
            if let Some((q, k)) = cu_seqlens {
                params.cu_seqlens_q = q;
                params.cu_seqlens_k = k;
            }
            let mut guards = Vec::new();
            for (field, slice) in [
                (&mut params.kv_count, &mut kv_count),
                (&mut params.kv_index, &mut kv_index),
            ] {
                let (ptr, guard) = slice.device_ptr_mut(stream);
                *field = ptr;
                guards.push(guard);
            }
            let (ptr, guard) = kv_full.device_ptr_mut(stream);
            params.kv_full = ptr;
            guards.push(guard);
            let cfg = LaunchConfig {
                grid_dim: (q_blocks as u32, heads as u32, batch as u32),
                block_dim: (source.threads, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = stream.launch_builder(&function);
            launch.arg(&params);
            // SAFETY: the outputs hold rows, rows * max_blocks and rows * words elements, the
            // sizes the kernel indexes by (grid and params); vectors and cu_seqlens are live
            // device buffers of the lengths passed (guarded above).
            unsafe { launch.launch(cfg) }.while_(|| "launching the block classification".into())?;
            drop(guards);
        }
        let count = stream
            .clone_dtoh(&kv_count)
            .while_(|| "reading kv_count".into())?;
        let index = stream
            .clone_dtoh(&kv_index)
            .while_(|| "reading kv_index".into())?;
        let full = stream
            .clone_dtoh(&kv_full)
            .while_(|| "reading kv_full".into())?;
        let list = BlockMask {
            batch,
            heads,
            q_blocks,
            kv_blocks,
            block_q: key.block_q,
            block_k: key.block_k,
            max_blocks,
            kv_count: count[..rows].to_vec(),
            kv_index: index[..rows * max_blocks].to_vec(),
        };
        list.validate_structure()?;
        let blocks = CustomBlocks {
            list,
            full: full[..rows * words].to_vec(),
            key,
        };
        Ok(DeviceCustomBlocks::from_parts(
            blocks, kv_count, kv_index, kv_full,
        ))
    }
}
