//! Presence checks for libcuda and libnvrtc. cudarc loads both lazily and panics when one is
//! missing, so every path into cudarc passes through these first.

use crate::error::{Error, Result};
use std::sync::OnceLock;

const NVRTC_HINT: &str =
    "install libnvrtc 13 (e.g. `python3 -m pip install nvidia-cuda-nvrtc==13.0.88` \
     and add its nvidia/cu13/lib folder to LD_LIBRARY_PATH, or add the CUDA toolkit's lib64)";
const DRIVER_HINT: &str =
    "no NVIDIA driver library (libcuda.so) on the loader path: install the NVIDIA driver";

/// Ok when libnvrtc can be loaded.
pub fn ensure_nvrtc() -> Result<()> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen candidate names.
    if *PRESENT.get_or_init(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }) {
        Ok(())
    } else {
        Err(Error::LibraryMissing {
            lib: "libnvrtc",
            hint: NVRTC_HINT,
        })
    }
}

/// Ok when libcuda can be loaded.
pub fn ensure_driver() -> Result<()> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen candidate names.
    if *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() }) {
        Ok(())
    } else {
        Err(Error::LibraryMissing {
            lib: "libcuda",
            hint: DRIVER_HINT,
        })
    }
}
