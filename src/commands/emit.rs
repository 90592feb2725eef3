//! `flashgen emit`: the generated CUDA C++ of one spec.

use super::{target_arch, usage, with_sources};
use crate::output::out_str;
use anyhow::anyhow;
use flashgen_codegen::{parse_spec, render};
use std::process::ExitCode;

pub fn run(spec_text: &str, arch: Option<&str>) -> anyhow::Result<ExitCode> {
    let arch = target_arch(arch)?;
    let spec = parse_spec(spec_text, arch).map_err(|e| usage(e.to_string()))?;
    let source = render(&spec).map_err(|e| anyhow!("rendering {spec}: {}", with_sources(&e)))?;
    out_str(&source.code);
    if !source.code.ends_with('\n') {
        out_str("\n");
    }
    Ok(ExitCode::SUCCESS)
}
