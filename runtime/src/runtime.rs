//! The GPU side: a device context and stream, kernels loaded through the cache, and the typed
//! launch API over cudarc device buffers.

use crate::apb::kernels::{ApbKernels, ApbModule};
use crate::cache::{CacheSource, KernelCache};
use crate::compile::nvrtc_version;
use crate::compile::CompiledKernel;
use crate::config::{GpuIdentity, ShapeKey, TunedConfig};
use crate::decode::attention::DecodeScratch;
use crate::decode::kernels::DecodeKernels;
use crate::error::{invalid, DriverContext, Error, Result};
use crate::layout::Layout;
use crate::libs::ensure_driver;
use crate::masks::{heavy_first_order, BlockMask, HeadKind, StreamingParams};
use crate::plan::{
    plan, BlockListArg, Buffer, HeadKindsArg, LaunchDesc, MaskArg, Plan, TensorArg, VarlenArg,
};
use crate::tuned::{select_tile, shape_key, TileSource};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
    DriverError, LaunchConfig, PushKernelArg, SyncOnDrop, ValidAsZeroBits,
};
use flashgen_codegen::{
    default_tile, template_digest, validate, Arch, DType, KernelSpec, TileConfig,
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

/// A kernel compiled (or loaded from the cache) and loaded into the context.
pub struct LoadedKernel {
    pub spec: KernelSpec,
    pub compiled: Arc<CompiledKernel>,
    pub source: CacheSource,
    function: CudaFunction,
}

/// One GPU: context, stream, kernel cache and loaded kernels.
pub struct Runtime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    cache: KernelCache,
    loaded: Mutex<HashMap<KernelSpec, Arc<LoadedKernel>>>,
    warnings: Mutex<Vec<String>>,
    /// The tuned config of [`Runtime::attention_tuned`], found on first use.
    tuned: OnceLock<Option<Arc<TunedConfig>>>,
    /// The APB kernels (compression, ring merge) loaded into this context.
    apb: ApbKernels,
    /// The decode kernels (attention, append, page selector) loaded into this context.
    pub(crate) decode: DecodeKernels,
    /// Split-KV partials of the decode kernels, reused across launches on the stream.
    pub(crate) decode_scratch: DecodeScratch,
}

/// Number of CUDA devices (0 when the driver sees none).
pub fn device_count() -> Result<i32> {
    ensure_driver()?;
    match CudaContext::device_count() {
        // A driver without a GPU fails its initialisation with this code.
        Err(DriverError(CUresult::CUDA_ERROR_NO_DEVICE)) => Ok(0),
        other => other.while_(|| "counting CUDA devices".into()),
    }
}

/// The driver's CUDA version, e.g. 13000.
pub fn driver_version() -> Result<i32> {
    ensure_driver()?;
    let mut v = 0;
    // SAFETY: plain out-parameter.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }
        .result()
        .while_(|| "reading the driver version".into())?;
    Ok(v)
}

