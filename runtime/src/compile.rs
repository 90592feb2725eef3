//! NVRTC compilation of generated kernels to CUBIN for an exact arch, with the ptxas resource
//! report (registers, spills, stack, shared memory) read from the compile log. Needs libnvrtc
//! only: no GPU.

use crate::error::{Error, Result};
use crate::libs::{ensure_nvrtc, NVRTC_BUILTINS_HINT};
use cudarc::nvrtc::{result as nvrtc, sys};
use flashgen_codegen::{Arch, KernelSource};
use std::ffi::CString;
use std::time::Instant;

/// What ptxas reported for one kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceReport {
    pub registers: u32,
    pub spill_stores_bytes: u32,
    pub spill_loads_bytes: u32,
    pub stack_frame_bytes: u32,
    pub static_shared_bytes: u32,
}

impl ResourceReport {
    pub fn spills(&self) -> bool {
        self.spill_stores_bytes > 0 || self.spill_loads_bytes > 0
    }
}

/// A compiled kernel: the CUBIN and what is known about it before launch.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledKernel {
    pub kernel_name: String,
    pub arch: Arch,
    pub cubin: Vec<u8>,
    pub log: String,
    pub report: ResourceReport,
    pub threads: u32,
    pub dynamic_shared_bytes: u32,
}

/// NVRTC options for an arch. Part of the cache key.
pub fn compile_options(arch: Arch) -> Vec<String> {
    vec![
        format!("--gpu-architecture={}", arch.sm_name()),
        "-std=c++17".to_string(),
        "--ptxas-options=-v".to_string(),
        "-default-device".to_string(),
        // NVRTC's own cache (12.9+) skips ptxas on a hit, and with it the resource report;
        // kernels are cached by the runtime instead.
        "--no-cache".to_string(),
    ]
}

/// The version of the loaded libnvrtc, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::Nvrtc {
            context: "reading the NVRTC version".into(),
            message: format!("{e:?}"),
        })?;
    Ok((major, minor))
}

/// Owns an NVRTC program and destroys it on every path.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed once.
        let _ = unsafe { nvrtc::destroy_program(self.0) };
    }
}

fn nvrtc_err(context: &str, e: impl std::fmt::Debug) -> Error {
    Error::Nvrtc {
        context: context.to_string(),
        message: format!("{e:?}"),
    }
}

/// Compiles generated source to CUBIN for `arch`, returning the kernel and the NVRTC time in
/// milliseconds. A source that does not compile is [`Error::Compile`] with NVRTC's full log.
pub fn compile(source: &KernelSource, arch: Arch) -> Result<(CompiledKernel, f64)> {
    compile_with(source, arch, &[])
}

/// Where one cold NVRTC compile spends its time, in milliseconds: NVRTC's own per-phase report
/// (its `--time` option) and the wall time of the whole call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompilePhases {
    pub total_ms: f64,
    /// Parsing and semantic analysis of the CUDA C++.
    pub frontend_ms: f64,
    /// The NVVM optimizer and PTX generation.
    pub optimizer_ms: f64,
    /// ptxas: PTX to the arch's machine code.
    pub ptxas_ms: f64,
}

/// Compiles `source` as [`compile`] does (same options, so the same CUBIN) and reports where
/// the time went. For measuring only: the report goes through a temporary file.
pub fn compile_phases(
    source: &KernelSource,
    arch: Arch,
) -> Result<(CompiledKernel, CompilePhases)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let file = std::env::temp_dir().join(format!(
        "flashgen-nvrtc-time-{}-{}.csv",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let option = format!("--time={}", file.display());
    let compiled = compile_with(source, arch, &[option]);
    let report = std::fs::read_to_string(&file);
    let _ = std::fs::remove_file(&file);
    let (kernel, total_ms) = compiled?;
    let report = report.map_err(|e| Error::Nvrtc {
        context: "reading NVRTC's time report".into(),
        message: e.to_string(),
    })?;
    let mut phases = CompilePhases {
        total_ms,
        ..CompilePhases::default()
    };
    // Rows of `file, phase, milliseconds, unit`.
    for line in report.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let Some(ms) = fields.get(2).and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        match fields[1] {
            "CUDA C++ Frontend" => phases.frontend_ms += ms,
            "PTX Translation" => phases.ptxas_ms += ms,
            _ => phases.optimizer_ms += ms,
        }
    }
    Ok((kernel, phases))
}

