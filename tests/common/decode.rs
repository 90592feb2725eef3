//! Shared by the decode GPU tests: the 16-bit element types they draw in, the runtime, and one
//! decode launch with its outputs poisoned.

#![allow(dead_code)]

use flashgen_reference as reference;
use flashgen_reference::Precision;
use flashgen_runtime::decode::{DecodeArgs, DecodeMask, DevicePageTable, PagedKvCache};
use flashgen_runtime::{Element, Layout, Runtime, Tensor, TensorMut};
use half::{bf16, f16};

/// A 16-bit element the tests draw in.
pub trait Half: Element + reference::Element {
    const PRECISION: Precision;
    const NAN: Self;
    fn from_f32(x: f32) -> Self;
    fn from_bits(b: u16) -> Self;
}

impl Half for bf16 {
    const PRECISION: Precision = Precision::Bf16;
    const NAN: Self = bf16::NAN;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn from_bits(b: u16) -> Self {
        bf16::from_bits(b)
    }
}

impl Half for f16 {
    const PRECISION: Precision = Precision::F16;
    const NAN: Self = f16::NAN;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn from_bits(b: u16) -> Self {
        f16::from_bits(b)
    }
}

pub fn runtime() -> Runtime {
    Runtime::new(0).unwrap_or_else(|e| panic!("GPU tests need a CUDA GPU: {e}"))
}

/// What one decode launch wrote: the kernel's spec text, O and lse.
pub struct Decoded<T> {
    pub spec: String,
    pub o: Vec<T>,
    pub lse: Vec<f32>,
}

/// Decodes `q_host` (laid out as `q_layout`, `[batch, q_len, heads_q, d]`) over `cache` and
/// `table` under `mask`, with O and lse poisoned (NaN) before the launch, and reads both back.
pub fn decode_poisoned<T: Half>(
    rt: &Runtime,
    cache: &PagedKvCache,
    table: &DevicePageTable,
    q_host: &[T],
    q_layout: Layout,
    mask: DecodeMask<'_>,
) -> Result<Decoded<T>, String> {
    let s = rt.stream();
    let rows = q_layout.batch * q_layout.heads * q_layout.seq;
    let q = s.clone_htod(q_host).map_err(|e| format!("{e:?}"))?;
    let mut o = s
        .clone_htod(&vec![T::NAN; q_layout.required_len()])
        .map_err(|e| format!("{e:?}"))?;
    let mut lse = s
        .clone_htod(&vec![f32::NAN; rows])
        .map_err(|e| format!("{e:?}"))?;
    let spec = rt
        .decode(
            cache,
            table,
            DecodeArgs::new(
                Tensor {
                    data: &q,
                    layout: q_layout,
                },
                TensorMut {
                    data: &mut o,
                    layout: q_layout,
                },
            )
            .lse(&mut lse)
            .mask(mask),
        )
        .map_err(|e| format!("decode: {e}"))?;
    s.synchronize()
        .map_err(|e| format!("{spec} failed on the GPU: {e:?}"))?;
    Ok(Decoded {
        spec: spec.to_string(),
        o: s.clone_dtoh(&o).map_err(|e| format!("{e:?}"))?,
        lse: s.clone_dtoh(&lse).map_err(|e| format!("{e:?}"))?,
    })
}
