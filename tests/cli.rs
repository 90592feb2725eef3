//! The `flashgen` binary as a user runs it (needs libnvrtc for `compile`, no GPU): output to a
//! reader that has gone, exit codes, error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flashgen-cli-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with its own kernel cache and no tuned config from the environment.
fn flashgen(tmp: &TempDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashgen"));
    cmd.env("FLASHGEN_CACHE_DIR", tmp.path().join("cache"))
        .env("FLASHGEN_CONFIG", tmp.path().join("no-config.toml"))
        .env("XDG_CONFIG_HOME", tmp.path().join("config"))
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn assert_no_panic(args: &[&str], out: &Output) {
    let err = stderr(out);
    assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

/// Runs `args` with stdout a pipe whose reader is already closed, as `flashgen ... | head -1`
/// leaves it once `head` has its line.
fn run_with_closed_stdout(tmp: &TempDir, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    flashgen(tmp)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

const SPEC: &str = "dense,d64,bf16,m64n64w4s1";

#[test]
fn a_reader_that_stops_early_is_not_a_panic() {
    let tmp = TempDir::new("closed-stdout");
    let json = tmp.path().join("report.json");
    let json_arg = json.to_str().unwrap();
    for args in [
        &["info"][..],
        &["emit", SPEC, "--arch", "sm_80"],
        &["compile", SPEC, "--arch", "sm_80", "--json", json_arg],
        &["tune", "--list", "--arch", "sm_90a"],
    ] {
        let out = run_with_closed_stdout(&tmp, args);
        assert_no_panic(args, &out);
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            stderr(&out)
        );
    }
    // The work went on after the output was dropped: the report was written.
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(
        report.contains("\"spec\": \"dense,d64,bf16,m64n64w4s1\""),
        "{report}"
    );
}

#[test]
fn a_failing_stdout_is_an_error_not_a_panic() {
    let tmp = TempDir::new("full-stdout");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let args = ["tune", "--list", "--arch", "sm_90a"];
    let out = flashgen(&tmp)
        .args(args)
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_no_panic(&args, &out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: writing to stdout"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn output_arrives_whole_on_an_open_pipe() {
    let tmp = TempDir::new("open-stdout");
    let out = flashgen(&tmp)
        .args(["tune", "--list", "--arch", "sm_80", "--variant", "dense"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("target "), "{text}");
    assert!(text.trim_end().ends_with("target(s) for sm_80"), "{text}");
}
