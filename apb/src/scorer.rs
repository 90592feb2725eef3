//! Importance scores of a local block on the GPU, `[batch, heads_kv, local]` f32: APB's
//! retaining heads (an MLP per token over `[q | k | v]`, then a max-pool along the sequence) and
//! the query-aware scorer (attention of the anchor's query tokens over the local keys).

use super::blas::{Batch, Blas, GemmInput, LinearGemm};
use super::kernels::{
    elementwise_grid, ApbModule, ELEMENTWISE_THREADS, LOGIT_THREADS, QA_KEY_TILE, QA_THREADS,
};
use super::validate::{check_token_rows, BlockShape, TensorDesc};
use super::LocalBlock;
use crate::error::{invalid, DriverContext, Result};
use cudarc::driver::{
    CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use flashgen_runtime::{Element, Runtime, Tensor};
use std::f32::consts::LOG2_E;

/// Width of the retaining heads' max-pool along the sequence (APB's `max_pool1d(5, 1, 2)`).
pub const POOL_WIDTH: usize = 5;

/// The activation between the retaining heads' two layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Silu,
    /// GELU with the tanh approximation.
    GeluTanh,
}

impl Activation {
    /// The kernel's code (`ACT_*` in heads.cu).
    fn code(self) -> i32 {
        match self {
            Activation::Relu => 0,
            Activation::Silu => 1,
            Activation::GeluTanh => 2,
        }
    }

    /// The activation in f64, for references.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::GeluTanh => {
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + u.tanh())
            }
        }
    }
}

/// The descriptor validation sees for a tensor.
pub(crate) fn desc<T>(t: &Tensor<'_, T>) -> TensorDesc {
    TensorDesc {
        layout: t.layout,
        len: t.data.len(),
    }
}

/// One layer's retaining heads on the device. fc1 is `[hidden, in]` in the element type, with
/// `in = (heads_q + 2 heads_kv) * dim` over `[q | k | v]` (each token's heads in order); fc2 is
/// `[heads_kv, hidden]`; fc2 and both biases are kept in f32.
pub(crate) struct DeviceHeads<T> {
    pub fc1_weight: CudaSlice<T>,
    pub fc1_bias: CudaSlice<f32>,
    pub fc2_weight: CudaSlice<f32>,
    pub fc2_bias: CudaSlice<f32>,
    pub hidden: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub dim: usize,
    pub activation: Activation,
}

fn ptr<'a, T>(s: &'a CudaSlice<T>, rt: &'a Runtime, guards: &mut Vec<SyncOnDrop<'a>>) -> u64 {
    let (p, g) = s.device_ptr(rt.stream());
    guards.push(g);
    p
}

