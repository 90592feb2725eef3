//! Layouts, GQA, varlen batches, element types and input validation.

mod common;

use common::{assert_same, qkv};
use flashgen_reference::{
    attention, attention_bshd, attention_varlen, to_bf16, AttentionError, BlockSparse, BsrList,
    HeadKind, Layout, LayoutError, Mask, MaskError, Output, Precision, Rng, Shape, Tensor,
    VarlenLayout, VarlenTensor,
};

#[test]
fn gqa_equals_repeated_kv_heads() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    for (hq, hkv) in [(8, 2), (4, 1), (6, 3)] {
        let shape = Shape::new(2, 37, 53, hq, hkv, 16);
        let (q, k, v) = qkv(&mut rng, &shape);
        let group = hq / hkv;
        // Repeat every KV head `group` times: [b, s, hkv, d] -> [b, s, hq, d].
        let repeat = |x: &[f32]| -> Vec<f32> {
            let mut out = Vec::with_capacity(x.len() * group);
            for token in x.chunks(hkv * 16) {
                for h in 0..hq {
                    out.extend_from_slice(&token[(h / group) * 16..][..16]);
                }
            }
            out
        };
        let mha = Shape::new(2, 37, 53, hq, hq, 16);
        for mask in [Mask::dense(), Mask::causal(), Mask::streaming(2, 9)] {
            let gqa = attention_bshd(&q, &k, &v, &shape, &mask, None).unwrap();
            let full = attention_bshd(&q, &repeat(&k), &repeat(&v), &mha, &mask, None).unwrap();
            assert_same(
                &format!("gqa {hq}/{hkv} {mask:?}"),
                seed,
                (&gqa.o, &gqa.lse),
                (&full.o, &full.lse),
                0.0,
            );
        }
    }
}

/// Copies a contiguous BSHD tensor into `layout` (unreached elements NaN).
fn relayout(
    data: &[f32],
    batch: usize,
    seq: usize,
    heads: usize,
    dim: usize,
    layout: &Layout,
) -> Vec<f32> {
    let bshd = Layout::bshd(batch, seq, heads, dim);
    layout.materialize(f32::NAN, |b, s, h, d| data[bshd.offset(b, s, h, d)])
}

#[test]
fn bhsd_and_padded_layouts_equal_bshd() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let shape = Shape::new(2, 40, 56, 4, 2, 8);
    let (q, k, v) = qkv(&mut rng, &shape);
    let masks = [Mask::dense(), Mask::causal(), Mask::apb(10, 6)];
    for mask in &masks {
        let want = attention_bshd(&q, &k, &v, &shape, mask, None).unwrap();
        let layouts = [
            (Layout::bhsd(2, 40, 4, 8), Layout::bhsd(2, 56, 2, 8)),
            // Padded rows and heads, BSHD order; NaN padding would poison any stray read.
            (
                Layout::with_strides(2, 40, 4, 8, [40 * 50, 50, 12, 1]),
                Layout::with_strides(2, 56, 2, 8, [56 * 30, 30, 11, 1]),
            ),
            // Head dim strided too.
            (
                Layout::with_strides(2, 40, 4, 8, [4 * 40 * 16, 16, 40 * 16, 2]),
                Layout::with_strides(2, 56, 2, 8, [2 * 56 * 16, 2 * 16, 16, 2]),
            ),
        ];
        for (ql, kvl) in &layouts {
            let q2 = relayout(&q, 2, 40, 4, 8, ql);
            let k2 = relayout(&k, 2, 56, 2, 8, kvl);
            let v2 = relayout(&v, 2, 56, 2, 8, kvl);
            let got = attention(
                Tensor::new(&q2, ql),
                Tensor::new(&k2, kvl),
                Tensor::new(&v2, kvl),
                mask,
                None,
            )
            .unwrap();
            assert_same(
                &format!("{ql:?} {mask:?}"),
                seed,
                (&got.o, &got.lse),
                (&want.o, &want.lse),
                0.0,
            );
        }
    }
}

#[test]
fn output_in_bhsd_layout() {
    let mut rng = Rng::fresh();
    let shape = Shape::new(2, 5, 6, 3, 1, 4);
    let (q, k, v) = qkv(&mut rng, &shape);
    let out = attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap();
    let bhsd = Layout::bhsd(2, 5, 3, 4);
    let o = out.o_in_layout(&bhsd, f64::NAN);
    assert!(o.iter().all(|x| !x.is_nan()));
    for b in 0..2 {
        for h in 0..3 {
            for i in 0..5 {
                assert_eq!(&o[bhsd.offset(b, i, h, 0)..][..4], out.o_row(b, h, i));
            }
        }
    }
}

