//! The GPU side: a device context and stream, kernels loaded through the cache, and the typed
//! launch API over cudarc device buffers.

use crate::cache::KernelCache;
use crate::compile::nvrtc_version;
use crate::config::{GpuIdentity, ShapeKey, TunedConfig};
use crate::custom::{BlocksKey, CustomArgs, CustomValue, DeviceCustomBlocks};
use crate::custom_launch::CustomShape;
use crate::decode::attention::DecodeScratch;
use crate::device_index::{DeviceBlockMask, DeviceHeadKinds, DeviceVarlen};
use crate::driver::open_device;
use crate::error::{invalid, DriverContext, Result};
use crate::layout::Layout;
use crate::masks::{BlockMask, HeadKind, StreamingParams};
use crate::module::{LoadedKernel, ModuleKey, ModuleTable};
use crate::plan::{
    check_launch, plan_validated, BlockListArg, Buffer, CustomArg, CustomBlocksArg, HeadKindsArg,
    LaunchDesc, MaskArg, Plan, TensorArg, VarlenArg,
};
use crate::tuned::{mask_blocks, select_tile, select_tile_for_blocks, shape_key, TileSource};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg, SyncOnDrop, ValidAsZeroBits,
};
use flashgen_codegen::{
    template_digest, validate_with_limit, Arch, AttentionSpec, DType, KernelSpec, TileConfig,
    Variant,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// Element types the kernels take.
pub trait Element: DeviceRepr + ValidAsZeroBits + Copy + Send + Sync + 'static {
    const DTYPE: DType;
}

impl Element for half::bf16 {
    const DTYPE: DType = DType::Bf16;
}

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
}

/// What the runtime knows about its GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub arch: Arch,
    pub sm_count: u32,
    pub max_shared_per_block_optin: u32,
    pub driver_version: i32,
    pub total_memory: usize,
}

/// A kernel spec validated for one runtime's device ([`Runtime::validated`], the only maker):
/// each launch validates its kernel once and loads it through this.
#[derive(Clone, Copy)]
struct Validated<'s>(&'s KernelSpec);

/// One GPU: context, stream, kernel cache and loaded kernels.
pub struct Runtime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    cache: KernelCache,
    /// Every module loaded into the context: attention kernels and any other source.
    pub(crate) modules: ModuleTable,
    warnings: Mutex<Vec<String>>,
    /// The tuned config of [`Runtime::attention_tuned`], found on first use.
    tuned: OnceLock<Option<Arc<TunedConfig>>>,
    /// Split-KV partials of the decode kernels, reused across launches on the stream.
    pub(crate) decode_scratch: DecodeScratch,
    /// Block classifications of custom masks, by what they were built for.
    custom_blocks: Mutex<HashMap<BlocksKey, Arc<DeviceCustomBlocks>>>,
}

