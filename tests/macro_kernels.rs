//! Kernels declared with `flashgen::attention_kernel!`: what the expansion holds (no GPU), and
//! launches that must equal the runtime API's bit for bit on the same inputs (needs a CUDA GPU:
//! run with `--include-ignored`).

mod common;

use flashgen::codegen::{
    default_tile, parse_spec, Arch, AttentionSpec, DType, KernelSpec, Mma, Variant,
};
use flashgen::half::{bf16, f16};
use flashgen::runtime::cudarc::driver::{CudaSlice, DeviceRepr};
use flashgen::runtime::{AttentionArgs, Mask};
use flashgen::{
    attention_kernel, BlockMask, DeviceBlockMask, DeviceHeadKinds, Error, Layout, Runtime,
    StreamingParams, Tensor, TensorMut, TileConfig,
};
use flashgen_reference::{Precision, Rng};

attention_kernel! {
    /// Causal prefill that also writes the log-sum-exp.
    pub struct DenseCausal: dense(causal), head_dim = 128, dtype = bf16, lse;
    pub struct LlamaStreaming: streaming(sink = 128, window = 2048), head_dim = 128, dtype = bf16,
        gqa = 4;
    struct Sparse: block_sparse(block_q = 128, block_k = 128, causal), head_dim = 64, dtype = f16,
        tile = m64n64w4s1;
    struct MixedHeads: mixed(sink = 64, window = 256, block_q = 128, block_k = 128), head_dim = 128,
        dtype = bf16, lse = true, varlen = true;
    struct Prefixed: apb, head_dim = 128, dtype = bf16, lse,
        tile(block_m = 64, block_n = 128, warps = 4, stages = 1, mma = wgmma);
    /// Dense decode of a GQA-4 model over 16-token pages, with the log-sum-exp.
    pub struct DenseDecode: decode_dense, head_dim = 128, dtype = bf16, page_size = 16, gqa = 4,
        lse;
    struct StreamingDecode: decode_streaming(sink = 32, recent = 64), head_dim = 64,
        dtype = bf16, page_size = 32, rows = 32;
    struct MixedDecode: decode_mixed(sink = 16, recent = 128), head_dim = 128, dtype = f16,
        page_size = 64, kv_dtype = f16;
    /// Document masking with a soft cap, written as Rust closures.
    struct DocCapped: custom(
            mask = |b, h, q_idx, kv_idx| doc[q_idx] == doc[kv_idx] && kv_idx <= q_idx,
            score = |s, _b, _h, _q, _k| 50.0 * (s / 50.0).tanh(),
            params(doc = [i32])),
        head_dim = 128, dtype = bf16, lse;
}

/// The closures become the definition the runtime API's spec carries, in canonical form.
#[test]
fn custom_closures_become_the_definition() {
    let text = "doc: [i32]; mask = doc[q] == doc[k] && k <= q; score = 50.0 * tanh(s / 50.0)";
    let mods = flashgen::codegen::expr::CustomMods::parse(text).unwrap();
    let want = AttentionSpec::custom(&mods, 128, DType::Bf16).with_lse(true);
    assert_eq!(DocCapped::SPEC, want.to_string());
    assert_eq!(DocCapped::spec_for(Arch::SM90).attention(), want);
    assert!(DocCapped::CUDA_SM90.contains("fg_custom_score"));
}

#[test]
fn spec_text_is_codegen_text_form() {
    assert_eq!(DenseCausal::SPEC, "dense,d128,bf16,causal,lse");
    assert_eq!(LlamaStreaming::SPEC, "streaming,d128,bf16");
    assert_eq!(Sparse::SPEC, "block-sparse,d64,f16,causal,m64n64w4s1");
    assert_eq!(MixedHeads::SPEC, "mixed,d128,bf16,lse,varlen");
    assert_eq!(Prefixed::SPEC, "apb,d128,bf16,lse,m64n128w4s1-wgmma");
}

