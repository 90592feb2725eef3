//! Cold NVRTC compile time of every kernel of the default set (attention and decode) and of a
//! new custom definition (the causal soft cap of `benches/custom.rs` and its block
//! classification kernel), split into NVRTC's phases: C++ front end, NVVM optimizer, ptxas.
//! Each kernel is compiled `--reps` times (default 3) with the runtime's options and the fastest
//! run is shown, so a busy machine inflates the numbers less. No GPU needed.
//!
//! ```text
//! cargo run --release --example compile_times -- [--arch sm_90a] [--reps 3] [--only TEXT]
//! ```

use flashgen::codegen::decode::{decode_default_set, render_decode};
use flashgen::codegen::expr::CustomMods;
use flashgen::codegen::render::render_custom_blocks;
use flashgen::codegen::{default_set, parse_arch, render, AttentionSpec, DType, KernelSource};
use flashgen::runtime::{compile_phases, CompilePhases};
use std::process::ExitCode;

/// The custom definition timed: `benches/custom.rs`'s causal mask with a tanh soft cap.
const CUSTOM_DEFINITION: &str = "mask = k <= q; score = 50.0 * tanh(s / 50.0)";

fn main() -> ExitCode {
    let mut arch = flashgen::codegen::Arch::SM90;
    let mut reps = 3usize;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let parsed = match (arg.as_str(), value) {
            ("--arch", Some(v)) => parse_arch(&v).map(|a| arch = a).map_err(|e| e.to_string()),
            ("--reps", Some(v)) => match v.parse() {
                Ok(n) if n > 0 => {
                    reps = n;
                    Ok(())
                }
                _ => Err(format!("--reps takes a positive count, got `{v}`")),
            },
            ("--only", Some(v)) => {
                only = Some(v);
                Ok(())
            }
            (other, _) => Err(format!(
                "unknown or incomplete argument `{other}`; usage: [--arch ARCH] [--reps N] [--only TEXT]"
            )),
        };
        if let Err(e) = parsed {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let mut kernels: Vec<(String, KernelSource)> = Vec::new();
    for spec in default_set() {
        let kernel = spec.with_default_tile(arch);
        kernels.push((kernel.to_string(), render(&kernel).expect("render")));
    }
    for spec in decode_default_set() {
        kernels.push((
            spec.to_string(),
            render_decode(&spec, arch).expect("render"),
        ));
    }
    let mods = CustomMods::parse(CUSTOM_DEFINITION).expect("valid definition");
    let custom = AttentionSpec::custom(&mods, 128, DType::Bf16)
        .with_lse(true)
        .with_default_tile(arch);
    kernels.push((custom.to_string(), render(&custom).expect("render")));
    kernels.push((
        format!("classification of custom{{{CUSTOM_DEFINITION}}}"),
        render_custom_blocks(custom.definition).expect("render"),
    ));
    kernels.retain(|(name, _)| only.as_ref().is_none_or(|o| name.contains(o.as_str())));
    println!("cold NVRTC compiles for {arch}, fastest of {reps}; ms");
    println!(
        "{:<90} {:>7} {:>8} {:>8} {:>7}",
        "kernel", "total", "frontend", "nvvm", "ptxas"
    );
    let mut failed = false;
    for (name, source) in &kernels {
        let mut best: Option<CompilePhases> = None;
        for _ in 0..reps {
            match compile_phases(source, arch) {
                Ok((_, p)) if best.is_none_or(|b| p.total_ms < b.total_ms) => best = Some(p),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("error: {name}: {e}");
                    failed = true;
                    break;
                }
            }
        }
        if let Some(p) = best {
            println!(
                "{name:<90} {:>7.0} {:>8.0} {:>8.0} {:>7.0}",
                p.total_ms, p.frontend_ms, p.optimizer_ms, p.ptxas_ms
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