impl Runtime {
    /// Opens GPU `ordinal` with the kernel cache of [`KernelCache::from_env`].
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_cache(ordinal, KernelCache::from_env())
    }

    pub fn with_cache(ordinal: usize, cache: KernelCache) -> Result<Self> {
        // libnvrtc is needed only when a kernel is compiled (checked there).
        let (ctx, info) = open_device(ordinal)?;
        let stream = ctx.default_stream();
        Ok(Runtime {
            ctx,
            stream,
            info,
            cache,
            modules: ModuleTable::default(),
            warnings: Mutex::new(Vec::new()),
            tuned: OnceLock::new(),
            decode_scratch: DecodeScratch::default(),
            custom_blocks: Mutex::new(HashMap::new()),
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn arch(&self) -> Arch {
        self.info.arch
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn cache(&self) -> &KernelCache {
        &self.cache
    }

    pub(crate) fn custom_cache(&self) -> &Mutex<HashMap<BlocksKey, Arc<DeviceCustomBlocks>>> {
        &self.custom_blocks
    }

    /// Cache warnings so far (rejected entries, failed writes), drained.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().expect("warnings lock"))
    }

    /// Records a warning for [`take_warnings`](Self::take_warnings).
    pub(crate) fn push_warning(&self, warning: String) {
        self.warnings.lock().expect("warnings lock").push(warning);
    }

    /// Validates, compiles (or loads from the cache) and loads the kernel of a spec, through the
    /// runtime's module table ([`load_module`](Self::load_module) for other sources). A spec
    /// already in the table is not validated again.
    pub fn kernel(&self, spec: &KernelSpec) -> Result<Arc<LoadedKernel>> {
        self.load(ModuleKey::Spec(*spec), |cache, arch| {
            let checked = self.validated(spec)?;
            cache.get_or_compile(checked.0, arch)
        })
    }

    /// Validates a spec for this device: the arch's checks, with shared memory against the
    /// device's reported per-block limit (not the arch's table).
    pub fn validate(&self, spec: &KernelSpec) -> Result<()> {
        self.validated(spec).map(|_| ())
    }

    /// [`validate`](Self::validate), keeping the proof: the launch paths validate their kernel
    /// once and hand the result to [`kernel_validated`](Self::kernel_validated).
    fn validated<'s>(&self, spec: &'s KernelSpec) -> Result<Validated<'s>> {
        validate_with_limit(spec, self.arch(), self.info().max_shared_per_block_optin)?;
        Ok(Validated(spec))
    }

    /// [`kernel`](Self::kernel) of a spec validated for this device: loads it without
    /// validating it again.
    fn kernel_validated(&self, spec: Validated<'_>) -> Result<Arc<LoadedKernel>> {
        let Validated(spec) = spec;
        self.load(ModuleKey::Spec(*spec), |cache, arch| {
            cache.get_or_compile(spec, arch)
        })
    }

    /// Checks a block list's structure and copies it to the device. The result keeps the host
    /// copy and cannot be changed, so launch checks read what the kernel reads.
    pub fn upload_block_mask(&self, mask: &BlockMask) -> Result<DeviceBlockMask> {
        DeviceBlockMask::upload(&self.stream, mask)
    }

    /// Copies per-head kinds (and their heavy-first launch order) to the device.
    pub fn upload_head_kinds(&self, kinds: &[HeadKind]) -> Result<DeviceHeadKinds> {
        DeviceHeadKinds::upload(&self.stream, kinds)
    }

    /// Checks the `cu_seqlens` of a packed varlen batch (`batch + 1` entries each, from 0,
    /// non-decreasing) and copies them to the device, keeping the host copies that launches
    /// are checked against.
    pub fn upload_varlen(
        &self,
        cu_seqlens_q: &[i32],
        cu_seqlens_k: &[i32],
    ) -> Result<DeviceVarlen> {
        DeviceVarlen::upload(&self.stream, cu_seqlens_q, cu_seqlens_k)
    }

    /// Runs attention with the kernel of `spec` (its tile as given). Every argument is
    /// validated before launch.
    pub fn attention<T: Element>(
        &self,
        spec: &KernelSpec,
        args: AttentionArgs<'_, T>,
    ) -> Result<()> {
        // The spec is validated once, and the arguments are checked, before anything is
        // compiled.
        let spec = self.validated(spec)?;
        self.with_desc(&spec.0.attention(), args, |desc| {
            self.launch_desc(spec, desc)
        })
    }

    /// Runs attention with the kernel of `spec` whose tile the tuned config gives for this
    /// launch's shape bucket ([`tuned_config`](Self::tuned_config)); without a config or an
    /// entry for the spec, the heuristic default tile. Returns the kernel that ran. With a
    /// block list, only tiles whose `block_m` and `block_n` divide its block sizes are
    /// candidates: the nearest tuned entry among them, else the default tile, else the search
    /// space's nearest tile to the default.
    pub fn attention_tuned<T: Element>(
        &self,
        spec: &AttentionSpec,
        args: AttentionArgs<'_, T>,
    ) -> Result<KernelSpec> {
        self.with_desc(spec, args, |desc| {
            // Everything but the tile is checked before the shape is measured.
            // The launch is checked and planned once; the chosen tile adds its own checks.
            let checked = check_launch(spec, desc)?;
            let shape = shape_key(spec, desc);
            let (tile, _) = self.select_tile_for(spec, &shape, mask_blocks(spec, desc))?;
            let tuned = spec.with_tile(tile);
            let planned = checked.with_tile(&tile)?;
            let kernel = self.kernel_validated(self.validated(&tuned)?)?;
            // SAFETY: every buffer in `desc` comes from a live `CudaSlice` of its stated length,
            // kept alive and ordered on the stream by `with_desc`'s guards.
            unsafe { self.launch_planned(&kernel, &planned)? };
            Ok(tuned)
        })
    }

    /// The tile a launch of `spec` with `shape` gets, and where it came from.
    pub fn select_tile(&self, spec: &AttentionSpec, shape: &ShapeKey) -> (TileConfig, TileSource) {
        let config = self.tuned_config();
        select_tile(config.as_deref(), spec, shape, self.arch())
    }

    /// As [`select_tile`](Self::select_tile), for a launch whose block list has blocks of
    /// `(block_q, block_k)` tokens: only tiles dividing them. An error when no tile of the
    /// search space does.
    pub fn select_tile_for(
        &self,
        spec: &AttentionSpec,
        shape: &ShapeKey,
        blocks: Option<(usize, usize)>,
    ) -> Result<(TileConfig, TileSource)> {
        let config = self.tuned_config();
        select_tile_for_blocks(config.as_deref(), spec, shape, self.arch(), blocks)
    }

    /// The tuned config in use: the one set with [`use_tuned_config`](Self::use_tuned_config),
    /// else the one found on first use ([`crate::config::discover`]: `$FLASHGEN_CONFIG`, then
    /// the user config dir). A file that cannot be read, or was tuned on another GPU, is not
    /// used; what went wrong is printed to stderr once and kept in
    /// [`take_warnings`](Self::take_warnings).
    pub fn tuned_config(&self) -> Option<Arc<TunedConfig>> {
        if let Some(found) = self.tuned.get() {
            return found.clone();
        }
        let found = self.discover_tuned_config();
        self.tuned.get_or_init(|| found).clone()
    }

    fn discover_tuned_config(&self) -> Option<Arc<TunedConfig>> {
        let gpu = GpuIdentity::from(&self.info);
        // Without libnvrtc nothing compiles anyway; the NVRTC check is then left out.
        let nvrtc = nvrtc_version().unwrap_or((0, 0));
        let (config, warnings) =
            match TunedConfig::discover_for(None, &gpu, nvrtc, template_digest()) {
                Ok(None) => (None, Vec::new()),
                Ok(Some(found)) => (found.config, found.warnings),
                Err(e) => (
                    None,
                    vec![format!("{e} (not used; the heuristic defaults apply)")],
                ),
            };
        let warnings = if nvrtc == (0, 0) {
            warnings
                .into_iter()
                .filter(|w| !w.contains("NVRTC"))
                .collect()
        } else {
            warnings
        };
        self.warn_loudly(warnings);
        config.map(Arc::new)
    }

    /// Uses the config file at `path` for [`attention_tuned`](Self::attention_tuned) from now
    /// on (it must be called before the first tuned launch). An unreadable or invalid file is an
    /// error; a file tuned on another GPU is not used and one tuned with other templates or
    /// another NVRTC is used; both are warned about (stderr and the returned list).
    pub fn use_tuned_config(&self, path: impl AsRef<Path>) -> Result<Vec<String>> {
        let gpu = GpuIdentity::from(&self.info);
        let nvrtc = nvrtc_version().unwrap_or((0, 0));
        let found = TunedConfig::discover_for(Some(path.as_ref()), &gpu, nvrtc, template_digest())?
            .expect("an explicit path is always returned");
        let warnings = found.warnings.clone();
        self.set_tuned_config(found.config)?;
        self.warn_loudly(warnings.clone());
        Ok(warnings)
    }

    /// Uses `config` (or no config: heuristic defaults) for tuned launches from now on; an error
    /// once a config is already in use.
    pub fn set_tuned_config(&self, config: Option<TunedConfig>) -> Result<()> {
        self.tuned.set(config.map(Arc::new)).map_err(|_| {
            invalid(
                "tuned config",
                "a tuned config is already in use by this runtime; set it before the first tuned launch",
            )
        })
    }

    fn warn_loudly(&self, warnings: Vec<String>) {
        use std::io::Write;
        let mut stderr = std::io::stderr().lock();
        for w in &warnings {
            // A closed stderr must not turn a warning into a panic: the list below keeps it.
            let _ = writeln!(stderr, "flashgen: warning: {w}");
        }
        self.warnings
            .lock()
            .expect("warnings lock")
            .extend(warnings);
    }

    /// Builds the launch descriptors of `args` (borrowing its buffers on the stream) and calls
    /// `f` with them.
    /// A custom launch without a block classification gets the one its definition, shape and
    /// values call for ([`custom_blocks`](Self::custom_blocks), cached).
    fn with_desc<T: Element, R>(
        &self,
        spec: &AttentionSpec,
        mut args: AttentionArgs<'_, T>,
        f: impl FnOnce(&LaunchDesc<'_>) -> Result<R>,
    ) -> Result<R> {
        let built: Arc<DeviceCustomBlocks>;
        let mut pointers: Vec<(u64, u64)> = Vec::new();
        let s: &CudaStream = &self.stream;
        // The guards order later work on the stream after this launch's reads and writes.
        let mut guards: Vec<SyncOnDrop<'_>> = Vec::new();
        let q = TensorArg {
            buffer: device_buffer(args.q.data, s, &mut guards),
            layout: args.q.layout,
        };
        let k = TensorArg {
            buffer: device_buffer(args.k.data, s, &mut guards),
            layout: args.k.layout,
        };
        let v = TensorArg {
            buffer: device_buffer(args.v.data, s, &mut guards),
            layout: args.v.layout,
        };
        let o_layout = args.o.layout;
        let o = TensorArg {
            buffer: device_buffer_mut(args.o.data, s, &mut guards),
            layout: o_layout,
        };
        let lse = args
            .lse
            .as_deref_mut()
            .map(|l| device_buffer_mut(l, s, &mut guards));
        let varlen = args.varlen.map(|vl| VarlenArg {
            cu_seqlens_q: device_buffer(vl.device_q(), s, &mut guards),
            cu_seqlens_k: device_buffer(vl.device_k(), s, &mut guards),
            host_q: vl.cu_seqlens_q(),
            host_k: vl.cu_seqlens_k(),
        });
        let mask = match &args.mask {
            Mask::None => MaskArg::None,
            Mask::Streaming(p) => MaskArg::Streaming(*p),
            Mask::BlockSparse(m) => MaskArg::BlockSparse(block_list_arg(m, s, &mut guards)),
            Mask::Mixed {
                heads,
                streaming,
                block_list,
            } => MaskArg::Mixed {
                heads: HeadKindsArg {
                    kinds: heads.kinds(),
                    kinds_dev: device_buffer(heads.device_kinds(), s, &mut guards),
                    order_dev: device_buffer(heads.device_order(), s, &mut guards),
                },
                streaming: *streaming,
                block_list: block_list.map(|m| block_list_arg(m, s, &mut guards)),
            },
            Mask::Custom {
                args: values,
                blocks,
            } => {
                let blocks = match blocks {
                    Some(b) => Some(*b),
                    None if spec.variant == Variant::Custom => {
                        let shape = match args.varlen {
                            Some(vl) => CustomShape::Varlen {
                                heads_q: args.q.layout.heads,
                                varlen: vl,
                            },
                            None => CustomShape::Fixed {
                                batch: args.q.layout.batch,
                                heads_q: args.q.layout.heads,
                                sq: args.q.layout.seq,
                                sk: args.k.layout.seq,
                            },
                        };
                        built = self.custom_blocks(spec, values, shape)?;
                        Some(&*built)
                    }
                    // Another variant's kernel: plan names the arguments it takes.
                    None => None,
                };
                for (_, value) in values.values() {
                    if let CustomValue::Vector(vector) = value {
                        let (ptr, guard) = vector.device_ptr(s);
                        guards.push(guard);
                        pointers.push((vector.id(), ptr));
                    }
                }
                MaskArg::Custom(CustomArg {
                    args: values,
                    pointers: &[],
                    blocks: blocks.map(|b| {
                        let (count, index, full) = b.device();
                        CustomBlocksArg {
                            blocks: b.blocks(),
                            kv_count: device_buffer(count, s, &mut guards),
                            kv_index: device_buffer(index, s, &mut guards),
                            kv_full: device_buffer(full, s, &mut guards),
                        }
                    }),
                })
            }
        };
        let mask = match mask {
            MaskArg::Custom(c) => MaskArg::Custom(CustomArg {
                pointers: &pointers,
                ..c
            }),
            other => other,
        };
        let prefix = args.prefix.as_ref().map(|(pk, pv)| {
            (
                TensorArg {
                    buffer: device_buffer(pk.data, s, &mut guards),
                    layout: pk.layout,
                },
                TensorArg {
                    buffer: device_buffer(pv.data, s, &mut guards),
                    layout: pv.layout,
                },
            )
        });
        let desc = LaunchDesc {
            dtype: T::DTYPE,
            q,
            k,
            v,
            o,
            lse,
            varlen,
            scale: args.scale,
            mask,
            prefix,
        };
        let result = f(&desc);
        drop(guards);
        result
    }

    /// Plans and launches the validated `spec` over descriptors built by
    /// [`with_desc`](Self::with_desc).
    fn launch_desc(&self, spec: Validated<'_>, desc: &LaunchDesc<'_>) -> Result<()> {
        let planned = plan_validated(spec.0, desc)?;
        let kernel = self.kernel_validated(spec)?;
        // SAFETY: every buffer in `desc` comes from a live `CudaSlice` of its stated length,
        // kept alive and ordered on the stream by `with_desc`'s guards.
        unsafe { self.launch_planned(&kernel, &planned) }
    }

    /// Runs attention over raw device pointers (for callers that do not hold cudarc buffers,
    /// such as a C ABI). The validation is [`attention`](Self::attention)'s: [`plan`] over
    /// the same descriptors, then a launch on [`stream`](Self::stream). Nothing is launched
    /// when there are no queries.
    ///
    /// # Safety
    ///
    /// Every [`Buffer`] in `desc` must name memory of this runtime's context that holds at
    /// least `len` elements of its type (the spec's dtype for tensors, `f32` for lse, `i32`
    /// for `cu_seqlens`, block lists and head kinds) and stays allocated until the launch has
    /// run on the stream; the host copies in `desc` must equal their device copies; work on
    /// other streams that touches these buffers must be ordered with this stream by the
    /// caller; `o` and `lse` must not overlap any other buffer of the launch.
    pub unsafe fn attention_raw(&self, spec: &KernelSpec, desc: &LaunchDesc<'_>) -> Result<()> {
        let spec = self.validated(spec)?;
        let planned = plan_validated(spec.0, desc)?;
        let kernel = self.kernel_validated(spec)?;
        // SAFETY: the caller guarantees the buffers; the plan checked them against the layouts.
        unsafe { self.launch_planned(&kernel, &planned) }
    }

    /// Launches a validated plan of `kernel` on the stream.
    ///
    /// # Safety
    ///
    /// The plan's pointers must be live device buffers as long as the lengths it was checked
    /// against, valid until the launch has run.
    unsafe fn launch_planned(&self, kernel: &LoadedKernel, planned: &Plan) -> Result<()> {
        let Some(grid) = planned.grid else {
            return Ok(());
        };
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (kernel.compiled.threads, 1, 1),
            shared_mem_bytes: kernel.compiled.dynamic_shared_bytes,
        };
        let mut launch = self.stream.launch_builder(&kernel.function);
        launch.arg(&planned.params);
        launch.arg(&planned.variant);
        // SAFETY: the plan checked every pointer's buffer against the layouts the kernel
        // addresses, the dtype, alignment and the variant's arguments; the parameter struct
        // and the variant block match the kernel's ABI (tested, and asserted in every kernel);
        // the caller vouches for the buffers themselves.
        unsafe { launch.launch(cfg) }
            .while_(|| format!("launching {}", kernel.compiled.kernel_name))?;
        Ok(())
    }
}