#[test]
fn cuda_sm90_is_the_rendered_kernel() {
    for (spec_text, cuda) in [
        (DenseCausal::SPEC, DenseCausal::CUDA_SM90),
        (LlamaStreaming::SPEC, LlamaStreaming::CUDA_SM90),
        (Sparse::SPEC, Sparse::CUDA_SM90),
        (MixedHeads::SPEC, MixedHeads::CUDA_SM90),
        (Prefixed::SPEC, Prefixed::CUDA_SM90),
    ] {
        let spec = parse_spec(spec_text, Arch::SM90).unwrap();
        assert!(cuda.contains(&spec.kernel_name()), "{spec_text}");
        assert_eq!(cuda, flashgen::codegen::render(&spec).unwrap().code);
    }
}

#[test]
fn spec_fields_follow_the_declaration() {
    for arch in [Arch::SM80, Arch::SM86, Arch::SM89, Arch::SM90] {
        let s = DenseCausal::spec_for(arch);
        assert_eq!(s.variant, Variant::Dense);
        assert_eq!((s.head_dim, s.dtype), (128, DType::Bf16));
        assert!(s.causal && s.lse && !s.varlen);
        assert_eq!(s.tile, default_tile(&s.attention(), arch));

        let s = LlamaStreaming::spec_for(arch);
        assert_eq!(s.variant, Variant::Streaming);
        assert!(!s.causal && !s.lse && !s.varlen);
        assert_eq!(s.tile, default_tile(&s.attention(), arch));

        let s = Sparse::spec_for(arch);
        assert_eq!(s.variant, Variant::BlockSparse);
        assert_eq!((s.head_dim, s.dtype, s.causal), (64, DType::F16, true));
        assert_eq!(s.tile, TileConfig::new(64, 64, 4, 1));

        let s = MixedHeads::spec_for(arch);
        assert_eq!(s.variant, Variant::Mixed);
        assert!(s.lse && s.varlen && !s.causal);
        // The default tile is chosen after lse and varlen are set.
        assert_eq!(s.tile, default_tile(&s.attention(), arch));

        let s = Prefixed::spec_for(arch);
        assert_eq!(s.variant, Variant::Apb);
        assert_eq!(s.tile, TileConfig::new(64, 128, 4, 1).with_mma(Mma::Wgmma));
    }
    assert_eq!(
        DenseCausal::spec_for(Arch::SM90),
        KernelSpec::new(Variant::Dense, 128, DType::Bf16, true, Arch::SM90).with_lse(true)
    );
}

#[test]
fn decode_declarations_are_decode_specs() {
    use flashgen::codegen::{parse_decode_spec, render_decode, DecodeVariant};
    assert_eq!(DenseDecode::SPEC, "decode-dense,d128,bf16,p16");
    assert_eq!(StreamingDecode::SPEC, "decode-streaming,d64,bf16,p32,r32");
    assert_eq!(MixedDecode::SPEC, "decode-mixed,d128,f16,p64,kv-f16");
    for (text, cuda) in [
        (DenseDecode::SPEC, DenseDecode::CUDA_SM90),
        (StreamingDecode::SPEC, StreamingDecode::CUDA_SM90),
        (MixedDecode::SPEC, MixedDecode::CUDA_SM90),
    ] {
        let spec = parse_decode_spec(text).unwrap();
        assert_eq!(cuda, render_decode(&spec, Arch::SM90).unwrap().code);
    }
    assert_eq!(DenseDecode::spec().variant, DecodeVariant::Dense);
    assert_eq!(DenseDecode::spec().rows, 16);
    assert_eq!(StreamingDecode::spec().rows, 32);
    assert_eq!((StreamingDecode::SINK, StreamingDecode::RECENT), (32, 64));
    assert_eq!((MixedDecode::SINK, MixedDecode::RECENT), (16, 128));
    assert_eq!(DenseDecode::GQA, Some(4));
    assert_eq!(MixedDecode::GQA, None);
}

