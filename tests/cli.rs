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

#[track_caller]
fn assert_usage_error(tmp: &TempDir, args: &[&str], message: &str) -> Output {
    let out = flashgen(tmp).args(args).output().unwrap();
    assert_no_panic(args, &out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(message),
        "{args:?}: expected {message:?} in: {err}"
    );
    out
}

#[test]
fn bad_arguments_exit_with_status_2() {
    let tmp = TempDir::new("usage");
    let allowed = "allowed values: sm_80, sm_86, sm_87, sm_89, sm_90a";
    for args in [
        &["tune", "--list", "--arch", "sm_75"][..],
        &["tune", "--list", "--arch", "8.99"],
        &["emit", SPEC, "--arch", "sm_199"],
        &["emit", SPEC, "--arch", "99"],
        &["compile", SPEC, "--arch", "sm_80a"],
    ] {
        let arch = args[args.len() - 1];
        let out = assert_usage_error(&tmp, args, &format!("unknown arch `{arch}`"));
        assert!(stderr(&out).contains(allowed), "{}", stderr(&out));
    }
    assert_usage_error(
        &tmp,
        &["emit", "dense,d64,d128,bf16", "--arch", "sm_80"],
        "duplicate head dim: `d64` and `d128`",
    );
    assert_usage_error(
        &tmp,
        &["compile", "dense,d64,bf16,f16", "--arch", "sm_80"],
        "duplicate dtype",
    );
    assert_usage_error(&tmp, &["compile"], "nothing to compile");
    assert_usage_error(
        &tmp,
        &["tune", "--list", "--arch", "sm_80", "--head-dim", "96"],
        "no target",
    );
    assert_usage_error(&tmp, &["tune", "--arch", "sm_80"], "only applies to --list");
    assert_usage_error(&tmp, &["tune", "--frobnicate"], "--frobnicate");
}