/// The retaining heads' scores of a validated block.
pub(crate) fn retaining_scores<T: Element>(
    rt: &Runtime,
    blas: &Blas,
    w: &DeviceHeads<T>,
    local: &LocalBlock<'_, T>,
    shape: &BlockShape,
) -> Result<CudaSlice<f32>> {
    if (shape.heads_q, shape.heads_kv, shape.dim) != (w.heads_q, w.heads_kv, w.dim) {
        return Err(invalid(
            "local",
            format!(
                "has {} query heads, {} kv heads, head dim {}; the retaining heads were built \
                 for {}, {}, {}",
                shape.heads_q, shape.heads_kv, shape.dim, w.heads_q, w.heads_kv, w.dim
            ),
        ));
    }
    let rows_q = check_token_rows("local.q", &desc(&local.q))?;
    let rows_k = check_token_rows("local.k", &desc(&local.k))?;
    let rows_v = check_token_rows("local.v", &desc(&local.v))?;
    let tokens = shape.batch * shape.local;
    let in_features = (w.heads_q + 2 * w.heads_kv) * w.dim;
    let s = rt.stream();
    // SAFETY (both): fully written by a GEMM with beta 0 (which never reads C) before any read.
    let mut hidden = unsafe { s.alloc::<f32>(tokens * w.hidden) }
        .while_(|| "allocating the retaining heads' hidden layer".into())?;
    let mut fc2_out = unsafe { s.alloc::<f32>(tokens * w.heads_kv) }
        .while_(|| "allocating the retaining heads' outputs".into())?;
    let elem = std::mem::size_of::<T>() as u64;
    {
        let mut guards = Vec::new();
        let w1 = ptr(&w.fc1_weight, rt, &mut guards);
        let (h_ptr, g) = hidden.device_ptr_mut(s);
        guards.push(g);
        // fc1 over [q | k | v] as three products into the same hidden layer: no concatenation.
        let parts = [
            (ptr(local.q.data, rt, &mut guards), rows_q, w.heads_q, 0),
            (
                ptr(local.k.data, rt, &mut guards),
                rows_k,
                w.heads_kv,
                w.heads_q,
            ),
            (
                ptr(local.v.data, rt, &mut guards),
                rows_v,
                w.heads_kv,
                w.heads_q + w.heads_kv,
            ),
        ];
        for (i, (x, x_stride, heads, head0)) in parts.into_iter().enumerate() {
            let g = LinearGemm {
                rows: tokens,
                cols: w.hidden,
                inner: heads * w.dim,
                x,
                x_stride,
                w: w1 + (head0 * w.dim) as u64 * elem,
                w_stride: in_features,
                c: h_ptr,
                accumulate: i > 0,
                alpha: 1.0,
                input: GemmInput::Half(T::DTYPE),
                batch: Batch::ONE,
            };
            // SAFETY: the block's tensors were validated (token rows included), fc1 holds
            // [hidden, in] and the hidden layer [tokens, hidden]; the guards order them.
            unsafe { blas.linear(&g)? };
        }
    }
    let total = tokens * w.hidden;
    let f = super::kernels::function(rt, ApbModule::Heads, "apb_bias_act")?;
    let (total64, hidden32, act) = (total as i64, w.hidden as i32, w.activation.code());
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&mut hidden)
        .arg(&w.fc1_bias)
        .arg(&total64)
        .arg(&hidden32)
        .arg(&act);
    // SAFETY: hidden holds total f32, the bias hidden f32.
    unsafe { launch.launch(grid(total)) }.while_(|| "launching apb_bias_act".into())?;
    {
        let mut guards = Vec::new();
        let g = LinearGemm {
            rows: tokens,
            cols: w.heads_kv,
            inner: w.hidden,
            x: ptr(&hidden, rt, &mut guards),
            x_stride: w.hidden,
            w: ptr(&w.fc2_weight, rt, &mut guards),
            w_stride: w.hidden,
            c: {
                let (p, g) = fc2_out.device_ptr_mut(s);
                guards.push(g);
                p
            },
            accumulate: false,
            alpha: 1.0,
            input: GemmInput::F32,
            batch: Batch::ONE,
        };
        // SAFETY: [tokens, hidden] · [heads_kv, hidden]ᵀ into [tokens, heads_kv], all f32.
        unsafe { blas.linear(&g)? };
    }
    let mut scores = s
        .alloc_zeros::<f32>(shape.scores_len())
        .while_(|| "allocating the scores".into())?;
    let f = super::kernels::function(rt, ApbModule::Heads, "apb_pool_scores")?;
    let (b32, n32, h32, radius) = (
        shape.batch as i32,
        shape.local as i32,
        shape.heads_kv as i32,
        (POOL_WIDTH / 2) as i32,
    );
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&fc2_out)
        .arg(&w.fc2_bias)
        .arg(&mut scores)
        .arg(&b32)
        .arg(&n32)
        .arg(&h32)
        .arg(&radius);
    // SAFETY: fc2_out holds [batch * local, heads_kv], scores [batch, heads_kv, local].
    unsafe { launch.launch(grid(shape.scores_len())) }
        .while_(|| "launching apb_pool_scores".into())?;
    Ok(scores)
}