#[test]
fn bf16_input_equals_rounded_f32_input() {
    let mut rng = Rng::fresh();
    let shape = Shape::new(1, 20, 30, 2, 1, 16);
    let (q, k, v) = qkv(&mut rng, &shape);
    let (qb, kb, vb) = (to_bf16(&q), to_bf16(&k), to_bf16(&v));
    let (qr, kr, vr) = (
        Precision::Bf16.rounded(&q),
        Precision::Bf16.rounded(&k),
        Precision::Bf16.rounded(&v),
    );
    let a = attention_bshd(&qb, &kb, &vb, &shape, &Mask::causal(), None).unwrap();
    let b = attention_bshd(&qr, &kr, &vr, &shape, &Mask::causal(), None).unwrap();
    assert_eq!(a, b);
    // And f64 input of the same values.
    let widen = |x: &[f32]| x.iter().map(|&y| f64::from(y)).collect::<Vec<f64>>();
    let c = attention_bshd(
        &widen(&qr),
        &widen(&kr),
        &widen(&vr),
        &shape,
        &Mask::causal(),
        None,
    )
    .unwrap();
    assert_eq!(a, c);
}

/// Runs sequence `b` of a packed batch alone, as a fixed-length problem of batch 1.
#[allow(clippy::too_many_arguments)]
fn run_alone(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ql: &VarlenLayout,
    kl: &VarlenLayout,
    b: usize,
    mask: &Mask,
) -> Output {
    let (hq, hkv, d) = (ql.heads, kl.heads, ql.dim);
    let (q0, q1) = (ql.cu_seqlens()[b], ql.cu_seqlens()[b + 1]);
    let (k0, k1) = (kl.cu_seqlens()[b], kl.cu_seqlens()[b + 1]);
    let shape = Shape::new(1, q1 - q0, k1 - k0, hq, hkv, d);
    attention_bshd(
        &q[q0 * hq * d..q1 * hq * d],
        &k[k0 * hkv * d..k1 * hkv * d],
        &v[k0 * hkv * d..k1 * hkv * d],
        &shape,
        mask,
        None,
    )
    .unwrap()
}

#[test]
fn varlen_equals_separate_runs() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let (hq, hkv, d) = (4, 2, 16);
    let q_lens = [17, 0, 70, 5, 33, 1];
    let k_lens = [17, 9, 100, 0, 20, 1];
    let ql = VarlenLayout::from_lengths(&q_lens, hq, d);
    let kl = VarlenLayout::from_lengths(&k_lens, hkv, d);
    let q = rng.normal_vec(ql.numel());
    let k = rng.normal_vec(kl.numel());
    let v = rng.normal_vec(kl.numel());
    let (bq, bk) = (8, 16);
    let max_q = q_lens.iter().max().unwrap().div_ceil(bq);
    let max_k = k_lens.iter().max().unwrap().div_ceil(bk);
    let matrix = rng.block_matrix(q_lens.len(), 1, max_q, max_k, 0.5);
    let per_seq = BlockSparse::from_matrix(bq, bk, true, &matrix).unwrap();
    let masks = [
        Mask::dense(),
        Mask::causal(),
        Mask::streaming(3, 7),
        Mask::BlockSparse(per_seq.clone()),
        Mask::Mixed {
            head_kind: vec![
                HeadKind::Dense,
                HeadKind::BlockSparse,
                HeadKind::DenseCausal,
                HeadKind::Streaming { sink: 1, window: 4 },
            ],
            block_sparse: Some(per_seq.clone()),
        },
    ];
    for mask in &masks {
        let packed = attention_varlen(
            VarlenTensor::new(&q, &ql),
            VarlenTensor::new(&k, &kl),
            VarlenTensor::new(&v, &kl),
            mask,
            None,
        )
        .unwrap();
        assert_eq!(packed.o.len(), ql.numel());
        assert_eq!(packed.lse.len(), hq * ql.total_tokens());
        for (b, &q_len) in q_lens.iter().enumerate() {
            // A per-sequence block list must be narrowed to that sequence's row of the list.
            let alone_mask = match mask {
                Mask::BlockSparse(bs) => Mask::BlockSparse(select_batch(bs, b)),
                Mask::Mixed {
                    head_kind,
                    block_sparse,
                } => Mask::Mixed {
                    head_kind: head_kind.clone(),
                    block_sparse: block_sparse.as_ref().map(|bs| select_batch(bs, b)),
                },
                other => other.clone(),
            };
            let alone = run_alone(&q, &k, &v, &ql, &kl, b, &alone_mask);
            for h in 0..hq {
                for i in 0..q_len {
                    let ctx = format!("{mask:?} seq {b} head {h} row {i} (seed {seed})");
                    assert_eq!(packed.o_row(b, h, i), alone.o_row(0, h, i), "{ctx}");
                    assert_eq!(packed.lse_at(b, h, i), alone.lse_at(0, h, i), "{ctx}");
                    // lse is [hq, total_q].
                    assert_eq!(
                        packed.lse[h * ql.total_tokens() + ql.cu_seqlens()[b] + i],
                        packed.lse_at(b, h, i)
                    );
                }
            }
        }
    }
}

