//! Launch planning without a GPU: every argument error `plan` reports, and the kernel parameters
//! and grid of valid launches. Pointers are plain numbers here.

use flashgen_codegen::variants::block_sparse::BlockListArgs;
use flashgen_codegen::variants::streaming::StreamingArgs;
use flashgen_codegen::variants::{apb, block_sparse, dense, mixed, streaming};
use flashgen_codegen::{parse_spec, Arch, DType, KernelSpec};
use flashgen_runtime::plan::{
    plan, BlockListArg, Buffer, HeadKindsArg, LaunchDesc, MaskArg, TensorArg, VarlenArg,
};
use flashgen_runtime::{BlockMask, Error, HeadKind, Layout, MaskError, Plan, StreamingParams};
use std::f32::consts::LOG2_E;

const Q_PTR: u64 = 0x7f00_0000_0000;
const K_PTR: u64 = 0x7f10_0000_0000;
const V_PTR: u64 = 0x7f20_0000_0000;
const O_PTR: u64 = 0x7f30_0000_0000;
const LSE_PTR: u64 = 0x7f40_0000_0000;
const CU_Q_PTR: u64 = 0x7f50_0000_0000;
const CU_K_PTR: u64 = 0x7f50_0000_1000;
const COUNT_PTR: u64 = 0x7f60_0000_0000;
const INDEX_PTR: u64 = 0x7f60_1000_0000;
const KINDS_PTR: u64 = 0x7f70_0000_0000;
const ORDER_PTR: u64 = 0x7f70_0000_1000;

/// The streaming block of a plan (a streaming kernel's).
fn streaming_args(p: &Plan) -> StreamingArgs {
    p.variant
        .get::<streaming::Params>()
        .expect("a streaming block")
        .streaming
}

/// The block list of a plan (a block-sparse kernel's).
fn list_args(p: &Plan) -> BlockListArgs {
    p.variant
        .get::<block_sparse::Params>()
        .expect("a block-sparse block")
        .list
}

fn mixed_params(p: &Plan) -> mixed::Params {
    p.variant.get::<mixed::Params>().expect("a mixed block")
}

fn apb_params(p: &Plan) -> apb::Params {
    p.variant.get::<apb::Params>().expect("an APB block")
}

fn spec(text: &str) -> KernelSpec {
    parse_spec(text, Arch::SM80).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A tensor whose buffer is exactly as long as its layout needs.
fn tensor(ptr: u64, layout: Layout) -> TensorArg {
    TensorArg {
        buffer: Buffer {
            ptr,
            len: layout.required_len(),
        },
        layout,
    }
}

/// A dense launch with Q and O in `q` and K and V in `k`, no lse, varlen or mask.
fn desc(dtype: DType, q: Layout, k: Layout) -> LaunchDesc<'static> {
    LaunchDesc {
        dtype,
        q: tensor(Q_PTR, q),
        k: tensor(K_PTR, k),
        v: tensor(V_PTR, k),
        o: tensor(O_PTR, q),
        lse: None,
        varlen: None,
        scale: None,
        mask: MaskArg::None,
        prefix: None,
    }
}

/// BSHD, batch 2, 256 queries over 384 keys, 4 heads of 64.
fn bshd64() -> LaunchDesc<'static> {
    desc(
        DType::Bf16,
        Layout::bshd(2, 256, 4, 64),
        Layout::bshd(2, 384, 4, 64),
    )
}

fn lse_buffer(len: usize) -> Option<Buffer> {
    Some(Buffer { ptr: LSE_PTR, len })
}

fn cu_buffer(ptr: u64, host: &[i32]) -> Buffer {
    Buffer {
        ptr,
        len: host.len(),
    }
}

fn varlen<'a>(host_q: &'a [i32], host_k: &'a [i32]) -> VarlenArg<'a> {
    VarlenArg {
        cu_seqlens_q: cu_buffer(CU_Q_PTR, host_q),
        cu_seqlens_k: cu_buffer(CU_K_PTR, host_k),
        host_q,
        host_k,
    }
}

fn block_list(mask: &BlockMask) -> BlockListArg<'_> {
    BlockListArg {
        mask,
        kv_count: Buffer {
            ptr: COUNT_PTR,
            len: mask.kv_count.len(),
        },
        kv_index: Buffer {
            ptr: INDEX_PTR,
            len: mask.kv_index.len(),
        },
    }
}

fn head_kinds(kinds: &[HeadKind]) -> HeadKindsArg<'_> {
    HeadKindsArg {
        kinds,
        kinds_dev: Buffer {
            ptr: KINDS_PTR,
            len: kinds.len(),
        },
        order_dev: Buffer {
            ptr: ORDER_PTR,
            len: kinds.len(),
        },
    }
}

/// A block list over `sq` x `sk` keeping the lower-triangular blocks (plus all of the first
/// column), one list per head for `heads` > 1.
fn tril_blocks(
    batch: usize,
    heads: usize,
    sq: usize,
    sk: usize,
    block_q: usize,
    block_k: usize,
) -> BlockMask {
    let (qb, kb) = (sq.div_ceil(block_q), sk.div_ceil(block_k));
    let keep: Vec<bool> = (0..batch * heads * qb * kb)
        .map(|x| {
            let (row, col) = (x / kb % qb, x % kb);
            col == 0 || col * block_k <= row * block_q
        })
        .collect();
    BlockMask::from_dense(&keep, batch, heads, qb, kb, block_q, block_k).unwrap()
}

fn streaming() -> StreamingParams {
    StreamingParams {
        sink: 16,
        window: 128,
    }
}

#[track_caller]
fn assert_invalid(result: flashgen_runtime::Result<Plan>, arg: &str, phrase: &str) {
    match result {
        Err(Error::InvalidArgument { arg: got, reason }) => {
            assert_eq!(got, arg, "wrong argument named; reason: {reason}");
            assert!(
                reason.contains(phrase),
                "reason for `{arg}` lacks {phrase:?}: {reason}"
            );
        }
        other => panic!("expected an invalid `{arg}` ({phrase:?}), got {other:?}"),
    }
}

#[track_caller]
fn assert_mask_error(
    result: flashgen_runtime::Result<Plan>,
    matches: impl Fn(&MaskError) -> bool,
    phrase: &str,
) {
    match result {
        Err(Error::Mask(e)) => {
            assert!(matches(&e), "unexpected mask error: {e:?}");
            let text = Error::Mask(e).to_string();
            assert!(text.contains(phrase), "message lacks {phrase:?}: {text}");
        }
        other => panic!("expected a mask error ({phrase:?}), got {other:?}"),
    }
}

#[test]
fn the_base_launch_is_valid() {
    plan(&spec("dense,d64,bf16,m128n64w4s1"), &bshd64()).unwrap();
}

#[test]
fn an_invalid_spec_is_a_spec_error_not_a_panic() {
    let mut s = spec("dense,d64,bf16,m128n64w4s1");
    s.tile.block_m = 0;
    match plan(&s, &bshd64()) {
        Err(Error::Spec(e)) => assert_eq!(e.field(), "block_m"),
        other => panic!("expected a spec error, got {other:?}"),
    }
    let mut s = spec("dense,d64,bf16,m128n64w4s1");
    s.head_dim = 48;
    assert!(matches!(plan(&s, &bshd64()), Err(Error::Spec(_))));
}