/// A decode kernel's `forward` takes the cache and table, q and o, and what its variant reads.
#[test]
#[allow(clippy::type_complexity)]
fn decode_forward_signatures() {
    use flashgen::runtime::decode::{
        DecodeHeads, DecodeLaunch, DevicePageTable, PageSelection, PagedKvCache,
    };
    let _: for<'a> fn(
        &DenseDecode,
        &Runtime,
        &PagedKvCache,
        &DevicePageTable,
        Tensor<'a, bf16>,
        TensorMut<'a, bf16>,
        &'a mut CudaSlice<f32>,
    ) -> flashgen::Result<DecodeLaunch> = DenseDecode::forward;
    let _: for<'a> fn(
        &StreamingDecode,
        &Runtime,
        &PagedKvCache,
        &DevicePageTable,
        Tensor<'a, bf16>,
        TensorMut<'a, bf16>,
    ) -> flashgen::Result<DecodeLaunch> = StreamingDecode::forward;
    let _: for<'a> fn(
        &MixedDecode,
        &Runtime,
        &PagedKvCache,
        &DevicePageTable,
        Tensor<'a, f16>,
        TensorMut<'a, f16>,
        &'a PageSelection,
        &'a DecodeHeads,
    ) -> flashgen::Result<DecodeLaunch> = MixedDecode::forward;
}

#[test]
fn variant_parameters_become_constants() {
    assert_eq!((LlamaStreaming::SINK, LlamaStreaming::WINDOW), (128, 2048));
    assert_eq!(LlamaStreaming::GQA, Some(4));
    assert_eq!(DenseCausal::GQA, None);
    assert_eq!((Sparse::BLOCK_Q, Sparse::BLOCK_K), (128, 128));
    assert_eq!(
        (
            MixedHeads::SINK,
            MixedHeads::WINDOW,
            MixedHeads::BLOCK_Q,
            MixedHeads::BLOCK_K
        ),
        (64, 256, 128, 128)
    );
}

/// `forward` takes exactly what the variant needs, typed by the dtype.
#[test]
#[allow(clippy::type_complexity)]
fn forward_signatures() {
    type Out<'a> = &'a mut CudaSlice<f32>;
    let _: for<'a> fn(
        &DenseCausal,
        &Runtime,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
        TensorMut<'a, bf16>,
        Out<'a>,
    ) -> flashgen::Result<()> = DenseCausal::forward;
    let _: for<'a> fn(
        &LlamaStreaming,
        &Runtime,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
        TensorMut<'a, bf16>,
    ) -> flashgen::Result<()> = LlamaStreaming::forward;
    let _: for<'a> fn(
        &Sparse,
        &Runtime,
        Tensor<'a, f16>,
        Tensor<'a, f16>,
        Tensor<'a, f16>,
        TensorMut<'a, f16>,
        &'a DeviceBlockMask,
    ) -> flashgen::Result<()> = Sparse::forward;
    let _: for<'a> fn(
        &MixedHeads,
        &Runtime,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
        TensorMut<'a, bf16>,
        Out<'a>,
        &'a flashgen::DeviceVarlen,
        &'a DeviceHeadKinds,
        &'a DeviceBlockMask,
    ) -> flashgen::Result<()> = MixedHeads::forward;
    let _: for<'a> fn(
        &Prefixed,
        &Runtime,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
        TensorMut<'a, bf16>,
        Out<'a>,
        Tensor<'a, bf16>,
        Tensor<'a, bf16>,
    ) -> flashgen::Result<()> = Prefixed::forward;
}

/// Random bf16 values on the device.
fn upload(rt: &Runtime, rng: &mut Rng, n: usize) -> CudaSlice<bf16> {
    let host: Vec<bf16> = rng
        .normal_vec_in(n, Precision::Bf16)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    rt.stream().clone_htod(&host).unwrap()
}

/// NaN-filled outputs, so an element left unwritten cannot match by chance.
fn poisoned<T: DeviceRepr + Clone>(rt: &Runtime, value: T, n: usize) -> CudaSlice<T> {
    rt.stream().clone_htod(&vec![value; n]).unwrap()
}