/// The block list of batch element `b` alone (batch dimension 1).
fn select_batch(bs: &BlockSparse, b: usize) -> BlockSparse {
    let list = bs.list();
    let rows = list.heads * list.q_blocks;
    let one = BsrList {
        batch: 1,
        kv_count: list.kv_count[b * rows..(b + 1) * rows].to_vec(),
        kv_index: list.kv_index[b * rows * list.max_blocks..(b + 1) * rows * list.max_blocks]
            .to_vec(),
        ..list.clone()
    };
    BlockSparse::new(bs.block_q(), bs.block_k(), bs.causal(), one).unwrap()
}

#[test]
fn varlen_with_strided_layout() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let ql = VarlenLayout::packed(&[0, 10, 30], 2, 8).unwrap();
    let kl = VarlenLayout::packed(&[0, 12, 40], 1, 8).unwrap();
    let q = rng.normal_vec(ql.numel());
    let k = rng.normal_vec(kl.numel());
    let v = rng.normal_vec(kl.numel());
    let want = attention_varlen(
        VarlenTensor::new(&q, &ql),
        VarlenTensor::new(&k, &kl),
        VarlenTensor::new(&v, &kl),
        &Mask::causal(),
        None,
    )
    .unwrap();
    // Heads-major packing: [heads, tokens, d].
    let qs = ql.clone().with_strides([8, 30 * 8, 1]);
    let q2: Vec<f32> = (0..2)
        .flat_map(|h| (0..30).flat_map(move |t| (0..8).map(move |d| (h, t, d))))
        .map(|(h, t, d)| q[ql.offset(t, h, d)])
        .collect();
    let got = attention_varlen(
        VarlenTensor::new(&q2, &qs),
        VarlenTensor::new(&k, &kl),
        VarlenTensor::new(&v, &kl),
        &Mask::causal(),
        None,
    )
    .unwrap();
    assert_same(
        "varlen heads-major q",
        seed,
        (&got.o, &got.lse),
        (&want.o, &want.lse),
        0.0,
    );
}