#[test]
fn layouts_addressing_more_than_memory_are_rejected() {
    // Strides whose largest offset overflows 64 bits must not wrap to a small length.
    let mut d = desc(
        DType::Bf16,
        Layout::bshd(3, 256, 4, 64),
        Layout::bshd(3, 384, 4, 64),
    );
    d.k.layout.strides[0] = 1 << 63;
    d.k.buffer.len = 1 << 20;
    assert_eq!(d.k.layout.required_len(), usize::MAX);
    assert_invalid(
        plan(&spec("dense,d64,bf16,m128n64w4s1"), &d),
        "k",
        "addresses",
    );
}

// ---- tensors ----

#[test]
fn dtype_mismatch() {
    let d = LaunchDesc {
        dtype: DType::F16,
        ..bshd64()
    };
    assert_invalid(
        plan(&spec("dense,d64,bf16"), &d),
        "dtype",
        "tensors are f16, the kernel was generated for bf16",
    );
    let f16 = spec("dense,d64,f16");
    assert_invalid(plan(&f16, &bshd64()), "dtype", "generated for f16");
}

/// Applies `change` to the named tensor of the base launch.
fn with_tensor(name: &str, change: impl Fn(&mut TensorArg)) -> LaunchDesc<'static> {
    let mut d = bshd64();
    let t = match name {
        "q" => &mut d.q,
        "k" => &mut d.k,
        "v" => &mut d.v,
        "o" => &mut d.o,
        _ => unreachable!(),
    };
    change(t);
    d
}

#[test]
fn head_dim_mismatch() {
    let s = spec("dense,d64,bf16");
    for name in ["q", "k", "v", "o"] {
        let d = with_tensor(name, |t| {
            let l = t.layout;
            *t = tensor(t.buffer.ptr, Layout::bshd(l.batch, l.seq, l.heads, 128));
        });
        assert_invalid(
            plan(&s, &d),
            name,
            "head dim is 128, the kernel was generated for 64",
        );
    }
}

#[test]
fn head_dim_must_be_contiguous() {
    let s = spec("dense,d64,bf16");
    for name in ["q", "k", "v", "o"] {
        let d = with_tensor(name, |t| {
            let l = t.layout;
            let strided = l.with_strides([l.strides[0] * 2, l.strides[1] * 2, 128, 2]);
            *t = tensor(t.buffer.ptr, strided);
        });
        assert_invalid(
            plan(&s, &d),
            name,
            "must be contiguous (stride 1), got stride 2",
        );
    }
}

#[test]
fn strides_must_be_multiples_of_8() {
    let s = spec("dense,d64,bf16");
    for (axis, axis_name) in [(0, "batch"), (1, "seq"), (2, "heads")] {
        for name in ["q", "k", "v", "o"] {
            let d = with_tensor(name, |t| {
                let mut strides = t.layout.strides;
                strides[axis] += 4;
                *t = tensor(t.buffer.ptr, t.layout.with_strides(strides));
            });
            assert_invalid(plan(&s, &d), name, &format!("{axis_name} stride"));
            let reason = match plan(&s, &d) {
                Err(Error::InvalidArgument { reason, .. }) => reason,
                other => panic!("{other:?}"),
            };
            assert!(reason.contains("not a multiple of 8 elements"), "{reason}");
        }
    }
}

#[test]
fn base_pointers_must_be_16_byte_aligned() {
    let s = spec("dense,d64,bf16");
    for name in ["q", "k", "v", "o"] {
        for offset in [2, 8] {
            let d = with_tensor(name, |t| t.buffer.ptr += offset);
            assert_invalid(plan(&s, &d), name, "is not 16-byte aligned");
        }
    }
}

#[test]
fn buffers_must_hold_their_layout() {
    let s = spec("dense,d64,bf16");
    for name in ["q", "k", "v", "o"] {
        let d = with_tensor(name, |t| t.buffer.len -= 1);
        assert_invalid(plan(&s, &d), name, "elements, its layout addresses");
    }
    // A padded layout needs its padding inside the buffer too.
    let padded = Layout::bshd(2, 256, 4, 64).with_strides([256 * 512, 512, 64, 1]);
    let mut d = bshd64();
    d.q = TensorArg {
        buffer: Buffer {
            ptr: Q_PTR,
            len: 2 * 256 * 4 * 64,
        },
        layout: padded,
    };
    d.o = tensor(O_PTR, padded);
    assert_invalid(
        plan(&s, &d),
        "q",
        &format!(
            "buffer has {} elements, its layout addresses {}",
            2 * 256 * 4 * 64,
            padded.required_len()
        ),
    );
}

#[test]
fn counts_out_of_range() {
    let s = spec("dense,d64,bf16");
    let huge = Layout::bshd(1, 4, 65_536, 64);
    let d = desc(DType::Bf16, huge, huge);
    assert_invalid(plan(&s, &d), "q", "out of range");
}

#[test]
fn output_must_have_q_shape() {
    let s = spec("dense,d64,bf16");
    for o in [
        Layout::bshd(2, 255, 4, 64),
        Layout::bshd(1, 256, 4, 64),
        Layout::bshd(2, 256, 2, 64),
    ] {
        let d = LaunchDesc {
            o: tensor(O_PTR, o),
            ..bshd64()
        };
        assert_invalid(plan(&s, &d), "o", "must have q's shape");
    }
}

#[test]
fn v_must_have_k_shape() {
    let s = spec("dense,d64,bf16");
    for v in [
        Layout::bshd(2, 383, 4, 64),
        Layout::bshd(1, 384, 4, 64),
        Layout::bshd(2, 384, 2, 64),
    ] {
        let d = LaunchDesc {
            v: tensor(V_PTR, v),
            ..bshd64()
        };
        assert_invalid(plan(&s, &d), "v", "must have k's shape");
    }
}

#[test]
fn batch_mismatch() {
    let d = desc(
        DType::Bf16,
        Layout::bshd(2, 256, 4, 64),
        Layout::bshd(3, 384, 4, 64),
    );
    assert_invalid(
        plan(&spec("dense,d64,bf16"), &d),
        "k",
        "batch 3 differs from q's 2",
    );
}

#[test]
fn query_heads_must_be_a_multiple_of_kv_heads() {
    let d = desc(
        DType::Bf16,
        Layout::bshd(1, 64, 6, 64),
        Layout::bshd(1, 64, 4, 64),
    );
    assert_invalid(
        plan(&spec("dense,d64,bf16"), &d),
        "k",
        "query heads (6) must be a positive multiple of kv heads (4)",
    );
    // More kv heads than query heads.
    let d = desc(
        DType::Bf16,
        Layout::bshd(1, 64, 2, 64),
        Layout::bshd(1, 64, 4, 64),
    );
    assert_invalid(plan(&spec("dense,d64,bf16"), &d), "k", "positive multiple");
}

#[test]
fn zero_heads() {
    let s = spec("dense,d64,bf16");
    for (hq, hkv) in [(0, 4), (4, 0), (0, 0)] {
        let d = desc(
            DType::Bf16,
            Layout::bshd(1, 64, hq, 64),
            Layout::bshd(1, 64, hkv, 64),
        );
        if hq == 0 {
            assert_invalid(plan(&s, &d), "q", "has no heads");
        } else {
            assert_invalid(
                plan(&s, &d),
                "k",
                &format!("query heads ({hq}) must be a positive multiple of kv heads ({hkv})"),
            );
        }
    }
}