impl Runtime {
    /// Opens GPU `ordinal` with the kernel cache of [`KernelCache::from_env`].
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_cache(ordinal, KernelCache::from_env())
    }

    pub fn with_cache(ordinal: usize, cache: KernelCache) -> Result<Self> {
        // libnvrtc is needed only when a kernel is compiled (checked there).
        ensure_driver()?;
        let available = device_count()?;
        if ordinal >= available.max(0) as usize {
            return Err(Error::NoDevice { ordinal, available });
        }
        let ctx = CudaContext::new(ordinal).while_(|| format!("opening CUDA device {ordinal}"))?;
        let name = ctx.name().while_(|| "reading the device name".into())?;
        let (major, minor) = ctx
            .compute_capability()
            .while_(|| "reading the compute capability".into())?;
        let arch = Arch::new(major as u32, minor as u32);
        if !arch.is_supported() {
            return Err(Error::UnsupportedDevice { name, major, minor });
        }
        let attr = |a| ctx.attribute(a).while_(|| format!("reading {a:?}"));
        let info = DeviceInfo {
            ordinal,
            name,
            arch,
            sm_count: attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32,
            max_shared_per_block_optin: attr(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )? as u32,
            driver_version: driver_version()?,
            total_memory: ctx
                .total_mem()
                .while_(|| "reading the memory size".into())?,
        };
        let stream = ctx.default_stream();
        Ok(Runtime {
            ctx,
            stream,
            info,
            cache,
            loaded: Mutex::new(HashMap::new()),
            warnings: Mutex::new(Vec::new()),
            tuned: OnceLock::new(),
            apb: ApbKernels::default(),
            decode: DecodeKernels::default(),
            decode_scratch: DecodeScratch::default(),
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

    /// Cache warnings so far (rejected entries, failed writes), drained.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().expect("warnings lock"))
    }

    /// Records a warning for [`take_warnings`](Self::take_warnings).
    pub(crate) fn push_warning(&self, warning: String) {
        self.warnings.lock().expect("warnings lock").push(warning);
    }

    /// The function `name` of an APB module, compiled (or loaded from the cache) and loaded into
    /// this context on first use.
    pub(crate) fn apb_function(&self, module: ApbModule, name: &str) -> Result<CudaFunction> {
        self.apb.function(self, module, name)
    }

    /// Validates, compiles (or loads from the cache) and loads the kernel of a spec.
    pub fn kernel(&self, spec: &KernelSpec) -> Result<Arc<LoadedKernel>> {
        if let Some(k) = self.loaded.lock().expect("kernel table lock").get(spec) {
            return Ok(k.clone());
        }
        validate(spec, self.arch())?;
        let hit = self.cache.get_or_compile(spec, self.arch())?;
        if let Some(w) = hit.warning.clone() {
            self.push_warning(w);
        }
        let smem = hit.kernel.dynamic_shared_bytes;
        let total_smem = u64::from(smem) + u64::from(hit.kernel.report.static_shared_bytes);
        if total_smem > u64::from(self.info.max_shared_per_block_optin) {
            return Err(invalid(
                "spec",
                format!(
                    "{spec} needs {total_smem} bytes of shared memory per block; {} allows {}",
                    self.info.name, self.info.max_shared_per_block_optin
                ),
            ));
        }
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(hit.kernel.cubin.clone()))
            .while_(|| format!("loading the CUBIN of {}", hit.kernel.kernel_name))?;
        let function = module
            .load_function(&hit.kernel.kernel_name)
            .while_(|| format!("finding {} in its module", hit.kernel.kernel_name))?;
        // SAFETY: the function was just loaded; the value is within the device's opt-in limit.
        unsafe {
            cudarc::driver::result::function::set_function_attribute(
                function.cu_function(),
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
        }
        .while_(|| {
            format!(
                "raising the shared-memory limit of {}",
                hit.kernel.kernel_name
            )
        })?;
        let loaded = Arc::new(LoadedKernel {
            spec: *spec,
            compiled: hit.kernel,
            source: hit.source,
            function,
        });
        self.loaded
            .lock()
            .expect("kernel table lock")
            .insert(*spec, loaded.clone());
        Ok(loaded)
    }

    /// Copies a block list to the device.
    pub fn upload_block_mask(&self, mask: &BlockMask) -> Result<DeviceBlockMask> {
        Ok(DeviceBlockMask {
            mask: mask.clone(),
            kv_count: self
                .stream
                .clone_htod(&mask.kv_count)
                .while_(|| "uploading kv_count".into())?,
            kv_index: self
                .stream
                .clone_htod(&mask.kv_index)
                .while_(|| "uploading kv_index".into())?,
        })
    }

    /// Copies per-head kinds (and their heavy-first launch order) to the device.
    pub fn upload_head_kinds(&self, kinds: &[HeadKind]) -> Result<DeviceHeadKinds> {
        let raw: Vec<i32> = kinds.iter().map(|&k| k as i32).collect();
        let order = heavy_first_order(kinds);
        Ok(DeviceHeadKinds {
            kinds: kinds.to_vec(),
            kinds_dev: self
                .stream
                .clone_htod(&raw)
                .while_(|| "uploading head kinds".into())?,
            order_dev: self
                .stream
                .clone_htod(&order)
                .while_(|| "uploading the head order".into())?,
        })
    }

    /// Runs attention with the kernel of `spec` (its tile as given). Every argument is
    /// validated before launch.
    pub fn attention<T: Element>(
        &self,
        spec: &KernelSpec,
        args: AttentionArgs<'_, T>,
    ) -> Result<()> {
        // Arguments are checked before anything is compiled.
        validate(spec, self.arch())?;
        self.with_desc(args, |desc| self.launch_desc(spec, desc))
    }

    /// Runs attention with `spec`'s variant, head dim, dtype and flags, and the tile the tuned
    /// config gives for this launch's shape bucket ([`tuned_config`](Self::tuned_config));
    /// without a config or an entry for the spec, the heuristic default tile. `spec`'s own tile
    /// is ignored. Returns the spec that ran. A tuned tile the launch cannot use (a block list
    /// whose blocks it does not divide) falls back to the default tile.
    pub fn attention_tuned<T: Element>(
        &self,
        spec: &KernelSpec,
        args: AttentionArgs<'_, T>,
    ) -> Result<KernelSpec> {
        self.with_desc(args, |desc| {
            let shape = shape_key(spec, desc);
            let (tile, source) = self.select_tile(spec, &shape);
            let tuned = spec.with_tile(tile);
            validate(&tuned, self.arch())?;
            if source == TileSource::Tuned && plan(&tuned, desc).is_err() {
                let fallback = spec.with_tile(default_tile(spec, self.arch()));
                self.launch_desc(&fallback, desc)?;
                return Ok(fallback);
            }
            self.launch_desc(&tuned, desc)?;
            Ok(tuned)
        })
    }

    /// The tile a launch of `spec` (tile ignored) with `shape` gets, and where it came from.
    pub fn select_tile(&self, spec: &KernelSpec, shape: &ShapeKey) -> (TileConfig, TileSource) {
        let config = self.tuned_config();
        select_tile(config.as_deref(), spec, shape, self.arch())
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
                "a tuned config is already in use by this runtime; set it before the first                  tuned launch",
            )
        })
    }

    fn warn_loudly(&self, warnings: Vec<String>) {
        for w in &warnings {
            eprintln!("flashgen: warning: {w}");
        }
        self.warnings
            .lock()
            .expect("warnings lock")
            .extend(warnings);
    }

    /// Builds the launch descriptors of `args` (borrowing its buffers on the stream) and calls
    /// `f` with them.
    fn with_desc<T: Element, R>(
        &self,
        mut args: AttentionArgs<'_, T>,
        f: impl FnOnce(&LaunchDesc<'_>) -> Result<R>,
    ) -> Result<R> {
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
        let varlen = args.varlen.as_ref().map(|vl| VarlenArg {
            cu_seqlens_q: device_buffer(vl.cu_seqlens_q, s, &mut guards),
            cu_seqlens_k: device_buffer(vl.cu_seqlens_k, s, &mut guards),
            host_q: vl.host_q,
            host_k: vl.host_k,
        });
        let mask = match &args.mask {
            Mask::None => MaskArg::None,
            Mask::Streaming(p) => MaskArg::Streaming(*p),
            Mask::BlockSparse(m) => MaskArg::BlockSparse(m.arg(s, &mut guards)),
            Mask::Mixed {
                heads,
                streaming,
                block_list,
            } => MaskArg::Mixed {
                heads: HeadKindsArg {
                    kinds: &heads.kinds,
                    kinds_dev: device_buffer(&heads.kinds_dev, s, &mut guards),
                    order_dev: device_buffer(&heads.order_dev, s, &mut guards),
                },
                streaming: *streaming,
                block_list: block_list.map(|m| m.arg(s, &mut guards)),
            },
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

    /// Plans and launches `spec` over descriptors built by [`with_desc`](Self::with_desc).
    fn launch_desc(&self, spec: &KernelSpec, desc: &LaunchDesc<'_>) -> Result<()> {
        let planned = plan(spec, desc)?;
        let kernel = self.kernel(spec)?;
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
        validate(spec, self.arch())?;
        let planned = plan(spec, desc)?;
        let kernel = self.kernel(spec)?;
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
        // SAFETY: the plan checked every pointer's buffer against the layouts the kernel
        // addresses, the dtype, alignment and the variant's arguments; the parameter struct
        // matches the kernel's ABI (tested); the caller vouches for the buffers themselves.
        unsafe { launch.launch(cfg) }
            .while_(|| format!("launching {}", kernel.compiled.kernel_name))?;
        Ok(())
    }
}

/// A block list on the device.
pub struct DeviceBlockMask {
    pub mask: BlockMask,
    kv_count: CudaSlice<i32>,
    kv_index: CudaSlice<i32>,
}

impl DeviceBlockMask {
    fn arg<'a>(&'a self, s: &'a CudaStream, guards: &mut Vec<SyncOnDrop<'a>>) -> BlockListArg<'a> {
        BlockListArg {
            mask: &self.mask,
            kv_count: device_buffer(&self.kv_count, s, guards),
            kv_index: device_buffer(&self.kv_index, s, guards),
        }
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

/// Per-head kinds on the device, with their launch order.
pub struct DeviceHeadKinds {
    pub kinds: Vec<HeadKind>,
    kinds_dev: CudaSlice<i32>,
    order_dev: CudaSlice<i32>,
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

/// Varlen batch arguments: device `cu_seqlens` plus the same values on the host, which are
/// validated (the device copies are what the kernel reads).
pub struct Varlen<'a> {
    pub cu_seqlens_q: &'a CudaSlice<i32>,
    pub cu_seqlens_k: &'a CudaSlice<i32>,
    pub host_q: &'a [i32],
    pub host_k: &'a [i32],
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
}

/// Arguments of one attention launch.
pub struct AttentionArgs<'a, T> {
    pub q: Tensor<'a, T>,
    pub k: Tensor<'a, T>,
    pub v: Tensor<'a, T>,
    pub o: TensorMut<'a, T>,
    pub lse: Option<&'a mut CudaSlice<f32>>,
    pub varlen: Option<Varlen<'a>>,
    pub scale: Option<f32>,
    pub mask: Mask<'a>,
    /// APB only: keys and values of the anchor and passing blocks, `[batch, prefix, heads_kv,
    /// dim]`, which precede `k` and `v` (the local block).
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

    pub fn lse(mut self, lse: &'a mut CudaSlice<f32>) -> Self {
        self.lse = Some(lse);
        self
    }

    pub fn varlen(mut self, varlen: Varlen<'a>) -> Self {
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

    #[test]
    fn no_device_or_no_driver_is_an_error() {
        match device_count() {
            Ok(n) => assert!(n >= 0),
            Err(Error::LibraryMissing { lib, .. }) => assert_eq!(lib, "libcuda"),
            Err(e) => panic!("counting devices: {e}"),
        }
        if !crate::libs::driver_present() {
            assert!(matches!(
                driver_version(),
                Err(Error::LibraryMissing { lib: "libcuda", .. })
            ));
        }
    }
}
