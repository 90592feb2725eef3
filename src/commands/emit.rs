//! `flashgen emit`: the generated CUDA C++ of one spec.

use super::{target_arch, usage, with_sources};
use crate::cli::DefinitionArgs;
use crate::output::out_str;
use anyhow::anyhow;
use flashgen_codegen::{parse_decode_spec, parse_spec, render, render_decode};
use std::process::ExitCode;

pub fn run(
    spec_text: &str,
    arch: Option<&str>,
    definition: &DefinitionArgs,
) -> anyhow::Result<ExitCode> {
    let arch = target_arch(arch)?;
    let spec_text = &super::definition::apply(&[spec_text.to_string()], definition)?[0];
    // Decode specs (`decode-dense,d128,bf16,p64`) render the decode kernel and its merge.
    let source = if spec_text.trim_start().starts_with("decode-") {
        let spec = parse_decode_spec(spec_text).map_err(|e| usage(e.to_string()))?;
        render_decode(&spec, arch).map_err(|e| anyhow!("rendering {spec}: {}", with_sources(&e)))?
    } else {
        let spec = parse_spec(spec_text, arch).map_err(|e| usage(e.to_string()))?;
        render(&spec).map_err(|e| anyhow!("rendering {spec}: {}", with_sources(&e)))?
    };
    out_str(&source.code);
    if !source.code.ends_with('\n') {
        out_str("\n");
    }
    Ok(ExitCode::SUCCESS)
}