/// The launch descriptor of an uploaded block list, its buffers guarded on the stream.
fn block_list_arg<'a>(
    m: &'a DeviceBlockMask,
    s: &'a CudaStream,
    guards: &mut Vec<SyncOnDrop<'a>>,
) -> BlockListArg<'a> {
    BlockListArg {
        mask: m.mask(),
        kv_count: device_buffer(m.device_count(), s, guards),
        kv_index: device_buffer(m.device_index(), s, guards),
    }
}

/// As [`device_buffer`], for a buffer the kernel writes.
fn device_buffer_mut<'a, T>(
    slice: &'a mut CudaSlice<T>,
    s: &'a CudaStream,
    guards: &mut Vec<SyncOnDrop<'a>>,
) -> Buffer {
    let len = slice.len();
    let (ptr, guard) = slice.device_ptr_mut(s);
    guards.push(guard);
    Buffer { ptr, len }
}

/// A device buffer's address and length, keeping its stream-ordering guard alive.
fn device_buffer<'a, T>(
    slice: &'a CudaSlice<T>,
    s: &'a CudaStream,
    guards: &mut Vec<SyncOnDrop<'a>>,
) -> Buffer {
    let (ptr, guard) = slice.device_ptr(s);
    guards.push(guard);
    Buffer {
        ptr,
        len: slice.len(),
    }
}

