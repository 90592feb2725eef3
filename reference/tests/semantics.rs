//! The semantics table, checked variant by variant: hand-computed cases, properties that must
//! hold for any input, equalities between variants, and a cross-check against a direct
//! implementation for every variant.

mod common;

use common::{assert_same, max_diff, naive, qkv};
use flashgen_reference::{
    attention_bshd, merge, BlockMatrix, BlockSparse, HeadKind, Mask, Output, Rng, Shape,
};

const E: f64 = std::f64::consts::E;

#[test]
fn hand_computed_dense_and_causal() {
    // sq = sk = 2, d = 2, one head, scale 1.
    let shape = Shape::new(1, 2, 2, 1, 1, 2);
    let q = [1.0f32, 0.0, 0.0, 1.0];
    let k = [1.0f32, 0.0, 0.0, 1.0];
    let v = [1.0f32, 2.0, 3.0, 4.0];
    let out = attention_bshd(&q, &k, &v, &shape, &Mask::dense(), Some(1.0)).unwrap();
    // Row 0: scores [1, 0] -> weights [e, 1] / (e + 1).
    let want0 = [(E + 3.0) / (E + 1.0), (2.0 * E + 4.0) / (E + 1.0)];
    // Row 1: scores [0, 1] -> weights [1, e] / (e + 1).
    let want1 = [(1.0 + 3.0 * E) / (E + 1.0), (2.0 + 4.0 * E) / (E + 1.0)];
    let want_o = [want0[0], want0[1], want1[0], want1[1]];
    assert!(max_diff(&out.o, &want_o) < 1e-14, "{:?}", out.o);
    let want_lse = [(E + 1.0).ln(), (E + 1.0).ln()];
    assert!(max_diff(&out.lse, &want_lse) < 1e-14, "{:?}", out.lse);

    let out = attention_bshd(&q, &k, &v, &shape, &Mask::causal(), Some(1.0)).unwrap();
    // Row 0 sees key 0 only: O = v0, lse = score = 1.
    let want_o = [1.0, 2.0, want1[0], want1[1]];
    assert!(max_diff(&out.o, &want_o) < 1e-14, "{:?}", out.o);
    assert!(
        max_diff(&out.lse, &[1.0, (E + 1.0).ln()]) < 1e-14,
        "{:?}",
        out.lse
    );
}

#[test]
fn lse_is_log_sum_exp_of_scaled_scores() {
    // sq = 1, sk = 3, d = 1: scores 0.5 * [1, 2, 3].
    let shape = Shape::new(1, 1, 3, 1, 1, 1);
    let (q, k, v) = ([1.0f32], [1.0f32, 2.0, 3.0], [10.0f32, 20.0, 30.0]);
    let out = attention_bshd(&q, &k, &v, &shape, &Mask::dense(), Some(0.5)).unwrap();
    let w = [0.5f64.exp(), 1f64.exp(), 1.5f64.exp()];
    let sum: f64 = w.iter().sum();
    assert!((out.lse[0] - sum.ln()).abs() < 1e-14, "{}", out.lse[0]);
    let want = (10.0 * w[0] + 20.0 * w[1] + 30.0 * w[2]) / sum;
    assert!((out.o[0] - want).abs() < 1e-12, "{} vs {want}", out.o[0]);
    // Default scale for d = 1 is 1.
    let out = attention_bshd(&q, &k, &v, &shape, &Mask::dense(), None).unwrap();
    let sum: f64 = [1f64, 2.0, 3.0].iter().map(|s| s.exp()).sum();
    assert!((out.lse[0] - sum.ln()).abs() < 1e-14);
}

#[test]
fn default_scale_is_inverse_sqrt_d() {
    let mut rng = Rng::fresh();
    let shape = Shape::new(1, 5, 7, 2, 1, 16);
    let (q, k, v) = qkv(&mut rng, &shape);
    let default = attention_bshd(&q, &k, &v, &shape, &Mask::dense(), None).unwrap();
    let explicit = attention_bshd(&q, &k, &v, &shape, &Mask::dense(), Some(0.25)).unwrap();
    let one = attention_bshd(&q, &k, &v, &shape, &Mask::dense(), Some(1.0)).unwrap();
    assert_eq!(default, explicit);
    assert!(max_diff(&default.lse, &one.lse) > 1e-3);
}