#[test]
fn invalid_problems_are_typed_errors() {
    let shape = Shape::new(1, 4, 6, 3, 2, 8);
    let (q, kv) = (vec![0.5f32; shape.q_len()], vec![0.5f32; shape.kv_len()]);
    assert_eq!(
        attention_bshd(&q, &kv, &kv, &shape, &Mask::dense(), None).unwrap_err(),
        AttentionError::Gqa { hq: 3, hkv: 2 }
    );
    let shape = Shape::new(1, 4, 6, 2, 2, 8);
    let (q, kv) = (vec![0.5f32; shape.q_len()], vec![0.5f32; shape.kv_len()]);
    assert!(matches!(
        attention_bshd(&q[1..], &kv, &kv, &shape, &Mask::dense(), None).unwrap_err(),
        AttentionError::BufferTooShort { tensor: "q", .. }
    ));
    assert!(matches!(
        attention_bshd(&q, &kv, &kv[..10], &shape, &Mask::dense(), None).unwrap_err(),
        AttentionError::BufferTooShort { tensor: "v", .. }
    ));
    assert_eq!(
        attention_bshd(&q, &kv, &kv, &shape, &Mask::apb(1, 2), None).unwrap_err(),
        AttentionError::Mask(MaskError::ApbLength {
            anchor: 1,
            passing: 2,
            sq: 4,
            sk: 6
        })
    );
    assert!(matches!(
        attention_bshd(&q, &kv, &kv, &shape, &Mask::dense(), Some(f64::NAN)).unwrap_err(),
        AttentionError::Scale(_)
    ));
    let small_list = BlockSparse::all_blocks(2, 2, false, 4, 4).unwrap();
    assert!(matches!(
        attention_bshd(&q, &kv, &kv, &shape, &Mask::BlockSparse(small_list), None).unwrap_err(),
        AttentionError::Mask(MaskError::ListCoverage { axis: "key", .. })
    ));
    let mixed = Mask::Mixed {
        head_kind: vec![HeadKind::Dense],
        block_sparse: None,
    };
    assert!(matches!(
        attention_bshd(&q, &kv, &kv, &shape, &mixed, None).unwrap_err(),
        AttentionError::Mask(MaskError::MixedHeadCount { kinds: 1, hq: 2 })
    ));
    // Mismatched head dims and batches.
    let ql = Layout::bshd(1, 4, 2, 8);
    let kl = Layout::bshd(1, 6, 2, 4);
    assert!(matches!(
        attention(
            Tensor::new(&q, &ql),
            Tensor::new(&kv, &kl),
            Tensor::new(&kv, &kl),
            &Mask::dense(),
            None
        )
        .unwrap_err(),
        AttentionError::ShapeMismatch { .. }
    ));
    let kl2 = Layout::bshd(2, 3, 2, 8);
    assert!(matches!(
        attention(
            Tensor::new(&q, &ql),
            Tensor::new(&kv, &kl2),
            Tensor::new(&kv, &kl2),
            &Mask::dense(),
            None
        )
        .unwrap_err(),
        AttentionError::ShapeMismatch {
            what: "batch of q and k",
            ..
        }
    ));
    let zero = Layout::bshd(1, 4, 2, 0);
    assert_eq!(
        attention(
            Tensor::new(&q, &zero),
            Tensor::new(&kv, &zero),
            Tensor::new(&kv, &zero),
            &Mask::dense(),
            None
        )
        .unwrap_err(),
        AttentionError::ZeroDim { tensor: "q" }
    );
    // Varlen: K and V lengths must agree, cu_seqlens must be valid.
    let ql = VarlenLayout::from_lengths(&[2, 2], 2, 8);
    let kl = VarlenLayout::from_lengths(&[3, 3], 2, 8);
    let vl = VarlenLayout::from_lengths(&[2, 4], 2, 8);
    assert_eq!(
        attention_varlen(
            VarlenTensor::new(&q, &ql),
            VarlenTensor::new(&kv, &kl),
            VarlenTensor::new(&kv, &vl),
            &Mask::dense(),
            None
        )
        .unwrap_err(),
        AttentionError::KvSeqlen { b: 0, k: 3, v: 2 }
    );
    assert_eq!(
        VarlenLayout::packed(&[0, 3, 2], 1, 1).unwrap_err(),
        LayoutError::CuSeqlensDecreasing {
            index: 2,
            previous: 3,
            value: 2
        }
    );
    // Errors print their fields.
    let msg = AttentionError::Mask(MaskError::ApbLength {
        anchor: 1,
        passing: 2,
        sq: 4,
        sk: 6,
    })
    .to_string();
    assert!(msg.contains("anchor 1") && msg.contains("sk 6"), "{msg}");
}

#[test]
fn bsr_validation_rejects_bad_lists() {
    let base = BsrList {
        batch: 1,
        heads: 2,
        q_blocks: 2,
        k_blocks: 3,
        max_blocks: 2,
        kv_count: vec![2, 1, 0, 2],
        kv_index: vec![0, 2, 1, 7, 0, 0, 1, 2],
    };
    assert!(BlockSparse::new(4, 4, true, base.clone()).is_ok());
    let with = |count: Vec<i32>, index: Vec<i32>| BsrList {
        kv_count: count,
        kv_index: index,
        ..base.clone()
    };
    assert!(matches!(
        BlockSparse::new(
            4,
            4,
            true,
            with(vec![2, 1, 0, 2], vec![0, 3, 1, 7, 0, 0, 1, 2])
        ),
        Err(MaskError::IndexOutOfRange {
            b: 0,
            h: 0,
            qb: 0,
            slot: 1,
            index: 3,
            k_blocks: 3
        })
    ));
    assert!(matches!(
        BlockSparse::new(
            4,
            4,
            true,
            with(vec![2, 1, 0, 2], vec![0, 2, 1, 7, 0, 0, 2, 1])
        ),
        Err(MaskError::NotAscending {
            b: 0,
            h: 1,
            qb: 1,
            slot: 1,
            previous: 2,
            index: 1
        })
    ));
    assert!(matches!(
        BlockSparse::new(4, 4, true, with(vec![2, 3, 0, 2], base.kv_index.clone())),
        Err(MaskError::CountOutOfRange {
            h: 0,
            qb: 1,
            count: 3,
            max_blocks: 2,
            ..
        })
    ));
    assert!(matches!(
        BlockSparse::new(4, 4, true, with(vec![2, 1, 0], base.kv_index.clone())),
        Err(MaskError::ListLength {
            field: "kv_count",
            expected: 4,
            actual: 3
        })
    ));
    // Duplicates are not ascending either.
    assert!(matches!(
        BlockSparse::new(
            4,
            4,
            true,
            with(vec![2, 1, 0, 2], vec![1, 1, 1, 7, 0, 0, 1, 2])
        ),
        Err(MaskError::NotAscending {
            slot: 1,
            previous: 1,
            index: 1,
            ..
        })
    ));
}
