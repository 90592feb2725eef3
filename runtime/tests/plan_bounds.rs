//! Property: over random launch arguments (valid, nearly valid and hostile), `plan` either
//! returns an error or parameters whose every memory access, computed on the host with the
//! kernel's own offset formulas (`templates/attention_fwd.cu`, `templates/variants/*.cuh`),
//! stays inside the buffers it was given.

use flashgen_codegen::expr::{CustomMods, Definition, Value, VectorData};
use flashgen_codegen::variants::block_sparse::BlockListArgs;
use flashgen_codegen::variants::{apb, block_sparse, custom, mixed, streaming};
use flashgen_codegen::{Arch, AttentionSpec, DType, KernelSpec, Variant};
use flashgen_runtime::custom::{bind, classify_cpu, key_bindings, BlocksKey, CustomBlocks};
use flashgen_runtime::plan::{
    plan, BlockListArg, Buffer, CustomArg, CustomBlocksArg, HeadKindsArg, LaunchDesc, MaskArg,
    Plan, TensorArg, VarlenArg,
};
use flashgen_runtime::{BlockMask, CustomArgs, HeadKind, Layout, StreamingParams};
use proptest::prelude::*;

/// SplitMix64: one seed drives a whole case, so proptest shrinks over seeds.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    /// Mostly `value`, sometimes a little off or wildly off.
    fn perturb(&mut self, value: usize) -> usize {
        match self.below(20) {
            0 => value.saturating_sub(1 + self.below(8)),
            1 => value + 1 + self.below(8),
            2 => self.pick(&[0, 1, 1 << 31, 1 << 32, usize::MAX / 2]),
            _ => value,
        }
    }
}

const BASE: u64 = 1 << 40;

/// One buffer of every launch, with its own address range (so a read past one buffer cannot
/// land in another by accident of the numbers).
fn buffer(slot: u64, len: usize) -> Buffer {
    Buffer {
        ptr: BASE * (slot + 1),
        len,
    }
}

/// A layout of `batch x seq x heads x dim`, BSHD or BHSD, sometimes with padded strides.
fn layout(g: &mut Gen, batch: usize, seq: usize, heads: usize, dim: usize) -> Layout {
    let l = if g.chance(50) {
        Layout::bshd(batch, seq, heads, dim)
    } else {
        Layout::bhsd(batch, seq, heads, dim)
    };
    if g.chance(20) {
        let pad = 8 * g.below(3);
        let [sb, ss, sh, sd] = l.strides;
        return l.with_strides([sb + pad * seq * heads, ss, sh + pad, sd]);
    }
    l
}

fn tensor(g: &mut Gen, slot: u64, l: Layout) -> TensorArg {
    TensorArg {
        buffer: buffer(slot, g.perturb(l.required_len())),
        layout: l,
    }
}

fn cu_seqlens(g: &mut Gen, batch: usize, max_len: usize) -> Vec<i32> {
    let mut cu = vec![0i32];
    for _ in 0..batch {
        let len = g.below(max_len + 1) as i32;
        cu.push(cu.last().unwrap() + len);
    }
    if g.chance(10) {
        let i = g.below(cu.len());
        cu[i] = cu[i].wrapping_add(g.pick(&[-3, 5, i32::MAX / 2]));
    }
    cu
}

fn block_mask(g: &mut Gen, batch: usize, heads: usize, sq: usize, sk: usize) -> BlockMask {
    let block_q = g.pick(&[64, 128, 256]);
    let block_k = g.pick(&[32, 64, 128]);
    let (qb, kb) = (sq.div_ceil(block_q).max(1), sk.div_ceil(block_k).max(1));
    let keep: Vec<bool> = (0..batch * heads * qb * kb).map(|_| g.chance(40)).collect();
    let mut m = BlockMask::from_dense(&keep, batch, heads, qb, kb, block_q, block_k).unwrap();
    // Hostile edits of the public fields.
    match g.below(12) {
        0 => m.block_q = g.pick(&[0, 1 << 31, 1 << 32]),
        1 => m.block_k = g.pick(&[0, 1 << 31, 1 << 32]),
        2 => m.q_blocks = m.q_blocks.saturating_sub(1),
        3 => m.heads = g.pick(&[2, 3, 64]),
        4 if !m.kv_index.is_empty() => {
            let i = g.below(m.kv_index.len());
            m.kv_index[i] = g.pick(&[-1, kb as i32, i32::MAX]);
        }
        5 if !m.kv_count.is_empty() => {
            let i = g.below(m.kv_count.len());
            m.kv_count[i] = g.pick(&[-1, m.max_blocks as i32 + 1]);
        }
        6 => m.max_blocks += 1,
        _ => {}
    }
    m
}

