//! GPU tests of the custom variant (user-defined masks and score modifiers) against the f64
//! reference: the reference reads each definition with its own parser and interpreter
//! (`flashgen_reference::ExprProgram`) and computes attention with them as closures
//! (`attention_custom`), so the two sides share only the text.

mod common;

use flashgen_codegen::expr::{CustomMods, Definition};
use flashgen_codegen::{default_set, AttentionSpec, DType, Mma, TileConfig, Variant};
use flashgen_reference as reference;
use flashgen_reference::{ExprArg, ExprProgram, Precision, Rng, Tolerance};
use flashgen_runtime::custom::{classify_cpu, BlocksKey};
use flashgen_runtime::{
    AttentionArgs, CustomArgs, CustomShape, DeviceVector, Layout, Mask, Runtime, Tensor, TensorMut,
};
use half::{bf16, f16};

#[derive(Clone, Debug)]
enum Val {
    Int(i32),
    Float(f32),
    Ints(Vec<i32>),
    Floats(Vec<f32>),
}

#[derive(Clone, Debug)]
struct Case {
    definition: String,
    values: Vec<(&'static str, Val)>,
    dtype: DType,
    d: usize,
    batch: usize,
    hq: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    varlen: Option<Vec<(usize, usize)>>,
    tile: Option<TileConfig>,
    scale: Option<f32>,
    /// Pass the CPU classification instead of letting the runtime build one.
    cpu_blocks: bool,
}

fn case(definition: &str, sq: usize, sk: usize) -> Case {
    Case {
        definition: definition.to_string(),
        values: vec![],
        dtype: DType::Bf16,
        d: 128,
        batch: 1,
        hq: 4,
        hkv: 2,
        sq,
        sk,
        varlen: None,
        tile: None,
        scale: None,
        cpu_blocks: false,
    }
}

impl Case {
    fn with(mut self, name: &'static str, v: Val) -> Self {
        self.values.push((name, v));
        self
    }
}

trait Half: flashgen_runtime::Element + reference::Element {
    const PRECISION: Precision;
    const NAN: Self;
    fn from_f32(x: f32) -> Self;
}

impl Half for bf16 {
    const PRECISION: Precision = Precision::Bf16;
    const NAN: Self = bf16::NAN;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl Half for f16 {
    const PRECISION: Precision = Precision::F16;
    const NAN: Self = f16::NAN;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

fn check(rt: &Runtime, c: &Case) {
    let result = match c.dtype {
        DType::Bf16 => run::<bf16>(rt, c),
        DType::F16 => run::<f16>(rt, c),
    };
    if let Err(e) = result {
        panic!("{c:?}\n{e}");
    }
}

fn run<T: Half>(rt: &Runtime, c: &Case) -> Result<(), String> {
    let mods = CustomMods::parse(&c.definition).map_err(|e| e.to_string())?;
    let spec = AttentionSpec::custom(&mods, c.d as u32, c.dtype)
        .with_lse(true)
        .with_varlen(c.varlen.is_some());
    let kernel = match c.tile {
        Some(t) => spec.with_tile(t),
        None => spec.with_default_tile(rt.arch()),
    };
    let mut rng = Rng::fresh();
    let seed = format!(
        "(seed {}: FLASHGEN_SEED={} reruns it)",
        rng.seed(),
        rng.seed()
    );
    let (hq, hkv, d) = (c.hq, c.hkv, c.d);
    let (batch, ql, kl, cu_q, cu_k) = match &c.varlen {
        Some(lens) => {
            let (mut cq, mut ck) = (vec![0i32], vec![0i32]);
            for &(a, b) in lens {
                cq.push(cq.last().unwrap() + a as i32);
                ck.push(ck.last().unwrap() + b as i32);
            }
            let (tq, tk) = (*cq.last().unwrap() as usize, *ck.last().unwrap() as usize);
            (
                lens.len(),
                Layout::packed(tq, hq, d),
                Layout::packed(tk, hkv, d),
                cq,
                ck,
            )
        }
        None => (
            c.batch,
            Layout::bshd(c.batch, c.sq, hq, d),
            Layout::bshd(c.batch, c.sk, hkv, d),
            vec![],
            vec![],
        ),
    };
    let draw = |rng: &mut Rng, n: usize| -> Vec<T> {
        rng.normal_vec_in(n, T::PRECISION)
            .into_iter()
            .map(T::from_f32)
            .collect()
    };
    let (qh, kh, vh) = (
        draw(&mut rng, ql.required_len()),
        draw(&mut rng, kl.required_len()),
        draw(&mut rng, kl.required_len()),
    );
    let s = rt.stream();
    let up = |x: &[T]| s.clone_htod(x).map_err(|e| format!("{e:?}"));
    let (q, k, v) = (up(&qh)?, up(&kh)?, up(&vh)?);
    let mut o = up(&vec![T::NAN; ql.required_len()])?;
    let lse_len = hq * ql.batch * ql.seq;
    let mut lse = s
        .clone_htod(&vec![f32::NAN; lse_len])
        .map_err(|e| format!("{e:?}"))?;
    let varlen = match &c.varlen {
        Some(_) => Some(rt.upload_varlen(&cu_q, &cu_k).map_err(|e| e.to_string())?),
        None => None,
    };

    // Parameter values on the device and for the reference.
    let vectors: Vec<(&str, DeviceVector)> = c
        .values
        .iter()
        .filter_map(|(n, v)| match v {
            Val::Ints(x) => Some((*n, rt.upload_vector_i32(x))),
            Val::Floats(x) => Some((*n, rt.upload_vector_f32(x))),
            _ => None,
        })
        .map(|(n, r)| r.map(|v| (n, v)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut args = CustomArgs::new();
    for (n, v) in &c.values {
        args = match v {
            Val::Int(x) => args.int(n, *x),
            Val::Float(x) => args.float(n, *x),
            _ => args.vector(n, &vectors.iter().find(|(m, _)| m == n).unwrap().1),
        };
    }
    let shape = match &varlen {
        Some(vl) => CustomShape::Varlen {
            heads_q: hq,
            varlen: vl,
        },
        None => CustomShape::Fixed {
            batch,
            heads_q: hq,
            sq: c.sq,
            sk: c.sk,
        },
    };
    let gpu_blocks = rt
        .custom_blocks(&spec, &args, shape)
        .map_err(|e| e.to_string())?;
    let host: Vec<flashgen_codegen::expr::VectorData> = mods
        .params()
        .iter()
        .map(
            |p| match &c.values.iter().find(|(n, _)| *n == p.name).unwrap().1 {
                Val::Int(x) => flashgen_codegen::expr::VectorData::Scalar(
                    flashgen_codegen::expr::Value::Int(*x),
                ),
                Val::Float(x) => flashgen_codegen::expr::VectorData::Scalar(
                    flashgen_codegen::expr::Value::Float(*x),
                ),
                Val::Ints(x) => flashgen_codegen::expr::VectorData::I32(x),
                Val::Floats(x) => flashgen_codegen::expr::VectorData::F32(x),
            },
        )
        .collect();
    let key: &BlocksKey = &gpu_blocks.blocks().key;
    let cpu = classify_cpu(&mods, key, &host).map_err(|e| e.to_string())?;
    if cpu != *gpu_blocks.blocks() {
        return Err(format!(
            "the GPU block classification differs from the CPU's:\nGPU {:?}\nCPU {:?}",
            gpu_blocks.blocks().list,
            cpu.list
        ));
    }
    let uploaded = if c.cpu_blocks {
        Some(rt.upload_custom_blocks(&cpu).map_err(|e| e.to_string())?)
    } else {
        None
    };

    let mut a = AttentionArgs::new(
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
            data: &mut o,
            layout: ql,
        },
    )
    .lse(&mut lse)
    .mask(Mask::Custom {
        args: &args,
        blocks: uploaded.as_ref(),
    });
    if let Some(sc) = c.scale {
        a = a.scale(sc);
    }
    if let Some(vl) = &varlen {
        a = a.varlen(vl);
    }
    rt.attention(&kernel, a)
        .map_err(|e| format!("launch of {kernel}: {e}"))?;
    s.synchronize()
        .map_err(|e| format!("{kernel} failed on the GPU: {e:?}"))?;
    let o_out: Vec<T> = s.clone_dtoh(&o).map_err(|e| format!("{e:?}"))?;
    let lse_out: Vec<f32> = s.clone_dtoh(&lse).map_err(|e| format!("{e:?}"))?;

    // The reference's own reading of the definition.
    let program = ExprProgram::parse(&c.definition).map_err(|e| e.to_string())?;
    let ref_args: Vec<(&str, ExprArg)> = c
        .values
        .iter()
        .map(|(n, v)| {
            let a = match v {
                Val::Int(x) => ExprArg::Int(*x),
                Val::Float(x) => ExprArg::Float(*x as f64),
                Val::Ints(x) => ExprArg::Ints(x),
                Val::Floats(x) => ExprArg::Floats(x),
            };
            (*n, a)
        })
        .collect();
    let bound = program.bind(&ref_args).map_err(|e| e.to_string())?;
    let mask = |b: usize, h: usize, q: i64, k: i64| bound.mask(b as i64, h as i64, q, k);
    let score =
        |x: f64, b: usize, h: usize, q: i64, k: i64| bound.score(x, b as i64, h as i64, q, k);
    let custom = reference::CustomMask {
        mask: &mask,
        score: program.has_score().then_some(&score as reference::ScoreFn),
    };
    let scale = c.scale.map(f64::from);
    let out = match &c.varlen {
        Some(_) => {
            let rq = reference::VarlenLayout::packed(&cu_q, hq, d).map_err(|e| e.to_string())?;
            let rk = reference::VarlenLayout::packed(&cu_k, hkv, d).map_err(|e| e.to_string())?;
            reference::attention_custom_varlen(
                reference::VarlenTensor::new(&qh, &rq),
                reference::VarlenTensor::new(&kh, &rk),
                reference::VarlenTensor::new(&vh, &rk),
                &custom,
                scale,
            )
        }
        None => {
            let rq = reference::Layout::bshd(batch, c.sq, hq, d);
            let rk = reference::Layout::bshd(batch, c.sk, hkv, d);
            reference::attention_custom(
                reference::Tensor::new(&qh, &rq),
                reference::Tensor::new(&kh, &rk),
                reference::Tensor::new(&vh, &rk),
                &custom,
                scale,
            )
        }
    }
    .map_err(|e| e.to_string())?;
    reference::check_close(&o_out, &out.o, &Tolerance::rel(1e-2).with_poison(f32::NAN))
        .map_err(|m| format!("{kernel}: O differs {seed}\n{m}"))?;
    reference::check_lse(&lse_out, &out.lse, 2e-3, Some(f32::NAN))
        .map_err(|m| format!("{kernel}: lse differs {seed}\n{m}"))?;
    Ok(())
}

fn runtime() -> Runtime {
    common::runtime()
}

/// The tiles a custom kernel runs on this GPU: the default, an mma.sync tile, and on Hopper
/// the wgmma and pipelined ones.
fn tiles(rt: &Runtime) -> Vec<Option<TileConfig>> {
    let mut out = vec![
        None,
        Some(TileConfig::new(128, 64, 8, 1)),
        Some(TileConfig::new(64, 32, 4, 2)),
    ];
    if rt.arch().major == 9 {
        out.push(Some(TileConfig::new(64, 128, 4, 1).with_mma(Mma::Wgmma)));
        out.push(Some(
            TileConfig::new(64, 64, 4, 1).with_mma(Mma::WgmmaPipelined),
        ));
        out.push(Some(
            TileConfig::new(128, 128, 8, 1).with_mma(Mma::WgmmaPipelined),
        ));
    }
    out
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn custom_causal_sliding_window_and_prefix_lm() {
    let rt = runtime();
    for tile in tiles(&rt) {
        let mut c = case("mask = k <= q", 300, 300);
        c.tile = tile;
        check(&rt, &c);
        let mut c = case("w: i32; mask = k <= q && q - k < w", 517, 517).with("w", Val::Int(100));
        c.tile = tile;
        check(&rt, &c);
        let mut c = case("p: i32; mask = k < p || k <= q", 333, 333).with("p", Val::Int(129));
        c.tile = tile;
        check(&rt, &c);
    }
}

/// Random document lengths; the query's document is read at its aligned position.
#[test]
#[ignore = "needs a CUDA GPU"]
fn custom_document_masking() {
    let rt = runtime();
    let mut rng = Rng::fresh();
    for (sq, sk) in [(700, 700), (300, 700), (700, 700)] {
        let mut doc = Vec::with_capacity(sk);
        let mut id = 0;
        while doc.len() < sk {
            let len = 1 + rng.below(200);
            doc.extend(std::iter::repeat_n(id, len.min(sk - doc.len())));
            id += 1;
        }
        for tile in [None, Some(TileConfig::new(64, 64, 4, 1))] {
            let mut c = case("doc: [i32]; mask = doc[q] == doc[k] && k <= q", sq, sk)
                .with("doc", Val::Ints(doc.clone()));
            c.tile = tile;
            check(&rt, &c);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn custom_dilated_and_strided() {
    let rt = runtime();
    check(&rt, &case("mask = k <= q && (q - k) % 3 == 0", 400, 400));
    check(
        &rt,
        &case("mask = k % 64 < 16 || q / 128 == k / 128", 381, 450),
    );
}

/// Rows that see no key give O = 0 and lse = -inf.
#[test]
#[ignore = "needs a CUDA GPU"]
fn custom_fully_masked_rows() {
    let rt = runtime();
    check(&rt, &case("mask = q % 5 != 2 && k <= q", 260, 260));
    // Whole query blocks without a visible key.
    check(&rt, &case("mask = q >= 256 && k <= q", 600, 600));
    // Nothing visible at all.
    check(&rt, &case("mask = q < 0", 100, 130));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn custom_score_modifiers() {
    let rt = runtime();
    for tile in tiles(&rt) {
        let mut c = case("mask = k <= q; score = 50.0 * tanh(s / 50.0)", 300, 300);
        c.tile = tile;
        check(&rt, &c);
        // A cap that bites: scale 1 puts scores around +-11.
        let mut c = case(
            "cap: f32; mask = k <= q; score = cap * tanh(s / cap)",
            300,
            300,
        )
        .with("cap", Val::Float(5.0));
        c.tile = tile;
        c.scale = Some(1.0);
        check(&rt, &c);
        let slopes: Vec<f32> = (1..=4).map(|h| (-8.0 * h as f32 / 4.0).exp2()).collect();
        let mut c = case(
            "slope: [f32]; mask = k <= q; score = s + slope[h] * (k - q)",
            300,
            300,
        )
        .with("slope", Val::Floats(slopes));
        c.tile = tile;
        check(&rt, &c);
        // A per-head bias leaves O alone and shifts lse.
        let mut c = case("bias: [f32]; score = s + bias[h]", 200, 250)
            .with("bias", Val::Floats(vec![0.5, -1.0, 2.0, 0.0]));
        c.tile = tile;
        check(&rt, &c);
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn custom_awkward_shapes_gqa_varlen_and_dtypes() {
    let rt = runtime();
    for (sq, sk) in [(1, 1), (77, 300), (300, 77), (129, 255)] {
        check(&rt, &case("mask = k <= q", sq, sk));
        check(
            &rt,
            &case(
                "w: i32; mask = q - k < w && k <= q; score = s * 0.5",
                sq,
                sk,
            )
            .with("w", Val::Int(37)),
        );
    }
    let mut c = case("mask = (h + q) % 2 == 0 || k == 0", 200, 200);
    c.hq = 8;
    c.hkv = 1;
    check(&rt, &c);
    let mut c = case("mask = b == 0 || k <= q", 150, 150);
    c.batch = 3;
    check(&rt, &c);
    let mut c = case("w: i32; mask = k <= q && q - k < w", 0, 0).with("w", Val::Int(64));
    c.varlen = Some(vec![(100, 100), (37, 300), (1, 1), (250, 250)]);
    check(&rt, &c);
    for d in [64, 128] {
        let mut c = case("mask = k <= q; score = 20.0 * tanh(s / 20.0)", 200, 200);
        c.dtype = DType::F16;
        c.d = d;
        check(&rt, &c);
    }
    // A caller's classification (made on the CPU) instead of the runtime's.
    let mut c = case("mask = k <= q && q - k < 150", 400, 400);
    c.cpu_blocks = true;
    check(&rt, &c);
}

/// Launch-time checks of bindings and vector lengths.
#[test]
#[ignore = "needs a CUDA GPU"]
fn custom_launch_checks() {
    let rt = runtime();
    let mods = CustomMods::parse("doc: [i32]; mask = doc[q] == doc[k]").unwrap();
    let spec = AttentionSpec::custom(&mods, 64, DType::Bf16);
    let short = rt.upload_vector_i32(&[0; 10]).unwrap();
    let floats = rt.upload_vector_f32(&[0.0; 100]).unwrap();
    let shape = CustomShape::Fixed {
        batch: 1,
        heads_q: 2,
        sq: 64,
        sk: 64,
    };
    let err = rt
        .custom_blocks(&spec, &CustomArgs::new().vector("doc", &floats), shape)
        .err()
        .unwrap();
    assert!(err.to_string().contains("declared [i32]"), "{err}");
    let err = rt
        .custom_blocks(&spec, &CustomArgs::new(), shape)
        .err()
        .unwrap();
    assert!(err.to_string().contains("has no value"), "{err}");
    let l = Layout::bshd(1, 64, 2, 64);
    let x = rt.stream().alloc_zeros::<bf16>(l.numel()).unwrap();
    let mut o = rt.stream().alloc_zeros::<bf16>(l.numel()).unwrap();
    let args = CustomArgs::new().vector("doc", &short);
    let a = AttentionArgs::new(
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
    )
    .mask(Mask::Custom {
        args: &args,
        blocks: None,
    });
    let err = rt
        .attention(&spec.with_default_tile(rt.arch()), a)
        .unwrap_err();
    assert!(
        err.to_string().contains("vector `doc` is read at `q`"),
        "{err}"
    );
}

/// Small launches for compute-sanitizer (memcheck, racecheck): every mainloop, a vector read,
/// a score modifier and ragged shapes.
#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_custom_small() {
    let rt = runtime();
    let doc: Vec<i32> = (0..200).map(|i| i / 50).collect();
    for tile in tiles(&rt) {
        let mut c = case(
            "doc: [i32]; mask = doc[q] == doc[k] && k <= q; score = 30.0 * tanh(s / 30.0)",
            150,
            200,
        )
        .with("doc", Val::Ints(doc.clone()));
        c.tile = tile;
        c.hq = 2;
        c.hkv = 1;
        c.d = 64;
        check(&rt, &c);
    }
}

/// The default set's custom specs (no definition) run as dense attention.
#[test]
#[ignore = "needs a CUDA GPU"]
fn custom_without_definition_is_dense() {
    let rt = runtime();
    assert!(default_set()
        .iter()
        .any(|s| s.variant == Variant::Custom && s.definition.is_none()));
    check(&rt, &case("", 190, 220));
    let _ = Definition::parse("mask = true").unwrap();
}
