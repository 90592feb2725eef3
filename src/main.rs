//! The `flashgen` command-line tool: inspect the machine, print generated kernels, and compile
//! kernels through the cache with their resource report, and autotune tile configs.

mod cli;
mod commands;
mod output;

use clap::Parser;
use output::errln;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Info => commands::info::run(),
        cli::Command::Emit {
            spec,
            arch,
            definition,
        } => commands::emit::run(&spec, arch.as_deref(), &definition),
        cli::Command::Compile(args) => commands::compile::run(&args),
        cli::Command::Tune(args) => commands::tune::run(&args),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {}", commands::error_chain(&e));
            commands::exit_code_of(&e)
        }
    };
    match output::finish() {
        Some(e) => {
            errln!("error: writing to stdout: {e}");
            if code == ExitCode::SUCCESS {
                ExitCode::FAILURE
            } else {
                code
            }
        }
        None => code,
    }
}
