//! The `flashgen` command-line tool: inspect the machine, print generated kernels, and compile
//! kernels through the cache with their resource report, and autotune tile configs.

mod cli;
mod commands;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Info => commands::info::run(),
        cli::Command::Emit { spec, arch } => commands::emit::run(&spec, arch.as_deref()),
        cli::Command::Compile(args) => commands::compile::run(&args),
        cli::Command::Tune(args) => commands::tune::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