#[test]
fn bad_scale() {
    let s = spec("dense,d64,bf16");
    for scale in [
        0.0,
        -0.0,
        -0.125,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        let d = LaunchDesc {
            scale: Some(scale),
            ..bshd64()
        };
        assert_invalid(plan(&s, &d), "scale", "must be finite and positive");
    }
}

// ---- varlen ----

/// Packed Q of `tq` tokens and K/V of `tk` tokens, 4 query and 2 kv heads of 64.
fn packed(tq: usize, tk: usize) -> LaunchDesc<'static> {
    desc(
        DType::Bf16,
        Layout::packed(tq, 4, 64),
        Layout::packed(tk, 2, 64),
    )
}

#[test]
fn varlen_given_to_a_fixed_length_kernel() {
    let (cq, ck) = ([0, 10, 20], [0, 12, 30]);
    let d = LaunchDesc {
        varlen: Some(varlen(&cq, &ck)),
        ..packed(20, 30)
    };
    assert_invalid(
        plan(&spec("dense,d64,bf16"), &d),
        "varlen",
        "not generated with varlen",
    );
}

#[test]
fn varlen_missing_for_a_varlen_kernel() {
    assert_invalid(
        plan(&spec("dense,d64,bf16,varlen"), &packed(20, 30)),
        "varlen",
        "cu_seqlens are required",
    );
}

#[test]
fn varlen_needs_packed_layouts() {
    let s = spec("dense,d64,bf16,varlen");
    let (cq, ck) = ([0, 10, 20], [0, 12, 30]);
    let unpacked_q = desc(
        DType::Bf16,
        Layout::bshd(2, 10, 4, 64),
        Layout::packed(30, 2, 64),
    );
    let unpacked_k = desc(
        DType::Bf16,
        Layout::packed(20, 4, 64),
        Layout::bshd(2, 15, 2, 64),
    );
    for base in [unpacked_q, unpacked_k] {
        let d = LaunchDesc {
            varlen: Some(varlen(&cq, &ck)),
            ..base
        };
        // One side unpacked: the batch sizes differ before varlen is looked at.
        assert_invalid(plan(&s, &d), "k", "differs from q's");
    }
    // Same batch on both sides, but not 1.
    let d = LaunchDesc {
        varlen: Some(varlen(&cq, &ck)),
        ..desc(
            DType::Bf16,
            Layout::bshd(2, 10, 4, 64),
            Layout::bshd(2, 15, 2, 64),
        )
    };
    assert_invalid(
        plan(&s, &d),
        "varlen",
        "must be packed [tokens, heads, dim]",
    );
}

#[track_caller]
fn assert_cu_invalid(cq: &[i32], ck: &[i32], arg: &str, phrase: &str) {
    let d = LaunchDesc {
        varlen: Some(varlen(cq, ck)),
        ..packed(20, 30)
    };
    assert_invalid(plan(&spec("dense,d64,bf16,varlen"), &d), arg, phrase);
}

#[test]
fn cu_seqlens_wrong_length() {
    assert_cu_invalid(&[0], &[0, 30], "cu_seqlens_q", "b + 1 >= 2");
    assert_cu_invalid(&[], &[0, 30], "cu_seqlens_q", "b + 1 >= 2");
    assert_cu_invalid(
        &[0, 10, 20],
        &[0, 30],
        "cu_seqlens_k",
        "has 2 entries, expected batch + 1 = 3",
    );
    assert_cu_invalid(
        &[0, 20],
        &[0, 10, 30],
        "cu_seqlens_k",
        "has 3 entries, expected batch + 1 = 2",
    );
}

#[test]
fn cu_seqlens_must_start_at_zero() {
    assert_cu_invalid(
        &[2, 10, 20],
        &[0, 12, 30],
        "cu_seqlens_q",
        "must start at 0, starts at 2",
    );
    assert_cu_invalid(
        &[0, 10, 20],
        &[-1, 12, 30],
        "cu_seqlens_k",
        "must start at 0, starts at -1",
    );
}

#[test]
fn cu_seqlens_must_not_decrease() {
    assert_cu_invalid(
        &[0, 12, 8, 20],
        &[0, 10, 20, 30],
        "cu_seqlens_q",
        "decreases at batch 1: 12 then 8",
    );
    assert_cu_invalid(
        &[0, 8, 12, 20],
        &[0, 10, 9, 30],
        "cu_seqlens_k",
        "decreases at batch 1: 10 then 9",
    );
}

#[test]
fn cu_seqlens_must_stay_within_the_tokens() {
    assert_cu_invalid(
        &[0, 10, 21],
        &[0, 12, 30],
        "cu_seqlens_q",
        "ends at 21 but the packed tensor has 20 tokens",
    );
    assert_cu_invalid(
        &[0, 10, 20],
        &[0, 12, 31],
        "cu_seqlens_k",
        "ends at 31 but the packed tensor has 30 tokens",
    );
}

#[test]
fn cu_seqlens_device_copy_too_short() {
    let s = spec("dense,d64,bf16,varlen");
    let (cq, ck) = ([0, 10, 20], [0, 12, 30]);
    let mut vl = varlen(&cq, &ck);
    vl.cu_seqlens_q.len = 2;
    let d = LaunchDesc {
        varlen: Some(vl),
        ..packed(20, 30)
    };
    assert_invalid(
        plan(&s, &d),
        "cu_seqlens_q",
        "device copy has 2 entries, expected 3",
    );
    let mut vl = varlen(&cq, &ck);
    vl.cu_seqlens_k.len = 0;
    let d = LaunchDesc {
        varlen: Some(vl),
        ..packed(20, 30)
    };
    assert_invalid(
        plan(&s, &d),
        "cu_seqlens_k",
        "device copy has 0 entries, expected 3",
    );
}

// ---- lse ----

#[test]
fn lse_missing() {
    assert_invalid(
        plan(&spec("dense,d64,bf16,lse"), &bshd64()),
        "lse",
        "an lse buffer is required",
    );
}

#[test]
fn lse_unexpected() {
    let d = LaunchDesc {
        lse: lse_buffer(2 * 4 * 256),
        ..bshd64()
    };
    assert_invalid(
        plan(&spec("dense,d64,bf16"), &d),
        "lse",
        "generated without lse output",
    );
}

#[test]
fn lse_too_small() {
    let s = spec("dense,d64,bf16,lse");
    let need = 2 * 4 * 256;
    let d = LaunchDesc {
        lse: lse_buffer(need - 1),
        ..bshd64()
    };
    assert_invalid(
        plan(&s, &d),
        "lse",
        &format!("buffer has {} elements, needs {need}", need - 1),
    );
    // Varlen: heads x packed tokens.
    let vs = spec("dense,d64,bf16,lse,varlen");
    let (cq, ck) = ([0, 10, 20], [0, 12, 30]);
    let d = LaunchDesc {
        varlen: Some(varlen(&cq, &ck)),
        lse: lse_buffer(4 * 20 - 1),
        ..packed(20, 30)
    };
    assert_invalid(plan(&vs, &d), "lse", "needs 80");
}

