//! The GPU side of a tune: random inputs for a target (several sets when the problem is small
//! enough to sit in L2), launches of a spec on one set, poisoned runs for the correctness gate,
//! and CUDA-event timing.

use crate::target::{SplitMix, TargetMask, TuneTarget};
use flashgen_codegen::KernelSpec;
use flashgen_runtime::cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
use flashgen_runtime::cudarc::driver::CudaSlice;
use flashgen_runtime::{
    AttentionArgs, CustomArgs, DeviceBlockMask, DeviceHeadKinds, DeviceVarlen, Element, Layout,
    Mask, Runtime, Tensor, TensorMut,
};
use half::{bf16, f16};
use std::time::{Duration, Instant};

/// Element types the tuner can fill and read back.
pub trait TuneElement: Element {
    const NAN: Self;
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl TuneElement for bf16 {
    const NAN: Self = bf16::NAN;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

impl TuneElement for f16 {
    const NAN: Self = f16::NAN;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

fn driver(context: &str, e: impl std::fmt::Debug) -> String {
    format!("CUDA error while {context}: {e:?}")
}

/// The device's L2 size in bytes.
pub fn l2_bytes(rt: &Runtime) -> Result<usize, String> {
    rt.context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
        .map(|v| v.max(0) as usize)
        .map_err(|e| driver("reading the L2 size", e))
}

/// The layouts of a target's tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layouts {
    pub q: Layout,
    /// K and V as the kernel reads them (APB: the local block only).
    pub kv: Layout,
    /// APB: the anchor and passing blocks (possibly empty; the buffers still hold one element).
    pub prefix: Option<Layout>,
    /// Rows of the lse output (`heads * tokens`).
    pub lse_rows: usize,
}

/// Layouts of a target: BSHD, or packed for a varlen spec (`batch` sequences of `seq`).
pub fn layouts(target: &TuneTarget) -> Layouts {
    let s = &target.shape;
    let d = target.spec.head_dim as usize;
    let (q, kv) = if target.spec.varlen {
        (
            Layout::packed(s.batch * s.seq, s.heads, d),
            Layout::packed(s.batch * s.seq, s.kv_heads, d),
        )
    } else {
        (
            Layout::bshd(s.batch, s.seq, s.heads, d),
            Layout::bshd(s.batch, s.seq, s.kv_heads, d),
        )
    };
    let prefix = match target.mask {
        TargetMask::Apb { anchor, passing } => {
            Some(Layout::bshd(s.batch, anchor + passing, s.kv_heads, d))
        }
        _ => None,
    };
    Layouts {
        q,
        kv,
        prefix,
        lse_rows: s.heads * s.batch * s.seq,
    }
}

/// Bytes one launch reads and writes (Q, K, V, prefix, O, lse): what must not sit in L2.
pub fn problem_bytes(target: &TuneTarget) -> usize {
    let l = layouts(target);
    let e = target.spec.dtype.size_bytes();
    let prefix = l.prefix.map_or(0, |p| 2 * p.required_len());
    (2 * l.q.required_len() + 2 * l.kv.required_len() + prefix) * e + 4 * l.lse_rows
}

struct InputSet<T> {
    q: CudaSlice<T>,
    k: CudaSlice<T>,
    v: CudaSlice<T>,
    prefix: Option<(CudaSlice<T>, CudaSlice<T>)>,
    o: CudaSlice<T>,
    lse: CudaSlice<f32>,
}

/// How the random inputs of a workload are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputValues {
    /// `2 * (u1 + u2 - 1)` for uniforms `u1`, `u2`: a soft bell in [-2, 2), variance 2/3 (the
    /// tuner's and the benchmarks' inputs).
    #[default]
    Bell,
    /// Uniform in [-2, 2), variance 4/3 (the attention benchmark's inputs before it took the
    /// tuner's; kept to measure what the inputs change).
    Uniform,
}

/// A target's inputs on the device.
pub struct Workload<T: TuneElement> {
    target: TuneTarget,
    layouts: Layouts,
    sets: Vec<InputSet<T>>,
    list: Option<DeviceBlockMask>,
    kinds: Option<DeviceHeadKinds>,
    varlen: DeviceVarlen,
}

impl<T: TuneElement> Workload<T> {
    /// Uploads `sets` sets of random inputs (normal-ish values in [-2, 2)) and the target's mask.
    pub fn new(rt: &Runtime, target: &TuneTarget, sets: usize, seed: u64) -> Result<Self, String> {
        Self::with_values(rt, target, sets, seed, InputValues::Bell)
    }

