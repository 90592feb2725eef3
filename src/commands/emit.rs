//! `flashgen emit`: the generated CUDA C++ of one spec.

use super::{target_arch, usage_error, with_sources};
use crate::output::{errln, out_str};
use anyhow::anyhow;
use flashgen_codegen::{parse_spec, render};
use std::process::ExitCode;

pub fn run(spec_text: &str, arch: Option<&str>) -> anyhow::Result<ExitCode> {
    let arch = match target_arch(arch) {
        Ok(arch) => arch,
        Err(e) => {
            errln!("error: {e}");
            return Ok(usage_error());
        }
    };
    let spec = match parse_spec(spec_text, arch) {
        Ok(spec) => spec,
        Err(e) => {
            errln!("error: {e}");
            return Ok(usage_error());
        }
    };
    let source = render(&spec).map_err(|e| anyhow!("rendering {spec}: {}", with_sources(&e)))?;
    out_str(&source.code);
    if !source.code.ends_with('\n') {
        out_str("\n");
    }
    Ok(ExitCode::SUCCESS)
}