/// [`compile`] with options added to [`compile_options`].
fn compile_with(
    source: &KernelSource,
    arch: Arch,
    extra: &[String],
) -> Result<(CompiledKernel, f64)> {
    ensure_nvrtc()?;
    let start = Instant::now();
    let code = CString::new(source.code.as_str())
        .map_err(|_| Error::Render("generated source contains a NUL byte".into()))?;
    let name = CString::new(format!("{}.cu", source.kernel_name))
        .map_err(|_| Error::Render("kernel name contains a NUL byte".into()))?;
    let program = Program(
        nvrtc::create_program(&code, Some(&name))
            .map_err(|e| nvrtc_err("creating the program", e))?,
    );
    let mut options = compile_options(arch);
    options.extend_from_slice(extra);
    // SAFETY: the program is live; options are plain strings.
    let compiled = unsafe { nvrtc::compile_program(program.0, &options) };
    // SAFETY: the program is live.
    let log = unsafe { nvrtc::get_program_log(program.0) }
        .map(|chars| {
            let bytes: Vec<u8> = chars
                .iter()
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        })
        .unwrap_or_default();
    if compiled.is_err() {
        if log.contains("libnvrtc-builtins") {
            return Err(Error::LibraryMissing {
                lib: "libnvrtc-builtins",
                hint: NVRTC_BUILTINS_HINT,
            });
        }
        return Err(Error::Compile {
            kernel: source.kernel_name.clone(),
            arch: arch.sm_name(),
            log,
        });
    }
    let mut size = 0usize;
    // SAFETY: the program compiled; out-parameter.
    unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }
        .result()
        .map_err(|e| nvrtc_err("reading the CUBIN size", e))?;
    let mut cubin = vec![0u8; size];
    // SAFETY: the buffer has the size NVRTC reported.
    unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| nvrtc_err("reading the CUBIN", e))?;
    let report = parse_report(&log, &source.kernel_name).unwrap_or_default();
    let kernel = CompiledKernel {
        kernel_name: source.kernel_name.clone(),
        arch,
        cubin,
        log,
        report,
        threads: source.threads,
        dynamic_shared_bytes: source.shared_bytes,
    };
    Ok((kernel, start.elapsed().as_secs_f64() * 1e3))
}

/// The function a ptxas `-v` section header names: `Compiling entry function 'NAME' for 'sm_90a'`
/// or `Function properties for NAME`.
fn section_function(line: &str) -> Option<&str> {
    if let Some((_, rest)) = line.split_once("Compiling entry function '") {
        return rest.split('\'').next();
    }
    let (_, rest) = line.split_once("Function properties for ")?;
    Some(rest.trim().trim_matches('\''))
}

/// Reads the ptxas `-v` lines of one entry function from an NVRTC log. `None` when the log has
/// no report for it.
pub fn parse_report(log: &str, kernel_name: &str) -> Option<ResourceReport> {
    let mut report = ResourceReport::default();
    let mut in_kernel = false;
    let mut found = false;
    for line in log.lines() {
        if let Some(function) = section_function(line) {
            in_kernel = function == kernel_name;
            continue;
        }
        if !in_kernel {
            continue;
        }
        if line.contains("stack frame") {
            report.stack_frame_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            report.spill_stores_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
            report.spill_loads_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
            found = true;
        }
        if let Some(regs) = number_before(line, "registers") {
            report.registers = regs;
            report.static_shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            found = true;
        }
    }
    found.then_some(report)
}

