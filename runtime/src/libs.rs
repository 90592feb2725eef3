//! Presence checks for libcuda and libnvrtc, the only libraries the runtime loads. cudarc loads
//! both lazily and panics when one is missing, so every path into cudarc passes through these
//! first.

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// How to get libnvrtc when it cannot be loaded.
pub const NVRTC_HINT: &str =
    "install libnvrtc 13 (e.g. `python3 -m pip install nvidia-cuda-nvrtc==13.0.88` \
     and add its nvidia/cu13/lib folder to LD_LIBRARY_PATH, or add the CUDA toolkit's lib64)";

/// How to get libnvrtc-builtins, which libnvrtc loads from the loader path when it compiles.
pub const NVRTC_BUILTINS_HINT: &str =
    "libnvrtc was found but its companion libnvrtc-builtins was not: put the folder that holds \
     both (nvidia/cu13/lib of the `nvidia-cuda-nvrtc==13.0.88` wheel, or the CUDA toolkit's \
     lib64) on LD_LIBRARY_PATH";

/// How to get libcuda when it cannot be loaded.
pub const DRIVER_HINT: &str =
    "no NVIDIA driver library (libcuda.so) on the loader path: install the NVIDIA driver";

/// The error for a library that is absent, Ok when present.
fn require(present: bool, lib: &'static str, hint: &'static str) -> Result<()> {
    if present {
        Ok(())
    } else {
        Err(Error::LibraryMissing { lib, hint })
    }
}

/// Whether libnvrtc can be loaded (checked once per process).
pub fn nvrtc_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen cudarc's candidate names and closes them again.
    *PRESENT.get_or_init(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
}

/// Whether libcuda can be loaded (checked once per process).
pub fn driver_present() -> bool {
    crate::driver::present()
}

/// Ok when libnvrtc can be loaded.
pub fn ensure_nvrtc() -> Result<()> {
    require(nvrtc_present(), "libnvrtc", NVRTC_HINT)
}

/// Ok when libcuda can be loaded.
pub fn ensure_driver() -> Result<()> {
    require(driver_present(), "libcuda", DRIVER_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_library_is_a_typed_error_with_a_hint() {
        assert!(require(true, "libnvrtc", NVRTC_HINT).is_ok());
        match require(false, "libnvrtc", NVRTC_HINT) {
            Err(Error::LibraryMissing { lib, hint }) => {
                assert_eq!(lib, "libnvrtc");
                assert!(hint.contains("nvidia-cuda-nvrtc==13.0.88"), "{hint}");
                assert!(hint.contains("LD_LIBRARY_PATH"), "{hint}");
            }
            other => panic!("expected LibraryMissing, got {other:?}"),
        }
        let message = require(false, "libcuda", DRIVER_HINT)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("libcuda could not be loaded"),
            "{message}"
        );
        assert!(message.contains("NVIDIA driver"), "{message}");
    }

    #[test]
    fn the_checks_agree_with_the_presence_probes() {
        assert_eq!(ensure_nvrtc().is_ok(), nvrtc_present());
        assert_eq!(ensure_driver().is_ok(), driver_present());
    }
}
