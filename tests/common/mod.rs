//! The GPU test harness: draws fresh random inputs, runs a kernel through the runtime with its
//! outputs poisoned, and compares with the f64 reference of the same semantics.

#![allow(dead_code)]

use flashgen_codegen::{AttentionSpec, DType, KernelSpec, TileConfig, Variant};
use flashgen_reference as reference;
use flashgen_reference::{Precision, Rng, Tolerance};
use flashgen_runtime::{
    AttentionArgs, BlockMask, HeadKind, Layout, Mask, Runtime, StreamingParams, Tensor, TensorMut,
};
use half::{bf16, f16};

/// Which keys the case's kernel sees.
#[derive(Clone, Debug)]
pub enum CaseMask {
    Dense,
    Streaming(StreamingParams),
    /// A random block list of this density (plus the diagonal).
    BlockSparse {
        block_q: usize,
        block_k: usize,
        density: f64,
        lists: ListHeads,
        empty_rows: bool,
    },
    Mixed {
        kinds: Vec<HeadKind>,
        streaming: StreamingParams,
        block_q: usize,
        block_k: usize,
    },
    /// APB: keys `[anchor | passing | local]` with `sk = anchor + passing + sq`; the kernel
    /// reads the anchor and passing blocks from a separate prefix buffer.
    Apb {
        anchor: usize,
        passing: usize,
    },
}

/// Which query heads share one block list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListHeads {
    /// One list for every head.
    Shared,
    /// One list per kv head, read by its GQA group.
    PerKvHead,
    /// One list per query head.
    PerQueryHead,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub dtype: DType,
    pub head_dim: usize,
    pub causal: bool,
    pub lse: bool,
    pub batch: usize,
    pub hq: usize,
    pub hkv: usize,
    pub sq: usize,
    pub sk: usize,
    pub bhsd: bool,
    /// (sq, sk) per sequence of a varlen batch.
    pub varlen: Option<Vec<(usize, usize)>>,
    pub tile: Option<TileConfig>,
    pub mask: CaseMask,
    pub scale: Option<f32>,
    /// Launch with `Runtime::attention_tuned` (the tile is chosen for the launch) instead of
    /// the case's tile.
    pub tuned: bool,
}

impl Case {
    pub fn dense(head_dim: usize, causal: bool, sq: usize, sk: usize) -> Self {
        Case {
            dtype: DType::Bf16,
            head_dim,
            causal,
            lse: true,
            batch: 1,
            hq: 2,
            hkv: 1,
            sq,
            sk,
            bhsd: false,
            varlen: None,
            tile: None,
            mask: CaseMask::Dense,
            scale: None,
            tuned: false,
        }
    }

    pub fn variant(&self) -> Variant {
        match self.mask {
            CaseMask::Dense => Variant::Dense,
            CaseMask::Streaming(_) => Variant::Streaming,
            CaseMask::BlockSparse { .. } => Variant::BlockSparse,
            CaseMask::Mixed { .. } => Variant::Mixed,
            CaseMask::Apb { .. } => Variant::Apb,
        }
    }

    pub fn spec(&self, rt: &Runtime) -> KernelSpec {
        let causal = self.causal && self.variant().accepts_causal();
        let spec = AttentionSpec::new(self.variant(), self.head_dim as u32, self.dtype, causal)
            .with_lse(self.lse)
            .with_varlen(self.varlen.is_some());
        match self.tile {
            Some(t) => spec.with_tile(t),
            None => spec.with_default_tile(rt.arch()),
        }
    }
}

/// What a case measured.
#[derive(Debug)]
pub struct Outcome {
    pub o_rel_error: f64,
    pub lse_max_abs_error: f64,
}