/// An input tensor on the device.
pub struct Tensor<'a, T> {
    pub data: &'a CudaSlice<T>,
    pub layout: Layout,
}

/// An output tensor on the device.
pub struct TensorMut<'a, T> {
    pub data: &'a mut CudaSlice<T>,
    pub layout: Layout,
}

/// The variant's own arguments.
pub enum Mask<'a> {
    None,
    Streaming(StreamingParams),
    BlockSparse(&'a DeviceBlockMask),
    Mixed {
        heads: &'a DeviceHeadKinds,
        streaming: Option<StreamingParams>,
        block_list: Option<&'a DeviceBlockMask>,
    },
    /// The custom variant: the values of the definition's parameters and, optionally, the
    /// mask's block classification ([`Runtime::custom_blocks`]); without one, the launch
    /// builds it (cached per definition, shape and values).
    Custom {
        args: &'a CustomArgs<'a>,
        blocks: Option<&'a DeviceCustomBlocks>,
    },
}

/// Arguments of one attention launch.
pub struct AttentionArgs<'a, T> {
    pub q: Tensor<'a, T>,
    pub k: Tensor<'a, T>,
    pub v: Tensor<'a, T>,
    pub o: TensorMut<'a, T>,
    /// The log-sum-exp of each query row (f32, natural log of the scaled scores; `-inf` for a
    /// row that sees no key): `[batch, heads_q, seq_q]` for fixed-length batches and
    /// `[heads_q, total_q_tokens]` for varlen batches (row `cu_seqlens_q[b] + i` of head `h` at
    /// `h * total_q_tokens + cu_seqlens_q[b] + i`).
    pub lse: Option<&'a mut CudaSlice<f32>>,
    /// Varlen batches: the packed batch's offsets ([`Runtime::upload_varlen`]).
    pub varlen: Option<&'a DeviceVarlen>,
    pub scale: Option<f32>,
    pub mask: Mask<'a>,
    /// APB only: keys and values of the anchor and passing blocks, `[batch, prefix, heads_kv,
    /// dim]`, which precede `k` and `v` (the local block). `None` is an empty prefix (the first
    /// host of a multi-host prefill): plain causal attention over the local block.
    pub prefix: Option<(Tensor<'a, T>, Tensor<'a, T>)>,
}