/// The strides the kernel steps one tensor with (`FlashParams`' batch, row and head strides).
struct Strides(i64, i64, i64);

/// The largest element offset touched when `rows` rows of head `head` and `dim` columns are
/// read from row `row0` of batch `b` (or nothing, for zero rows).
fn last_offset(
    s: Strides,
    dim: usize,
    b: usize,
    row0: usize,
    rows: usize,
    head: usize,
) -> Option<u64> {
    let Strides(batch, row, head_stride) = s;
    (rows > 0).then(|| {
        (b as i64 * batch + (row0 + rows - 1) as i64 * row + head as i64 * head_stride + dim as i64
            - 1) as u64
    })
}

/// Checks every access of the kernel under the plan's parameters against the buffers of `desc`.
fn check_accesses(spec: &KernelSpec, d: &LaunchDesc, planned: &Plan) -> Result<(), String> {
    let p = &planned.params;
    // The variant's block: what of it the kernel reads (a prefix, a block list, a window).
    let block = &planned.variant;
    let prefix = block.get::<apb::Params>().unwrap_or_default();
    let (window, block_list) = match (
        block.get::<streaming::Params>(),
        block.get::<block_sparse::Params>(),
        block.get::<mixed::Params>(),
    ) {
        (Some(s), _, _) => (s.streaming.window, BlockListArgs::default()),
        (_, Some(b), _) => (0, b.list),
        (_, _, Some(m)) => (m.streaming.window, m.list),
        _ => match block.get::<custom::Params>() {
            Some(c) => (0, c.list),
            None => (0, BlockListArgs::default()),
        },
    };
    let (hq, hkv) = (p.heads_q as usize, p.heads_kv as usize);
    if hq == 0 || hkv == 0 || hq % hkv != 0 {
        return Err(format!("heads {hq} / {hkv}"));
    }
    let block_m = spec.tile.block_m as usize;
    let within = |what: &str, off: Option<u64>, buf: Buffer| -> Result<(), String> {
        match off {
            Some(o) if o >= buf.len as u64 => Err(format!("{what}: offset {o} >= {}", buf.len)),
            _ => Ok(()),
        }
    };
    for b in 0..p.batch as usize {
        let (sq, sk, q0, k0) = match &d.varlen {
            Some(v) => (
                (v.host_q[b + 1] - v.host_q[b]) as usize,
                (v.host_k[b + 1] - v.host_k[b]) as usize,
                v.host_q[b] as usize,
                v.host_k[b] as usize,
            ),
            None => (p.seqlen_q as usize, p.seqlen_k as usize, 0, 0),
        };
        for h in 0..hq {
            let kvh = h / (hq / hkv);
            let mut accesses = vec![
                (
                    "q",
                    Strides(p.q_batch_stride, p.q_row_stride, p.q_head_stride),
                    d.q,
                    q0,
                    sq,
                    h,
                ),
                (
                    "o",
                    Strides(p.o_batch_stride, p.o_row_stride, p.o_head_stride),
                    d.o,
                    q0,
                    sq,
                    h,
                ),
                (
                    "k",
                    Strides(p.k_batch_stride, p.k_row_stride, p.k_head_stride),
                    d.k,
                    k0,
                    sk,
                    kvh,
                ),
                (
                    "v",
                    Strides(p.v_batch_stride, p.v_row_stride, p.v_head_stride),
                    d.v,
                    k0,
                    sk,
                    kvh,
                ),
            ];
            if let Some((pk, pv)) = d.prefix {
                let n = prefix.prefix_len as usize;
                accesses.push((
                    "prefix_k",
                    Strides(
                        prefix.prefix_k_batch_stride,
                        prefix.prefix_k_row_stride,
                        prefix.prefix_k_head_stride,
                    ),
                    pk,
                    0,
                    n,
                    kvh,
                ));
                accesses.push((
                    "prefix_v",
                    Strides(
                        prefix.prefix_v_batch_stride,
                        prefix.prefix_v_row_stride,
                        prefix.prefix_v_head_stride,
                    ),
                    pv,
                    0,
                    n,
                    kvh,
                ));
            } else if prefix.prefix_len != 0 {
                return Err("prefix rows without a prefix".into());
            }
            for (name, strides, t, row0, rows, head) in accesses {
                within(
                    name,
                    last_offset(strides, t.layout.dim, b, row0, rows, head),
                    t.buffer,
                )?;
            }
            if let (Some(lse), true) = (d.lse, sq > 0) {
                let off = b as i64 * p.lse_batch_stride
                    + h as i64 * p.lse_head_stride
                    + (q0 + sq - 1) as i64;
                within("lse", Some(off as u64), lse)?;
            }
            // Block lists: the row of query tile m_block is m_block * BLOCK_M / block_q.
            let custom_list = match &d.mask {
                MaskArg::Custom(CustomArg {
                    blocks: Some(c), ..
                }) => Some(BlockListArg {
                    mask: &c.blocks.list,
                    kv_count: c.kv_count,
                    kv_index: c.kv_index,
                }),
                _ => None,
            };
            // Custom: a row of full-block words per block row.
            if let (
                MaskArg::Custom(CustomArg {
                    blocks: Some(c), ..
                }),
                Some(cp),
            ) = (&d.mask, block.get::<custom::Params>())
            {
                let words = (block_list.max_blocks as i64 + 31) / 32;
                let rows = c.blocks.list.kv_count.len() as i64;
                if cp.kv_full.0 != c.kv_full.ptr {
                    return Err("kv_full is not the classification's".into());
                }
                within(
                    "kv_full",
                    (rows > 0).then(|| (rows * words - 1) as u64),
                    c.kv_full,
                )?;
            }
            let list = match &d.mask {
                MaskArg::BlockSparse(l) => Some(l),
                MaskArg::Custom(_) => custom_list.as_ref(),
                MaskArg::Mixed {
                    block_list, heads, ..
                } => {
                    within("head_kind", Some(h as u64), heads.kinds_dev)?;
                    within("head_order", Some(h as u64), heads.order_dev)?;
                    if heads.kinds[h] == HeadKind::BlockSparse {
                        block_list.as_ref()
                    } else {
                        None
                    }
                }
                _ => None,
            };
            if let Some(list) = list {
                let p = &block_list;
                if p.block_q <= 0 || p.block_k <= 0 || p.list_heads <= 0 {
                    return Err("non-positive block list sizes".into());
                }
                let lh = if p.list_heads == 1 {
                    0
                } else {
                    h / (hq / p.list_heads as usize)
                };
                for m_block in 0..sq.div_ceil(block_m) {
                    let qb = (m_block * block_m / p.block_q as usize) as i64;
                    let row = b as i64 * p.list_batch_stride + lh as i64 * p.list_head_stride + qb;
                    within("kv_count", Some(row as u64), list.kv_count)?;
                    let count = list.mask.kv_count[row as usize];
                    for e in 0..count.max(0) as i64 {
                        let slot = row * p.max_blocks as i64 + e;
                        within("kv_index", Some(slot as u64), list.kv_index)?;
                        let kb = list.mask.kv_index[slot as usize] as i64;
                        // Key rows are loaded up to the sequence's end (zero-filled past it), so
                        // a block past a short sequence is harmless; one before the start or
                        // past the longest sequence is not.
                        let keys = (planned.params.seqlen_k as i64).max(1);
                        if kb < 0 || kb * p.block_k as i64 >= keys {
                            return Err(format!("block {kb} outside the keys"));
                        }
                    }
                }
            }
        }
    }
    // 32-bit positions: the streaming window arithmetic p_lo - window + 1 must not overflow.
    let lowest = -(p.seqlen_q as i64) - window as i64 + 1;
    if lowest < i32::MIN as i64 {
        return Err(format!("window arithmetic reaches {lowest}"));
    }
    Ok(())
}