#[test]
fn lse_unaligned() {
    let d = LaunchDesc {
        lse: Some(Buffer {
            ptr: LSE_PTR + 2,
            len: 2 * 4 * 256,
        }),
        ..bshd64()
    };
    assert_invalid(
        plan(&spec("dense,d64,bf16,lse"), &d),
        "lse",
        "not 4-byte aligned",
    );
}

// ---- variant arguments ----

#[test]
fn mask_arguments_must_fit_the_variant() {
    let list = tril_blocks(2, 1, 256, 384, 128, 64);
    let kinds = [HeadKind::Dense; 4];
    let args = [
        ("none", MaskArg::None),
        ("streaming", MaskArg::Streaming(streaming())),
        ("block-sparse", MaskArg::BlockSparse(block_list(&list))),
        (
            "mixed",
            MaskArg::Mixed {
                heads: head_kinds(&kinds),
                streaming: None,
                block_list: None,
            },
        ),
    ];
    let kernels = [
        ("none", spec("dense,d64,bf16,m128n64w4s1")),
        ("streaming", spec("streaming,d64,bf16,m128n64w4s1")),
        ("block-sparse", spec("block-sparse,d64,bf16,m128n64w4s1")),
        ("mixed", spec("mixed,d64,bf16,m128n64w4s1")),
    ];
    for (kernel_kind, s) in &kernels {
        for (arg_kind, mask) in &args {
            let d = LaunchDesc {
                mask: *mask,
                ..bshd64()
            };
            let result = plan(s, &d);
            if kernel_kind == arg_kind {
                result.unwrap_or_else(|e| panic!("{s} with {arg_kind} arguments: {e}"));
            } else {
                assert_invalid(
                    result,
                    "mask",
                    &format!("the arguments do not fit a {} kernel", s.variant),
                );
            }
        }
    }
}

/// Sink and window past the key length change no visible pair: the kernel gets them clamped to
/// the keys, which keeps its 32-bit window arithmetic (`p_lo - window + 1`) in range even when
/// `sq > sk` and the window is near 2^31.
#[test]
fn streaming_parameters_are_clamped_to_the_keys() {
    let s = spec("streaming,d64,bf16");
    for (sink, window, want) in [
        (1 << 31, 128, (384, 128)),
        (4, usize::MAX, (4, 384)),
        (1 << 32, (1 << 31) - 1, (384, 384)),
        (16, 100, (16, 100)),
    ] {
        let d = LaunchDesc {
            mask: MaskArg::Streaming(StreamingParams { sink, window }),
            ..bshd64()
        };
        let a = streaming_args(&plan(&s, &d).unwrap());
        assert_eq!((a.sink, a.window), want, "sink {sink} window {window}");
    }
    // More queries than keys (positions start below zero) with a window near 2^31.
    let d = LaunchDesc {
        mask: MaskArg::Streaming(StreamingParams {
            sink: 0,
            window: (1 << 31) - 2,
        }),
        ..desc(
            DType::Bf16,
            Layout::bshd(1, 4000, 4, 64),
            Layout::bshd(1, 10, 4, 64),
        )
    };
    let p = plan(&s, &d).unwrap();
    let window = streaming_args(&p).window;
    assert_eq!(window, 10);
    let lowest_window_start = -(p.params.seqlen_q as i64) - window as i64 + 1;
    assert!(lowest_window_start > i32::MIN as i64);
}

#[test]
fn positions_must_fit_32_bits() {
    // 2^31 - 1 queries and 2 keys: position i + sk - sq overflows the kernel's int.
    let q = Layout::packed(1 << 30, 1, 64).with_strides([0, 8, 8, 1]);
    let k = Layout::packed(1 << 30, 1, 64).with_strides([0, 8, 8, 1]);
    let d = desc(DType::Bf16, q, k);
    assert_invalid(plan(&spec("dense,d64,bf16"), &d), "seq", "exceed 2^31 - 1");
}

#[test]
fn block_q_must_be_a_multiple_of_block_m() {
    let s = spec("block-sparse,d64,bf16,m128n64w4s1");
    let list = tril_blocks(2, 1, 256, 384, 64, 64);
    let d = LaunchDesc {
        mask: MaskArg::BlockSparse(block_list(&list)),
        ..bshd64()
    };
    assert_invalid(
        plan(&s, &d),
        "block_q",
        "mask block_q = 64 must be a multiple of the tile's block_m = 128",
    );
    // The same list fits a tile of 64 rows.
    plan(&spec("block-sparse,d64,bf16,m64n64w4s1"), &d).unwrap();
}

#[test]
fn block_k_must_be_a_multiple_of_block_n() {
    let s = spec("block-sparse,d64,bf16,m128n64w4s1");
    let list = tril_blocks(2, 1, 256, 384, 128, 32);
    let d = LaunchDesc {
        mask: MaskArg::BlockSparse(block_list(&list)),
        ..bshd64()
    };
    assert_invalid(
        plan(&s, &d),
        "block_k",
        "mask block_k = 32 must be a multiple of the tile's block_n = 64",
    );
    plan(&spec("block-sparse,d64,bf16,m128n32w4s1"), &d).unwrap();
}

#[test]
fn block_lists_may_have_one_list_per_kv_head() {
    let s = spec("block-sparse,d64,bf16,m128n64w4s1");
    let gqa = desc(
        DType::Bf16,
        Layout::bshd(2, 256, 8, 64),
        Layout::bshd(2, 384, 2, 64),
    );
    for (heads, ok) in [(1, true), (2, true), (8, true), (4, false), (3, false)] {
        let m = tril_blocks(2, heads, 256, 384, 128, 64);
        let d = LaunchDesc {
            mask: MaskArg::BlockSparse(block_list(&m)),
            ..gqa
        };
        match plan(&s, &d) {
            Ok(p) if ok => assert_eq!(list_args(&p).list_heads, heads as i32),
            Err(Error::Mask(MaskError::Heads { got, .. })) if !ok => assert_eq!(got, heads),
            other => panic!("{heads} list heads: {other:?}"),
        }
    }
}

/// Block sizes are narrowed to the kernel's `int`: 2^31 would turn negative and 2^32 into 0
/// (a division by zero in the kernel).
#[test]
fn block_sizes_must_fit_32_bits() {
    let s = spec("block-sparse,d64,bf16,m128n64w4s1");
    for (field, value) in [
        ("block_q", 1usize << 32),
        ("block_q", 1 << 31),
        ("block_k", 1 << 32),
    ] {
        // One block each way covers the whole problem.
        let mut m = BlockMask::from_dense(&[true; 8], 2, 4, 1, 1, 1 << 20, 1 << 20).unwrap();
        match field {
            "block_q" => m.block_q = value,
            _ => m.block_k = value,
        }
        let d = LaunchDesc {
            mask: MaskArg::BlockSparse(block_list(&m)),
            ..bshd64()
        };
        assert_mask_error(
            plan(&s, &d),
            |e| matches!(e, MaskError::TooLarge { field: f, .. } if *f == field),
            "32-bit",
        );
    }
}