/// Every mask variant used by the property tests, for `hq` heads over `sq x sk`.
fn all_masks(rng: &mut Rng, batch: usize, hq: usize, sq: usize, sk: usize) -> Vec<(String, Mask)> {
    let (bq, bk) = (1 + rng.below(24), 1 + rng.below(24));
    let matrix = rng.block_matrix(batch, hq, sq.div_ceil(bq), sk.div_ceil(bk), 0.4);
    let shared = rng.block_matrix(1, 1, sq.div_ceil(bq), sk.div_ceil(bk), 0.5);
    let mut masks = vec![
        ("dense".to_string(), Mask::dense()),
        ("causal".to_string(), Mask::causal()),
        ("streaming 3/5".to_string(), Mask::streaming(3, 5)),
        ("streaming 0/1".to_string(), Mask::streaming(0, 1)),
        ("streaming 7/0".to_string(), Mask::streaming(7, 0)),
    ];
    for causal in [false, true] {
        masks.push((
            format!("block-sparse {bq}x{bk} causal {causal}"),
            Mask::BlockSparse(BlockSparse::from_matrix(bq, bk, causal, &matrix).unwrap()),
        ));
        masks.push((
            format!("block-sparse shared {bq}x{bk} causal {causal}"),
            Mask::BlockSparse(BlockSparse::from_matrix(bq, bk, causal, &shared).unwrap()),
        ));
    }
    let kinds = [
        HeadKind::Dense,
        HeadKind::DenseCausal,
        HeadKind::Streaming { sink: 2, window: 4 },
        HeadKind::BlockSparse,
    ];
    masks.push((
        "mixed".to_string(),
        Mask::Mixed {
            head_kind: (0..hq).map(|h| kinds[h % kinds.len()]).collect(),
            block_sparse: Some(BlockSparse::from_matrix(bq, bk, true, &matrix).unwrap()),
        },
    ));
    if sk >= sq {
        let prefix = sk - sq;
        let anchor = rng.below(prefix + 1);
        masks.push((
            format!("apb {anchor}/{}", prefix - anchor),
            Mask::apb(anchor, prefix - anchor),
        ));
    }
    masks
}

#[test]
fn matches_direct_implementation_for_every_variant() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    // Shapes cross the internal chunk (64 rows), tile (16 rows) and key block (64 keys) sizes,
    // and the larger ones run on several threads.
    let shapes = [
        Shape::new(1, 1, 1, 1, 1, 1),
        Shape::new(2, 7, 7, 2, 1, 3),
        Shape::new(1, 5, 33, 4, 2, 8),
        Shape::new(2, 33, 5, 2, 2, 8),
        Shape::new(1, 100, 150, 4, 2, 13),
        Shape::new(1, 130, 130, 2, 2, 64),
        Shape::new(2, 65, 200, 4, 1, 40),
    ];
    for shape in shapes {
        let (q, k, v) = qkv(&mut rng, &shape);
        for (name, mask) in all_masks(&mut rng, shape.batch, shape.hq, shape.sq, shape.sk) {
            let scale = shape.default_scale();
            let out = attention_bshd(&q, &k, &v, &shape, &mask, None).unwrap();
            let (o, lse) = naive(&q, &k, &v, &shape, &mask, scale);
            assert_same(
                &format!("{name} {shape:?}"),
                seed,
                (&out.o, &out.lse),
                (&o, &lse),
                1e-12,
            );
        }
    }
}

#[test]
fn ones_v_gives_ones_on_rows_with_a_visible_key() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    for shape in [
        Shape::new(2, 40, 70, 4, 2, 8),
        Shape::new(1, 70, 40, 2, 1, 8),
    ] {
        let q = rng.normal_vec(shape.q_len());
        let k = rng.normal_vec(shape.kv_len());
        let ones = vec![1.0f32; shape.kv_len()];
        for (name, mask) in all_masks(&mut rng, shape.batch, shape.hq, shape.sq, shape.sk) {
            let out = attention_bshd(&q, &k, &ones, &shape, &mask, None).unwrap();
            let mut ranges = Vec::new();
            for b in 0..shape.batch {
                for h in 0..shape.hq {
                    for i in 0..shape.sq {
                        mask.visible_ranges(b, h, i, shape.sq, shape.sk, &mut ranges);
                        let (row, lse) = (out.o_row(b, h, i), out.lse_at(b, h, i));
                        let ctx = format!("{name} {shape:?} b {b} h {h} i {i} (seed {seed})");
                        if ranges.is_empty() {
                            assert!(row.iter().all(|&x| x == 0.0), "{ctx}: {row:?}");
                            assert_eq!(lse, f64::NEG_INFINITY, "{ctx}");
                        } else {
                            assert!(
                                row.iter().all(|&x| (x - 1.0).abs() < 1e-13),
                                "{ctx}: {row:?}"
                            );
                            assert!(lse.is_finite(), "{ctx}: {lse}");
                        }
                    }
                }
            }
            assert!(out.o.iter().all(|x| !x.is_nan()) && out.lse.iter().all(|x| !x.is_nan()));
        }
    }
}