/// The integer right before `suffix` in `line` (`"36 bytes spill stores"` → 36).
fn number_before(line: &str, suffix: &str) -> Option<u32> {
    let idx = line.find(suffix)?;
    line[..idx].split_whitespace().last()?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small hand-written kernel with static shared memory and one barrier, independent of
    /// the templates.
    pub(crate) fn tiny_source(kernel_name: &str) -> KernelSource {
        let code = format!(
            r#"
struct TinyParams {{ const float* x; float* y; int n; }};
extern "C" __global__ void {kernel_name}(const TinyParams p) {{
    __shared__ float buf[64];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x % 64] = i < p.n ? p.x[i] : 0.f;
    __syncthreads();
    if (i < p.n) p.y[i] = buf[(threadIdx.x + 1) % 64] * 2.f;
}}
"#
        );
        KernelSource {
            kernel_name: kernel_name.to_string(),
            code,
            threads: 64,
            shared_bytes: 0,
        }
    }

    // Captured from NVRTC 13.0.88 compiling `tiny_source("flashgen_tiny")` for sm_80 with
    // `--ptxas-options=-v`.
    const TINY_LOG_SM80: &str = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'flashgen_tiny' for 'sm_80'
ptxas info    : Function properties for flashgen_tiny
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 1 barriers, 256 bytes smem, 376 bytes cmem[0]
ptxas info    : Compile time = 3.834 ms
";

    // Two entry functions, one of which spills (the layout of NVRTC 13.0's sm_90a log).
    const TWO_KERNEL_LOG: &str = "ptxas info    : 59 bytes gmem
