//! The three compressors: scores given by the caller, APB's retaining heads, and the built-in
//! query-aware scorer. Each scores the block, selects `lp` positions per kv head on the GPU and
//! gathers the compact K and V blocks; nothing waits for the GPU.

use super::blas::Blas;
use super::scorer::{
    blas_query_aware_fits, desc, query_aware_scores, query_aware_scores_blas, retaining_scores,
    Activation, DeviceHeads, LOGIT_BUDGET_BYTES,
};
use super::select::{gather, top_k};
use super::validate::{
    check_anchor_query, check_block, check_lp, check_outputs, check_scores, BlockShape,
};
use super::{KvCompressor, LocalBlock};
use crate::blas::cublas_present;
use crate::error::{invalid, DriverContext, Result};
use cudarc::driver::CudaSlice;
use flashgen_runtime::{Element, Runtime};
use std::borrow::Borrow;
use std::sync::{Arc, Mutex};

/// Validates a call: the block, `lp` and the outputs.
fn check_call<T: Element>(
    local: &LocalBlock<'_, T>,
    lp: usize,
    out_k: &CudaSlice<T>,
    out_v: &CudaSlice<T>,
) -> Result<BlockShape> {
    let shape = check_block(&desc(&local.q), &desc(&local.k), &desc(&local.v))?;
    check_lp(&shape, lp)?;
    check_outputs(&shape, lp, out_k.len(), out_v.len())?;
    Ok(shape)
}

/// What every scoring compressor does: validate the call, score the block (`[batch, heads_kv,
/// local]` f32, owned or borrowed), select the `lp` best positions of each kv head and gather
/// them.
fn compress_by_scores<T: Element, S: Borrow<CudaSlice<f32>>>(
    rt: &Runtime,
    local: &LocalBlock<'_, T>,
    lp: usize,
    out_k: &mut CudaSlice<T>,
    out_v: &mut CudaSlice<T>,
    score: impl FnOnce(&BlockShape) -> Result<S>,
) -> Result<CudaSlice<i32>> {
    let shape = check_call(local, lp, out_k, out_v)?;
    let scores = score(&shape)?;
    let positions = top_k(rt, scores.borrow(), shape.rows(), shape.local, lp)?;
    gather(rt, &shape, &local.k, &local.v, &positions, lp, out_k, out_v)?;
    Ok(positions)
}

/// Scores passed in by the caller: `[batch, heads_kv, local]` f32 on the device.
pub struct GivenScores<'s> {
    scores: &'s CudaSlice<f32>,
}

impl<'s> GivenScores<'s> {
    pub fn new(scores: &'s CudaSlice<f32>) -> Self {
        GivenScores { scores }
    }
}

impl<T: Element> KvCompressor<T> for GivenScores<'_> {
    fn compress(
        &self,
        rt: &Runtime,
        local: &LocalBlock<'_, T>,
        lp: usize,
        out_k: &mut CudaSlice<T>,
        out_v: &mut CudaSlice<T>,
    ) -> Result<CudaSlice<i32>> {
        compress_by_scores(rt, local, lp, out_k, out_v, |shape| {
            check_scores(shape, self.scores.len()).map(|()| self.scores)
        })
    }
}

/// One layer's retaining-head weights on the host, as PyTorch's `Linear` stores them: fc1
/// `[hidden, (heads_q + 2 heads_kv) * dim]` over each token's `[q | k | v]` (heads in order),
/// fc1 bias `[hidden]`, fc2 `[heads_kv, hidden]`, fc2 bias `[heads_kv]`.
pub struct RetainingHeadsWeights<'a, T> {
    pub fc1_weight: &'a [T],
    pub fc1_bias: &'a [T],
    pub fc2_weight: &'a [T],
    pub fc2_bias: &'a [T],
    pub hidden: usize,
    pub activation: Activation,
}

/// APB's retaining heads: per token, `fc2(act(fc1([q | k | v])))` gives one score per kv head
/// (fc1 through cuBLAS in the element type with f32 accumulation; the rest in f32), then a
/// max-pool of width 5 along the sequence. Belongs to the runtime it was built with.
pub struct RetainingHeads<T> {
    weights: DeviceHeads<T>,
    blas: Blas,
}

