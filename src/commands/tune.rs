//! `flashgen tune`: tunes the default set on the local GPU with progress bars, prints the
//! winners against the heuristic defaults, and writes the tuned config the runtime reads.

use super::{check_replaceable, check_writable, target_arch, usage, with_sources};
use crate::cli::{TuneArgs, VariantFilter};
use crate::output::{errln, outln};
use anyhow::Context;
use flashgen_codegen::decode::{decode_default_set_for, DECODE_ROWS};
use flashgen_codegen::DecodeSpec;
use flashgen_codegen::{default_set, Arch, AttentionSpec, DType};
use flashgen_runtime::config::{default_path, discover, ConfigOrigin};
use flashgen_runtime::{GpuIdentity, Runtime, TunedConfig};
use flashgen_tuning::{
    candidate_tiles, default_targets, DecodeTarget, DecodeTargetReport, TargetReport, TuneEvent,
    TuneOptions, TuneReport, TuneTarget, Tuner, DECODE_PROBLEMS,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The targets of a tune after the filters: the default targets (or the default set at the
/// given lengths), for each requested dtype, restricted to the requested variants and head dims.
pub fn select_targets(args: &TuneArgs) -> Vec<TuneTarget> {
    let base: Vec<TuneTarget> = if args.seqs.is_empty() {
        default_targets()
    } else {
        default_set()
            .into_iter()
            .flat_map(|spec| {
                args.seqs
                    .iter()
                    .map(move |&seq| TuneTarget::standard(spec, seq as usize))
            })
            .collect()
    };
    let mut out = Vec::new();
    for dtype in requested_dtypes(args) {
        for t in &base {
            if kept(
                args,
                VariantFilter::Attention(t.spec.variant),
                t.spec.head_dim,
            ) {
                let mut t = t.clone();
                t.spec = AttentionSpec { dtype, ..t.spec };
                out.push(t);
            }
        }
    }
    out
}

/// The decode targets of a tune after the filters: the default decode targets (or the decode
/// default set at the given lengths, batch 1 and 8), for each requested query dtype, restricted
/// to the requested decode variants (none when only attention variants are named) and head
/// dims.
pub fn select_decode_targets(args: &TuneArgs) -> Vec<DecodeTarget> {
    let problems: Vec<(usize, usize)> = if args.seqs.is_empty() {
        DECODE_PROBLEMS.to_vec()
    } else {
        args.seqs
            .iter()
            .flat_map(|&seq| [(1, seq as usize), (8, seq as usize)])
            .collect()
    };
    let mut out = Vec::new();
    for dtype in requested_dtypes(args) {
        for spec in decode_default_set_for(dtype) {
            if kept(args, VariantFilter::Decode(spec.variant), spec.head_dim) {
                out.extend(
                    problems
                        .iter()
                        .map(|&(batch, seq)| DecodeTarget::standard(spec, batch, seq)),
                );
            }
        }
    }
    out
}

/// The query dtypes of a tune: `--dtype`, else bf16.
fn requested_dtypes(args: &TuneArgs) -> Vec<DType> {
    if args.dtypes.is_empty() {
        vec![DType::Bf16]
    } else {
        args.dtypes.clone()
    }
}

/// Whether the variant and head-dim filters keep a target (an empty filter keeps all).
fn kept(args: &TuneArgs, variant: VariantFilter, head_dim: u32) -> bool {
    (args.variants.is_empty() || args.variants.contains(&variant))
        && (args.head_dims.is_empty() || args.head_dims.contains(&head_dim))
}

/// Where the config goes: `--output`, else `$FLASHGEN_CONFIG`, else the user config dir.
fn output_path(args: &TuneArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.output {
        return Ok(p.clone());
    }
    match discover(None) {
        Some((path, ConfigOrigin::Env)) => Ok(path),
        _ => default_path()
            .ok_or_else(|| usage("no user config dir on this system; pass --output <file>")),
    }
}

pub fn run(args: &TuneArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        let arch = target_arch(args.arch.as_deref())?;
        return list(args, arch);
    }
    if args.arch.is_some() {
        return Err(usage(
            "--arch only applies to --list; a tune runs on the GPU's own arch",
        ));
    }
    // The outputs are checked before the GPU work, not after it.
    let output = output_path(args)?;
    check_replaceable(&output)?;
    if let Some(path) = &args.json {
        check_writable(path)?;
    }
    let rt = Runtime::new(args.device).context("opening the GPU to tune")?;
    let targets = select_targets(args);
    let decode = select_decode_targets(args);
    if targets.is_empty() && decode.is_empty() {
        return Err(usage("the filters leave no target to tune"));
    }
    let existing = existing_config(&output, &GpuIdentity::from(rt.info()))?;
    let info = rt.info();
    outln!(
        "tuning {} target(s) and {} decode target(s) on {} (sm_{}{}, {} SMs){}; config: {}",
        targets.len(),
        decode.len(),
        info.name,
        info.arch.major,
        info.arch.minor,
        info.sm_count,
        if args.quick { ", quick" } else { "" },
        output.display()
    );

    let progress = Progress::new(targets.len() + decode.len());
    let on_event = |e: &TuneEvent| progress.event(e);
    let options = TuneOptions {
        quick: args.quick,
        time_budget: args.budget,
        progress: Some(&on_event),
    };
    let report = Tuner::default().tune_all(&rt, &targets, &decode, &options)?;
    progress.finish();
    for w in rt.take_warnings() {
        errln!("warning: {w}");
    }

    print_table(&report);
    print_decode_table(&report);
    let failed = report.targets.iter().filter(|t| t.error.is_some()).count()
        + report.decode.iter().filter(|t| t.error.is_some()).count();
    let config = match existing {
        Some(mut old) => {
            old.merge(report.to_config());
            old
        }
        None => report.to_config(),
    };
    config
        .save(&output)
        .with_context(|| format!("writing {}", output.display()))?;
    outln!(
        "wrote {} entries and {} decode entries to {} in {:.1} s{}",
        config.entries.len(),
        config.decode.len(),
        output.display(),
        report.elapsed.as_secs_f64(),
        if failed > 0 {
            format!("; {failed} target(s) failed (see above)")
        } else {
            String::new()
        }
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&JsonReport::from(&report))?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The existing config at `output` that the new entries are merged into: a file tuned on this
/// GPU (entries this run does not re-tune are kept). A file that cannot be read or was tuned on
/// another GPU is replaced, and one with entries that cannot be used loses them; either way it
/// is backed up first (before the tune, so that a failed backup costs no tuning time).
fn existing_config(output: &Path, gpu: &GpuIdentity) -> anyhow::Result<Option<TunedConfig>> {
    if output.symlink_metadata().is_err() {
        return Ok(None);
    }
    let (kept, lost) = match TunedConfig::load_checked(output) {
        Ok((old, skipped)) if old.tuned_on.gpu_matches(gpu) => {
            for w in &skipped {
                errln!("warning: {w}");
            }
            let lost = (!skipped.is_empty())
                .then(|| format!("{} unusable entries are dropped", skipped.len()));
            (Some(old), lost)
        }
        Ok((old, _)) => (
            None,
            Some(format!(
                "it was tuned on {}, and is replaced",
                old.tuned_on.gpu_text()
            )),
        ),
        Err(e) => (None, Some(format!("{}; it is replaced", with_sources(&e)))),
    };
    if let Some(why) = lost {
        let backup = back_up(output).with_context(|| {
            format!(
                "{}: {why}, but it could not be backed up; pass -o FILE to write elsewhere",
                output.display()
            )
        })?;
        errln!(
            "note: {}: {why}; the old file is kept as {}",
            output.display(),
            backup.display()
        );
    }
    Ok(kept)
}

/// Copies `path` to `<path>.<unix seconds>.bak` (`-1`, `-2`, ... when taken), or hard-links it
/// when it cannot be read; the backup's path.
fn back_up(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let backup = (0..)
        .map(|i| match i {
            0 => path.with_file_name(format!("{name}.{stamp}.bak")),
            i => path.with_file_name(format!("{name}.{stamp}-{i}.bak")),
        })
        .find(|p| p.symlink_metadata().is_err())
        .expect("a free name");
    match std::fs::copy(path, &backup) {
        Ok(_) => Ok(backup),
        Err(e) => std::fs::hard_link(path, &backup)
            .map(|()| backup)
            .map_err(|_| e),
    }
}

/// `--list`: the targets and how many tiles each would consider, without a GPU.
fn list(args: &TuneArgs, arch: Arch) -> anyhow::Result<ExitCode> {
    let targets = select_targets(args);
    let decode = select_decode_targets(args);
    if targets.is_empty() && decode.is_empty() {
        return Err(usage("the filters leave no target to tune"));
    }
    let smem = arch.max_shared_bytes_per_block();
    if !targets.is_empty() {
        outln!("{:<68} {:>6}  default tile", "target", "tiles");
    }
    for t in &targets {
        let tiles = candidate_tiles(&t.spec, arch, smem, args.quick);
        outln!("{:<68} {:>6}  {}", t.to_string(), tiles.len(), tiles[0]);
    }
    if !decode.is_empty() {
        outln!("{:<68} {:>6}  split counts", "decode target", "rows");
    }
    for t in &decode {
        // The split counts centre on the heuristic's, which needs the GPU's occupancy.
        let rows: Vec<String> = DECODE_ROWS
            .into_iter()
            .filter(|&r| {
                r >= t.spec.rows
                    && r <= DecodeSpec::max_rows(t.spec.head_dim)
                    && (!args.quick || r == t.spec.rows)
            })
            .map(|r| format!("r{r}"))
            .collect();
        outln!(
            "{:<68} {:>6}  around the heuristic's (1 ..= one per 64-token tile)",
            t.to_string(),
            rows.join(",")
        );
    }
    outln!(
        "{} target(s) and {} decode target(s) for {}",
        targets.len(),
        decode.len(),
        arch.sm_name()
    );
    Ok(ExitCode::SUCCESS)
}

/// Two bars: targets done (with the time left) and the tiles of the current target.
struct Progress {
    _multi: MultiProgress,
    targets: ProgressBar,
    tiles: ProgressBar,
}

impl Progress {
    fn new(targets: usize) -> Self {
        let multi = MultiProgress::new();
        let style = |template: &str| {
            ProgressStyle::with_template(template)
                .expect("a valid progress template")
                .progress_chars("=> ")
        };
        let t = multi.add(ProgressBar::new(targets as u64));
        t.set_style(style(
            "targets [{bar:30}] {pos}/{len} {elapsed_precise} elapsed, about {eta} left",
        ));
        let tiles = multi.add(ProgressBar::new(0));
        tiles.set_style(style("  tiles [{bar:30}] {pos}/{len} {msg}"));
        t.enable_steady_tick(Duration::from_millis(500));
        Progress {
            _multi: multi,
            targets: t,
            tiles,
        }
    }

    fn event(&self, e: &TuneEvent) {
        match e {
            TuneEvent::TargetStarted { target, tiles, .. } => {
                self.tiles.reset();
                self.tiles.set_length(*tiles as u64);
                self.tiles.set_message(target.clone());
            }
            TuneEvent::DecodeCandidates { count } => self.tiles.set_length(*count as u64),
            TuneEvent::Measured { .. }
            | TuneEvent::Pruned { .. }
            | TuneEvent::DecodeMeasured { .. } => self.tiles.inc(1),
            TuneEvent::Warning(w) => self.targets.println(format!("warning: {w}")),
            TuneEvent::TargetDone { .. } | TuneEvent::DecodeTargetDone { .. } => {
                self.targets.inc(1)
            }
            _ => {}
        }
    }

    fn finish(&self) {
        self.tiles.finish_and_clear();
        self.targets.finish();
    }
}

fn ms(t: Option<&flashgen_tuning::TimedTile>) -> String {
    t.map_or("-".into(), |t| format!("{:.3}", t.median_ms))
}

/// The final table: per target the default and the winner, their times and the speedup.
fn print_table(report: &TuneReport) {
    outln!(
        "\n{:<68} {:<20} {:>9} {:<20} {:>9} {:>8}  runner-up",
        "target",
        "default tile",
        "ms",
        "tuned tile",
        "ms",
        "speedup"
    );
    for t in &report.targets {
        if let Some(e) = &t.error {
            outln!("{:<68} failed: {e}", t.target.to_string());
            continue;
        }
        let winner = t.winner.as_ref();
        let speedup = t.speedup().map_or("-".into(), |s| format!("{s:.3}x"));
        let runner = t.runner_up.as_ref().map_or("-".to_string(), |r| {
            format!(
                "{} {:.3}{}",
                r.tile,
                r.median_ms,
                if t.confident { "" } else { " (within noise)" }
            )
        });
        outln!(
            "{:<68} {:<20} {:>9} {:<20} {:>9} {:>8}  {}",
            t.target.to_string(),
            t.default_tile.to_string(),
            ms(t.default.as_ref()),
            winner.map_or("-".into(), |w| w.tile.to_string()),
            ms(winner),
            speedup,
            runner
        );
    }
}

fn decode_ms(t: Option<&flashgen_tuning::DecodeTimed>) -> String {
    t.map_or("-".into(), |t| format!("{:.4}", t.median_ms))
}

/// The decode table: per target the heuristic's row tile and split count and the winner's.
fn print_decode_table(report: &TuneReport) {
    if report.decode.is_empty() {
        return;
    }
    outln!(
        "\n{:<52} {:<16} {:>9} {:<16} {:>9} {:>8}",
        "decode target",
        "heuristic",
        "ms",
        "tuned",
        "ms",
        "speedup"
    );
    for t in &report.decode {
        if let Some(e) = &t.error {
            outln!("{:<52} failed: {e}", t.target.to_string());
            continue;
        }
        let name = |c: Option<flashgen_tuning::DecodeCandidate>| {
            c.map_or("-".to_string(), |c| c.to_string())
        };
        outln!(
            "{:<52} {:<16} {:>9} {:<16} {:>9} {:>8}",
            t.target.to_string(),
            name(t.default_candidate),
            decode_ms(t.default.as_ref()),
            name(t.winner.as_ref().map(|w| w.candidate)),
            decode_ms(t.winner.as_ref()),
            t.speedup().map_or("-".into(), |s| format!("{s:.3}x"))
        );
    }
}

/// The JSON form of a report.
#[derive(Serialize)]
struct JsonReport {
    gpu: String,
    sm_count: u32,
    nvrtc: String,
    template_digest: String,
    quick: bool,
    elapsed_s: f64,
    targets: Vec<JsonTarget>,
    decode: Vec<JsonDecodeTarget>,
}

#[derive(Serialize)]
struct JsonDecodeTarget {
    target: String,
    spec: String,
    bucket: String,
    default: Option<String>,
    default_ms: Option<f64>,
    winner: Option<String>,
    winner_ms: Option<f64>,
    speedup: Option<f64>,
    confident: bool,
    measured: Vec<(String, f64, f64)>,
    pruned: Vec<(String, String)>,
    error: Option<String>,
    elapsed_s: f64,
}

impl From<&DecodeTargetReport> for JsonDecodeTarget {
    fn from(t: &DecodeTargetReport) -> Self {
        JsonDecodeTarget {
            target: t.target.to_string(),
            spec: t.target.spec.to_string(),
            bucket: t.target.bucket().to_string(),
            default: t.default_candidate.map(|c| c.to_string()),
            default_ms: t.default.as_ref().map(|d| d.median_ms),
            winner: t.winner.as_ref().map(|w| w.candidate.to_string()),
            winner_ms: t.winner.as_ref().map(|w| w.median_ms),
            speedup: t.speedup(),
            confident: t.confident,
            measured: t
                .measured
                .iter()
                .map(|m| (m.candidate.to_string(), m.median_ms, m.spread))
                .collect(),
            pruned: t
                .pruned
                .iter()
                .map(|(c, why)| (c.to_string(), why.clone()))
                .collect(),
            error: t.error.clone(),
            elapsed_s: t.elapsed.as_secs_f64(),
        }
    }
}

#[derive(Serialize)]
struct JsonTarget {
    target: String,
    spec: String,
    bucket: String,
    default_tile: String,
    default_ms: Option<f64>,
    winner: Option<String>,
    winner_ms: Option<f64>,
    speedup: Option<f64>,
    confident: bool,
    measured: Vec<(String, f64, f64)>,
    pruned: Vec<(String, String)>,
    fresh_compiles: usize,
    error: Option<String>,
    elapsed_s: f64,
}

impl From<&TargetReport> for JsonTarget {
    fn from(t: &TargetReport) -> Self {
        JsonTarget {
            target: t.target.to_string(),
            spec: flashgen_runtime::config::spec_key(&t.target.spec),
            bucket: t.shape.bucket().to_string(),
            default_tile: t.default_tile.to_string(),
            default_ms: t.default.as_ref().map(|d| d.median_ms),
            winner: t.winner.as_ref().map(|w| w.tile.to_string()),
            winner_ms: t.winner.as_ref().map(|w| w.median_ms),
            speedup: t.speedup(),
            confident: t.confident,
            measured: t
                .measured
                .iter()
                .map(|m| (m.tile.to_string(), m.median_ms, m.spread))
                .collect(),
            pruned: t
                .pruned
                .iter()
                .map(|p| (p.tile.to_string(), p.reason.to_string()))
                .collect(),
            fresh_compiles: t.fresh_compiles,
            error: t.error.clone(),
            elapsed_s: t.elapsed.as_secs_f64(),
        }
    }
}

impl From<&TuneReport> for JsonReport {
    fn from(r: &TuneReport) -> Self {
        JsonReport {
            gpu: r.gpu.name.clone(),
            sm_count: r.gpu.sm_count,
            nvrtc: format!("{}.{}", r.nvrtc.0, r.nvrtc.1),
            template_digest: r.template_digest.clone(),
            quick: r.quick,
            elapsed_s: r.elapsed.as_secs_f64(),
            targets: r.targets.iter().map(JsonTarget::from).collect(),
            decode: r.decode.iter().map(JsonDecodeTarget::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use flashgen_codegen::Variant;
    use flashgen_tuning::default_decode_targets;

    fn args(argv: &[&str]) -> TuneArgs {
        let argv = ["flashgen", "tune"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Tune(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn gpu() -> GpuIdentity {
        GpuIdentity {
            name: "NVIDIA H100 80GB HBM3".into(),
            arch: Arch::SM90,
            sm_count: 132,
        }
    }

    fn config_on(gpu: &GpuIdentity) -> TunedConfig {
        use flashgen_runtime::config::{ConfigEntry, ConfigHeader, DensityClass, SeqClass};
        let mut c = TunedConfig::new(ConfigHeader::new(gpu, (13, 0), "abc"));
        for (spec, tile) in [
            ("dense,d64,bf16", "m64n64w4s1"),
            ("dense,d128,bf16", "m64n128w4s1-wgmma"),
        ] {
            c.insert(ConfigEntry {
                spec: spec.parse().unwrap(),
                seq: SeqClass::Le4k,
                gqa: 1,
                density: DensityClass::Dense,
                tile: tile.into(),
                ms: 1.0,
                runner_up: None,
                runner_up_ms: None,
                default_ms: 1.0,
            });
        }
        c
    }

    /// A fresh folder with `tuned.toml` holding `text` (none with `None`).
    fn folder(name: &str, text: Option<&str>) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("flashgen-tune-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tuned.toml");
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        (dir, path)
    }

    /// The backups in `dir`, with their contents.
    fn backups(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "bak"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    #[test]
    fn a_config_of_this_gpu_is_merged_into_without_a_backup() {
        let (dir, path) = folder("same-gpu", None);
        assert_eq!(existing_config(&path, &gpu()).unwrap(), None);
        config_on(&gpu()).save(&path).unwrap();
        assert_eq!(
            existing_config(&path, &gpu()).unwrap(),
            Some(config_on(&gpu()))
        );
        assert!(backups(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_config_that_would_lose_something_is_backed_up_first() {
        let a100 = GpuIdentity {
            name: "NVIDIA A100-SXM4-80GB".into(),
            arch: Arch::SM80,
            sm_count: 108,
        };
        let foreign = config_on(&a100).to_toml();
        let garbage = "[tuned_on\nnot toml".to_string();
        // One entry's tile does not fit its spec: the rest is kept, the file backed up.
        let bad_entry = config_on(&gpu())
            .to_toml()
            .replace("m64n64w4s1", "m256n64w4s1");
        for (name, text, kept) in [
            ("foreign", &foreign, 0),
            ("garbage", &garbage, 0),
            ("bad-entry", &bad_entry, 1),
        ] {
            let (dir, path) = folder(name, Some(text));
            let got = existing_config(&path, &gpu()).unwrap();
            assert_eq!(got.map_or(0, |c| c.entries.len()), kept, "{name}");
            assert_eq!(backups(&dir), std::slice::from_ref(text), "{name}");
            // A second run keeps the first backup and adds another.
            existing_config(&path, &gpu()).unwrap();
            assert_eq!(backups(&dir).len(), 2, "{name}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn all_targets_by_default() {
        let t = select_targets(&args(&[]));
        assert_eq!(t, default_targets());
        assert_eq!(select_decode_targets(&args(&[])), default_decode_targets());
    }

    #[test]
    fn decode_variants_filter_the_decode_targets() {
        use flashgen_codegen::DecodeVariant;
        // Only decode variants: no attention target.
        let a = args(&["--variant", "decode-selected", "--head-dim", "128"]);
        assert!(select_targets(&a).is_empty());
        let d = select_decode_targets(&a);
        assert!(!d.is_empty());
        assert!(d
            .iter()
            .all(|t| t.spec.variant == DecodeVariant::Selected && t.spec.head_dim == 128));
        // Only attention variants: no decode target.
        assert!(select_decode_targets(&args(&["--variant", "dense"])).is_empty());
        // Lengths: batch 1 and 8 at each.
        let d = select_decode_targets(&args(&["--seq", "5000", "--variant", "decode-dense"]));
        assert!(d.iter().all(|t| t.problem.seq == 5000));
        let dense_specs = flashgen_codegen::decode::decode_default_set()
            .into_iter()
            .filter(|s| s.variant == DecodeVariant::Dense)
            .count();
        assert_eq!(d.len(), dense_specs * 2);
        // f16 queries take the f16 kernels.
        let d = select_decode_targets(&args(&["--dtype", "f16", "--variant", "decode-mixed"]));
        assert!(!d.is_empty() && d.iter().all(|t| t.spec.dtype == DType::F16));
        let e = Cli::try_parse_from(["flashgen", "tune", "--variant", "decode-sparse"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("decode-dense"), "{e}");
    }

    #[test]
    fn filters_narrow_the_targets() {
        let t = select_targets(&args(&[
            "--variant",
            "streaming",
            "--variant",
            "apb",
            "--head-dim",
            "64",
        ]));
        assert!(!t.is_empty());
        assert!(t.iter().all(
            |x| matches!(x.spec.variant, Variant::Streaming | Variant::Apb)
                && x.spec.head_dim == 64
        ));
        let kinds: std::collections::HashSet<_> = t.iter().map(|x| x.spec.variant).collect();
        assert_eq!(kinds.len(), 2);

        let t = select_targets(&args(&["--dtype", "f16", "--dtype", "bf16"]));
        let n = default_targets().len();
        assert_eq!(t.len(), 2 * n);
        assert!(t[..n].iter().all(|x| x.spec.dtype == DType::F16));
        assert!(t[n..].iter().all(|x| x.spec.dtype == DType::Bf16));

        let t = select_targets(&args(&["--seq", "1000", "--variant", "dense"]));
        assert!(t.iter().all(|x| x.shape.seq == 1000));
        assert_eq!(
            t.len(),
            default_set()
                .iter()
                .filter(|s| s.variant == Variant::Dense)
                .count()
        );

        assert!(select_targets(&args(&["--head-dim", "96"])).is_empty());
    }
}