#[test]
fn bad_block_lists_are_rejected_by_validation() {
    let s = spec("block-sparse,d64,bf16,m128n64w4s1");
    let good = tril_blocks(2, 4, 256, 384, 128, 64);
    let run = |m: &BlockMask| {
        let d = LaunchDesc {
            mask: MaskArg::BlockSparse(block_list(m)),
            ..bshd64()
        };
        plan(&s, &d)
    };
    run(&good).unwrap();

    let mut m = good.clone();
    m.kv_index[1] = m.kv_index[0]; // row 0 lists [0, 0, ..]
    m.kv_count[0] = 2;
    assert_mask_error(
        run(&m),
        |e| matches!(e, MaskError::NotAscending { .. }),
        "not strictly ascending",
    );

    let mut m = good.clone();
    m.kv_index[0] = 6; // 384 / 64 = 6 key blocks: 0..6
    assert_mask_error(
        run(&m),
        |e| matches!(e, MaskError::IndexRange { index: 6, .. }),
        "is outside 0..6",
    );

    let mut m = good.clone();
    m.kv_count[3] = m.max_blocks as i32 + 1;
    assert_mask_error(
        run(&m),
        |e| matches!(e, MaskError::Count { .. }),
        "kv_count[0, 1, 1]",
    );

    // Two lists for 4 query heads over 4 kv heads: neither shared, per kv head nor per head.
    let m = tril_blocks(2, 2, 256, 384, 128, 64);
    assert_mask_error(
        run(&m),
        |e| {
            matches!(
                e,
                MaskError::Heads {
                    got: 2,
                    heads_q: 4,
                    heads_kv: 4
                }
            )
        },
        "allowed: 1 (shared by all heads), 4 (one per kv head) or 4",
    );

    let wrong_batch = tril_blocks(1, 4, 256, 384, 128, 64);
    assert_mask_error(
        run(&wrong_batch),
        |e| {
            matches!(
                e,
                MaskError::Length {
                    what: "block list batch",
                    ..
                }
            )
        },
        "block list batch has 1 entries, expected 2",
    );

    let too_few_rows = tril_blocks(2, 4, 128, 384, 128, 64);
    assert_mask_error(
        run(&too_few_rows),
        |e| {
            matches!(
                e,
                MaskError::Coverage {
                    what: "query blocks",
                    ..
                }
            )
        },
        "but the sequence needs 2",
    );

    let wrong_keys = tril_blocks(2, 4, 256, 512, 128, 64);
    assert_mask_error(
        run(&wrong_keys),
        |e| {
            matches!(
                e,
                MaskError::Coverage {
                    what: "key blocks",
                    ..
                }
            )
        },
        "covers 8 key blocks",
    );

    let mut m = good.clone();
    m.kv_index.pop();
    assert_mask_error(
        run(&m),
        |e| {
            matches!(
                e,
                MaskError::Length {
                    what: "kv_index",
                    ..
                }
            )
        },
        "kv_index has",
    );

    let mut m = good.clone();
    m.block_q = 0;
    assert_mask_error(
        run(&m),
        |e| {
            matches!(
                e,
                MaskError::NotPositive {
                    field: "block_q",
                    ..
                }
            )
        },
        "must be positive",
    );
}

#[test]
fn block_list_device_copy_too_short() {
    let s = spec("block-sparse,d64,bf16,m128n64w4s1");
    let m = tril_blocks(2, 1, 256, 384, 128, 64);
    for shorten_index in [false, true] {
        let mut list = block_list(&m);
        if shorten_index {
            list.kv_index.len -= 1;
        } else {
            list.kv_count.len -= 1;
        }
        let d = LaunchDesc {
            mask: MaskArg::BlockSparse(list),
            ..bshd64()
        };
        assert_invalid(
            plan(&s, &d),
            "block_list",
            "device copy is shorter than the host copy",
        );
    }
}

#[test]
fn mixed_head_kinds_must_match_the_query_heads() {
    let s = spec("mixed,d64,bf16,m128n64w4s1");
    for n in [3, 5, 0] {
        let kinds = vec![HeadKind::Dense; n];
        let d = LaunchDesc {
            mask: MaskArg::Mixed {
                heads: head_kinds(&kinds),
                streaming: None,
                block_list: None,
            },
            ..bshd64()
        };
        assert_invalid(
            plan(&s, &d),
            "head_kind",
            &format!("has {n} entries, expected one per query head (4)"),
        );
    }
    let kinds = [HeadKind::Dense; 4];
    for shorten_order in [false, true] {
        let mut heads = head_kinds(&kinds);
        if shorten_order {
            heads.order_dev.len = 3;
        } else {
            heads.kinds_dev.len = 3;
        }
        let d = LaunchDesc {
            mask: MaskArg::Mixed {
                heads,
                streaming: None,
                block_list: None,
            },
            ..bshd64()
        };
        assert_invalid(
            plan(&s, &d),
            "head_kind",
            "device copy is shorter than the host copy",
        );
    }
}

#[test]
fn mixed_streaming_heads_need_parameters() {
    let s = spec("mixed,d64,bf16,m128n64w4s1");
    let kinds = [
        HeadKind::Dense,
        HeadKind::Streaming,
        HeadKind::DenseCausal,
        HeadKind::Dense,
    ];
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&kinds),
            streaming: None,
            block_list: None,
        },
        ..bshd64()
    };
    assert_invalid(
        plan(&s, &d),
        "streaming",
        "streaming heads need sink and window",
    );
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&kinds),
            streaming: Some(StreamingParams {
                sink: 1 << 31,
                window: 1,
            }),
            block_list: None,
        },
        ..bshd64()
    };
    // Clamped to the 384 keys (no visible pair changes).
    let a = mixed_params(&plan(&s, &d).unwrap()).streaming;
    assert_eq!((a.sink, a.window), (384, 1));
}

#[test]
fn mixed_block_sparse_heads_need_a_list() {
    let s = spec("mixed,d64,bf16,m128n64w4s1");
    let kinds = [
        HeadKind::BlockSparse,
        HeadKind::Dense,
        HeadKind::Dense,
        HeadKind::Dense,
    ];
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&kinds),
            streaming: None,
            block_list: None,
        },
        ..bshd64()
    };
    assert_invalid(
        plan(&s, &d),
        "block_list",
        "block-sparse heads need a block list",
    );
    // A list is checked like a block-sparse kernel's.
    let coarse = tril_blocks(2, 1, 256, 384, 64, 64);
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&kinds),
            streaming: None,
            block_list: Some(block_list(&coarse)),
        },
        ..bshd64()
    };
    assert_invalid(plan(&s, &d), "block_q", "multiple of the tile's block_m");
    let mut bad = tril_blocks(2, 1, 256, 384, 128, 64);
    bad.kv_index[0] = -1;
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&kinds),
            streaming: None,
            block_list: Some(block_list(&bad)),
        },
        ..bshd64()
    };
    assert_mask_error(
        plan(&s, &d),
        |e| matches!(e, MaskError::IndexRange { index: -1, .. }),
        "kv_index[0, 0, 0, 0] = -1",
    );
}

// ---- valid launches: parameters and grid ----

