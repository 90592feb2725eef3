//! Command-line arguments of the `flashgen` binary.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "flashgen",
    version,
    about = "Generate, compile and inspect specialised FlashAttention kernels",
    after_help = "A spec is written variant,d<head_dim>,<dtype>[,causal][,lse][,varlen][,<tile>], e.g.\n  \
                  dense,d128,bf16,causal,lse,m128n64w4s1\n\
                  Variants: dense, streaming, block-sparse, mixed. Without a tile the GPU's default is used."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the GPU, driver, NVRTC version and kernel cache location.
    Info,
    /// Print the generated CUDA C++ of one spec.
    Emit {
        /// The kernel spec.
        spec: String,
        /// Target architecture (sm_80, sm_86, sm_89, sm_90a, ...); default: the local GPU's, else sm_90a.
        #[arg(long)]
        arch: Option<String>,
    },
    /// NVRTC-compile specs (through the kernel cache) and print their resource report.
    Compile(CompileArgs),
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Kernel specs.
    pub specs: Vec<String>,
    /// A file with one spec per line (`#` starts a comment).
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Compile the built-in default set (every variant at head dims 64 and 128, bf16).
    #[arg(long)]
    pub default_set: bool,
    /// Compile every tile config of the search space of each spec.
    #[arg(long)]
    pub all_tiles: bool,
    /// Target architecture; default: the local GPU's, else sm_90a.
    #[arg(long)]
    pub arch: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Parallel NVRTC compiles; default: the available cores.
    #[arg(long, short, value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
}

/// Reads specs from a spec file: one per line, blank lines and `#` comments skipped.
pub fn specs_from_file(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_files_skip_comments_and_blanks() {
        let text = "# default kernels\ndense,d128,bf16,causal  # prefill\n\n  streaming,d64,f16\n";
        assert_eq!(
            specs_from_file(text),
            vec!["dense,d128,bf16,causal", "streaming,d64,f16"]
        );
    }

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from(["flashgen", "compile", "--default-set", "--arch", "sm_80"])
            .unwrap();
        match cli.command {
            Command::Compile(args) => {
                assert!(args.default_set);
                assert_eq!(args.arch.as_deref(), Some("sm_80"));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["flashgen", "emit"]).is_err());
        assert!(Cli::try_parse_from(["flashgen", "frobnicate"]).is_err());
    }

    fn compile_args(argv: &[&str]) -> CompileArgs {
        let argv = ["flashgen", "compile"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Compile(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn compile_takes_specs_file_and_flags() {
        let args = compile_args(&[
            "dense,d128,bf16,causal",
            "streaming,d64,f16",
            "--file",
            "specs.txt",
            "--all-tiles",
            "--json",
            "out.json",
            "-j",
            "3",
        ]);
        assert_eq!(args.specs, ["dense,d128,bf16,causal", "streaming,d64,f16"]);
        assert_eq!(args.file, Some(PathBuf::from("specs.txt")));
        assert!(args.all_tiles);
        assert!(!args.default_set);
        assert_eq!(args.arch, None);
        assert_eq!(args.json, Some(PathBuf::from("out.json")));
        assert_eq!(args.jobs, Some(3));

        let args = compile_args(&[]);
        assert!(args.specs.is_empty() && args.file.is_none() && !args.default_set);
        assert!(!args.all_tiles && args.json.is_none() && args.jobs.is_none());

        let args = compile_args(&["-f", "a.txt"]);
        assert_eq!(args.file, Some(PathBuf::from("a.txt")));
    }

    #[test]
    fn bad_compile_flags_are_rejected() {
        let parse = |argv: &[&str]| {
            let argv = ["flashgen", "compile"].iter().chain(argv).copied();
            Cli::try_parse_from(argv)
        };
        assert!(parse(&["--jobs", "0"]).is_err());
        assert!(parse(&["--jobs", "many"]).is_err());
        assert!(parse(&["--json"]).is_err());
        assert!(parse(&["--arch"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
    }

    #[test]
    fn emit_and_info_parse() {
        match Cli::try_parse_from(["flashgen", "emit", "dense,d64,bf16", "--arch", "sm_90a"])
            .unwrap()
            .command
        {
            Command::Emit { spec, arch } => {
                assert_eq!(spec, "dense,d64,bf16");
                assert_eq!(arch.as_deref(), Some("sm_90a"));
            }
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from(["flashgen", "emit", "mixed,d128,f16,lse"])
            .unwrap()
            .command
        {
            Command::Emit { arch, .. } => assert_eq!(arch, None),
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            Cli::try_parse_from(["flashgen", "info"]).unwrap().command,
            Command::Info
        ));
        assert!(Cli::try_parse_from(["flashgen", "info", "extra"]).is_err());
        assert!(Cli::try_parse_from(["flashgen", "emit", "a", "b"]).is_err());
        assert!(Cli::try_parse_from(["flashgen"]).is_err());
    }

    #[test]
    fn command_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
