//! NVRTC compilation of generated kernels to CUBIN for an exact arch, with the ptxas resource
//! report (registers, spills, stack, shared memory) read from the compile log. Needs libnvrtc
//! only: no GPU.

use crate::error::{Error, Result};
use crate::libs::ensure_nvrtc;
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

/// Compiles generated source to CUBIN for `arch`.
pub fn compile(source: &KernelSource, arch: Arch) -> Result<(CompiledKernel, f64)> {
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
    let options = compile_options(arch);
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

/// Reads the ptxas `-v` lines of one entry function from an NVRTC log.
pub fn parse_report(log: &str, kernel_name: &str) -> Option<ResourceReport> {
    let mut report = ResourceReport::default();
    let mut in_kernel = false;
    let mut found = false;
    for line in log.lines() {
        if line.contains("Compiling entry function") || line.contains("Function properties for") {
            in_kernel = line.contains(&format!("'{kernel_name}'"))
                || line.trim_end().ends_with(kernel_name);
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
mod tests {
    use super::*;

    // Captured from NVRTC 13.0 (`--ptxas-options=-v`).
    const LOG: &str = "ptxas info    : 59 bytes gmem
ptxas info    : Compiling entry function 'other' for 'sm_90a'
ptxas info    : Function properties for other
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 1024 bytes smem
ptxas info    : Compiling entry function 'flashgen_dense_d128_bf16_m128n64w4s1_causal_lse' for 'sm_90a'
ptxas info    : Function properties for flashgen_dense_d128_bf16_m128n64w4s1_causal_lse
ptxas         .     16 bytes stack frame, 36 bytes spill stores, 24 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 16 bytes cumulative stack size
ptxas info    : Compile time = 387.012 ms
";

    #[test]
    fn report_is_read_for_the_named_kernel_only() {
        let r = parse_report(LOG, "flashgen_dense_d128_bf16_m128n64w4s1_causal_lse").unwrap();
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
        let other = parse_report(LOG, "other").unwrap();
        assert_eq!(other.registers, 12);
        assert_eq!(other.static_shared_bytes, 1024);
        assert!(!other.spills());
        assert_eq!(parse_report(LOG, "missing"), None);
    }

    #[test]
    fn options_name_the_exact_arch() {
        assert!(compile_options(Arch::SM90).contains(&"--gpu-architecture=sm_90a".to_string()));
        assert!(compile_options(Arch::SM80).contains(&"--gpu-architecture=sm_80".to_string()));
    }
}