    /// As [`new`](Self::new), with the inputs drawn as `values` says.
    pub fn with_values(
        rt: &Runtime,
        target: &TuneTarget,
        sets: usize,
        seed: u64,
        values: InputValues,
    ) -> Result<Self, String> {
        let l = layouts(target);
        let stream = rt.stream();
        let mut rng = SplitMix(seed);
        let mut random = |n: usize| -> Vec<T> {
            (0..n.max(1))
                .map(|_| {
                    let x = match values {
                        // Sum of two uniforms: a soft bell with a realistic spread.
                        InputValues::Bell => rng.uniform() + rng.uniform() - 1.0,
                        InputValues::Uniform => 2.0 * rng.uniform() - 1.0,
                    };
                    T::from_f32((2.0 * x) as f32)
                })
                .collect()
        };
        let mut up = |n: usize| {
            stream
                .clone_htod(&random(n))
                .map_err(|e| driver("uploading inputs", e))
        };
        let mut all = Vec::with_capacity(sets.max(1));
        for _ in 0..sets.max(1) {
            let q = up(l.q.required_len())?;
            let k = up(l.kv.required_len())?;
            let v = up(l.kv.required_len())?;
            let prefix = match l.prefix {
                Some(p) => Some((up(p.required_len())?, up(p.required_len())?)),
                None => None,
            };
            let o = stream
                .alloc_zeros::<T>(l.q.required_len().max(1))
                .map_err(|e| driver("allocating the output", e))?;
            let lse = stream
                .alloc_zeros::<f32>(l.lse_rows.max(1))
                .map_err(|e| driver("allocating the lse", e))?;
            all.push(InputSet {
                q,
                k,
                v,
                prefix,
                o,
                lse,
            });
        }
        let list = match target.block_mask() {
            Some(m) => Some(rt.upload_block_mask(&m).map_err(|e| e.to_string())?),
            None => None,
        };
        let kinds = match target.head_kinds() {
            Some(k) => Some(rt.upload_head_kinds(&k).map_err(|e| e.to_string())?),
            None => None,
        };
        let cu_host: Vec<i32> = (0..=target.shape.batch)
            .map(|b| (b * target.shape.seq) as i32)
            .collect();
        let varlen = rt
            .upload_varlen(&cu_host, &cu_host)
            .map_err(|e| e.to_string())?;
        Ok(Workload {
            target: target.clone(),
            layouts: l,
            sets: all,
            list,
            kinds,
            varlen,
        })
    }

    pub fn sets(&self) -> usize {
        self.sets.len()
    }

    /// Launches `spec` on input set `set` (asynchronously).
    pub fn launch(&mut self, rt: &Runtime, spec: &KernelSpec, set: usize) -> Result<(), String> {
        let l = self.layouts;
        let n = self.sets.len();
        let x = &mut self.sets[set % n];
        let custom_args = match self.target.mask {
            TargetMask::Custom { window } => CustomArgs::new().int("w", window as i32),
            _ => CustomArgs::new(),
        };
        let mask = match self.target.mask {
            TargetMask::None | TargetMask::Apb { .. } => Mask::None,
            // The runtime builds the classification on the first launch and caches it.
            TargetMask::Custom { .. } => Mask::Custom {
                args: &custom_args,
                blocks: None,
            },
            TargetMask::Streaming(p) => Mask::Streaming(p),
            TargetMask::RandomBlocks { .. } => {
                Mask::BlockSparse(self.list.as_ref().ok_or("block list missing")?)
            }
            TargetMask::HalfStreaming(p) => Mask::Mixed {
                heads: self.kinds.as_ref().ok_or("head kinds missing")?,
                streaming: Some(p),
                block_list: None,
            },
        };
        let mut args = AttentionArgs::new(
            Tensor {
                data: &x.q,
                layout: l.q,
            },
            Tensor {
                data: &x.k,
                layout: l.kv,
            },
            Tensor {
                data: &x.v,
                layout: l.kv,
            },
            TensorMut {
                data: &mut x.o,
                layout: l.q,
            },
        )
        .mask(mask);
        if spec.lse {
            args = args.lse(&mut x.lse);
        }
        if let (Some((pk, pv)), Some(layout)) = (&x.prefix, l.prefix) {
            args = args.prefix(Tensor { data: pk, layout }, Tensor { data: pv, layout });
        }
        if spec.varlen {
            args = args.varlen(&self.varlen);
        }
        rt.attention(spec, args).map_err(|e| e.to_string())
    }

