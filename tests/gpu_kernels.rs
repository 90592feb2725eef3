//! Numerics of every generated kernel against the f64 reference, on fresh random inputs with
//! poisoned outputs. Needs a CUDA GPU: run with `--include-ignored` (scripts/gpu-check.sh).
//! Tests named `sanitizer_*` are small and run under compute-sanitizer too.

mod common;

use common::{check, runtime, Case, CaseMask, ListHeads};
use flashgen_codegen::{search_space, DType, Mma, TileConfig, HEAD_DIMS};
use flashgen_runtime::{HeadKind, StreamingParams};

#[test]
#[ignore = "needs a CUDA GPU"]
fn dense_lengths_not_multiples_of_the_tile() {
    let rt = runtime();
    for causal in [false, true] {
        for n in [1, 17, 128, 1000, 4097] {
            check(&rt, &Case::dense(128, causal, n, n));
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn dense_sq_differs_from_sk_both_ways() {
    let rt = runtime();
    for causal in [false, true] {
        for (sq, sk) in [
            (17, 1000),
            (1000, 17),
            (1, 4097),
            (128, 1000),
            (1000, 128),
            (4097, 300),
        ] {
            let mut c = Case::dense(64, causal, sq, sk);
            c.dtype = DType::F16;
            check(&rt, &c);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gqa_ratios() {
    let rt = runtime();
    for hkv in [8, 2, 1] {
        for causal in [false, true] {
            let mut c = Case::dense(128, causal, 300, 517);
            c.hq = 8;
            c.hkv = hkv;
            check(&rt, &c);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn every_head_dim_and_dtype() {
    let rt = runtime();
    for d in HEAD_DIMS {
        for dtype in DType::ALL {
            for causal in [false, true] {
                let mut c = Case::dense(d as usize, causal, 257, 391);
                c.dtype = dtype;
                c.batch = 2;
                c.hq = 4;
                c.hkv = 2;
                check(&rt, &c);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn bhsd_layout_and_explicit_scale() {
    let rt = runtime();
    for causal in [false, true] {
        let mut c = Case::dense(128, causal, 333, 333);
        c.bhsd = true;
        c.batch = 2;
        c.scale = Some(0.05);
        check(&rt, &c);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn varlen_batch_of_mixed_lengths() {
    let rt = runtime();
    let lens = vec![
        (1, 1),
        (17, 40),
        (128, 128),
        (1000, 600),
        (0, 5),
        (300, 0),
        (77, 1000),
    ];
    for d in [64, 128] {
        for causal in [false, true] {
            let mut c = Case::dense(d, causal, 0, 0);
            c.varlen = Some(lens.clone());
            c.hq = 4;
            c.hkv = 2;
            check(&rt, &c);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn every_tile_config_of_the_search_space() {
    let rt = runtime();
    for d in [64, 128] {
        for causal in [false, true] {
            let probe = Case::dense(d, causal, 200, 333).spec(&rt);
            for tile in search_space(&probe.attention(), rt.arch()) {
                let mut c = Case::dense(d, causal, 200, 333);
                c.tile = Some(tile);
                check(&rt, &c);
            }
        }
    }
}

fn streaming(sink: usize, window: usize, sq: usize, sk: usize) -> Case {
    let mut c = Case::dense(128, false, sq, sk);
    c.mask = CaseMask::Streaming(StreamingParams { sink, window });
    c
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn streaming_sinks_and_windows() {
    let rt = runtime();
    for (sink, window) in [
        (0, 64),
        (1, 1),
        (4, 100),
        (64, 256),
        (128, 5000),
        (0, 0),
        (3, 0),
    ] {
        for (sq, sk) in [(1000, 1000), (300, 1000), (1000, 300), (1, 777)] {
            check(&rt, &streaming(sink, window, sq, sk));
        }
    }
    let mut c = streaming(16, 200, 1000, 1000);
    c.varlen = Some(vec![(100, 100), (0, 3), (500, 900)]);
    c.hq = 4;
    check(&rt, &c);
}

fn block_sparse(block_q: usize, block_k: usize, causal: bool, sq: usize, sk: usize) -> Case {
    let mut c = Case::dense(128, causal, sq, sk);
    c.mask = CaseMask::BlockSparse {
        block_q,
        block_k,
        density: 0.3,
        lists: ListHeads::PerQueryHead,
        empty_rows: true,
    };
    c
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn block_sparse_lists() {
    let rt = runtime();
    for causal in [false, true] {
        for (sq, sk) in [(1000, 1000), (517, 1300), (1300, 517)] {
            check(&rt, &block_sparse(128, 128, causal, sq, sk));
            check(&rt, &block_sparse(256, 128, causal, sq, sk));
            // Mask blocks larger than the key tile: each listed block is several tiles.
            let mut c = block_sparse(128, 256, causal, sq, sk);
            c.tile = Some(TileConfig::new(128, 64, 4, 1));
            check(&rt, &c);
            // Small blocks with a small tile, lists shared by all heads, GQA.
            let mut c = block_sparse(64, 64, causal, sq, sk);
            c.tile = Some(TileConfig::new(64, 64, 4, 1));
            c.hq = 4;
            c.hkv = 2;
            if let CaseMask::BlockSparse { lists, .. } = &mut c.mask {
                *lists = ListHeads::Shared;
            }
            check(&rt, &c);
            // One list per kv head, read by its GQA group (4 query heads each).
            let mut c = block_sparse(128, 128, causal, sq, sk);
            c.hq = 8;
            c.hkv = 2;
            if let CaseMask::BlockSparse { lists, .. } = &mut c.mask {
                *lists = ListHeads::PerKvHead;
            }
            check(&rt, &c);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn mixed_heads_in_one_launch() {
    let rt = runtime();
    use HeadKind::*;
    for causal in [false, true] {
        let mut c = Case::dense(128, causal, 700, 900);
        c.hq = 8;
        c.hkv = 2;
        c.mask = CaseMask::Mixed {
            kinds: vec![
                Streaming,
                DenseCausal,
                BlockSparse,
                Dense,
                Streaming,
                Streaming,
                DenseCausal,
                BlockSparse,
            ],
            streaming: StreamingParams {
                sink: 8,
                window: 100,
            },
            block_q: 128,
            block_k: 128,
        };
        check(&rt, &c);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn apb_anchor_passing_and_local_blocks() {
    let rt = runtime();
    // (anchor, passing, local): empty segments (host 0), ragged lengths, GQA.
    for (anchor, passing, local) in [
        (0, 0, 300),
        (64, 0, 257),
        (0, 200, 129),
        (100, 333, 517),
        (2048, 4096, 1000),
    ] {
        for d in [64, 128] {
            let mut c = Case::dense(d, false, local, anchor + passing + local);
            c.hq = 8;
            c.hkv = 2;
            c.mask = CaseMask::Apb { anchor, passing };
            check(&rt, &c);
        }
    }
    // Fewer queries than local keys (the last queries of the local block, bottom-right), with
    // and without a prefix.
    for (anchor, passing, local, queries) in
        [(100, 333, 517, 200), (0, 0, 300, 1), (64, 0, 257, 64)]
    {
        let mut c = Case::dense(128, false, queries, anchor + passing + local);
        c.hq = 4;
        c.hkv = 2;
        c.mask = CaseMask::Apb { anchor, passing };
        check(&rt, &c);
    }
    let mut c = Case::dense(128, false, 300, 700);
    c.mask = CaseMask::Apb {
        anchor: 150,
        passing: 250,
    };
    c.tile = Some(TileConfig::new(128, 64, 4, 1)); // the mma.sync mainloop too
    check(&rt, &c);
}

/// Small launches of each kernel family, also run under compute-sanitizer.
#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_small_launches() {
    let rt = runtime();
    for causal in [false, true] {
        let mut c = Case::dense(64, causal, 70, 90);
        c.hq = 2;
        c.hkv = 1;
        check(&rt, &c);
        let mut c = Case::dense(128, causal, 0, 0);
        c.varlen = Some(vec![(33, 50), (0, 7), (70, 0)]);
        check(&rt, &c);
        let mut c = Case::dense(128, causal, 130, 130);
        c.tile = Some(TileConfig::new(128, 64, 8, 2)); // two K/V stages
        check(&rt, &c);
        check(&rt, &block_sparse(128, 128, causal, 200, 300));
    }
    check(&rt, &streaming(4, 30, 150, 150));
    let mut c = Case::dense(64, false, 90, 90 + 70);
    c.mask = CaseMask::Apb {
        anchor: 30,
        passing: 40,
    };
    check(&rt, &c);
    let mut c = Case::dense(128, true, 150, 150);
    c.hq = 4;
    c.mask = CaseMask::Mixed {
        kinds: vec![
            HeadKind::Streaming,
            HeadKind::DenseCausal,
            HeadKind::BlockSparse,
            HeadKind::Dense,
        ],
        streaming: StreamingParams {
            sink: 4,
            window: 30,
        },
        block_q: 128,
        block_k: 128,
    };
    check(&rt, &c);
}

/// The pipelined wgmma tiles of the search space for head dim `d` (none off sm_90a).
fn pipelined_tiles(rt: &flashgen_runtime::Runtime, d: usize) -> Vec<TileConfig> {
    let probe = Case::dense(d, false, 64, 64).spec(rt);
    search_space(&probe.attention(), rt.arch())
        .into_iter()
        .filter(|t| t.mma == Mma::WgmmaPipelined)
        .collect()
}

/// Every variant through each pipelined wgmma tile at d128 (d64 through dense and streaming;
/// the search-space test covers plain dense for all): one- and two-tile loops (the peeled first
/// step and last P V), ragged ends, empty rows and long loops.
#[test]
#[ignore = "needs a CUDA GPU"]
fn pipelined_wgmma_every_variant() {
    let rt = runtime();
    for tile in pipelined_tiles(&rt, 64) {
        let mut c = Case::dense(64, true, 333, 1000);
        c.tile = Some(tile);
        check(&rt, &c);
        let mut c = streaming(128, 300, 1000, 1000);
        c.head_dim = 64;
        c.tile = Some(tile);
        check(&rt, &c);
    }
    for tile in pipelined_tiles(&rt, 128) {
        let with = |mut c: Case| {
            c.tile = Some(tile);
            c
        };
        for (sq, sk) in [(1, 1), (17, 100), (1000, 333), (515, 515)] {
            check(&rt, &with(Case::dense(128, true, sq, sk)));
        }
        check(&rt, &with(Case::dense(128, false, 333, 1000)));
        let mut c = with(Case::dense(128, true, 0, 0));
        c.varlen = Some(vec![(33, 200), (0, 7), (130, 0), (257, 257)]);
        c.hq = 4;
        c.hkv = 2;
        check(&rt, &c);
        for (sq, sk) in [(700, 700), (517, 900)] {
            check(&rt, &with(block_sparse(128, 128, true, sq, sk)));
        }
        let mut c = with(Case::dense(128, true, 700, 900));
        c.hq = 4;
        c.hkv = 2;
        c.mask = CaseMask::Mixed {
            kinds: vec![
                HeadKind::Streaming,
                HeadKind::DenseCausal,
                HeadKind::BlockSparse,
                HeadKind::Dense,
            ],
            streaming: StreamingParams {
                sink: 8,
                window: 100,
            },
            block_q: 128,
            block_k: 128,
        };
        check(&rt, &c);
        for (sink, window) in [(0, 64), (1, 1), (128, 300), (3, 0)] {
            for (sq, sk) in [(700, 700), (300, 900)] {
                check(&rt, &with(streaming(sink, window, sq, sk)));
            }
        }
        for (anchor, passing, local) in [(0, 0, 300), (100, 333, 517)] {
            let mut c = with(Case::dense(128, false, local, anchor + passing + local));
            c.hq = 4;
            c.hkv = 2;
            c.mask = CaseMask::Apb { anchor, passing };
            check(&rt, &c);
        }
        let mut c = with(Case::dense(128, true, 257, 391));
        c.dtype = DType::F16;
        c.bhsd = true;
        c.batch = 2;
        check(&rt, &c);
    }
}

/// Small launches of the pipelined wgmma loop, also run under compute-sanitizer.
#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_pipelined_wgmma() {
    let rt = runtime();
    // One warpgroup over 128 keys a step and two over 64: both barrier patterns.
    let tiles = pipelined_tiles(&rt, 128)
        .into_iter()
        .filter(|t| (t.block_m, t.block_n) == (64, 128) || (t.block_m, t.block_n) == (128, 64));
    for tile in tiles {
        for causal in [false, true] {
            let mut c = Case::dense(128, causal, 200, 300);
            c.tile = Some(tile);
            check(&rt, &c);
            let mut c = block_sparse(128, 128, causal, 200, 300);
            c.tile = Some(tile);
            check(&rt, &c);
        }
        let mut c = streaming(4, 30, 300, 300);
        c.tile = Some(tile);
        check(&rt, &c);
    }
}

/// Tuned launches choose a tile that divides the block list's blocks (64-token blocks at d64
/// do not fit the default tile) and run it correctly.
#[test]
#[ignore = "needs a CUDA GPU"]
fn tuned_launches_fit_the_block_size() {
    let rt = runtime();
    for (d, block_q, block_k) in [(64, 64, 64), (128, 64, 32), (64, 128, 64)] {
        let mut c = block_sparse(block_q, block_k, true, 700, 900);
        c.head_dim = d;
        c.tuned = true;
        check(&rt, &c);
    }
}

/// Masks `attention_tuned` measured before validating (and panicked on) are errors now.
#[test]
#[ignore = "needs a CUDA GPU"]
fn tuned_launches_reject_bad_masks_without_panicking() {
    use flashgen_codegen::{AttentionSpec, Variant};
    use flashgen_runtime::{AttentionArgs, BlockMask, Layout, Mask, Tensor, TensorMut};
    use half::bf16;
    let rt = runtime();
    let (sq, h, d) = (512, 4, 64);
    let layout = Layout::bshd(1, sq, h, d);
    let x = rt
        .stream()
        .clone_htod(&vec![bf16::from_f32(0.5); layout.numel()])
        .unwrap();
    let mut o = rt.stream().alloc_zeros::<bf16>(layout.numel()).unwrap();
    let mut run = |spec: &AttentionSpec, mask: Mask<'_>| {
        let args = AttentionArgs::new(
            Tensor { data: &x, layout },
            Tensor { data: &x, layout },
            Tensor { data: &x, layout },
            TensorMut {
                data: &mut o,
                layout,
            },
        )
        .mask(mask);
        rt.attention_tuned(spec, args)
    };
    let bs = AttentionSpec::new(Variant::BlockSparse, 64, DType::Bf16, false);
    // A list that covers 256 of the 512 queries.
    let short = rt
        .upload_block_mask(&BlockMask::from_dense(&[true; 4], 1, 1, 2, 2, 128, 256).unwrap())
        .unwrap();
    assert!(run(&bs, Mask::BlockSparse(&short)).is_err());
    // block_q = 0 never reaches the device.
    let mut zero = BlockMask::from_dense(&[true; 16], 1, 1, 4, 4, 128, 128).unwrap();
    zero.block_q = 0;
    assert!(rt.upload_block_mask(&zero).is_err());
    // Two lists for four query heads over four kv heads.
    let two = rt
        .upload_block_mask(&BlockMask::from_dense(&[true; 32], 1, 2, 4, 4, 128, 128).unwrap())
        .unwrap();
    assert!(run(&bs, Mask::BlockSparse(&two)).is_err());
    let kinds = rt.upload_head_kinds(&[HeadKind::BlockSparse; 4]).unwrap();
    let mixed = AttentionSpec::new(Variant::Mixed, 64, DType::Bf16, false);
    let mask = Mask::Mixed {
        heads: &kinds,
        streaming: None,
        block_list: Some(&two),
    };
    assert!(run(&mixed, mask).is_err());
}
