//! One module per subcommand, and what they share: the target arch and error formatting.
//!
//! Every command returns its exit code: 0 on success, 1 when the work failed (a compile error,
//! a file that cannot be written), 2 for bad input (an invalid spec or arch, nothing to do).

pub mod compile;
pub mod emit;
pub mod info;
pub mod tune;

use crate::output::errln;
use flashgen_codegen::{parse_arch, Arch};
use flashgen_runtime::Runtime;
use std::process::ExitCode;

/// The arch used when there is no GPU to ask.
pub const FALLBACK_ARCH: Arch = Arch::SM90;

/// Exit code for bad input.
pub fn usage_error() -> ExitCode {
    ExitCode::from(2)
}

/// Where the default arch came from.
#[derive(Debug)]
pub enum ArchSource {
    /// The local GPU.
    Gpu,
    /// No runtime could be opened (why).
    Fallback(String),
}

/// The arch of a runtime, or [`FALLBACK_ARCH`] with the reason when it did not open.
pub fn arch_of(runtime: &flashgen_runtime::Result<Runtime>) -> (Arch, ArchSource) {
    match runtime {
        Ok(rt) => (rt.arch(), ArchSource::Gpu),
        Err(e) => (FALLBACK_ARCH, ArchSource::Fallback(e.to_string())),
    }
}

/// The default target: the local GPU's arch if a runtime opens on GPU 0, else sm_90a.
pub fn default_arch() -> (Arch, ArchSource) {
    arch_of(&Runtime::new(0))
}

/// `--arch` when given (parsed), else [`default_arch`], with a note on stderr when falling back.
pub fn target_arch(arg: Option<&str>) -> Result<Arch, flashgen_codegen::SpecError> {
    if let Some(text) = arg {
        return parse_arch(text);
    }
    let (arch, source) = default_arch();
    if let ArchSource::Fallback(why) = source {
        errln!(
            "note: no usable GPU ({}); targeting {arch}",
            first_line(&why)
        );
    }
    Ok(arch)
}

/// An error with its chain of sources, for errors whose Display leaves the cause out.
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The first line of a message (compile errors carry the whole NVRTC log).
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_arch_wins_and_bad_arch_is_an_error() {
        assert_eq!(target_arch(Some("sm_80")).unwrap(), Arch::SM80);
        assert_eq!(target_arch(Some("sm_90a")).unwrap(), Arch::SM90);
        assert_eq!(target_arch(Some("8.6")).unwrap(), Arch::SM86);
        let err = target_arch(Some("sm_75")).unwrap_err();
        assert_eq!(err.field(), "arch");
        assert!(target_arch(Some("hopper")).is_err());
    }

    #[test]
    fn fallback_is_hopper() {
        let err = Err(flashgen_runtime::Error::NoDevice {
            ordinal: 0,
            available: 0,
        });
        let (arch, source) = arch_of(&err);
        assert_eq!(arch, Arch::SM90);
        assert!(matches!(source, ArchSource::Fallback(why) if why.contains("no CUDA device")));
    }

    #[test]
    fn source_chains_are_joined_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("rendering failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("variable `x` not found"));
        assert_eq!(with_sources(&e), "rendering failed: variable `x` not found");
        assert_eq!(first_line("a\nb"), "a");
        assert_eq!(first_line(""), "");
    }
}