/// Runs one case; returns the variant when `plan` accepted the launch.
fn random_case(seed: u64) -> Option<Variant> {
    let mut g = Gen(seed);
    let variant = g.pick(&Variant::ALL);
    let head_dim = g.pick(&[32, 64, 96, 128, 256]);
    let dtype = g.pick(&[DType::Bf16, DType::F16]);
    let causal = variant.accepts_causal() && g.chance(50);
    let varlen = variant != Variant::Apb && g.chance(25);
    let mut spec = AttentionSpec::new(variant, head_dim, dtype, causal)
        .with_lse(g.chance(50))
        .with_varlen(varlen)
        .with_default_tile(Arch::SM80);
    if g.chance(30) {
        spec.tile.block_m = g.pick(&[64, 128]);
    }

    let batch = 1 + g.below(3);
    let hkv = g.pick(&[1, 2, 4]);
    let hq = hkv * g.pick(&[1, 2, 4]);
    let (sq, sk) = (g.below(300), g.below(300));
    let d_q = head_dim as usize + if g.chance(5) { 8 } else { 0 };
    let hd = head_dim as usize;

    let cu_q = cu_seqlens(&mut g, batch, sq);
    let cu_k = cu_seqlens(&mut g, batch, sk);
    let (q_layout, k_layout) = if varlen {
        let tq = (*cu_q.last().unwrap()).max(0) as usize;
        let tk = (*cu_k.last().unwrap()).max(0) as usize;
        (
            Layout::packed(g.perturb(tq).min(4096), hq, d_q),
            Layout::packed(g.perturb(tk).min(4096), hkv, hd),
        )
    } else {
        (
            layout(&mut g, batch, sq, hq, d_q),
            layout(&mut g, batch, sk, hkv, hd),
        )
    };
    let q = tensor(&mut g, 0, q_layout);
    let k = tensor(&mut g, 1, k_layout);
    let v = tensor(&mut g, 2, k_layout);
    let o = tensor(&mut g, 3, q_layout);
    let lse_len = g.perturb(hq * q_layout.batch * q_layout.seq);
    let lse = (spec.lse || g.chance(5)).then(|| buffer(4, lse_len));

    let list_heads = g.pick(&[1, hkv, hq, 3]);
    let (max_sq, max_sk) = if varlen {
        let longest = |cu: &[i32]| {
            cu.windows(2)
                .map(|w| (w[1] - w[0]).max(0) as usize)
                .max()
                .unwrap_or(0)
        };
        (longest(&cu_q), longest(&cu_k))
    } else {
        (sq, sk)
    };
    let mask_host = block_mask(
        &mut g,
        batch,
        list_heads,
        max_sq.min(4096),
        max_sk.min(4096),
    );
    let list = BlockListArg {
        mask: &mask_host,
        kv_count: buffer(5, g.perturb(mask_host.kv_count.len())),
        kv_index: buffer(6, g.perturb(mask_host.kv_index.len())),
    };
    let streaming = StreamingParams {
        sink: g.pick(&[0, 4, 64, usize::MAX / 2]),
        window: g.pick(&[0, 1, 100, (1 << 31) - 1, 1 << 31, usize::MAX]),
    };
    let kinds: Vec<HeadKind> = (0..g.perturb(hq).min(64))
        .map(|_| {
            g.pick(&[
                HeadKind::Dense,
                HeadKind::DenseCausal,
                HeadKind::Streaming,
                HeadKind::BlockSparse,
            ])
        })
        .collect();
    let kinds_arg = HeadKindsArg {
        kinds: &kinds,
        kinds_dev: buffer(7, g.perturb(kinds.len())),
        order_dev: buffer(8, g.perturb(kinds.len())),
    };
    // Custom: a definition without vectors (no GPU here to upload one), its values, and its
    // classification made on the CPU for the launch's lengths when they are sane.
    const DEFINITIONS: [&str; 3] = [
        "w: i32; mask = k <= q && q - k < w",
        "mask = (q + h) % 3 != 0; score = s * 0.5",
        "cap: f32; score = cap * tanh(s / cap)",
    ];
    let text = g.pick(&DEFINITIONS);
    let mods = CustomMods::parse(text).expect("valid definition");
    if variant == Variant::Custom {
        spec.spec = spec.spec.with_definition(Some(Definition::intern(&mods)));
    }
    // Usually the values the definition declares; sometimes missing or extra ones.
    let w = g.pick(&[1, 64, i32::MAX]);
    let custom_args = match (g.below(10), text.contains("w:"), text.contains("cap:")) {
        (0, _, _) => CustomArgs::new(),
        (1, _, _) => CustomArgs::new().int("w", w).float("cap", 30.0),
        (_, true, _) => CustomArgs::new().int("w", w),
        (_, _, true) => CustomArgs::new().float("cap", 30.0),
        _ => CustomArgs::new(),
    };
    let lengths: Option<Vec<(usize, usize)>> = if varlen {
        cu_q.windows(2)
            .zip(cu_k.windows(2))
            .map(|(q, k)| {
                let (a, b) = (q[1] - q[0], k[1] - k[0]);
                (a >= 0 && b >= 0 && a <= 4096 && b <= 4096).then_some((a as usize, b as usize))
            })
            .collect()
    } else {
        Some(vec![(sq, sk); batch])
    };
    let block = g.pick(&[64, 128]);
    let cpu_blocks: Option<CustomBlocks> = match (bind(&mods, &custom_args), lengths) {
        (Ok(values), Some(lengths)) if variant == Variant::Custom => {
            let key = BlocksKey {
                definition: mods.canonical().to_string(),
                heads_q: hq,
                lengths,
                varlen,
                bindings: key_bindings(&mods, &values),
                block_q: block,
                block_k: block,
            };
            let host: Vec<VectorData> = mods
                .params()
                .iter()
                .map(|p| match p.name.as_str() {
                    "w" => VectorData::Scalar(Value::Int(w)),
                    _ => VectorData::Scalar(Value::Float(30.0)),
                })
                .collect();
            classify_cpu(&mods, &key, &host).ok()
        }
        _ => None,
    };
    let custom_blocks = cpu_blocks.as_ref().filter(|_| g.chance(95)).map(|c| {
        let words = c.list.kv_blocks.div_ceil(32).max(1);
        CustomBlocksArg {
            blocks: c,
            kv_count: buffer(13, g.perturb(c.list.kv_count.len())),
            kv_index: buffer(14, g.perturb(c.list.kv_index.len())),
            kv_full: buffer(15, g.perturb(c.list.kv_count.len() * words)),
        }
    });
    let mask = match (variant, g.chance(90)) {
        (Variant::Custom, true) => MaskArg::Custom(CustomArg {
            args: &custom_args,
            pointers: &[],
            blocks: custom_blocks,
        }),
        (Variant::Streaming, true) => MaskArg::Streaming(streaming),
        (Variant::BlockSparse, true) => MaskArg::BlockSparse(list),
        (Variant::Mixed, true) => MaskArg::Mixed {
            heads: kinds_arg,
            streaming: g.chance(90).then_some(streaming),
            block_list: g.chance(90).then_some(list),
        },
        (_, true) => MaskArg::None,
        (_, false) => MaskArg::Streaming(streaming),
    };
    let prefix = (variant == Variant::Apb && g.chance(80)).then(|| {
        let prefix_len = g.below(200);
        let pl = layout(&mut g, batch, prefix_len, hkv, hd);
        (tensor(&mut g, 9, pl), tensor(&mut g, 10, pl))
    });
    let varlen_arg = (varlen || g.chance(5)).then(|| VarlenArg {
        cu_seqlens_q: buffer(11, g.perturb(cu_q.len())),
        cu_seqlens_k: buffer(12, g.perturb(cu_k.len())),
        host_q: &cu_q,
        host_k: &cu_k,
    });
    let desc = LaunchDesc {
        dtype: if g.chance(5) { DType::F16 } else { dtype },
        q,
        k,
        v,
        o,
        lse,
        varlen: varlen_arg,
        scale: None,
        mask,
        prefix,
    };
    let planned = plan(&spec, &desc).ok()?;
    if let Err(e) = check_accesses(&spec, &desc, &planned) {
        panic!("seed {seed}: {spec} planned, but {e}");
    }
    Some(variant)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_planned_launch_stays_inside_its_buffers(seed in any::<u64>()) {
        random_case(seed);
    }
}

/// The generator reaches accepted launches of every variant, varlen and APB without a prefix
/// included (a property over rejected launches only would check nothing).
#[test]
fn the_generator_plans_launches_of_every_variant() {
    let mut planned = std::collections::HashMap::new();
    for seed in 0..3000u64 {
        if let Some(v) = random_case(seed) {
            *planned.entry(v).or_insert(0) += 1;
        }
    }
    for v in Variant::ALL {
        let n = planned.get(&v).copied().unwrap_or(0);
        assert!(n >= 20, "only {n} planned launches of {v} in 3000 cases");
    }
}