trait Half: flashgen_runtime::Element + reference::Element {
    const PRECISION: Precision;
    const NAN: Self;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Half for bf16 {
    const PRECISION: Precision = Precision::Bf16;
    const NAN: Self = bf16::NAN;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl Half for f16 {
    const PRECISION: Precision = Precision::F16;
    const NAN: Self = f16::NAN;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// Runs a case and checks it; the error text says what differed (and the seed).
pub fn run(rt: &Runtime, case: &Case) -> Result<Outcome, String> {
    match case.dtype {
        DType::Bf16 => run_typed::<bf16>(rt, case),
        DType::F16 => run_typed::<f16>(rt, case),
    }
}

pub fn check(rt: &Runtime, case: &Case) {
    if let Err(e) = run(rt, case) {
        panic!("{case:?}\n{e}");
    }
}

#[allow(clippy::too_many_arguments)]
fn random_block_mask(
    rng: &mut Rng,
    batch: usize,
    heads: usize,
    sq: usize,
    sk: usize,
    block_q: usize,
    block_k: usize,
    density: f64,
    empty_rows: bool,
) -> BlockMask {
    let (qb, kb) = (sq.div_ceil(block_q).max(1), sk.div_ceil(block_k));
    let mut keep = Vec::with_capacity(batch * heads * qb * kb);
    for _ in 0..batch * heads {
        for i in 0..qb {
            let drop_row = empty_rows && i % 3 == 1;
            // The block holding the row's diagonal (bottom-right aligned) is always kept.
            let diag = ((i * block_q + block_q - 1).min(sq.saturating_sub(1)) + sk)
                .saturating_sub(sq)
                / block_k.max(1);
            for j in 0..kb {
                keep.push(!drop_row && (j == diag || rng.bernoulli(density)));
            }
        }
    }
    BlockMask::from_dense(&keep, batch, heads, qb, kb, block_q, block_k).expect("valid block mask")
}

/// The reference's copy of a block list read by `hq` query heads (shared, one list per GQA
/// group or one per query head).
fn to_reference_list(m: &BlockMask, causal: bool, hq: usize) -> reference::BlockSparse {
    let list = reference::BsrList {
        batch: m.batch,
        heads: m.heads,
        q_blocks: m.q_blocks,
        k_blocks: m.kv_blocks,
        max_blocks: m.max_blocks,
        kv_count: m.kv_count.clone(),
        kv_index: m.kv_index.clone(),
    };
    reference::BlockSparse::new(m.block_q, m.block_k, causal, list)
        .expect("reference accepts the list")
        .per_group(hq / m.heads.max(1))
}

fn to_reference_kind(kind: HeadKind, streaming: StreamingParams) -> reference::HeadKind {
    match kind {
        HeadKind::Dense => reference::HeadKind::Dense,
        HeadKind::DenseCausal => reference::HeadKind::DenseCausal,
        HeadKind::Streaming => reference::HeadKind::Streaming {
            sink: streaming.sink,
            window: streaming.window,
        },
        HeadKind::BlockSparse => reference::HeadKind::BlockSparse,
    }
}

fn run_typed<T: Half>(rt: &Runtime, case: &Case) -> Result<Outcome, String> {
    let spec = case.spec(rt);
    let mut rng = Rng::fresh();
    let seed_note = format!(
        "(seed {}: rerun with FLASHGEN_SEED={})",
        rng.seed(),
        rng.seed()
    );
    let (d, hq, hkv) = (case.head_dim, case.hq, case.hkv);

    // Geometry: fixed-length [batch, s, h, d] (BSHD or BHSD), or packed varlen.
    let (batch, max_sq, max_sk, q_layout, k_layout, cu_q, cu_k) = match &case.varlen {
        Some(lens) => {
            let mut cu_q = vec![0i32];
            let mut cu_k = vec![0i32];
            for &(a, b) in lens {
                cu_q.push(cu_q.last().unwrap() + a as i32);
                cu_k.push(cu_k.last().unwrap() + b as i32);
            }
            let (tq, tk) = (
                *cu_q.last().unwrap() as usize,
                *cu_k.last().unwrap() as usize,
            );
            let max_sq = lens.iter().map(|l| l.0).max().unwrap_or(0);
            let max_sk = lens.iter().map(|l| l.1).max().unwrap_or(0);
            (
                lens.len(),
                max_sq,
                max_sk,
                Layout::packed(tq, hq, d),
                Layout::packed(tk, hkv, d),
                cu_q,
                cu_k,
            )
        }
        None => {
            let make = |s, h| {
                if case.bhsd {
                    Layout::bhsd(case.batch, s, h, d)
                } else {
                    Layout::bshd(case.batch, s, h, d)
                }
            };
            (
                case.batch,
                case.sq,
                case.sk,
                make(case.sq, hq),
                make(case.sk, hkv),
                vec![],
                vec![],
            )
        }
    };

    // Fresh inputs, rounded to the element type so the reference sees exactly what the GPU sees.
    let draw = |rng: &mut Rng, n: usize| -> Vec<T> {
        rng.normal_vec_in(n, T::PRECISION)
            .into_iter()
            .map(T::from_f32)
            .collect()
    };
    let q_host = draw(&mut rng, q_layout.required_len());
    let k_host = draw(&mut rng, k_layout.required_len());
    let v_host = draw(&mut rng, k_layout.required_len());

    let stream = rt.stream();
    let up = |x: &[T]| stream.clone_htod(x).map_err(|e| format!("upload: {e:?}"));
    let q = up(&q_host)?;
    // APB: the kernel reads keys [0, prefix) from one buffer and the local block from another.
    let prefix_layout = match case.mask {
        CaseMask::Apb { anchor, passing } => Some(Layout::bshd(batch, anchor + passing, hkv, d)),
        _ => None,
    };
    let prefix_rows = prefix_layout.map_or(0, |l| l.seq);
    let kernel_k_layout = match prefix_layout {
        Some(_) => Layout::bshd(batch, max_sk - prefix_rows, hkv, d),
        None => k_layout,
    };
    let split = |x: &[T], rows: std::ops::Range<usize>| -> Vec<T> {
        let row = hkv * d;
        let out: Vec<T> = (0..batch)
            .flat_map(|b| {
                x[(b * max_sk + rows.start) * row..(b * max_sk + rows.end) * row].to_vec()
            })
            .collect();
        out
    };
    let (k, v, prefix) = match prefix_layout {
        // An empty prefix is passed as none (the first host of a multi-host prefill).
        Some(_) if prefix_rows == 0 => (
            up(&split(&k_host, 0..max_sk))?,
            up(&split(&v_host, 0..max_sk))?,
            None,
        ),
        Some(_) => (
            up(&split(&k_host, prefix_rows..max_sk))?,
            up(&split(&v_host, prefix_rows..max_sk))?,
            Some((
                up(&split(&k_host, 0..prefix_rows))?,
                up(&split(&v_host, 0..prefix_rows))?,
            )),
        ),
        None => (up(&k_host)?, up(&v_host)?, None),
    };
    // Poisoned outputs: every element must be written.
    let mut o = up(&vec![T::NAN; q_layout.required_len()])?;
    let lse_len = hq * q_layout.batch * q_layout.seq;
    let mut lse = stream
        .clone_htod(&vec![f32::NAN; lse_len.max(1)])
        .map_err(|e| format!("upload: {e:?}"))?;
    let varlen = match case.varlen {
        Some(_) => Some(
            rt.upload_varlen(&cu_q, &cu_k)
                .map_err(|e| format!("upload: {e}"))?,
        ),
        None => None,
    };

    // Masks, for the GPU and for the reference.
    let (kernel_mask_holder, reference_mask) = match &case.mask {
        CaseMask::Dense => (
            None,
            reference::Mask::Dense {
                causal: case.causal,
            },
        ),
        CaseMask::Apb { anchor, passing } => (
            None,
            reference::Mask::Apb {
                anchor: *anchor,
                passing: *passing,
            },
        ),
        CaseMask::Streaming(p) => (
            None,
            reference::Mask::Streaming {
                sink: p.sink,
                window: p.window,
            },
        ),
        CaseMask::BlockSparse {
            block_q,
            block_k,
            density,
            lists,
            empty_rows,
        } => {
            let heads = match lists {
                ListHeads::Shared => 1,
                ListHeads::PerKvHead => hkv,
                ListHeads::PerQueryHead => hq,
            };
            let m = random_block_mask(
                &mut rng,
                batch,
                heads,
                max_sq,
                max_sk,
                *block_q,
                *block_k,
                *density,
                *empty_rows,
            );
            let r = to_reference_list(&m, case.causal, hq);
            (Some((m, None)), reference::Mask::BlockSparse(r))
        }
        CaseMask::Mixed {
            kinds,
            streaming,
            block_q,
            block_k,
        } => {
            let m = random_block_mask(
                &mut rng, batch, hq, max_sq, max_sk, *block_q, *block_k, 0.3, false,
            );
            let r = to_reference_list(&m, case.causal, hq);
            let ref_kinds = kinds
                .iter()
                .map(|&k| to_reference_kind(k, *streaming))
                .collect();
            (
                Some((m, Some(kinds.clone()))),
                reference::Mask::Mixed {
                    head_kind: ref_kinds,
                    block_sparse: Some(r),
                },
            )
        }
    };
    let device_list = match &kernel_mask_holder {
        Some((m, _)) => Some(rt.upload_block_mask(m).map_err(|e| e.to_string())?),
        None => None,
    };
    let device_kinds = match &kernel_mask_holder {
        Some((_, Some(kinds))) => Some(rt.upload_head_kinds(kinds).map_err(|e| e.to_string())?),
        _ => None,
    };
    let kernel_mask = match &case.mask {
        CaseMask::Dense | CaseMask::Apb { .. } => Mask::None,
        CaseMask::Streaming(p) => Mask::Streaming(*p),
        CaseMask::BlockSparse { .. } => Mask::BlockSparse(device_list.as_ref().unwrap()),
        CaseMask::Mixed { streaming, .. } => Mask::Mixed {
            heads: device_kinds.as_ref().unwrap(),
            streaming: Some(*streaming),
            block_list: device_list.as_ref(),
        },
    };

    let mut args = AttentionArgs::new(
        Tensor {
            data: &q,
            layout: q_layout,
        },
        Tensor {
            data: &k,
            layout: kernel_k_layout,
        },
        Tensor {
            data: &v,
            layout: kernel_k_layout,
        },
        TensorMut {
            data: &mut o,
            layout: q_layout,
        },
    )
    .mask(kernel_mask);
    if let (Some((pk, pv)), Some(layout)) = (&prefix, prefix_layout) {
        args = args.prefix(Tensor { data: pk, layout }, Tensor { data: pv, layout });
    }
    if case.lse {
        args = args.lse(&mut lse);
    }
    if let Some(s) = case.scale {
        args = args.scale(s);
    }
    if let Some(varlen) = &varlen {
        args = args.varlen(varlen);
    }
    let spec = if case.tuned {
        rt.attention_tuned(&spec.attention(), args)
            .map_err(|e| format!("tuned launch of {spec}: {e}"))?
    } else {
        rt.attention(&spec, args)
            .map_err(|e| format!("launch of {spec}: {e}"))?;
        spec
    };
    stream
        .synchronize()
        .map_err(|e| format!("{spec} failed on the GPU: {e:?}"))?;
    let o_out: Vec<T> = stream.clone_dtoh(&o).map_err(|e| format!("{e:?}"))?;
    let lse_out: Vec<f32> = stream.clone_dtoh(&lse).map_err(|e| format!("{e:?}"))?;

    // The reference, laid out as the kernel's output.
    let scale = case.scale.map(f64::from);
    let (ref_o, ref_lse) = match &case.varlen {
        Some(_) => {
            let ql = reference::VarlenLayout::packed(&cu_q, hq, d).map_err(|e| e.to_string())?;
            let kl = reference::VarlenLayout::packed(&cu_k, hkv, d).map_err(|e| e.to_string())?;
            let out = reference::attention_varlen(
                reference::VarlenTensor::new(&q_host, &ql),
                reference::VarlenTensor::new(&k_host, &kl),
                reference::VarlenTensor::new(&v_host, &kl),
                &reference_mask,
                scale,
            )
            .map_err(|e| e.to_string())?;
            (out.o, out.lse)
        }
        None => {
            let to_ref = |l: &Layout| {
                reference::Layout::with_strides(l.batch, l.seq, l.heads, l.dim, l.strides)
            };
            let (ql, kl) = (to_ref(&q_layout), to_ref(&k_layout));
            let out = reference::attention(
                reference::Tensor::new(&q_host, &ql),
                reference::Tensor::new(&k_host, &kl),
                reference::Tensor::new(&v_host, &kl),
                &reference_mask,
                scale,
            )
            .map_err(|e| e.to_string())?;
            let o = out.o_in_layout(&ql, f64::NAN);
            (o, out.lse)
        }
    };

    let report =
        reference::check_close(&o_out, &ref_o, &Tolerance::rel(1e-2).with_poison(f32::NAN))
            .map_err(|m| format!("{spec}: O differs {seed_note}\n{m}"))?;
    let mut lse_err = 0.0;
    if case.lse {
        let r = reference::check_lse(&lse_out[..ref_lse.len()], &ref_lse, 2e-3, Some(f32::NAN))
            .map_err(|m| format!("{spec}: lse differs {seed_note}\n{m}"))?;
        lse_err = r.max_abs_error;
    }
    Ok(Outcome {
        o_rel_error: report.rel_error,
        lse_max_abs_error: lse_err,
    })
}

pub fn runtime() -> Runtime {
    Runtime::new(0).unwrap_or_else(|e| panic!("GPU tests need a CUDA GPU: {e}"))
}