#[test]
fn bshd_dense_causal() {
    let s = spec("dense,d64,bf16,causal,m128n64w4s1");
    let p = plan(&s, &bshd64()).unwrap();
    assert_eq!(p.grid, Some((2, 4, 2)));
    let f = &p.params;
    assert_eq!((f.q, f.k, f.v, f.o), (Q_PTR, K_PTR, V_PTR, O_PTR));
    assert_eq!((f.lse, f.cu_seqlens_q, f.cu_seqlens_k), (0, 0, 0));
    assert_eq!(
        (f.q_batch_stride, f.q_row_stride, f.q_head_stride),
        (256 * 4 * 64, 4 * 64, 64)
    );
    assert_eq!(
        (f.k_batch_stride, f.k_row_stride, f.k_head_stride),
        (384 * 4 * 64, 4 * 64, 64)
    );
    assert_eq!(
        (f.v_batch_stride, f.v_row_stride, f.v_head_stride),
        (384 * 4 * 64, 4 * 64, 64)
    );
    assert_eq!(
        (f.o_batch_stride, f.o_row_stride, f.o_head_stride),
        (256 * 4 * 64, 4 * 64, 64)
    );
    assert_eq!((f.lse_batch_stride, f.lse_head_stride), (0, 0));
    assert_eq!((f.batch, f.heads_q, f.heads_kv), (2, 4, 4));
    assert_eq!((f.seqlen_q, f.seqlen_k), (256, 384));
    assert!(
        (f.scale_log2 - LOG2_E / 8.0).abs() < 1e-7,
        "{}",
        f.scale_log2
    );
    // Dense has no parameters of its own.
    assert_eq!(p.variant.get::<dense::Params>(), Some(dense::Params {}));
    assert!(p.variant.bytes().is_empty());

    // Query tiles round up.
    let d = desc(
        DType::Bf16,
        Layout::bshd(3, 257, 4, 64),
        Layout::bshd(3, 384, 4, 64),
    );
    assert_eq!(plan(&s, &d).unwrap().grid, Some((3, 4, 3)));
}

#[test]
fn explicit_scale_and_lse_strides() {
    let s = spec("dense,d128,f16,lse,m64n64w4s1");
    let q = Layout::bshd(2, 100, 8, 128);
    let d = LaunchDesc {
        scale: Some(0.5),
        lse: lse_buffer(2 * 8 * 100),
        ..desc(DType::F16, q, Layout::bshd(2, 300, 8, 128))
    };
    let p = plan(&s, &d).unwrap();
    let f = &p.params;
    assert_eq!(f.scale_log2, 0.5 * LOG2_E);
    assert_eq!(f.lse, LSE_PTR);
    assert_eq!((f.lse_batch_stride, f.lse_head_stride), (8 * 100, 100));
    assert_eq!(p.grid, Some((2, 8, 2)));
}

#[test]
fn bhsd_strides() {
    let s = spec("dense,d64,bf16,m64n64w4s1");
    let d = desc(
        DType::Bf16,
        Layout::bhsd(2, 256, 4, 64),
        Layout::bhsd(2, 384, 4, 64),
    );
    let f = plan(&s, &d).unwrap().params;
    assert_eq!(
        (f.q_batch_stride, f.q_row_stride, f.q_head_stride),
        (4 * 256 * 64, 64, 256 * 64)
    );
    assert_eq!(
        (f.k_batch_stride, f.k_row_stride, f.k_head_stride),
        (4 * 384 * 64, 64, 384 * 64)
    );
    assert_eq!(
        (f.v_batch_stride, f.v_row_stride, f.v_head_stride),
        (4 * 384 * 64, 64, 384 * 64)
    );
    assert_eq!(
        (f.o_batch_stride, f.o_row_stride, f.o_head_stride),
        (4 * 256 * 64, 64, 256 * 64)
    );
    // Mixed layouts: BHSD Q and O over BSHD K and V.
    let d = desc(
        DType::Bf16,
        Layout::bhsd(2, 256, 4, 64),
        Layout::bshd(2, 384, 4, 64),
    );
    let f = plan(&s, &d).unwrap().params;
    assert_eq!((f.q_row_stride, f.k_row_stride), (64, 4 * 64));
}

#[test]
fn gqa() {
    let s = spec("dense,d64,bf16,causal,m128n64w4s1");
    let d = desc(
        DType::Bf16,
        Layout::bshd(1, 512, 32, 64),
        Layout::bshd(1, 512, 8, 64),
    );
    let p = plan(&s, &d).unwrap();
    assert_eq!((p.params.heads_q, p.params.heads_kv), (32, 8));
    assert_eq!(p.params.k_row_stride, 8 * 64);
    assert_eq!(p.params.q_row_stride, 32 * 64);
    assert_eq!(p.grid, Some((4, 32, 1)));
    // MQA.
    let d = desc(
        DType::Bf16,
        Layout::bshd(1, 512, 32, 64),
        Layout::bshd(1, 512, 1, 64),
    );
    assert_eq!(plan(&s, &d).unwrap().params.heads_kv, 1);
}

#[test]
fn varlen_parameters() {
    let s = spec("dense,d64,bf16,causal,lse,varlen,m64n64w4s1");
    // Three sequences of (5, 10), (0, 20) and (70, 1) query and key tokens.
    let (cq, ck) = ([0, 5, 5, 75], [0, 10, 30, 31]);
    // A batch-1 BSHD tensor is packed too; its batch stride must not reach the kernel.
    let d = LaunchDesc {
        varlen: Some(varlen(&cq, &ck)),
        lse: lse_buffer(4 * 75),
        ..desc(
            DType::Bf16,
            Layout::bshd(1, 75, 4, 64),
            Layout::packed(31, 2, 64),
        )
    };
    let p = plan(&s, &d).unwrap();
    let f = &p.params;
    assert_eq!((f.cu_seqlens_q, f.cu_seqlens_k), (CU_Q_PTR, CU_K_PTR));
    assert_eq!(
        (
            f.q_batch_stride,
            f.k_batch_stride,
            f.v_batch_stride,
            f.o_batch_stride
        ),
        (0, 0, 0, 0)
    );
    assert_eq!((f.q_row_stride, f.q_head_stride), (4 * 64, 64));
    assert_eq!((f.k_row_stride, f.k_head_stride), (2 * 64, 64));
    assert_eq!((f.batch, f.heads_q, f.heads_kv), (3, 4, 2));
    assert_eq!((f.seqlen_q, f.seqlen_k), (70, 20));
    assert_eq!(f.lse, LSE_PTR);
    assert_eq!((f.lse_batch_stride, f.lse_head_stride), (0, 75));
    assert_eq!(p.grid, Some((2, 4, 3)));

    // Packed tensors may be longer than the last sequence ends: lse rows follow the tokens.
    let d = LaunchDesc {
        varlen: Some(varlen(&cq, &ck)),
        lse: lse_buffer(4 * 80),
        ..desc(
            DType::Bf16,
            Layout::packed(80, 4, 64),
            Layout::packed(40, 2, 64),
        )
    };
    let f = plan(&s, &d).unwrap().params;
    assert_eq!(f.lse_head_stride, 80);

    // Only empty query sequences: nothing to launch.
    let (cq, ck) = ([0, 0, 0], [0, 7, 9]);
    let d = LaunchDesc {
        varlen: Some(varlen(&cq, &ck)),
        lse: lse_buffer(0),
        ..packed(0, 9)
    };
    assert_eq!(plan(&s, &d).unwrap().grid, None);
}

