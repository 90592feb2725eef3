//! One module per subcommand, and what they share: the target arch, error formatting and the
//! checks of output files.
//!
//! Every command returns its exit code: 0 on success, 1 when the work failed (a compile error,
//! a tune that failed, a GPU that cannot be opened), 2 for bad input (an invalid spec, arch or
//! filter, nothing to do, an output file that cannot be written), whether the command returns
//! the code itself or an error that carries a [`UsageError`].

pub mod compile;
pub mod definition;
pub mod emit;
pub mod info;
pub mod tune;

use crate::output::errln;
use flashgen_codegen::{parse_arch, Arch};
use flashgen_runtime::Runtime;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::ExitCode;

/// The arch used when there is no GPU to ask.
pub const FALLBACK_ARCH: Arch = Arch::SM90;

/// Exit code for bad input.
pub fn usage_error() -> ExitCode {
    ExitCode::from(2)
}

/// Bad input to a command: `main` exits with status 2 for an error that carries one.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A bad-input error (exit status 2).
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// The exit code of a command that failed with `e`: 2 for bad input, else 1.
pub fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    if e.chain().any(|c| c.is::<UsageError>()) {
        usage_error()
    } else {
        ExitCode::FAILURE
    }
}

/// An error with its whole chain of causes, each said once.
pub fn error_chain(e: &anyhow::Error) -> String {
    with_sources(e.as_ref())
}

/// Fails before any work when `path` could not be written at the end: a missing or read-only
/// folder, a read-only file, a folder in its place. Nothing is left behind.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    let probe = match path.symlink_metadata() {
        // Opening for writing without truncating changes nothing.
        Ok(_) => OpenOptions::new().write(true).open(path).map(drop),
        Err(_) => File::create_new(path).and_then(|_| std::fs::remove_file(path)),
    };
    probe.map_err(|e| usage(format!("cannot write {}: {e}", path.display())))
}

/// As [`check_writable`], for a file that is replaced by renaming a temporary file from the
/// same folder over it (the tuned config): the nearest existing folder on its path must take
/// new files (the file's own, or the folders to be created). Nothing is left behind.
pub fn check_replaceable(path: &Path) -> anyhow::Result<()> {
    let fail = |why: String| usage(format!("cannot write {}: {why}", path.display()));
    if path.is_dir() {
        return Err(fail("it is a folder".into()));
    }
    let parent = path.parent().unwrap_or(Path::new(""));
    let existing = parent
        .ancestors()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .find(|d| d.symlink_metadata().is_ok())
        .unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(fail(format!("{} is not a folder", existing.display())));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let probe = existing.join(format!(".{name}.{}.probe", std::process::id()));
    File::create_new(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| fail(format!("{}: {e}", existing.display())))
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
        Err(e) => (FALLBACK_ARCH, ArchSource::Fallback(with_sources(e))),
    }
}

/// The default target: the local GPU's arch if a runtime opens on GPU 0, else sm_90a.
pub fn default_arch() -> (Arch, ArchSource) {
    arch_of(&Runtime::new(0))
}

/// `--arch` when given (parsed; a bad one is a [`UsageError`]), else [`default_arch`], with a
/// note on stderr when falling back.
pub fn target_arch(arg: Option<&str>) -> anyhow::Result<Arch> {
    if let Some(text) = arg {
        return parse_arch(text).map_err(|e| usage(e.to_string()));
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
        for bad in ["sm_75", "hopper", "8.99", "sm_199", "sm_80a"] {
            let err = target_arch(Some(bad)).unwrap_err();
            assert!(err.is::<UsageError>(), "{bad}: {err}");
            assert_eq!(exit_code_of(&err), usage_error());
            assert!(err.to_string().contains("sm_90a"), "{err}");
        }
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
    fn output_checks_change_nothing() {
        let dir = std::env::temp_dir().join(format!("flashgen-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("report.json");
        check_writable(&file).unwrap();
        assert!(!file.exists());
        std::fs::write(&file, b"kept").unwrap();
        check_writable(&file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"kept");
        let nested = dir.join("a").join("b").join("tuned.toml");
        check_replaceable(&nested).unwrap();
        check_replaceable(&file).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");

        for bad in [dir.join("missing").join("r.json"), dir.clone()] {
            let e = check_writable(&bad).unwrap_err();
            assert!(
                e.is::<UsageError>() && e.to_string().contains("cannot write"),
                "{e}"
            );
        }
        let e = check_replaceable(&file.join("tuned.toml")).unwrap_err();
        assert!(e.to_string().contains("is not a folder"), "{e}");
        assert!(check_replaceable(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn usage_errors_exit_with_2_and_others_with_1() {
        use anyhow::Context;
        assert_eq!(exit_code_of(&usage("bad")), usage_error());
        let wrapped = Err::<(), _>(usage("bad")).context("parsing").unwrap_err();
        assert_eq!(exit_code_of(&wrapped), usage_error());
        assert_eq!(exit_code_of(&anyhow::anyhow!("boom")), ExitCode::FAILURE);
        let io = std::io::Error::other("no libcuda");
        let e = Err::<(), _>(io).context("opening the GPU").unwrap_err();
        assert_eq!(error_chain(&e), "opening the GPU: no libcuda");
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
