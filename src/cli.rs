//! Command-line arguments of the `flashgen` binary.

use clap::{Args, Parser, Subcommand};
use flashgen_codegen::{DType, DecodeVariant, Variant};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "flashgen",
    version,
    about = "Generate, compile and inspect specialised FlashAttention kernels",
    after_help = spec_help()
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
        #[command(flatten)]
        definition: DefinitionArgs,
    },
    /// NVRTC-compile specs (through the kernel cache) and print their resource report.
    Compile(CompileArgs),
    /// Find the fastest tile of each spec of the default set, and the fastest launch parameters
    /// of each decode kernel, on this GPU and write the tuned config that the runtime reads.
    Tune(TuneArgs),
}

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// A smaller search: the default tile and a few statically promising ones per spec.
    #[arg(long)]
    pub quick: bool,
    /// Only these variants (repeatable).
    #[arg(long = "variant", value_parser = parse_variant_filter, help = variant_help())]
    pub variants: Vec<VariantFilter>,
    /// Only these head dims (repeatable); the default set has 64 and 128.
    #[arg(long = "head-dim", value_parser = clap::value_parser!(u32).range(1..))]
    pub head_dims: Vec<u32>,
    /// Tune for these dtypes (repeatable: bf16, f16); default bf16.
    #[arg(long = "dtype", value_parser = parse_dtype)]
    pub dtypes: Vec<DType>,
    /// Sequence lengths to tune at (repeatable); default 4096 and 16384 (plus a GQA 32/8
    /// dense-causal target at 16384) for attention, and for decode b1 32768, b1 131072,
    /// b8 32768 and b32 8192; given lengths are tuned at batch 1 and 8 for decode.
    #[arg(long = "seq", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub seqs: Vec<u64>,
    /// Wall-clock budget of the whole tune, e.g. 90s, 10m, 1h; tiles not timed in time are
    /// skipped (the default tile is always timed).
    #[arg(long, value_parser = parse_duration)]
    pub budget: Option<Duration>,
    /// The config file to write; default: `$FLASHGEN_CONFIG`, else the user config dir's
    /// flashgen/tuned.toml. Entries of an existing file tuned on this GPU that this run does
    /// not re-tune are kept; a file this run replaces (or drops entries of) is first copied to
    /// `<file>.<unix time>.bak`.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also write the full report (every timed tile) as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// List the targets and their candidate tiles, then stop (no GPU work).
    #[arg(long)]
    pub list: bool,
    /// The GPU to tune (CUDA ordinal).
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// Target architecture for `--list` when there is no GPU; default: the local GPU's, else sm_90a.
    #[arg(long)]
    pub arch: Option<String>,
}

/// The spec syntax and every registered variant with its summary, after the main help.
fn spec_help() -> String {
    let mut help = String::from(
        "A spec is written variant,d<head_dim>,<dtype>[,causal][,lse][,varlen][,<tile>], e.g.\n  \
         dense,d128,bf16,causal,lse,m128n64w4s1\n\
         Without a tile the GPU's default is used. Variants:",
    );
    for info in flashgen_codegen::REGISTRY {
        help.push_str(&format!("\n  {:<13} {}", info.name, info.summary));
    }
    help.push_str(
        "\nA decode spec is written decode-<variant>,d<head_dim>,<dtype>,p<page_size>[,kv-<dtype>][,r<rows>],\n\
         e.g. decode-dense,d128,bf16,p64; decode variants: ",
    );
    help.push_str(&decode_variant_names());
    help
}

fn variant_help() -> String {
    format!(
        "Only these variants (repeatable): {}, or decode kernels: {}",
        Variant::names(),
        decode_variant_names()
    )
}

/// A `--variant` value: an attention variant or a decode variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VariantFilter {
    Attention(Variant),
    Decode(DecodeVariant),
}

fn decode_variant_names() -> String {
    DecodeVariant::ALL
        .map(|v| format!("decode-{}", v.name()))
        .join(", ")
}

/// A `--variant` value: a registered attention variant, or `decode-<name>`.
pub fn parse_variant_filter(text: &str) -> Result<VariantFilter, String> {
    let t = text.trim();
    if let Some(name) = t.strip_prefix("decode-") {
        return DecodeVariant::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .map(VariantFilter::Decode)
            .ok_or_else(|| {
                format!(
                    "unknown decode variant `{text}`; allowed: {}",
                    decode_variant_names()
                )
            });
    }
    parse_variant(t)
        .map(VariantFilter::Attention)
        .map_err(|e| format!("{e}, or decode kernels: {}", decode_variant_names()))
}

