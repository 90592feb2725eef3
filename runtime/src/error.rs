//! The runtime's error type: every failure is a value, never a panic.

use crate::masks::MaskError;
use cudarc::driver::DriverError;
use flashgen_codegen::SpecError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{lib} could not be loaded: {hint}")]
    LibraryMissing {
        lib: &'static str,
        hint: &'static str,
    },

    #[error("CUDA driver error while {context}: {source}")]
    Driver {
        context: String,
        #[source]
        source: DriverError,
    },

    #[error("NVRTC error while {context}: {message}")]
    Nvrtc { context: String, message: String },

    #[error("kernel {kernel} failed to compile for {arch}:\n{log}")]
    Compile {
        kernel: String,
        arch: String,
        log: String,
    },

    #[error("no CUDA device with ordinal {ordinal}: {available} device(s) present")]
    NoDevice { ordinal: usize, available: i32 },

    #[error("GPU {name} has compute capability {major}.{minor}; flashgen needs 8.0 or newer")]
    UnsupportedDevice {
        name: String,
        major: i32,
        minor: i32,
    },

    #[error(transparent)]
    Spec(#[from] SpecError),

    #[error("invalid argument `{arg}`: {reason}")]
    InvalidArgument { arg: &'static str, reason: String },

    #[error(transparent)]
    Mask(#[from] MaskError),

    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    #[error("kernel template failed to render: {0}")]
    Render(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for argument errors.
pub(crate) fn invalid(arg: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        arg,
        reason: reason.into(),
    }
}

/// Attaches what was being done to a driver error.
pub(crate) trait DriverContext<T> {
    fn while_(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, DriverError> {
    fn while_(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Driver {
            context: context(),
            source,
        })
    }
}
