//! The CUDA driver underneath cudarc's safe API: whether libcuda loads, the device count and
//! driver version, opening a device and reading its properties, loading a CUBIN, raising a
//! function's shared-memory limit and launching a kernel as a programmatic dependent. Every raw
//! driver call of the runtime is made here.

use crate::error::{DriverContext, Error, Result};
use crate::libs::ensure_driver;
use crate::runtime::DeviceInfo;
use cudarc::driver::sys::{
    CUdevice_attribute, CUfunction_attribute, CUlaunchAttribute, CUlaunchAttributeID,
    CUlaunchConfig, CUresult,
};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig,
};
use flashgen_codegen::Arch;
use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

/// Whether libcuda can be loaded (checked once per process).
pub(crate) fn present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen cudarc's candidate names and closes them again.
    *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
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

/// Opens GPU `ordinal` (its primary context) and reads what the runtime needs to know about it.
/// An error for a missing device or one older than compute capability 8.0.
pub(crate) fn open_device(ordinal: usize) -> Result<(Arc<CudaContext>, DeviceInfo)> {
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
    Ok((ctx, info))
}

/// Loads a CUBIN (of the kernel `name`, for messages) into `ctx`.
pub(crate) fn load_cubin(
    ctx: &Arc<CudaContext>,
    cubin: &[u8],
    name: &str,
) -> Result<Arc<CudaModule>> {
    ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin.to_vec()))
        .while_(|| format!("loading the CUBIN of {name}"))
}

/// Raises the dynamic shared memory `function` (named `name`) may be launched with to `bytes`,
/// which the caller has checked against the device's opt-in limit.
pub(crate) fn set_max_dynamic_shared(
    function: &CudaFunction,
    bytes: u32,
    name: &str,
) -> Result<()> {
    // SAFETY: the function is loaded (it holds its module); the value is within the device's
    // opt-in limit.
    unsafe {
        cudarc::driver::result::function::set_function_attribute(
            function.cu_function(),
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
    }
    .while_(|| format!("raising the shared-memory limit of {name}"))
}

/// Whether kernels on `info`'s device may be launched as programmatic dependents
/// ([`launch_dependent`]): compute capability 9.0 or newer and a driver with `cuLaunchKernelEx`.
pub(crate) fn dependent_launch_supported(info: &DeviceInfo) -> bool {
    info.arch.major >= 9 && info.driver_version >= 12_000
}

/// Launches `function` (its parameters at `args`) on `stream` as a programmatic dependent of the
/// kernel before it on the stream: it may start once every CTA of that kernel has executed
/// `griddepcontrol.launch_dependents` (or exited), and must execute `griddepcontrol.wait`
/// before it reads what that kernel writes (`templates/device/pdl.cuh`). Only where
/// [`dependent_launch_supported`].
///
/// # Safety
/// As `cuLaunchKernelEx`: `args` must point at the kernel's parameters in order, each valid for
/// the launch, and the kernel must wait for the kernel before it as described.
pub(crate) unsafe fn launch_dependent(
    stream: &CudaStream,
    function: &CudaFunction,
    cfg: LaunchConfig,
    args: &mut [*mut c_void],
) -> std::result::Result<(), DriverError> {
    stream.context().bind_to_thread()?;
    // SAFETY: an all-zero attribute is a valid value of the C struct; the union member is then
    // the one its id names.
    let mut attr: CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let config = CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: the config and its one attribute outlive the call; the caller vouches for the
    // function and its arguments.
    unsafe {
        cudarc::driver::sys::cuLaunchKernelEx(
            &config,
            function.cu_function(),
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_device_or_no_driver_is_an_error() {
        match device_count() {
            Ok(n) => assert!(n >= 0),
            Err(Error::LibraryMissing { lib, .. }) => assert_eq!(lib, "libcuda"),
            Err(e) => panic!("counting devices: {e}"),
        }
        if !present() {
            assert!(matches!(
                driver_version(),
                Err(Error::LibraryMissing { lib: "libcuda", .. })
            ));
        }
    }
}