#[test]
fn causal_with_fewer_queries_than_keys() {
    let mut rng = Rng::fresh();
    let shape = Shape::new(1, 3, 10, 1, 1, 4);
    let (q, k, v) = qkv(&mut rng, &shape);
    let out = attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap();
    // The last query sees every key: same row as dense attention.
    let dense = attention_bshd(&q, &k, &v, &shape, &Mask::dense(), None).unwrap();
    assert!(max_diff(out.o_row(0, 0, 2), dense.o_row(0, 0, 2)) < 1e-14);
    assert!((out.lse_at(0, 0, 2) - dense.lse_at(0, 0, 2)).abs() < 1e-14);
    // Query 0 sits at position 7: it equals dense attention over the first 8 keys.
    let short = Shape::new(1, 1, 8, 1, 1, 4);
    let first = attention_bshd(&q[..4], &k[..32], &v[..32], &short, &Mask::dense(), None).unwrap();
    assert!(max_diff(out.o_row(0, 0, 0), &first.o) < 1e-14);
    assert!((out.lse_at(0, 0, 0) - first.lse[0]).abs() < 1e-14);
}

#[test]
fn causal_with_more_queries_than_keys() {
    let mut rng = Rng::fresh();
    let shape = Shape::new(1, 6, 2, 2, 1, 4);
    let (q, k, v) = qkv(&mut rng, &shape);
    let out = attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap();
    for h in 0..2 {
        // pos = i - 4: queries 0..=3 see nothing.
        for i in 0..4 {
            assert!(out.o_row(0, h, i).iter().all(|&x| x == 0.0));
            assert_eq!(out.lse_at(0, h, i), f64::NEG_INFINITY);
        }
        // Query 4 sees key 0 only: O = v0, lse = scaled score.
        let v0 = &v[..4];
        assert!(out
            .o_row(0, h, 4)
            .iter()
            .zip(v0)
            .all(|(&o, &x)| (o - f64::from(x)).abs() < 1e-14));
        let qk: f64 = q[(4 * 2 + h) * 4..][..4]
            .iter()
            .zip(&k[..4])
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        assert!((out.lse_at(0, h, 4) - qk / 2.0).abs() < 1e-14);
        assert!(out.lse_at(0, h, 5).is_finite());
    }
}

#[test]
fn empty_sequences() {
    let mut rng = Rng::fresh();
    // No keys: every row is empty.
    let shape = Shape::new(2, 3, 0, 2, 1, 4);
    let q = rng.normal_vec(shape.q_len());
    for mask in [Mask::dense(), Mask::causal(), Mask::streaming(1, 1)] {
        let out = attention_bshd(&q, &[], &[], &shape, &mask, None).unwrap();
        assert_eq!(out.o, vec![0.0; shape.q_len()]);
        assert_eq!(out.lse, vec![f64::NEG_INFINITY; shape.lse_len()]);
    }
    // No queries: empty outputs.
    let shape = Shape::new(2, 0, 5, 2, 1, 4);
    let k = rng.normal_vec(shape.kv_len());
    let out = attention_bshd(&[], &k, &k, &shape, &Mask::causal(), None).unwrap();
    assert!(out.o.is_empty() && out.lse.is_empty());
    // No batch.
    let shape = Shape::new(0, 4, 4, 1, 1, 4);
    let out = attention_bshd::<f32>(&[], &[], &[], &shape, &Mask::dense(), None).unwrap();
    assert!(out.o.is_empty() && out.lse.is_empty());
}