impl<T: Element + Into<f32>> RetainingHeads<T> {
    /// Uploads one layer's weights for blocks of `heads_q` / `heads_kv` heads of `dim`.
    pub fn new(
        rt: &Runtime,
        heads_q: usize,
        heads_kv: usize,
        dim: usize,
        w: &RetainingHeadsWeights<'_, T>,
    ) -> Result<Self> {
        if heads_q == 0 || heads_kv == 0 || dim == 0 || w.hidden == 0 {
            return Err(invalid(
                "retaining heads",
                "heads, dim and hidden must be nonzero",
            ));
        }
        let in_features = (heads_q + 2 * heads_kv) * dim;
        for (arg, len, want) in [
            ("fc1_weight", w.fc1_weight.len(), w.hidden * in_features),
            ("fc1_bias", w.fc1_bias.len(), w.hidden),
            ("fc2_weight", w.fc2_weight.len(), heads_kv * w.hidden),
            ("fc2_bias", w.fc2_bias.len(), heads_kv),
        ] {
            if len != want {
                return Err(invalid(
                    arg,
                    format!("holds {len} values; expected {want} (hidden {}, in {in_features}, heads_kv {heads_kv})", w.hidden),
                ));
            }
        }
        let blas = Blas::new(rt)?;
        let to_f32 = |x: &[T]| x.iter().map(|&v| v.into()).collect::<Vec<f32>>();
        let s = rt.stream();
        let up = |x: Vec<f32>, what: &str| {
            s.clone_htod(&x)
                .while_(|| format!("uploading the retaining heads' {what}"))
        };
        let weights = DeviceHeads {
            fc1_weight: s
                .clone_htod(w.fc1_weight)
                .while_(|| "uploading the retaining heads' fc1 weight".into())?,
            fc1_bias: up(to_f32(w.fc1_bias), "fc1 bias")?,
            fc2_weight: up(to_f32(w.fc2_weight), "fc2 weight")?,
            fc2_bias: up(to_f32(w.fc2_bias), "fc2 bias")?,
            hidden: w.hidden,
            heads_q,
            heads_kv,
            dim,
            activation: w.activation,
        };
        Ok(RetainingHeads { weights, blas })
    }
}

impl<T: Element> RetainingHeads<T> {
    /// The pooled scores of a block, `[batch, heads_kv, local]` f32.
    pub fn scores(&self, rt: &Runtime, local: &LocalBlock<'_, T>) -> Result<CudaSlice<f32>> {
        let shape = check_block(&desc(&local.q), &desc(&local.k), &desc(&local.v))?;
        self.scores_of(rt, local, &shape)
    }

    fn scores_of(
        &self,
        rt: &Runtime,
        local: &LocalBlock<'_, T>,
        shape: &BlockShape,
    ) -> Result<CudaSlice<f32>> {
        if !self.blas.serves(rt) {
            return Err(invalid(
                "rt",
                "these retaining heads were built with another runtime's context",
            ));
        }
        retaining_scores(rt, &self.blas, &self.weights, local, shape)
    }
}

impl<T: Element> KvCompressor<T> for RetainingHeads<T> {
    fn compress(
        &self,
        rt: &Runtime,
        local: &LocalBlock<'_, T>,
        lp: usize,
        out_k: &mut CudaSlice<T>,
        out_v: &mut CudaSlice<T>,
    ) -> Result<CudaSlice<i32>> {
        compress_by_scores(rt, local, lp, out_k, out_v, |shape| {
            self.scores_of(rt, local, shape)
        })
    }
}

/// The built-in scorer for models without retaining heads: the softmax attention (scale
/// `1/sqrt(dim)` unless set) of the anchor's query tokens over the local keys, summed over the
/// query tokens and the query heads of each kv head. The logits go through cuBLAS when
/// libcublas is present and the block fits [`LOGIT_BUDGET_BYTES`] per kv head; otherwise (or
/// with [`tiled`](Self::tiled)) through flashgen's own tile kernels, which need no library.
#[derive(Clone, Default)]
pub struct QueryAware {
    scale: Option<f32>,
    tiled: bool,
    logit_budget: Option<usize>,
    blas: Arc<Mutex<Vec<Arc<Blas>>>>,
}

impl QueryAware {
    pub fn new() -> Self {
        Self::default()
    }

    /// A softmax scale other than `1/sqrt(dim)`.
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// At most `bytes` of logits at once on the cuBLAS path (default
    /// [`LOGIT_BUDGET_BYTES`]).
    pub fn with_logit_budget(mut self, bytes: usize) -> Self {
        self.logit_budget = Some(bytes);
        self
    }

    /// Always the tile kernels (no cuBLAS).
    pub fn tiled(mut self) -> Self {
        self.tiled = true;
        self
    }

    /// The scores of a block, `[batch, heads_kv, local]` f32.
    pub fn scores<T: Element>(
        &self,
        rt: &Runtime,
        local: &LocalBlock<'_, T>,
    ) -> Result<CudaSlice<f32>> {
        let shape = check_block(&desc(&local.q), &desc(&local.k), &desc(&local.v))?;
        self.scores_of(rt, local, &shape)
    }