ptxas info    : Compiling entry function 'other_causal_lse' for 'sm_90a'
ptxas info    : Function properties for other_causal_lse
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 1024 bytes smem
ptxas info    : Compiling entry function 'flashgen_dense_d128_bf16_m128n64w4s1_causal_lse' for 'sm_90a'
ptxas info    : Function properties for flashgen_dense_d128_bf16_m128n64w4s1_causal_lse
ptxas         .     16 bytes stack frame, 36 bytes spill stores, 24 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 16 bytes cumulative stack size
ptxas info    : Compile time = 387.012 ms
";

    #[test]
    fn report_of_a_captured_log() {
        let r = parse_report(TINY_LOG_SM80, "flashgen_tiny").unwrap();
        assert_eq!(
            r,
            ResourceReport {
                registers: 8,
                spill_stores_bytes: 0,
                spill_loads_bytes: 0,
                stack_frame_bytes: 0,
                static_shared_bytes: 256,
            }
        );
        assert!(!r.spills());
        assert_eq!(parse_report(TINY_LOG_SM80, "flashgen"), None);
        assert_eq!(parse_report("", "flashgen_tiny"), None);
    }

    #[test]
    fn report_is_read_for_the_named_kernel_only() {
        let name = "flashgen_dense_d128_bf16_m128n64w4s1_causal_lse";
        let r = parse_report(TWO_KERNEL_LOG, name).unwrap();
        assert_eq!(
            r,
            ResourceReport {
                registers: 255,
                spill_stores_bytes: 36,
                spill_loads_bytes: 24,
                stack_frame_bytes: 16,
                static_shared_bytes: 0,
            }
        );
        assert!(r.spills());
        let other = parse_report(TWO_KERNEL_LOG, "other_causal_lse").unwrap();
        assert_eq!(other.registers, 12);
        assert_eq!(other.static_shared_bytes, 1024);
        assert!(!other.spills());
        // A name that is only a suffix or prefix of a reported one has no report.
        assert_eq!(parse_report(TWO_KERNEL_LOG, "causal_lse"), None);
        assert_eq!(parse_report(TWO_KERNEL_LOG, "other"), None);
        assert_eq!(parse_report(TWO_KERNEL_LOG, "missing"), None);
    }

    #[test]
    fn options_name_the_exact_arch() {
        let sm90 = compile_options(Arch::SM90);
        assert!(sm90.contains(&"--gpu-architecture=sm_90a".to_string()));
        assert!(compile_options(Arch::SM80).contains(&"--gpu-architecture=sm_80".to_string()));
        assert!(compile_options(Arch::SM86).contains(&"--gpu-architecture=sm_86".to_string()));
        for option in [
            "-std=c++17",
            "--ptxas-options=-v",
            "-default-device",
            "--no-cache",
        ] {
            assert!(sm90.iter().any(|o| o == option), "{option} missing");
        }
        assert!(!sm90
            .iter()
            .any(|o| o.starts_with("-I") || o.contains("include")));
    }

    #[test]
    fn nvrtc_reports_its_version() {
        let (major, minor) = nvrtc_version().unwrap();
        assert!(major >= 11 && (0..10).contains(&minor), "{major}.{minor}");
    }

    #[test]
    fn a_tiny_kernel_compiles_to_cubin_for_sm80_and_sm90a() {
        for arch in [Arch::SM80, Arch::SM90] {
            let source = tiny_source("flashgen_tiny");
            let (kernel, millis) = compile(&source, arch).unwrap();
            assert!(millis >= 0.0);
            assert!(
                kernel.cubin.starts_with(b"\x7fELF"),
                "{arch}: not an ELF image"
            );
            assert!(kernel.cubin.len() > 256);
            assert_eq!(kernel.kernel_name, "flashgen_tiny");
            assert_eq!(kernel.arch, arch);
            assert_eq!(kernel.threads, 64);
            assert_eq!(kernel.dynamic_shared_bytes, 0);
            assert!(
                kernel.log.contains(&format!("for '{}'", arch.sm_name())),
                "{arch}: the log is not ptxas's -v report:\n{}",
                kernel.log
            );
            let report = kernel.report;
            assert!(report.registers > 0, "{report:?}");
            assert_eq!(report.static_shared_bytes, 256, "{arch}: {}", kernel.log);
            assert!(!report.spills(), "{report:?}");
            assert_eq!(
                parse_report(&kernel.log, "flashgen_tiny"),
                Some(report),
                "the stored report is the log's"
            );
        }
    }

    /// NVRTC's own cache would return a second compile of the same source without running
    /// ptxas, and so without a report (seen on a machine with a GPU).
    #[test]
    fn a_second_compile_of_the_same_source_still_reports() {
        let source = tiny_source("flashgen_tiny_twice");
        for round in 0..2 {
            let (kernel, _) = compile(&source, Arch::SM90).unwrap();
            assert!(
                kernel.report.registers > 0,
                "round {round}: no report in the log:\n{}",
                kernel.log
            );
        }
    }

    #[test]
    fn phases_are_reported_and_the_cubin_is_the_plain_compiles() {
        let source = tiny_source("flashgen_tiny_phases");
        let (kernel, phases) = compile_phases(&source, Arch::SM90).unwrap();
        let (plain, _) = compile(&source, Arch::SM90).unwrap();
        assert_eq!(kernel.report, plain.report);
        assert!(phases.frontend_ms > 0.0, "{phases:?}");
        assert!(phases.ptxas_ms > 0.0, "{phases:?}");
        assert!(
            phases.frontend_ms + phases.optimizer_ms + phases.ptxas_ms
                <= phases.total_ms * 1.05 + 1.0,
            "{phases:?}"
        );
    }

    #[test]
    fn a_compile_error_returns_the_full_log() {
        let mut source = tiny_source("flashgen_broken");
        source.code.push_str(
            "extern \"C\" __global__ void flashgen_broken2() { undeclared_identifier = 1; }\n",
        );
        match compile(&source, Arch::SM80) {
            Err(Error::Compile { kernel, arch, log }) => {
                assert_eq!(kernel, "flashgen_broken");
                assert_eq!(arch, "sm_80");
                assert!(log.contains("undeclared_identifier"), "{log}");
                assert!(log.contains("error"), "{log}");
            }
            other => panic!("expected a compile error, got {other:?}"),
        }
    }

    #[test]
    fn a_nul_byte_in_the_source_is_an_error() {
        let mut source = tiny_source("flashgen_tiny");
        source.code.push('\0');
        assert!(matches!(
            compile(&source, Arch::SM80),
            Err(Error::Render(_))
        ));
    }
}