#[test]
fn streaming_with_window_covering_everything_is_causal() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    for shape in [
        Shape::new(1, 50, 50, 2, 1, 8),
        Shape::new(2, 20, 60, 2, 2, 8),
        Shape::new(1, 60, 20, 1, 1, 8),
    ] {
        let (q, k, v) = qkv(&mut rng, &shape);
        let causal = attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap();
        for mask in [
            Mask::streaming(0, shape.sk),
            Mask::streaming(3, shape.sk + 5),
            Mask::streaming(shape.sk, 1),
            Mask::streaming(0, usize::MAX),
        ] {
            let out = attention_bshd(&q, &k, &v, &shape, &mask, None).unwrap();
            assert_same(
                &format!("{mask:?} {shape:?}"),
                seed,
                (&out.o, &out.lse),
                (&causal.o, &causal.lse),
                0.0,
            );
        }
        // A window that does not cover everything differs.
        let narrow = attention_bshd(&q, &k, &v, &shape, &Mask::streaming(1, 4), None).unwrap();
        assert!(max_diff(&narrow.lse, &causal.lse) > 1e-6);
    }
}

#[test]
fn block_sparse_with_every_block_is_dense() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let shape = Shape::new(2, 45, 77, 4, 2, 8);
    let (q, k, v) = qkv(&mut rng, &shape);
    for causal in [false, true] {
        let dense = attention_bshd(&q, &k, &v, &shape, &Mask::Dense { causal }, None).unwrap();
        for (bq, bk) in [(1, 1), (16, 16), (7, 13), (64, 128)] {
            let bs = BlockSparse::all_blocks(bq, bk, causal, shape.sq, shape.sk).unwrap();
            let out = attention_bshd(&q, &k, &v, &shape, &Mask::BlockSparse(bs), None).unwrap();
            assert_same(
                &format!("all blocks {bq}x{bk} causal {causal}"),
                seed,
                (&out.o, &out.lse),
                (&dense.o, &dense.lse),
                1e-14,
            );
        }
    }
}

#[test]
fn block_sparse_keeps_exactly_the_listed_blocks() {
    // Query block 0 keeps key block 1 only; query block 1 keeps nothing.
    let shape = Shape::new(1, 4, 4, 1, 1, 2);
    let mut matrix = BlockMatrix::filled(1, 1, 2, 2, false);
    matrix.set(0, 0, 0, 1, true);
    let mask = Mask::BlockSparse(BlockSparse::from_matrix(2, 2, false, &matrix).unwrap());
    let q = vec![0.5f32; 8];
    let k = [1.0f32, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 2.0];
    let v = [1.0f32, 1.0, 2.0, 2.0, 3.0, 5.0, 7.0, 11.0];
    let out = attention_bshd(&q, &k, &v, &shape, &mask, Some(1.0)).unwrap();
    // Rows 0 and 1: keys 2 and 3, both scored 1.0 -> mean of v2, v3.
    for i in 0..2 {
        assert!(max_diff(out.o_row(0, 0, i), &[5.0, 8.0]) < 1e-14);
        assert!((out.lse_at(0, 0, i) - (1.0 + 2f64.ln())).abs() < 1e-14);
    }
    for i in 2..4 {
        assert_eq!(out.o_row(0, 0, i), &[0.0, 0.0]);
        assert_eq!(out.lse_at(0, 0, i), f64::NEG_INFINITY);
    }
}

/// Head `h` of `out` (all batches, all rows) as (o, lse).
fn head(out: &Output, h: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut o, mut lse) = (Vec::new(), Vec::new());
    for b in 0..out.batch() {
        for i in 0..out.seqlen(b) {
            o.extend_from_slice(out.o_row(b, h, i));
            lse.push(out.lse_at(b, h, i));
        }
    }
    (o, lse)
}

#[test]
fn mixed_heads_equal_single_variant_runs() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let shape = Shape::new(2, 70, 90, 6, 3, 16);
    let (q, k, v) = qkv(&mut rng, &shape);
    let (bq, bk) = (16, 32);
    let matrix = rng.block_matrix(2, 6, shape.sq.div_ceil(bq), shape.sk.div_ceil(bk), 0.5);
    let list = BlockSparse::from_matrix(bq, bk, true, &matrix).unwrap();
    let kinds = vec![
        HeadKind::DenseCausal,
        HeadKind::Dense,
        HeadKind::Streaming {
            sink: 4,
            window: 16,
        },
        HeadKind::BlockSparse,
        HeadKind::Streaming { sink: 0, window: 8 },
        HeadKind::BlockSparse,
    ];
    let mixed = Mask::Mixed {
        head_kind: kinds.clone(),
        block_sparse: Some(list.clone()),
    };
    let out = attention_bshd(&q, &k, &v, &shape, &mixed, None).unwrap();
    for (h, kind) in kinds.iter().enumerate() {
        let single = match *kind {
            HeadKind::Dense => Mask::dense(),
            HeadKind::DenseCausal => Mask::causal(),
            HeadKind::Streaming { sink, window } => Mask::streaming(sink, window),
            HeadKind::BlockSparse => Mask::BlockSparse(list.clone()),
        };
        let alone = attention_bshd(&q, &k, &v, &shape, &single, None).unwrap();
        let (got, want) = (head(&out, h), head(&alone, h));
        assert_same(
            &format!("mixed head {h} ({kind:?})"),
            seed,
            (&got.0, &got.1),
            (&want.0, &want.1),
            0.0,
        );
    }
}