/// A variant as the CLI accepts it: a registered name.
pub fn parse_variant(text: &str) -> Result<Variant, String> {
    Variant::from_name(text.trim())
        .ok_or_else(|| format!("unknown variant `{text}`; allowed: {}", Variant::names()))
}

fn parse_dtype(text: &str) -> Result<DType, String> {
    DType::ALL
        .into_iter()
        .find(|d| d.name() == text.trim())
        .ok_or_else(|| format!("unknown dtype `{text}`; allowed: bf16, f16"))
}

/// `90`, `90s`, `10m`, `1.5h`: seconds by default.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`; use s, m or h")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 90s, 10m, 1h)"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("the budget must be positive, got `{text}`"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// The definition of custom specs written without one in braces (`custom,d128,bf16`).
#[derive(Debug, Args, Default)]
pub struct DefinitionArgs {
    /// A file holding the custom mask: a bool expression over b, h, q, k and the parameters.
    #[arg(long)]
    pub mask_file: Option<PathBuf>,
    /// A file holding the custom score modifier: a float expression over s, b, h, q, k and
    /// the parameters.
    #[arg(long)]
    pub score_file: Option<PathBuf>,
    /// A parameter of the mask or score, `NAME:TYPE` with TYPE i32, f32, [i32] or [f32]
    /// (repeatable).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// A file holding a whole definition (`doc: [i32]; mask = ..; score = ..`), instead of
    /// --mask-file, --score-file and --param.
    #[arg(long, conflicts_with_all = ["mask_file", "score_file", "params"])]
    pub definition_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// Kernel specs (attention, e.g. `dense,d128,bf16,causal`, or decode, e.g.
    /// `decode-dense,d128,bf16,p64`).
    pub specs: Vec<String>,
    /// A file with one spec per line (`#` starts a comment).
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Compile the built-in default set (every variant at head dims 64 and 128, bf16, and the
    /// decode kernels at those head dims with pages of 64 tokens, with their append and page
    /// selector kernels).
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
    #[command(flatten)]
    pub definition: DefinitionArgs,
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

    fn tune_args(argv: &[&str]) -> Result<TuneArgs, clap::Error> {
        let argv = ["flashgen", "tune"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv)?.command {
            Command::Tune(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn tune_takes_filters_budget_and_outputs() {
        let a = tune_args(&[
            "--quick",
            "--variant",
            "dense",
            "--variant",
            "block-sparse",
            "--head-dim",
            "64",
            "--dtype",
            "f16",
            "--seq",
            "8192",
            "--budget",
            "10m",
            "-o",
            "t.toml",
            "--json",
            "r.json",
            "--device",
            "1",
        ])
        .unwrap();
        assert!(a.quick && !a.list);
        assert_eq!(
            a.variants,
            [
                VariantFilter::Attention(Variant::Dense),
                VariantFilter::Attention(Variant::BlockSparse)
            ]
        );
        assert_eq!(
            (a.head_dims, a.dtypes, a.seqs),
            (vec![64], vec![DType::F16], vec![8192])
        );
        assert_eq!(a.budget, Some(Duration::from_secs(600)));
        assert_eq!(a.output, Some(PathBuf::from("t.toml")));
        assert_eq!(a.json, Some(PathBuf::from("r.json")));
        assert_eq!(a.device, 1);

        let a = tune_args(&[]).unwrap();
        assert!(!a.quick && a.variants.is_empty() && a.budget.is_none() && a.output.is_none());
        assert_eq!(a.device, 0);
    }

    #[test]
    fn bad_tune_arguments_are_rejected_with_the_allowed_values() {
        let err = tune_args(&["--variant", "sparse"]).unwrap_err().to_string();
        assert!(
            err.contains("allowed: dense, streaming, block-sparse, mixed, apb"),
            "{err}"
        );
        let err = tune_args(&["--dtype", "fp8"]).unwrap_err().to_string();
        assert!(err.contains("allowed: bf16, f16"), "{err}");
        for bad in [
            &["--budget", "soon"][..],
            &["--budget", "-5m"],
            &["--budget", "0"],
            &["--budget", "10d"],
            &["--head-dim", "0"],
            &["--seq", "0"],
            &["--device", "gpu0"],
            &["--output"],
            &["--frobnicate"],
        ] {
            assert!(tune_args(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("inf").is_err());
    }

    #[test]
    fn emit_and_info_parse() {
        match Cli::try_parse_from(["flashgen", "emit", "dense,d64,bf16", "--arch", "sm_90a"])
            .unwrap()
            .command
        {
            Command::Emit { spec, arch, .. } => {
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