fn bits_bf16(rt: &Runtime, x: &CudaSlice<bf16>) -> Vec<u16> {
    let host: Vec<bf16> = rt.stream().clone_dtoh(x).unwrap();
    assert!(host.iter().all(|v| v.is_finite()), "non-finite output");
    host.iter().map(|v| v.to_bits()).collect()
}

fn bits_f32(rt: &Runtime, x: &CudaSlice<f32>) -> Vec<u32> {
    let host: Vec<f32> = rt.stream().clone_dtoh(x).unwrap();
    assert!(host.iter().all(|v| !v.is_nan()), "NaN in lse");
    host.iter().map(|v| v.to_bits()).collect()
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn declared_dense_causal_with_lse_equals_the_runtime_api() {
    let rt = common::runtime();
    let kernel = DenseCausal::new(&rt).unwrap();
    let spec = AttentionSpec::new(Variant::Dense, 128, DType::Bf16, true)
        .with_lse(true)
        .with_default_tile(rt.arch());
    assert_eq!(kernel.spec(), spec);

    let (batch, sq, sk, hq, hkv, d) = (2, 300, 517, 4, 2, 128);
    let (ql, kl) = (
        Layout::bshd(batch, sq, hq, d),
        Layout::bshd(batch, sk, hkv, d),
    );
    let mut rng = Rng::fresh();
    let q = upload(&rt, &mut rng, ql.numel());
    let k = upload(&rt, &mut rng, kl.numel());
    let v = upload(&rt, &mut rng, kl.numel());
    let lse_len = batch * hq * sq;

    let mut o_macro = poisoned(&rt, bf16::NAN, ql.numel());
    let mut lse_macro = poisoned(&rt, f32::NAN, lse_len);
    kernel
        .forward(
            &rt,
            Tensor {
                data: &q,
                layout: ql,
            },
            Tensor {
                data: &k,
                layout: kl,
            },
            Tensor {
                data: &v,
                layout: kl,
            },
            TensorMut {
                data: &mut o_macro,
                layout: ql,
            },
            &mut lse_macro,
        )
        .unwrap();

    let mut o_api = poisoned(&rt, bf16::NAN, ql.numel());
    let mut lse_api = poisoned(&rt, f32::NAN, lse_len);
    rt.attention(
        &spec,
        AttentionArgs::new(
            Tensor {
                data: &q,
                layout: ql,
            },
            Tensor {
                data: &k,
                layout: kl,
            },
            Tensor {
                data: &v,
                layout: kl,
            },
            TensorMut {
                data: &mut o_api,
                layout: ql,
            },
        )
        .lse(&mut lse_api),
    )
    .unwrap();
    rt.stream().synchronize().unwrap();

    assert!(
        bits_bf16(&rt, &o_macro) == bits_bf16(&rt, &o_api),
        "O differs"
    );
    // Rows before the first key (none here: sk > sq) would be -inf, never NaN.
    assert!(
        bits_f32(&rt, &lse_macro) == bits_f32(&rt, &lse_api),
        "lse differs"
    );
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn declared_streaming_equals_the_runtime_api() {
    let rt = common::runtime();
    let kernel = LlamaStreaming::new(&rt).unwrap();
    let spec = kernel.spec();
    assert_eq!(spec, parse_spec(LlamaStreaming::SPEC, rt.arch()).unwrap());

    // Longer than sink + window, so both parts of the A-shape are exercised.
    let (batch, s, hq, hkv, d) = (1, 3000, 8, 2, 128);
    let (ql, kl) = (
        Layout::bshd(batch, s, hq, d),
        Layout::bshd(batch, s, hkv, d),
    );
    let mut rng = Rng::fresh();
    let q = upload(&rt, &mut rng, ql.numel());
    let k = upload(&rt, &mut rng, kl.numel());
    let v = upload(&rt, &mut rng, kl.numel());

    let mut o_macro = poisoned(&rt, bf16::NAN, ql.numel());
    kernel
        .forward(
            &rt,
            Tensor {
                data: &q,
                layout: ql,
            },
            Tensor {
                data: &k,
                layout: kl,
            },
            Tensor {
                data: &v,
                layout: kl,
            },
            TensorMut {
                data: &mut o_macro,
                layout: ql,
            },
        )
        .unwrap();
    let mut o_api = poisoned(&rt, bf16::NAN, ql.numel());
    rt.attention(
        &spec,
        AttentionArgs::new(
            Tensor {
                data: &q,
                layout: ql,
            },
            Tensor {
                data: &k,
                layout: kl,
            },
            Tensor {
                data: &v,
                layout: kl,
            },
            TensorMut {
                data: &mut o_api,
                layout: ql,
            },
        )
        .mask(Mask::Streaming(StreamingParams {
            sink: 128,
            window: 2048,
        })),
    )
    .unwrap();
    rt.stream().synchronize().unwrap();
    assert!(
        bits_bf16(&rt, &o_macro) == bits_bf16(&rt, &o_api),
        "O differs"
    );

    // The declared gqa = 4 is checked before launch: 8 query heads over 4 kv heads is 2.
    let kl4 = Layout::bshd(batch, s, 4, d);
    let k4 = upload(&rt, &mut rng, kl4.numel());
    let err = kernel
        .forward(
            &rt,
            Tensor {
                data: &q,
                layout: ql,
            },
            Tensor {
                data: &k4,
                layout: kl4,
            },
            Tensor {
                data: &k4,
                layout: kl4,
            },
            TensorMut {
                data: &mut o_macro,
                layout: ql,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { arg: "gqa", .. }),
        "{err}"
    );
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn declared_block_sizes_are_checked_at_launch() {
    let rt = common::runtime();
    let kernel = Sparse::new(&rt).unwrap();
    let (s, h, d) = (256, 2, 64);
    let l = Layout::bshd(1, s, h, d);
    let x: CudaSlice<f16> = poisoned(&rt, f16::ZERO, l.numel());
    let mut o: CudaSlice<f16> = poisoned(&rt, f16::ZERO, l.numel());
    let list = BlockMask::from_dense(&[true; 16], 1, 1, 4, 4, 64, 64).unwrap();
    let list = rt.upload_block_mask(&list).unwrap();
    let err = kernel
        .forward(
            &rt,
            Tensor {
                data: &x,
                layout: l,
            },
            Tensor {
                data: &x,
                layout: l,
            },
            Tensor {
                data: &x,
                layout: l,
            },
            TensorMut {
                data: &mut o,
                layout: l,
            },
            &list,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                arg: "block_list",
                ..
            }
        ),
        "{err}"
    );
    let list = BlockMask::from_dense(&[true; 4], 1, 1, 2, 2, 128, 128).unwrap();
    let list = rt.upload_block_mask(&list).unwrap();
    kernel
        .forward(
            &rt,
            Tensor {
                data: &x,
                layout: l,
            },
            Tensor {
                data: &x,
                layout: l,
            },
            Tensor {
                data: &x,
                layout: l,
            },
            TensorMut {
                data: &mut o,
                layout: l,
            },
            &list,
        )
        .unwrap();
    rt.stream().synchronize().unwrap();
}

/// A paged cache of `lens` random tokens (scattered pages), its table and the pools' host copy.
fn decode_cache(
    rt: &Runtime,
    rng: &mut Rng,
    lens: &[usize],
    page_size: usize,
    hkv: usize,
    d: usize,
) -> (
    flashgen::runtime::decode::PagedKvCache,
    flashgen::runtime::decode::DevicePageTable,
    Vec<Vec<usize>>,
) {
    use flashgen::codegen::DType;
    use flashgen::runtime::decode::{DeviceAppend, DevicePageTable, KvCacheConfig, PagedKvCache};
    let pages: usize = lens.iter().map(|l| l.div_ceil(page_size)).sum::<usize>() + 2;
    let config = KvCacheConfig::new(pages, page_size, hkv, d, DType::Bf16);
    let mut cache = PagedKvCache::new(rt, config).unwrap();
    // Pages handed out from the top, so that tables are not the identity.
    let mut next = pages;
    let rows: Vec<Vec<u32>> = lens
        .iter()
        .map(|&l| {
            (0..l.div_ceil(page_size))
                .map(|_| {
                    next -= 1;
                    next as u32
                })
                .collect()
        })
        .collect();
    let table = DevicePageTable::new(rt, &config, &rows, lens).unwrap();
    let append = DeviceAppend::new(rt, &table, lens).unwrap();
    let total: usize = lens.iter().sum();
    let layout = Layout::packed(total, hkv, d);
    let k = upload(rt, rng, layout.numel());
    let v = upload(rt, rng, layout.numel());
    cache
        .append(
            rt,
            &table,
            &append,
            Tensor { data: &k, layout },
            Tensor { data: &v, layout },
        )
        .unwrap();
    let tables = rows
        .iter()
        .map(|r| r.iter().map(|&p| p as usize).collect())
        .collect();
    (cache, table, tables)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn declared_decode_kernels_match_the_reference_and_the_runtime_api() {
    use flashgen::runtime::decode::{DecodeArgs, DecodeChoice, DecodeMask, StreamingWindow};
    use flashgen_reference::{DecodeRule, PagedKv, Tolerance};
    let rt = common::runtime();
    let mut rng = Rng::fresh();
    // The pools hold bytes (a 16-bit pool: each element's two bytes, little-endian).
    let download = |x: &CudaSlice<u8>| -> Vec<bf16> {
        let bytes: Vec<u8> = rt.stream().clone_dtoh(x).unwrap();
        bytes
            .chunks_exact(2)
            .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])))
            .collect()
    };

    // Dense, GQA 4 (8 query heads over 2 kv heads), awkward lengths over 16-token pages.
    let (lens, hq, hkv, d) = (vec![300usize, 77], 8, 2, 128);
    let (cache, table, tables) = decode_cache(&rt, &mut rng, &lens, 16, hkv, d);
    let kernel = DenseDecode::new(&rt).unwrap();
    let ql = Layout::bhsd(lens.len(), 1, hq, d);
    let q = upload(&rt, &mut rng, ql.numel());
    let mut o = poisoned(&rt, bf16::NAN, ql.numel());
    let mut lse = poisoned(&rt, f32::NAN, lens.len() * hq);
    let launch = kernel
        .forward(
            &rt,
            &cache,
            &table,
            Tensor {
                data: &q,
                layout: ql,
            },
            TensorMut {
                data: &mut o,
                layout: ql,
            },
            &mut lse,
        )
        .unwrap();
    assert_eq!(launch.spec, DenseDecode::spec());
    rt.stream().synchronize().unwrap();
    let (k_pool, v_pool) = (download(cache.k_pool()), download(cache.v_pool()));
    let kv = PagedKv {
        k: &k_pool,
        v: &v_pool,
        page_size: 16,
        heads_kv: hkv,
        head_dim: d,
        tables: &tables,
        seq_lens: &lens,
    };
    let q_host: Vec<bf16> = rt.stream().clone_dtoh(&q).unwrap();
    let want = flashgen_reference::decode_attention(&q_host, hq, 1, &kv, &DecodeRule::Dense, None);
    let o_host: Vec<bf16> = rt.stream().clone_dtoh(&o).unwrap();
    let lse_host: Vec<f32> = rt.stream().clone_dtoh(&lse).unwrap();
    flashgen_reference::check_close(
        &o_host,
        &want.o,
        &Tolerance::rel(1e-2).with_poison(f32::NAN),
    )
    .unwrap_or_else(|m| panic!("declared dense decode: O differs\n{m}"));
    flashgen_reference::check_lse(&lse_host, &want.lse, 2e-3, Some(f32::NAN))
        .unwrap_or_else(|m| panic!("declared dense decode: lse differs\n{m}"));
    // The same launch through the runtime API writes the same bits.
    let mut o_api = poisoned(&rt, bf16::NAN, ql.numel());
    rt.decode(
        &cache,
        &table,
        DecodeArgs::new(
            Tensor {
                data: &q,
                layout: ql,
            },
            TensorMut {
                data: &mut o_api,
                layout: ql,
            },
        )
        .mask(DecodeMask::Dense),
    )
    .unwrap();
    rt.stream().synchronize().unwrap();
    assert!(bits_bf16(&rt, &o) == bits_bf16(&rt, &o_api), "O differs");
    // The declared gqa is checked: 4 query heads over 2 kv heads is 2.
    let q4 = Layout::bhsd(lens.len(), 1, 4, d);
    let err = kernel
        .forward(
            &rt,
            &cache,
            &table,
            Tensor {
                data: &q,
                layout: q4,
            },
            TensorMut {
                data: &mut o,
                layout: q4,
            },
            &mut lse,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { arg: "gqa", .. }),
        "{err}"
    );

    // Streaming with its declared 32-row tile, over 32-token pages, sink and recent window
    // shorter than the sequences; a cache of another page size is refused.
    let (lens, hq, hkv, d) = (vec![500usize, 130, 40], 4, 4, 64);
    let (cache, table, tables) = decode_cache(&rt, &mut rng, &lens, 32, hkv, d);
    let kernel = StreamingDecode::new(&rt).unwrap();
    let ql = Layout::bhsd(lens.len(), 1, hq, d);
    let q = upload(&rt, &mut rng, ql.numel());
    let mut o = poisoned(&rt, bf16::NAN, ql.numel());
    let launch = kernel
        .forward(
            &rt,
            &cache,
            &table,
            Tensor {
                data: &q,
                layout: ql,
            },
            TensorMut {
                data: &mut o,
                layout: ql,
            },
        )
        .unwrap();
    assert_eq!(launch.spec.rows, 32);
    rt.stream().synchronize().unwrap();
    let (k_pool, v_pool) = (download(cache.k_pool()), download(cache.v_pool()));
    let kv = PagedKv {
        k: &k_pool,
        v: &v_pool,
        page_size: 32,
        heads_kv: hkv,
        head_dim: d,
        tables: &tables,
        seq_lens: &lens,
    };
    let q_host: Vec<bf16> = rt.stream().clone_dtoh(&q).unwrap();
    let rule = DecodeRule::Streaming {
        sink: StreamingDecode::SINK,
        recent: StreamingDecode::RECENT,
    };
    let want = flashgen_reference::decode_attention(&q_host, hq, 1, &kv, &rule, None);
    let o_host: Vec<bf16> = rt.stream().clone_dtoh(&o).unwrap();
    flashgen_reference::check_close(
        &o_host,
        &want.o,
        &Tolerance::rel(1e-2).with_poison(f32::NAN),
    )
    .unwrap_or_else(|m| panic!("declared streaming decode: O differs\n{m}"));
    // The runtime API with the same window and row tile gives the same bits.
    let mut o_api = poisoned(&rt, bf16::NAN, ql.numel());
    rt.decode_with(
        &cache,
        &table,
        DecodeArgs::new(
            Tensor {
                data: &q,
                layout: ql,
            },
            TensorMut {
                data: &mut o_api,
                layout: ql,
            },
        )
        .mask(DecodeMask::Streaming(StreamingWindow {
            sink: 32,
            recent: 64,
        })),
        DecodeChoice::Given {
            rows: Some(32),
            splits: None,
        },
    )
    .unwrap();
    rt.stream().synchronize().unwrap();
    assert!(bits_bf16(&rt, &o) == bits_bf16(&rt, &o_api), "O differs");
    let (other, other_table, _) = decode_cache(&rt, &mut rng, &lens, 16, hkv, d);
    let err = kernel
        .forward(
            &rt,
            &other,
            &other_table,
            Tensor {
                data: &q,
                layout: ql,
            },
            TensorMut {
                data: &mut o,
                layout: ql,
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { arg: "cache", .. }),
        "{err}"
    );
}