    /// The cuBLAS handle for `rt`, made on first use; `None` without libcublas.
    fn blas(&self, rt: &Runtime) -> Result<Option<Arc<Blas>>> {
        if !cublas_present() {
            return Ok(None);
        }
        let mut handles = self.blas.lock().expect("blas table lock");
        if let Some(b) = handles.iter().find(|b| b.serves(rt)) {
            return Ok(Some(b.clone()));
        }
        let b = Arc::new(Blas::new(rt)?);
        handles.push(b.clone());
        Ok(Some(b))
    }

    fn scores_of<T: Element>(
        &self,
        rt: &Runtime,
        local: &LocalBlock<'_, T>,
        shape: &BlockShape,
    ) -> Result<CudaSlice<f32>> {
        let nq = check_anchor_query(shape, local.anchor_query.as_ref().map(desc).as_ref())?;
        let scale = match self.scale {
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(s) => return Err(invalid("scale", format!("{s} is not a positive number"))),
            None => 1.0 / (shape.dim as f32).sqrt(),
        };
        let budget = self.logit_budget.unwrap_or(LOGIT_BUDGET_BYTES);
        if !self.tiled && blas_query_aware_fits(local, shape, nq, budget) {
            if let Some(blas) = self.blas(rt)? {
                return query_aware_scores_blas(rt, &blas, local, shape, nq, scale, budget);
            }
        }
        query_aware_scores(rt, local, shape, nq, scale)
    }
}

impl<T: Element> KvCompressor<T> for QueryAware {
    fn compress(
        &self,
        rt: &Runtime,
        local: &LocalBlock<'_, T>,
        lp: usize,
        out_k: &mut CudaSlice<T>,
        out_v: &mut CudaSlice<T>,
    ) -> Result<CudaSlice<i32>> {
        compress_by_scores(rt, local, lp, out_k, out_v, |shape| {
            self.scores_of(rt, local, shape)
        })
    }
}

/// A compressor that passes on caller-chosen positions: the `lp` positions of every kv head
/// given up front (`[batch, heads_kv, lp]`, ascending, within the local block), gathered on the
/// device. For tests (the reference is built from the same positions) and for benchmarks that
/// fix the selection.
pub struct GivenSelection {
    batch: usize,
    heads_kv: usize,
    lp: usize,
    rows: usize,
    index: CudaSlice<i32>,
}

impl GivenSelection {
    /// Checks `index` (`[batch, heads_kv, lp]`, each list strictly ascending within a local
    /// block of `rows` tokens) and uploads it.
    pub fn new(
        rt: &Runtime,
        index: &[i32],
        batch: usize,
        heads_kv: usize,
        lp: usize,
        rows: usize,
    ) -> Result<Self> {
        if index.len() != batch * heads_kv * lp {
            return Err(invalid(
                "index",
                format!(
                    "has {} entries, expected batch * heads_kv * lp = {}",
                    index.len(),
                    batch * heads_kv * lp
                ),
            ));
        }
        for (row, list) in index.chunks(lp.max(1)).enumerate() {
            if list.iter().any(|&i| i < 0 || i as usize >= rows) {
                return Err(invalid(
                    "index",
                    format!("list {row} has a position outside the block of {rows} tokens"),
                ));
            }
            if list.windows(2).any(|w| w[0] >= w[1]) {
                return Err(invalid(
                    "index",
                    format!("list {row} is not strictly ascending"),
                ));
            }
        }
        let index = rt
            .stream()
            .clone_htod(if index.is_empty() { &[0][..] } else { index })
            .while_(|| "uploading selected positions".into())?;
        Ok(GivenSelection {
            batch,
            heads_kv,
            lp,
            rows,
            index,
        })
    }
}

impl<T: Element> KvCompressor<T> for GivenSelection {
    fn compress(
        &self,
        rt: &Runtime,
        local: &LocalBlock<'_, T>,
        lp: usize,
        out_k: &mut CudaSlice<T>,
        out_v: &mut CudaSlice<T>,
    ) -> Result<CudaSlice<i32>> {
        let shape = check_call(local, lp, out_k, out_v)?;
        if (shape.batch, shape.local, shape.heads_kv, lp)
            != (self.batch, self.rows, self.heads_kv, self.lp)
        {
            return Err(invalid(
                "local",
                format!(
                    "selection made for batch {}, {} tokens, {} kv heads, lp {}; called with \
                     batch {}, {} tokens, {} kv heads, lp {lp}",
                    self.batch,
                    self.rows,
                    self.heads_kv,
                    self.lp,
                    shape.batch,
                    shape.local,
                    shape.heads_kv
                ),
            ));
        }
        gather(
            rt,
            &shape,
            &local.k,
            &local.v,
            &self.index,
            lp,
            out_k,
            out_v,
        )?;
        rt.stream()
            .clone_dtod(&self.index)
            .while_(|| "copying selected positions".into())
    }
}