#[test]
fn emit_prints_quantized_decode_kernels() {
    let tmp = TempDir::new("emit-decode");
    let spec = "decode-mixed,d128,bf16,p64,k-int4tok,v-int8tok";
    let out = flashgen(&tmp)
        .args(["emit", spec, "--arch", "sm_90a"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let code = stdout(&out);
    assert!(code.contains("fg_decode_mixed_d128_bf16_kvint4tok_int8tok_p64_r16("));
    assert!(code.contains("constexpr int K_FMT = 3, V_FMT = 2;"));
    assert_usage_error(
        &tmp,
        &[
            "emit",
            "decode-dense,d128,bf16,p64,kv-int2",
            "--arch",
            "sm_80",
        ],
        "KV dtype `int2` is unknown",
    );
}

#[test]
fn an_unwritable_json_report_fails_before_the_work() {
    let tmp = TempDir::new("json");
    let missing_dir = tmp.path().join("missing").join("report.json");
    let missing = missing_dir.to_str().unwrap();
    let out = assert_usage_error(
        &tmp,
        &["compile", SPEC, "--arch", "sm_80", "--json", missing],
        &format!("cannot write {missing}"),
    );
    assert!(stdout(&out).is_empty(), "compiled anyway: {}", stdout(&out));
    assert!(!tmp.path().join("cache").exists(), "compiled anyway");
    // A folder in the file's place.
    let dir = tmp.path().to_str().unwrap();
    assert_usage_error(
        &tmp,
        &["compile", SPEC, "--arch", "sm_80", "--json", dir],
        &format!("cannot write {dir}"),
    );

    // The tune checks its outputs before it opens the GPU.
    let config = tmp.path().join("tuned.toml");
    let out = assert_usage_error(
        &tmp,
        &[
            "tune",
            "--device",
            "99",
            "-o",
            config.to_str().unwrap(),
            "--json",
            missing,
        ],
        &format!("cannot write {missing}"),
    );
    assert!(
        !stderr(&out).contains("opening the GPU"),
        "{}",
        stderr(&out)
    );
    let under_file = tmp.path().join("a-file");
    std::fs::write(&under_file, b"x").unwrap();
    let config = under_file.join("tuned.toml");
    assert_usage_error(
        &tmp,
        &["tune", "--device", "99", "-o", config.to_str().unwrap()],
        "is not a folder",
    );
    // Nothing was left behind by the checks.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a-file"]);
}

#[test]
fn a_tune_without_its_gpu_says_why() {
    let tmp = TempDir::new("no-gpu");
    // Ordinal 99: no machine has it, so this never starts a tune.
    let config = tmp.path().join("tuned.toml");
    let args = ["tune", "--device", "99", "-o", config.to_str().unwrap()];
    let out = flashgen(&tmp).args(args).output().unwrap();
    assert_no_panic(&args, &out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: opening the GPU to tune"))
        .unwrap_or_else(|| panic!("{err}"));
    let cause = line.trim_start_matches("error: opening the GPU to tune");
    assert!(
        cause.starts_with(": ") && cause.len() > 10,
        "the cause is missing: {line}"
    );
    assert!(!config.exists());
}

const TUNED: &str = r#"[tuned_on]
gpu = "NVIDIA H100 80GB HBM3"
compute_capability = "9.0"
sm_count = 132
nvrtc = "13.0"
template_digest = "0123456789abcdef"
flashgen_version = "0.1.0"

[[entry]]
spec = "dense,d128,bf16,causal,lse"
seq = "<=4k"
gqa = 1
density = ">=50%"
tile = "m256n64w4s1"
ms = 1.0
default_ms = 1.2

[[entry]]
spec = "dense,d128,bf16,causal,lse"
seq = "<=16k"
gqa = 1
density = ">=50%"
tile = "m64n128w4s1-wgmma"
ms = 1.0
default_ms = 1.2
"#;

#[test]
fn info_reports_the_tuned_config_and_its_problems() {
    let tmp = TempDir::new("info-config");
    let path = tmp.path().join("tuned.toml");
    std::fs::write(&path, TUNED).unwrap();
    let out = flashgen(&tmp)
        .env("FLASHGEN_CONFIG", &path)
        .arg("info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = |label: &str| {
        text.lines()
            .filter(|l| l.trim_start().starts_with(label))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        line("Tuned config:").contains(&format!("{} (from FLASHGEN_CONFIG)", path.display())),
        "{text}"
    );
    assert!(
        line("tuned on:").contains("NVIDIA H100 80GB HBM3 (compute capability 9.0, 132 SMs)"),
        "{text}"
    );
    assert!(line("entries:").contains("1 usable, 1 skipped"), "{text}");
    let warnings = line("warning:");
    assert!(
        warnings.contains("entry 1 (dense,d128,bf16,causal,lse seq <=4k")
            && warnings.contains("tile.block_m = 256"),
        "{text}"
    );
    assert!(warnings.contains("templates 0123456789ab"), "{text}");

    // No file: said so.
    let out = flashgen(&tmp)
        .env_remove("FLASHGEN_CONFIG")
        .arg("info")
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("Tuned config: none"),
        "{}",
        stdout(&out)
    );
    // A file that cannot be read: said why.
    let out = flashgen(&tmp).arg("info").output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("no-config.toml") && text.contains("not used"),
        "{text}"
    );
}

/// Decode specs compile like attention specs, from the command line and from a spec file, and
/// a bad one is a usage error naming its field.
#[test]
fn compile_takes_decode_specs() {
    let tmp = TempDir::new("compile-decode");
    let file = tmp.path().join("specs.txt");
    std::fs::write(&file, "# decode\ndecode-streaming,d64,bf16,p16\n").unwrap();
    let json = tmp.path().join("report.json");
    let out = flashgen(&tmp)
        .args([
            "compile",
            "decode-dense,d64,bf16,p64",
            "--file",
            file.to_str().unwrap(),
            "--arch",
            "sm_80",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("2 kernels for sm_80"), "{text}");
    for spec in [
        "decode-dense,d64,bf16,p64,r16",
        "decode-streaming,d64,bf16,p16,r16",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(spec))
            .unwrap_or_else(|| panic!("no row for {spec}: {text}"));
        assert!(line.trim_end().ends_with(" ms"), "{line}");
        // No spills: the spill column reads 0/0.
        assert!(line.contains(" 0/0 "), "{line}");
    }
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(
        report.contains("fg_decode_dense_d64_bf16_kvbf16_p64_r16"),
        "{report}"
    );
    assert_usage_error(
        &tmp,
        &["compile", "decode-dense,d64,bf16,p48", "--arch", "sm_80"],
        "page_size = 48",
    );
}

/// Custom specs: a definition in braces or from files; a bad expression is a usage error that
/// names the file and points at the token.
#[test]
fn custom_definitions_from_the_spec_or_from_files() {
    let tmp = TempDir::new("custom");
    let out = flashgen(&tmp)
        .args([
            "emit",
            "custom{w: i32; mask = k <= q && q - k < w},d64,bf16",
            "--arch",
            "sm_80",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("fg_custom_mask"));
    let mask = tmp.path().join("mask.txt");
    let score = tmp.path().join("score.txt");
    std::fs::write(&mask, "doc[q] == doc[k] && k <= q\n").unwrap();
    std::fs::write(&score, "50.0 * tanh(s / 50.0)\n").unwrap();
    let (m, s) = (mask.to_str().unwrap(), score.to_str().unwrap());
    let out = flashgen(&tmp)
        .args([
            "emit",
            "custom,d128,bf16,lse",
            "--arch",
            "sm_90a",
            "--mask-file",
            m,
        ])
        .args(["--score-file", s, "--param", "doc:[i32]"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("tanhf"),
        "the score modifier is rendered"
    );
    std::fs::write(&score, "50.0 * tanh(s / cap)\n").unwrap();
    let out = assert_usage_error(
        &tmp,
        &[
            "emit",
            "custom,d128,bf16",
            "--mask-file",
            m,
            "--score-file",
            s,
            "--param",
            "doc:[i32]",
        ],
        "unknown name `cap`",
    );
    assert!(stderr(&out).contains("score.txt"), "{}", stderr(&out));
    assert_usage_error(
        &tmp,
        &["compile", "custom{mask = q < k < 3},d64,bf16"],
        "comparisons cannot be chained",
    );
}