fn grid(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (elementwise_grid(total), 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `QaShape` of query_aware.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct QaShape {
    q: u64,
    k: u64,
    q_strides: [i64; 4],
    k_strides: [i64; 4],
    n: i32,
    nq: i32,
    group: i32,
    heads_kv: i32,
    dim: i32,
    scale_log2: f32,
}

// SAFETY: plain-old-data with the C struct's layout (8-byte fields first, then 4-byte ones).
unsafe impl DeviceRepr for QaShape {}

/// The query-aware scores of a validated block with `nq` anchor query tokens.
pub(crate) fn query_aware_scores<T: Element>(
    rt: &Runtime,
    local: &LocalBlock<'_, T>,
    shape: &BlockShape,
    nq: usize,
    scale: f32,
) -> Result<CudaSlice<f32>> {
    let aq = local
        .anchor_query
        .as_ref()
        .ok_or_else(|| invalid("local.anchor_query", "missing"))?;
    if shape.batch > 65_535 || shape.heads_kv > 65_535 {
        return Err(invalid("local", "batch and kv heads must be at most 65535"));
    }
    let module = ApbModule::QueryAware(T::DTYPE);
    let group = shape.heads_q / shape.heads_kv;
    let queries = group * nq;
    let tiles = shape.local.div_ceil(QA_KEY_TILE);
    let stat_rows = shape.rows() * queries;
    let s = rt.stream();
    let mut partial = s
        .alloc_zeros::<f32>(2 * stat_rows * tiles)
        .while_(|| "allocating the query-aware partials".into())?;
    let mut stats = s
        .alloc_zeros::<f32>(2 * stat_rows)
        .while_(|| "allocating the query-aware statistics".into())?;
    let mut scores = s
        .alloc_zeros::<f32>(shape.scores_len())
        .while_(|| "allocating the scores".into())?;
    let mut guards = Vec::new();
    let args = QaShape {
        q: ptr(aq.data, rt, &mut guards),
        k: ptr(local.k.data, rt, &mut guards),
        q_strides: aq.layout.strides.map(|x| x as i64),
        k_strides: local.k.layout.strides.map(|x| x as i64),
        n: shape.local as i32,
        nq: nq as i32,
        group: group as i32,
        heads_kv: shape.heads_kv as i32,
        dim: shape.dim as i32,
        scale_log2: scale * LOG2_E,
    };
    let tile_cfg = LaunchConfig {
        grid_dim: (tiles as u32, shape.heads_kv as u32, shape.batch as u32),
        block_dim: (QA_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = super::kernels::function(rt, module, "apb_qa_partial")?;
    let mut launch = s.launch_builder(&f);
    launch.arg(&args).arg(&mut partial);
    // SAFETY: q and k were validated against their layouts (guards keep them ordered);
    // partial holds 2 * rows * queries * tiles f32.
    unsafe { launch.launch(tile_cfg) }.while_(|| "launching apb_qa_partial".into())?;

    let f = super::kernels::function(rt, module, "apb_qa_stats")?;
    let (rows64, tiles32) = (stat_rows as i64, tiles as i32);
    let warps_per_block = (QA_THREADS / 32) as usize;
    let cfg = LaunchConfig {
        grid_dim: (stat_rows.div_ceil(warps_per_block) as u32, 1, 1),
        block_dim: (QA_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = s.launch_builder(&f);
    launch
        .arg(&partial)
        .arg(&mut stats)
        .arg(&rows64)
        .arg(&tiles32);
    // SAFETY: one warp per statistics row; buffers sized above.
    unsafe { launch.launch(cfg) }.while_(|| "launching apb_qa_stats".into())?;

    let f = super::kernels::function(rt, module, "apb_qa_scores")?;
    let mut launch = s.launch_builder(&f);
    launch.arg(&args).arg(&stats).arg(&mut scores);
    // SAFETY: as for apb_qa_partial; scores holds [batch, heads_kv, local].
    unsafe { launch.launch(tile_cfg) }.while_(|| "launching apb_qa_scores".into())?;
    drop(guards);
    Ok(scores)
}

/// The most logits (bytes) the cuBLAS query-aware path holds at once by default; kv heads are
/// taken in chunks that fit, and blocks where one kv head alone does not fit use the tile
/// kernels.
pub const LOGIT_BUDGET_BYTES: usize = 256 << 20;

/// Whether the cuBLAS query-aware path can take this block: unit dim strides, token rows at
/// least a head wide (GEMM leading dimensions), and one kv head's logits within the budget.
pub(crate) fn blas_query_aware_fits<T>(
    local: &LocalBlock<'_, T>,
    shape: &BlockShape,
    nq: usize,
    budget_bytes: usize,
) -> bool {
    let Some(aq) = local.anchor_query.as_ref() else {
        return false;
    };
    let (ql, kl) = (&aq.layout, &local.k.layout);
    let group = shape.heads_q / shape.heads_kv;
    let per_head = (group * nq).saturating_mul(shape.local).saturating_mul(4);
    let ld_ok = |x: usize| x >= shape.dim && x <= i32::MAX as usize;
    ql.strides[3] == 1
        && kl.strides[3] == 1
        && (nq == 1 || ld_ok(ql.strides[1]))
        && ld_ok(kl.strides[1])
        && per_head <= budget_bytes
}

/// The query-aware scores through cuBLAS: per kv head, the logits of its group's queries over
/// the local keys as one GEMM per query head of the group (batched over kv heads), then the
/// row statistics and the column sums. Same result as [`query_aware_scores`], faster.
#[allow(clippy::too_many_arguments)]
pub(crate) fn query_aware_scores_blas<T: Element>(
    rt: &Runtime,
    blas: &Blas,
    local: &LocalBlock<'_, T>,
    shape: &BlockShape,
    nq: usize,
    scale: f32,
    budget_bytes: usize,
) -> Result<CudaSlice<f32>> {
    let aq = local
        .anchor_query
        .as_ref()
        .ok_or_else(|| invalid("local.anchor_query", "missing"))?;
    let (ql, kl) = (aq.layout, local.k.layout);
    let group = shape.heads_q / shape.heads_kv;
    let queries = group * nq;
    let n = shape.local;
    let per_head = queries * n;
    let chunk = (budget_bytes / 4 / per_head).clamp(1, shape.heads_kv);
    let s = rt.stream();
    // SAFETY: every logit and statistic is written (GEMM, row statistics) before it is read.
    let mut logits = unsafe { s.alloc::<f32>(chunk * per_head) }
        .while_(|| "allocating the query-aware logits".into())?;
    let mut stats = unsafe { s.alloc::<f32>(2 * chunk * queries) }
        .while_(|| "allocating the query-aware statistics".into())?;
    let mut scores = s
        .alloc_zeros::<f32>(shape.scores_len())
        .while_(|| "allocating the scores".into())?;
    let rowstats = super::kernels::function(rt, ApbModule::Logits, "apb_logit_rowstats")?;
    let colsum = super::kernels::function(rt, ApbModule::Logits, "apb_logit_colsum")?;
    let elem = std::mem::size_of::<T>();
    let (n32, g32) = (n as i32, queries as i32);
    for b in 0..shape.batch {
        for hk0 in (0..shape.heads_kv).step_by(chunk) {
            let heads = chunk.min(shape.heads_kv - hk0);
            {
                let mut guards = Vec::new();
                let q0 = ptr(aq.data, rt, &mut guards);
                let k0 = ptr(local.k.data, rt, &mut guards);
                let (l0, g) = logits.device_ptr_mut(s);
                guards.push(g);
                for hh in 0..group {
                    let q_off = b * ql.strides[0] + (hk0 * group + hh) * ql.strides[2];
                    let k_off = b * kl.strides[0] + hk0 * kl.strides[2];
                    let g = LinearGemm {
                        rows: nq,
                        cols: n,
                        inner: shape.dim,
                        x: q0 + (q_off * elem) as u64,
                        x_stride: if nq == 1 { shape.dim } else { ql.strides[1] },
                        w: k0 + (k_off * elem) as u64,
                        w_stride: kl.strides[1],
                        c: l0 + (hh * nq * n * 4) as u64,
                        accumulate: false,
                        alpha: scale * LOG2_E,
                        input: GemmInput::Half(T::DTYPE),
                        batch: Batch {
                            count: heads,
                            x_stride: group * ql.strides[2],
                            w_stride: kl.strides[2],
                            c_stride: per_head,
                        },
                    };
                    // SAFETY: q and k were validated against their layouts; every offset is
                    // inside them (b < batch, heads of this chunk, dims contiguous); logits
                    // hold chunk x queries x n f32.
                    unsafe { blas.linear(&g)? };
                }
            }
            let rows = heads * queries;
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (LOGIT_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = s.launch_builder(&rowstats);
            launch.arg(&logits).arg(&mut stats).arg(&n32);
            // SAFETY: rows x n logits were written above; stats holds 2 x rows.
            unsafe { launch.launch(cfg) }.while_(|| "launching apb_logit_rowstats".into())?;
            let (heads32, offset) = (heads as i32, ((b * shape.heads_kv + hk0) * n) as i64);
            let mut launch = s.launch_builder(&colsum);
            launch
                .arg(&logits)
                .arg(&stats)
                .arg(&mut scores)
                .arg(&n32)
                .arg(&g32)
                .arg(&heads32)
                .arg(&offset);
            // SAFETY: reads the chunk's logits and statistics; writes heads x n scores from
            // offset, inside [batch, heads_kv, local].
            unsafe { launch.launch(grid(heads * n)) }
                .while_(|| "launching apb_logit_colsum".into())?;
        }
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_in_f64() {
        assert_eq!(Activation::Relu.apply(-2.0), 0.0);
        assert_eq!(Activation::Relu.apply(3.0), 3.0);
        assert!((Activation::Silu.apply(1.0) - 0.7310585786300049).abs() < 1e-12);
        assert!((Activation::GeluTanh.apply(1.0) - 0.8411919906082768).abs() < 1e-12);
        assert_eq!(Activation::GeluTanh.apply(0.0), 0.0);
    }

    #[test]
    fn the_kernel_parameter_struct_is_104_bytes() {
        assert_eq!(std::mem::size_of::<QaShape>(), 104);
        assert_eq!(std::mem::align_of::<QaShape>(), 8);
    }
}