#[test]
fn no_queries_means_no_launch() {
    let s = spec("dense,d64,bf16,causal,m128n64w4s1");
    let d = desc(
        DType::Bf16,
        Layout::bshd(2, 0, 4, 64),
        Layout::bshd(2, 384, 4, 64),
    );
    let p = plan(&s, &d).unwrap();
    assert_eq!(p.grid, None);
    assert_eq!((p.params.seqlen_q, p.params.seqlen_k), (0, 384));
    // Empty buffers are fine when nothing is addressed.
    assert_eq!(d.q.buffer.len, 0);
    // Batch 0 as well.
    let d = desc(
        DType::Bf16,
        Layout::bshd(0, 16, 4, 64),
        Layout::bshd(0, 16, 4, 64),
    );
    assert_eq!(plan(&s, &d).unwrap().grid, None);
}

#[test]
fn no_keys_still_launches_to_write_zeros() {
    let s = spec("dense,d64,bf16,lse,m128n64w4s1");
    let d = LaunchDesc {
        lse: lse_buffer(2 * 4 * 200),
        ..desc(
            DType::Bf16,
            Layout::bshd(2, 200, 4, 64),
            Layout::bshd(2, 0, 4, 64),
        )
    };
    let p = plan(&s, &d).unwrap();
    assert_eq!(p.grid, Some((2, 4, 2)));
    assert_eq!((p.params.seqlen_q, p.params.seqlen_k), (200, 0));
}

#[test]
fn streaming_parameters() {
    let s = spec("streaming,d64,bf16,m64n64w4s1");
    let d = LaunchDesc {
        mask: MaskArg::Streaming(streaming()),
        ..bshd64()
    };
    let p = plan(&s, &d).unwrap();
    let a = streaming_args(&p);
    assert_eq!((a.sink, a.window), (16, 128));
    // Only the variant's own block: no other variant's fields.
    assert_eq!(p.variant.get::<mixed::Params>(), None);
    assert_eq!(p.variant.bytes().len(), 8);
    assert_eq!(p.grid, Some((4, 4, 2)));
}

#[test]
fn block_list_parameters() {
    let s = spec("block-sparse,d64,bf16,causal,m64n64w4s1");
    // One list per head, blocks of 128 queries x 64 keys.
    let m = tril_blocks(2, 4, 256, 384, 128, 64);
    let d = LaunchDesc {
        mask: MaskArg::BlockSparse(block_list(&m)),
        ..bshd64()
    };
    let f = list_args(&plan(&s, &d).unwrap());
    assert_eq!((f.block_q, f.block_k), (128, 64));
    assert_eq!((f.list_heads, f.max_blocks), (4, m.max_blocks as i32));
    assert_eq!(f.list_head_stride, 2);
    assert_eq!(f.list_batch_stride, 4 * 2);
    assert_eq!((f.kv_count.0, f.kv_index.0), (COUNT_PTR, INDEX_PTR));

    // One list shared by all heads.
    let m = tril_blocks(2, 1, 256, 384, 128, 128);
    let d = LaunchDesc {
        mask: MaskArg::BlockSparse(block_list(&m)),
        ..bshd64()
    };
    let f = list_args(&plan(&s, &d).unwrap());
    assert_eq!((f.block_q, f.block_k), (128, 128));
    assert_eq!(
        (f.list_heads, f.list_head_stride, f.list_batch_stride),
        (1, 2, 2)
    );
    assert_eq!(f.max_blocks, m.max_blocks as i32);
}

#[test]
fn mixed_parameters() {
    let s = spec("mixed,d64,bf16,causal,m64n64w4s1");
    let kinds = [
        HeadKind::Streaming,
        HeadKind::Dense,
        HeadKind::BlockSparse,
        HeadKind::DenseCausal,
    ];
    let m = tril_blocks(2, 1, 256, 384, 64, 64);
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&kinds),
            streaming: Some(streaming()),
            block_list: Some(block_list(&m)),
        },
        ..bshd64()
    };
    let p = plan(&s, &d).unwrap();
    let f = mixed_params(&p);
    assert_eq!((f.head_kind.0, f.head_order.0), (KINDS_PTR, ORDER_PTR));
    assert_eq!((f.streaming.sink, f.streaming.window), (16, 128));
    let l = f.list;
    assert_eq!((l.block_q, l.block_k, l.list_heads), (64, 64, 1));
    assert_eq!((l.list_head_stride, l.list_batch_stride), (4, 4));
    assert_eq!((l.kv_count.0, l.kv_index.0), (COUNT_PTR, INDEX_PTR));
    assert_eq!(p.grid, Some((4, 4, 2)));

    // Heads that need neither parameters nor a list take none; extra ones are ignored.
    let dense_only = [
        HeadKind::Dense,
        HeadKind::DenseCausal,
        HeadKind::Dense,
        HeadKind::Dense,
    ];
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&dense_only),
            streaming: None,
            block_list: None,
        },
        ..bshd64()
    };
    let f = mixed_params(&plan(&s, &d).unwrap());
    assert_eq!(
        (f.head_kind.0, f.streaming.sink, f.list.kv_count.0),
        (KINDS_PTR, 0, 0)
    );
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&dense_only),
            streaming: Some(streaming()),
            block_list: Some(block_list(&m)),
        },
        ..bshd64()
    };
    let f = mixed_params(&plan(&s, &d).unwrap());
    assert_eq!((f.streaming.sink, f.list.kv_count.0), (0, 0));
}

const PK_PTR: u64 = 0x7000_0000;
const PV_PTR: u64 = 0x7100_0000;

// ---- the bytes of each variant's parameter block, at the offsets the kernel reads ----

/// The little-endian integer of `N` bytes at `offset`.
fn int_at<const N: usize>(bytes: &[u8], offset: usize) -> i64 {
    let raw: [u8; N] = bytes[offset..offset + N].try_into().unwrap();
    match N {
        4 => i32::from_le_bytes(raw[..].try_into().unwrap()) as i64,
        8 => i64::from_le_bytes(raw[..].try_into().unwrap()),
        _ => unreachable!("4- or 8-byte fields"),
    }
}

/// A block list's 48 bytes at `at`: block_q, block_k, list_heads, max_blocks (int), the two
/// strides (fg_i64), kv_count and kv_index (pointers), as `struct BlockListArgs` lays them out.
fn assert_list_bytes(b: &[u8], at: usize, want: [i64; 8]) {
    let got = [
        int_at::<4>(b, at),
        int_at::<4>(b, at + 4),
        int_at::<4>(b, at + 8),
        int_at::<4>(b, at + 12),
        int_at::<8>(b, at + 16),
        int_at::<8>(b, at + 24),
        int_at::<8>(b, at + 32),
        int_at::<8>(b, at + 40),
    ];
    assert_eq!(got, want);
}

#[test]
fn dense_block_bytes() {
    let p = plan(&spec("dense,d64,bf16,causal,m64n64w4s1"), &bshd64()).unwrap();
    assert_eq!(p.variant.bytes(), [0u8; 0]);
}