#[test]
fn apb_without_anchor_or_passing_is_causal() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let shape = Shape::new(2, 75, 75, 4, 2, 16);
    let (q, k, v) = qkv(&mut rng, &shape);
    let apb = attention_bshd(&q, &k, &v, &shape, &Mask::apb(0, 0), None).unwrap();
    let causal = attention_bshd(&q, &k, &v, &shape, &Mask::causal(), None).unwrap();
    assert_same(
        "apb(0, 0)",
        seed,
        (&apb.o, &apb.lse),
        (&causal.o, &causal.lse),
        0.0,
    );
}

#[test]
fn apb_is_dense_prefix_merged_with_causal_local_block() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let (anchor, passing, local, hq, hkv, d) = (24, 40, 50, 4, 2, 16);
    let shape = Shape::new(1, local, anchor + passing + local, hq, hkv, d);
    let (q, k, v) = qkv(&mut rng, &shape);
    let apb = attention_bshd(&q, &k, &v, &shape, &Mask::apb(anchor, passing), None).unwrap();

    // Prefix (anchor + passing) keys: dense; local keys: causal over the local block.
    let split = (anchor + passing) * hkv * d;
    let prefix_shape = Shape::new(1, local, anchor + passing, hq, hkv, d);
    let prefix = attention_bshd(
        &q,
        &k[..split],
        &v[..split],
        &prefix_shape,
        &Mask::dense(),
        None,
    )
    .unwrap();
    let local_shape = Shape::new(1, local, local, hq, hkv, d);
    let local_part = attention_bshd(
        &q,
        &k[split..],
        &v[split..],
        &local_shape,
        &Mask::causal(),
        None,
    )
    .unwrap();
    let merged = merge(&prefix, &local_part);
    assert_same(
        "apb vs merged parts",
        seed,
        (&apb.o, &apb.lse),
        (&merged.o, &merged.lse),
        1e-13,
    );
}

#[test]
fn merging_key_halves_gives_full_attention() {
    let mut rng = Rng::fresh();
    let seed = rng.seed();
    let shape = Shape::new(2, 30, 40, 2, 2, 8);
    let (q, k, v) = qkv(&mut rng, &shape);
    let full = attention_bshd(&q, &k, &v, &shape, &Mask::dense(), None).unwrap();
    // Split each batch element's keys 0..25 | 25..40.
    let half_shape = |sk| Shape::new(2, 30, sk, 2, 2, 8);
    let cut = |data: &[f32], range: std::ops::Range<usize>| -> Vec<f32> {
        (0..2)
            .flat_map(|b| data[(b * 40 + range.start) * 16..(b * 40 + range.end) * 16].to_vec())
            .collect()
    };
    let (k1, v1, k2, v2) = (
        cut(&k, 0..25),
        cut(&v, 0..25),
        cut(&k, 25..40),
        cut(&v, 25..40),
    );
    let a = attention_bshd(&q, &k1, &v1, &half_shape(25), &Mask::dense(), None).unwrap();
    let b = attention_bshd(&q, &k2, &v2, &half_shape(15), &Mask::dense(), None).unwrap();
    let merged = merge(&a, &b);
    assert_same(
        "merged halves",
        seed,
        (&merged.o, &merged.lse),
        (&full.o, &full.lse),
        1e-13,
    );
}

#[test]
fn visible_pairs_count_flops() {
    let n = 100;
    assert_eq!(Mask::dense().visible_pairs(0, 2, n, n), 2 * (n * n) as u64);
    assert_eq!(
        Mask::causal().visible_pairs(0, 1, n, n),
        (n * (n + 1) / 2) as u64
    );
    // Streaming sink 4, window 10: row i sees min(i + 1, 10) window keys plus the sinks
    // outside the window.
    let want: u64 = (0..n)
        .map(|i| (i + 1).min(10) as u64 + (i + 1).saturating_sub(10).min(4) as u64)
        .sum();
    assert_eq!(Mask::streaming(4, 10).visible_pairs(0, 1, n, n), want);
}