    /// Runs `spec` once on set 0 with O and lse poisoned with NaN first, and returns O (and the
    /// lse when the spec writes it) as f32.
    pub fn run_poisoned(
        &mut self,
        rt: &Runtime,
        spec: &KernelSpec,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), String> {
        let stream = rt.stream().clone();
        {
            let x = &mut self.sets[0];
            let o_nan = vec![T::NAN; x.o.len()];
            stream
                .memcpy_htod(&o_nan, &mut x.o)
                .map_err(|e| driver("poisoning the output", e))?;
            let lse_nan = vec![f32::NAN; x.lse.len()];
            stream
                .memcpy_htod(&lse_nan, &mut x.lse)
                .map_err(|e| driver("poisoning the lse", e))?;
        }
        self.launch(rt, spec, 0)?;
        stream
            .synchronize()
            .map_err(|e| driver(&format!("running {spec}"), e))?;
        let x = &self.sets[0];
        let o: Vec<T> = stream
            .clone_dtoh(&x.o)
            .map_err(|e| driver("reading the output", e))?;
        let o = o.into_iter().map(T::to_f32).collect();
        let lse = if spec.lse {
            let lse: Vec<f32> = stream
                .clone_dtoh(&x.lse)
                .map_err(|e| driver("reading the lse", e))?;
            Some(lse[..self.layouts.lse_rows].to_vec())
        } else {
            None
        };
        Ok((o, lse))
    }
}

/// The least warm-up before every timing: the GPU leaves its idle clocks only after some
/// hundred milliseconds of work, and the first launches after an idle spell (a compile, a host
/// copy) otherwise read several percent slow.
pub const WARMUP_TIME: Duration = Duration::from_millis(200);

/// Untimed launches issued just before the timed ones, so that the stream is already busy when
/// the first timed launch is prepared on the host.
const LEAD: usize = 2;

/// The one way flashgen times GPU work (the tuner's candidates and defaults, and the
/// benchmarks): what launch `i` costs in a stream of back-to-back launches, as a user's
/// inference loop issues them.
///
/// `launch(i)` issues launch `i` of a sequence of `n` (which kernel and which input set is the
/// caller's choice: one kernel over rotated input sets, or several kernels interleaved). The
/// sequence is first repeated untimed, in whole passes and without waiting between launches,
/// until the GPU has been busy for at least `warm_for`; then [`LEAD`] launches start the
/// stream, and the `n` timed launches are queued with one CUDA event between each two, with no
/// host wait in between. Sample `i` is the time from event `i` to event `i + 1`: the kernel
/// (every kernel the launch issues) plus the gap before the next launch starts. The
/// host prepares launch `i + 1` (argument checks, plan, tuned lookup) while launch `i` runs, so
/// its cost is hidden as in a real stream, unless the host is slower than the GPU: then the
/// samples show the host's pace, which is what such launches cost a user too. Milliseconds per
/// launch, in launch order.
pub fn time_launches(
    rt: &Runtime,
    warm_for: Duration,
    n: usize,
    mut launch: impl FnMut(usize) -> Result<(), String>,
) -> Result<Vec<f64>, String> {
    let n = n.max(1);
    let stream = rt.stream();
    let sync = || {
        stream
            .synchronize()
            .map_err(|e| driver("waiting for the warm-up launches", e))
    };
    let started = Instant::now();
    loop {
        for i in 0..n {
            launch(i)?;
        }
        // Whole passes without waits keep the GPU as busy as the timed launches will; the
        // wait bounds the queue, so the elapsed time is GPU time.
        sync()?;
        if started.elapsed() >= warm_for {
            break;
        }
    }
    let ctx = rt.context();
    let events = (0..=n)
        .map(|_| {
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| driver("creating an event", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..LEAD.min(n) {
        launch(i)?;
    }
    for (i, event) in events.iter().enumerate().take(n) {
        event
            .record(stream)
            .map_err(|e| driver("recording an event", e))?;
        launch(i)?;
    }
    let last = &events[n];
    last.record(stream)
        .map_err(|e| driver("recording an event", e))?;
    last.synchronize()
        .map_err(|e| driver("waiting for the timed launches", e))?;
    events
        .windows(2)
        .map(|w| {
            w[0].elapsed_ms(&w[1])
                .map(f64::from)
                .map_err(|e| driver("reading an event time", e))
        })
        .collect()
}

/// Bytes written between two launches timed by [`time_launches_flushed`]: more than the L2
/// cache of any current GPU (50 MiB on an H100/H200), as the peers' timer does.
const FLUSH_BYTES: usize = 256 << 20;

/// [`time_launches`] the way `triton.testing.do_bench` times the peers: `warmup` untimed
/// launches, then each of the `n` timed launches queued behind a write that evicts the L2
/// cache, between its own pair of events, with no host wait in between. No launch finds its
/// inputs in L2 and the gaps between launches are not counted, so a ratio to a peer's time
/// compares like with like (the decode benchmark reports these). Milliseconds per launch.
pub fn time_launches_flushed(
    rt: &Runtime,
    warmup: usize,
    n: usize,
    mut launch: impl FnMut(usize) -> Result<(), String>,
) -> Result<Vec<f64>, String> {
    let stream = rt.stream();
    let mut flush = stream
        .alloc_zeros::<u8>(FLUSH_BYTES)
        .map_err(|e| driver("allocating the L2 flush buffer", e))?;
    for i in 0..warmup {
        launch(i)?;
    }
    stream
        .synchronize()
        .map_err(|e| driver("waiting for the warm-up launches", e))?;
    let ctx = rt.context();
    let event = || {
        ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(|e| driver("creating an event", e))
    };
    let mut pairs = Vec::with_capacity(n.max(1));
    for i in 0..n.max(1) {
        stream
            .memset_zeros(&mut flush)
            .map_err(|e| driver("flushing the L2 cache", e))?;
        let (start, end) = (event()?, event()?);
        start
            .record(stream)
            .map_err(|e| driver("recording an event", e))?;
        launch(i)?;
        end.record(stream)
            .map_err(|e| driver("recording an event", e))?;
        pairs.push((start, end));
    }
    stream
        .synchronize()
        .map_err(|e| driver("waiting for the timed launches", e))?;
    pairs
        .iter()
        .map(|(start, end)| {
            start
                .elapsed_ms(end)
                .map(f64::from)
                .map_err(|e| driver("reading an event time", e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Shape;
    use flashgen_codegen::{AttentionSpec, DType, Variant};

    #[test]
    fn problem_bytes_count_every_buffer() {
        let spec = AttentionSpec::new(Variant::Dense, 128, DType::Bf16, true).with_lse(true);
        let t = TuneTarget {
            spec,
            shape: Shape {
                batch: 1,
                heads: 32,
                kv_heads: 8,
                seq: 1024,
            },
            mask: TargetMask::None,
        };
        let q = 1024 * 32 * 128 * 2;
        let kv = 1024 * 8 * 128 * 2;
        assert_eq!(problem_bytes(&t), 2 * q + 2 * kv + 4 * 32 * 1024);

        let apb = TuneTarget::standard(
            AttentionSpec::new(Variant::Apb, 64, DType::Bf16, false),
            4096,
        );
        let l = layouts(&apb);
        assert_eq!(l.q.seq, 2048);
        assert_eq!(l.kv.seq, 2048);
        assert_eq!(l.prefix.unwrap().seq, 512 + 1024);

        let varlen = TuneTarget {
            spec: spec.with_varlen(true),
            shape: Shape {
                batch: 3,
                heads: 4,
                kv_heads: 4,
                seq: 100,
            },
            mask: TargetMask::None,
        };
        let l = layouts(&varlen);
        assert_eq!((l.q.batch, l.q.seq, l.lse_rows), (1, 300, 1200));
    }
}
