//! The APB crate's error type: its own failures (arguments, cuBLAS, NCCL, communication between
//! hosts, a missing libcublas or libnccl) and the runtime's, wrapped.

use cudarc::driver::DriverError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// An error of the runtime underneath: compiling, loading or launching a kernel (APB's own
    /// or an attention kernel), or a missing libcuda or libnvrtc.
    #[error(transparent)]
    Runtime(#[from] flashgen_runtime::Error),

    /// libcublas or libnccl could not be loaded.
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

    #[error("invalid argument `{arg}`: {reason}")]
    InvalidArgument { arg: &'static str, reason: String },

    #[error("cuBLAS error while {context}: {message}")]
    Blas { context: String, message: String },

    #[error("NCCL error {code} while {context}: {message}")]
    Nccl {
        context: String,
        code: i32,
        message: String,
    },

    #[error("communication between hosts failed: {0}")]
    Communicator(String),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_before_and_runtime_errors_pass_through() {
        assert_eq!(
            invalid("lp", "is 0").to_string(),
            "invalid argument `lp`: is 0"
        );
        let wrapped: Error = flashgen_runtime::Error::Render("broken".into()).into();
        assert_eq!(
            wrapped.to_string(),
            flashgen_runtime::Error::Render("broken".into()).to_string()
        );
        assert_eq!(
            Error::Communicator("x".into()).to_string(),
            "communication between hosts failed: x"
        );
    }
}