impl<'a, T> AttentionArgs<'a, T> {
    pub fn new(q: Tensor<'a, T>, k: Tensor<'a, T>, v: Tensor<'a, T>, o: TensorMut<'a, T>) -> Self {
        AttentionArgs {
            q,
            k,
            v,
            o,
            lse: None,
            varlen: None,
            scale: None,
            mask: Mask::None,
            prefix: None,
        }
    }

    /// APB: the anchor and passing blocks' keys and values.
    pub fn prefix(mut self, k: Tensor<'a, T>, v: Tensor<'a, T>) -> Self {
        self.prefix = Some((k, v));
        self
    }

    /// Also writes the log-sum-exp of each row (layout: see [`AttentionArgs::lse`]).
    pub fn lse(mut self, lse: &'a mut CudaSlice<f32>) -> Self {
        self.lse = Some(lse);
        self
    }

    pub fn varlen(mut self, varlen: &'a DeviceVarlen) -> Self {
        self.varlen = Some(varlen);
        self
    }

    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    pub fn mask(mut self, mask: Mask<'a>) -> Self {
        self.mask = mask;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn runtime_and_kernels_can_be_shared_across_threads() {
        send_sync::<Runtime>();
        send_sync::<LoadedKernel>();
        send_sync::<DeviceBlockMask>();
        send_sync::<DeviceHeadKinds>();
    }
}
