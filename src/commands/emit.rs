//! `flashgen emit`: the generated CUDA C++ of one spec.

use super::{target_arch, usage_error, with_sources};
use anyhow::anyhow;
use flashgen_codegen::{parse_decode_spec, parse_spec, render, render_decode, KernelSource};
use std::io::Write;
use std::process::ExitCode;

pub fn run(spec_text: &str, arch: Option<&str>) -> anyhow::Result<ExitCode> {
    let arch = match target_arch(arch) {
        Ok(arch) => arch,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(usage_error());
        }
    };
    // Decode specs (`decode-dense,d128,bf16,p64`) render the decode kernel and its merge.
    let rendered: Result<KernelSource, String> = if spec_text.trim_start().starts_with("decode-") {
        let spec = match parse_decode_spec(spec_text) {
            Ok(spec) => spec,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(usage_error());
            }
        };
        render_decode(&spec, arch).map_err(|e| format!("rendering {spec}: {}", with_sources(&e)))
    } else {
        let spec = match parse_spec(spec_text, arch) {
            Ok(spec) => spec,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(usage_error());
            }
        };
        render(&spec).map_err(|e| format!("rendering {spec}: {}", with_sources(&e)))
    };
    let source = rendered.map_err(|e| anyhow!(e))?;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(source.code.as_bytes())
        .and_then(|()| match source.code.ends_with('\n') {
            true => Ok(()),
            false => out.write_all(b"\n"),
        })
        .and_then(|()| out.flush());
    match written {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("writing to stdout: {e}"))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