#[test]
fn streaming_block_bytes() {
    let d = LaunchDesc {
        mask: MaskArg::Streaming(StreamingParams {
            sink: 16,
            window: 1 << 40,
        }),
        ..bshd64()
    };
    let p = plan(&spec("streaming,d64,bf16,m64n64w4s1"), &d).unwrap();
    let b = p.variant.bytes();
    // sink at 0, window at 4 (clamped to the 384 keys).
    assert_eq!(b.len(), 8);
    assert_eq!((int_at::<4>(b, 0), int_at::<4>(b, 4)), (16, 384));
}

#[test]
fn block_sparse_block_bytes() {
    let m = tril_blocks(2, 4, 256, 384, 128, 64);
    let d = LaunchDesc {
        mask: MaskArg::BlockSparse(block_list(&m)),
        ..bshd64()
    };
    let p = plan(&spec("block-sparse,d64,bf16,causal,m64n64w4s1"), &d).unwrap();
    let b = p.variant.bytes();
    assert_eq!(b.len(), 48);
    let max = m.max_blocks as i64;
    let (count, index) = (COUNT_PTR as i64, INDEX_PTR as i64);
    assert_list_bytes(b, 0, [128, 64, 4, max, 8, 2, count, index]);
}

#[test]
fn mixed_block_bytes() {
    let m = tril_blocks(2, 1, 256, 384, 64, 64);
    let kinds = [
        HeadKind::Streaming,
        HeadKind::Dense,
        HeadKind::BlockSparse,
        HeadKind::DenseCausal,
    ];
    let d = LaunchDesc {
        mask: MaskArg::Mixed {
            heads: head_kinds(&kinds),
            streaming: Some(streaming()),
            block_list: Some(block_list(&m)),
        },
        ..bshd64()
    };
    let p = plan(&spec("mixed,d64,bf16,causal,m64n64w4s1"), &d).unwrap();
    let b = p.variant.bytes();
    // The streaming part at 0, the block list at 8, head_kind at 56, head_order at 64.
    assert_eq!(b.len(), 72);
    assert_eq!((int_at::<4>(b, 0), int_at::<4>(b, 4)), (16, 128));
    let max = m.max_blocks as i64;
    let (count, index) = (COUNT_PTR as i64, INDEX_PTR as i64);
    assert_list_bytes(b, 8, [64, 64, 1, max, 4, 4, count, index]);
    assert_eq!(
        (int_at::<8>(b, 56), int_at::<8>(b, 64)),
        (KINDS_PTR as i64, ORDER_PTR as i64)
    );
}

#[test]
fn apb_block_bytes() {
    let prefix = Layout::bshd(2, 500, 2, 64);
    let d = LaunchDesc {
        prefix: Some((tensor(PK_PTR, prefix), tensor(PV_PTR, prefix))),
        ..desc(
            DType::Bf16,
            Layout::bshd(2, 300, 8, 64),
            Layout::bshd(2, 300, 2, 64),
        )
    };
    let p = plan(&spec("apb,d64,bf16"), &d).unwrap();
    let b = p.variant.bytes();
    // prefix_k, prefix_v, three strides of each, prefix_len at 64; padded to 72.
    assert_eq!(b.len(), 72);
    let fields: Vec<i64> = (0..8).map(|i| int_at::<8>(b, 8 * i)).collect();
    let (batch, row) = (500 * 2 * 64, 2 * 64);
    assert_eq!(
        fields,
        [PK_PTR as i64, PV_PTR as i64, batch, row, 64, batch, row, 64]
    );
    assert_eq!(int_at::<4>(b, 64), 500);
    assert_eq!(b[68..72], [0; 4], "padding is zero");
}

#[test]
fn apb_prefix_is_required_checked_and_passed() {
    let s = spec("apb,d64,bf16");
    let local = Layout::bshd(2, 300, 2, 64);
    let q = Layout::bshd(2, 300, 8, 64);
    let base = desc(DType::Bf16, q, local);
    // No prefix (host 0 of a sequence-parallel prefill): causal attention over the local block,
    // no prefix row read.
    let a = apb_params(&plan(&s, &base).unwrap());
    assert_eq!(
        (a.prefix_len, a.prefix_k.0, a.prefix_v.0),
        (0, K_PTR, V_PTR)
    );

    let prefix = Layout::bshd(2, 500, 2, 64);
    let d = LaunchDesc {
        prefix: Some((tensor(PK_PTR, prefix), tensor(PV_PTR, prefix))),
        ..base
    };
    let planned = plan(&s, &d).unwrap();
    let a = apb_params(&planned);
    assert_eq!(
        (a.prefix_k.0, a.prefix_v.0, a.prefix_len),
        (PK_PTR, PV_PTR, 500)
    );
    assert_eq!(a.prefix_k_row_stride, 2 * 64);
    assert_eq!(a.prefix_v_batch_stride, 500 * 2 * 64);
    assert_eq!(planned.params.seqlen_k, 300);
    assert_eq!(planned.grid, Some((300u32.div_ceil(s.tile.block_m), 8, 2)));

    // An empty prefix (host 0 of a sequence-parallel prefill) is fine.
    let empty = Layout::bshd(2, 0, 2, 64);
    let d0 = LaunchDesc {
        prefix: Some((tensor(PK_PTR, empty), tensor(PV_PTR, empty))),
        ..base
    };
    assert_eq!(apb_params(&plan(&s, &d0).unwrap()).prefix_len, 0);

    let wrong_heads = Layout::bshd(2, 500, 4, 64);
    let d = LaunchDesc {
        prefix: Some((tensor(PK_PTR, wrong_heads), tensor(PV_PTR, wrong_heads))),
        ..base
    };
    assert_invalid(plan(&s, &d), "prefix", "heads_kv = 2");
    let d = LaunchDesc {
        prefix: Some((
            tensor(PK_PTR, prefix),
            tensor(PV_PTR, Layout::bshd(2, 499, 2, 64)),
        )),
        ..base
    };
    assert_invalid(plan(&s, &d), "prefix", "must both be");
    let d = LaunchDesc {
        prefix: Some((tensor(PK_PTR + 2, prefix), tensor(PV_PTR, prefix))),
        ..base
    };
    assert_invalid(plan(&s, &d), "prefix_k", "16-byte aligned");

    let dense = LaunchDesc {
        prefix: Some((tensor(PK_PTR, prefix), tensor(PV_PTR, prefix))),
        ..desc(DType::Bf16, q, local)
    };
    assert_invalid(
        plan(&spec("dense,d64,bf16"), &dense),
        "prefix",
        "only apb kernels",
    );
}

#[test]
fn apb_queries_are_the_last_of_the_local_block() {
    let s = spec("apb,d64,bf16");
    let prefix = Layout::bshd(2, 500, 2, 64);
    let with_prefix = |q_len: usize| LaunchDesc {
        prefix: Some((tensor(PK_PTR, prefix), tensor(PV_PTR, prefix))),
        ..desc(
            DType::Bf16,
            Layout::bshd(2, q_len, 8, 64),
            Layout::bshd(2, 300, 2, 64),
        )
    };
    // Fewer queries than local keys: bottom-right aligned, like every other variant.
    let p = plan(&s, &with_prefix(100)).unwrap();
    assert_eq!(
        (
            p.params.seqlen_q,
            p.params.seqlen_k,
            apb_params(&p).prefix_len
        ),
        (100, 300, 500)
    );
    assert_invalid(
        plan(&s, &with_prefix(301)),
        "q",
        "301 queries over 300 local keys",
    );
}
