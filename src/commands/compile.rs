//! `flashgen compile`: NVRTC-compiles specs (attention and decode kernels) through the kernel
//! cache, in parallel, and prints each kernel's resource report.

use super::{check_writable, first_line, target_arch, usage, usage_error, with_sources};
use crate::cli::{specs_from_file, CompileArgs};
use crate::output::{errln, outln};
use anyhow::Context;
use flashgen_codegen::decode::DECODE_ROWS;
use flashgen_codegen::{
    default_set, parse_decode_spec, parse_spec, search_space, Arch, DecodeSpec, KernelSpec,
};
use flashgen_runtime::decode::DecodeModule;
use flashgen_runtime::{nvrtc_version, CacheHit, CacheSource, KernelCache};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// One line of the report (and one object of the JSON output).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub spec: String,
    pub kernel: String,
    pub arch: String,
    pub registers: u32,
    pub spill_stores_bytes: u32,
    pub spill_loads_bytes: u32,
    pub stack_frame_bytes: u32,
    pub static_shared_bytes: u32,
    pub dynamic_shared_bytes: u32,
    pub threads: u32,
    /// `compiled`, `disk`, `memory` or `failed`.
    pub source: &'static str,
    /// NVRTC time, for kernels compiled now.
    pub compile_ms: Option<u64>,
    /// The cache's warning (a rejected entry, a failed write).
    pub warning: Option<String>,
    /// The error of a failed compile, NVRTC log included.
    pub error: Option<String>,
}

/// One kernel to compile: an attention kernel, or a decode module (a decode attention kernel
/// that merges its own splits, an append kernel, a page selector).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Job {
    Attention(KernelSpec),
    Decode(DecodeModule),
}

impl Job {
    pub fn kernel_name(&self) -> String {
        match self {
            Job::Attention(spec) => spec.kernel_name(),
            Job::Decode(module) => module.entry_name(),
        }
    }

    /// Compiles the job through `cache` (decode modules under their source's digest, as the
    /// runtime loads them).
    pub fn compile(&self, cache: &KernelCache, arch: Arch) -> flashgen_runtime::Result<CacheHit> {
        match self {
            Job::Attention(spec) => cache.get_or_compile(spec, arch),
            Job::Decode(module) => {
                cache.get_or_compile_digest(&module.digest(arch)?, arch, || module.source(arch))
            }
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Attention(spec) => write!(f, "{spec}"),
            Job::Decode(module) => write!(f, "{module}"),
        }
    }
}

/// A decode spec with every row tile from its own up to the largest at its head dim (what the
/// decode tuner may launch).
fn decode_row_tiles(spec: DecodeSpec) -> Vec<DecodeSpec> {
    DECODE_ROWS
        .into_iter()
        .filter(|&r| r >= spec.rows && r <= DecodeSpec::max_rows(spec.head_dim))
        .map(|r| spec.with_rows(r))
        .collect()
}

impl Row {
    pub fn new(job: &Job, arch: Arch, result: flashgen_runtime::Result<CacheHit>) -> Self {
        let mut row = Row {
            spec: job.to_string(),
            kernel: job.kernel_name(),
            arch: arch.sm_name(),
            registers: 0,
            spill_stores_bytes: 0,
            spill_loads_bytes: 0,
            stack_frame_bytes: 0,
            static_shared_bytes: 0,
            dynamic_shared_bytes: 0,
            threads: 0,
            source: "failed",
            compile_ms: None,
            warning: None,
            error: None,
        };
        match result {
            Ok(hit) => {
                let k = &hit.kernel;
                row.registers = k.report.registers;
                row.spill_stores_bytes = k.report.spill_stores_bytes;
                row.spill_loads_bytes = k.report.spill_loads_bytes;
                row.stack_frame_bytes = k.report.stack_frame_bytes;
                row.static_shared_bytes = k.report.static_shared_bytes;
                row.dynamic_shared_bytes = k.dynamic_shared_bytes;
                row.threads = k.threads;
                (row.source, row.compile_ms) = match hit.source {
                    CacheSource::Compiled { millis } => ("compiled", Some(millis)),
                    CacheSource::Disk => ("disk", None),
                    CacheSource::Memory => ("memory", None),
                };
                row.warning = hit.warning;
            }
            Err(e) => row.error = Some(with_sources(&e)),
        }
        row
    }

    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    pub fn spills(&self) -> bool {
        self.spill_stores_bytes > 0 || self.spill_loads_bytes > 0
    }
}

/// The table header for specs up to `width` characters.
pub fn header(width: usize) -> String {
    format!(
        "{:<width$}  {:>4}  {:>11}  {:>5}  {:>8}  {:>7}  {:>8}",
        "spec", "regs", "spill st/ld", "stack", "smem B", "threads", "compile"
    )
}

/// One table line.
pub fn format_row(row: &Row, width: usize) -> String {
    if let Some(e) = &row.error {
        return format!("{:<width$}  FAILED: {}", row.spec, first_line(e));
    }
    let time = match row.compile_ms {
        Some(ms) => format!("{ms} ms"),
        None => "cache".to_string(),
    };
    format!(
        "{:<width$}  {:>4}  {:>11}  {:>5}  {:>8}  {:>7}  {:>8}",
        row.spec,
        row.registers,
        format!("{}/{}", row.spill_stores_bytes, row.spill_loads_bytes),
        row.stack_frame_bytes,
        row.dynamic_shared_bytes,
        row.threads,
        time
    )
}

/// The closing line: counts and times.
pub fn totals(rows: &[Row], arch: Arch, threads: usize, wall_s: f64) -> String {
    let compiled: Vec<_> = rows.iter().filter_map(|r| r.compile_ms).collect();
    let nvrtc_ms: u64 = compiled.iter().sum();
    let cached = rows
        .iter()
        .filter(|r| !r.failed() && r.compile_ms.is_none())
        .count();
    let spilling = rows.iter().filter(|r| r.spills()).count();
    let failed = rows.iter().filter(|r| r.failed()).count();
    format!(
        "total: {} kernel{} for {arch}: {} compiled ({nvrtc_ms} ms NVRTC), {cached} from cache, \
         {spilling} spilling, {failed} failed; {wall_s:.1} s on {threads} thread{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        compiled.len(),
        if threads == 1 { "" } else { "s" },
    )
}

/// The kernels to compile, in order and without duplicates: the arguments, the file's lines
/// (attention specs, and decode specs `decode-...`), the default set (its attention kernels,
/// then its decode kernels with their append and page selector kernels); with `all_tiles` each
/// attention spec is replaced by every tile of its search space and each decode spec by every
/// row tile from its own up.
pub fn collect_specs(
    texts: &[String],
    use_default_set: bool,
    all_tiles: bool,
    arch: Arch,
) -> Result<Vec<Job>, Vec<String>> {
    let mut jobs = Vec::new();
    let mut errors = Vec::new();
    for text in texts {
        let parsed = if text.trim_start().starts_with("decode-") {
            parse_decode_spec(text).map(|s| Job::Decode(DecodeModule::Attention(s)))
        } else {
            parse_spec(text, arch).map(Job::Attention)
        };
        match parsed {
            Ok(job) => jobs.push(job),
            Err(e) => errors.push(format!("spec `{text}`: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if use_default_set {
        jobs.extend(
            default_set()
                .into_iter()
                .map(|s| Job::Attention(s.with_default_tile(arch))),
        );
        jobs.extend(DecodeModule::default_set().into_iter().map(Job::Decode));
    }
    if all_tiles {
        jobs = jobs
            .iter()
            .flat_map(|job| match *job {
                Job::Attention(spec) => search_space(&spec.attention(), arch)
                    .into_iter()
                    .map(|tile| Job::Attention(spec.with_tile(tile)))
                    .collect::<Vec<_>>(),
                Job::Decode(DecodeModule::Attention(spec)) => decode_row_tiles(spec)
                    .into_iter()
                    .map(|s| Job::Decode(DecodeModule::Attention(s)))
                    .collect(),
                Job::Decode(other) => vec![Job::Decode(other)],
            })
            .collect();
    }
    let mut seen = HashSet::new();
    jobs.retain(|job| seen.insert(*job));
    Ok(jobs)
}

/// Compiles every spec through `cache` on `threads` threads; `on_row` sees the rows in input
/// order as soon as each and all before it are done.
pub fn compile_specs(
    specs: &[Job],
    arch: Arch,
    cache: &KernelCache,
    threads: usize,
    mut on_row: impl FnMut(&Row),
) -> Vec<Row> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Row)>();
    let mut rows: Vec<Option<Row>> = vec![None; specs.len()];
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, specs.len().max(1)) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(spec) = specs.get(i) else { break };
                let row = Row::new(spec, arch, spec.compile(cache, arch));
                if tx.send((i, row)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut printed = 0;
        for (i, row) in rx {
            rows[i] = Some(row);
            while let Some(Some(row)) = rows.get(printed) {
                on_row(row);
                printed += 1;
            }
        }
    });
    rows.into_iter()
        .map(|r| r.expect("every spec has a row"))
        .collect()
}

/// The spec texts of the arguments and the spec file.
fn spec_texts(args: &CompileArgs) -> anyhow::Result<Vec<String>> {
    let mut texts = args.specs.clone();
    if let Some(path) = &args.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read spec file {}: {e}", path.display())))?;
        texts.extend(specs_from_file(&text));
    }
    if texts.is_empty() && !args.default_set {
        return Err(usage(
            "nothing to compile: give specs (e.g. `flashgen compile dense,d128,bf16,causal` or \
             `decode-dense,d128,bf16,p64`), a spec file with --file FILE, or --default-set",
        ));
    }
    super::definition::apply(&texts, &args.definition)
}

pub fn run(args: &CompileArgs) -> anyhow::Result<ExitCode> {
    let texts = spec_texts(args)?;
    let arch = target_arch(args.arch.as_deref())?;
    let specs = match collect_specs(&texts, args.default_set, args.all_tiles, arch) {
        Ok(specs) => specs,
        Err(errors) => {
            for e in errors {
                errln!("error: {e}");
            }
            return Ok(usage_error());
        }
    };
    // Before the work, not after it.
    if let Some(path) = &args.json {
        check_writable(path)?;
    }
    let (major, minor) = nvrtc_version().context("loading NVRTC")?;
    let cache = KernelCache::from_env();
    let threads = match args.jobs {
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
    .min(specs.len())
    .max(1);
    let cache_text = match cache.dir() {
        Some(dir) => dir.display().to_string(),
        None => "memory only".to_string(),
    };
    outln!(
        "{} kernel{} for {arch} with NVRTC {major}.{minor} on {threads} thread{}; cache: {cache_text}",
        specs.len(),
        if specs.len() == 1 { "" } else { "s" },
        if threads == 1 { "" } else { "s" },
    );

    let width = specs
        .iter()
        .map(|s| s.to_string().len())
        .max()
        .unwrap_or(0)
        .max(4);
    outln!("{}", header(width));
    let start = Instant::now();
    let rows = compile_specs(&specs, arch, &cache, threads, |row| {
        outln!("{}", format_row(row, width));
        if let Some(w) = &row.warning {
            errln!("warning: {}: {w}", row.spec);
        }
    });
    outln!(
        "{}",
        totals(&rows, arch, threads, start.elapsed().as_secs_f64())
    );

    for row in rows.iter().filter(|r| r.failed()) {
        errln!(
            "error: {}: {}",
            row.spec,
            row.error.as_deref().unwrap_or_default()
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&rows)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if rows.iter().any(Row::failed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::{DType, Variant};

    fn ok_row(spec: &str, compile_ms: Option<u64>, spill: u32) -> Row {
        Row {
            spec: spec.into(),
            kernel: "k".into(),
            arch: "sm_90a".into(),
            registers: 168,
            spill_stores_bytes: spill,
            spill_loads_bytes: spill,
            stack_frame_bytes: 0,
            static_shared_bytes: 0,
            dynamic_shared_bytes: 99_328,
            threads: 256,
            source: if compile_ms.is_some() {
                "compiled"
            } else {
                "disk"
            },
            compile_ms,
            warning: None,
            error: None,
        }
    }

    #[test]
    fn specs_are_parsed_expanded_and_deduplicated() {
        let arch = Arch::SM80;
        let texts = vec![
            "dense,d64,bf16".to_string(),
            "dense,d64,bf16".to_string(),
            "streaming,d128,f16,lse,m64n64w4s1".to_string(),
        ];
        let specs = collect_specs(&texts, false, false, arch).unwrap();
        assert_eq!(specs.len(), 2);
        assert!(matches!(specs[0], Job::Attention(s) if s.variant == Variant::Dense));
        assert_eq!(specs[1].to_string(), "streaming,d128,f16,lse,m64n64w4s1");

        let with_set = collect_specs(&texts, true, false, arch).unwrap();
        let mut set: Vec<_> = default_set()
            .into_iter()
            .map(|s| Job::Attention(s.with_default_tile(arch)))
            .collect();
        set.extend(DecodeModule::default_set().into_iter().map(Job::Decode));
        // The argument's dense d64 spec is the default set's only if the flags match: here not.
        assert_eq!(with_set.len(), 2 + set.len());
        assert_eq!(&with_set[2..], &set[..]);

        let one = vec!["dense,d64,bf16,causal".to_string()];
        let all = collect_specs(&one, false, true, arch).unwrap();
        let base = KernelSpec::new(Variant::Dense, 64, DType::Bf16, true, arch);
        assert_eq!(all.len(), search_space(&base.attention(), arch).len());
        assert!(all
            .iter()
            .all(|j| matches!(j, Job::Attention(s) if s.with_tile(base.tile) == base)));

        assert!(collect_specs(&[], false, false, arch).unwrap().is_empty());
    }

    #[test]
    fn decode_specs_are_compile_jobs() {
        let arch = Arch::SM90;
        let texts = vec![
            "decode-dense,d128,bf16,p64".to_string(),
            "decode-mixed,d256,f16,p16,r32".to_string(),
            "decode-dense,d128,bf16,p64,r16".to_string(),
        ];
        let jobs = collect_specs(&texts, false, false, arch).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].to_string(), "decode-dense,d128,bf16,p64,r16");
        assert_eq!(
            jobs[0].kernel_name(),
            "fg_decode_dense_d128_bf16_kvbf16_p64_r16"
        );
        // Every row tile from the spec's own: 16, 32, 64 at d128; 32 only at d256.
        let all = collect_specs(&texts, false, true, arch).unwrap();
        let names: Vec<String> = all.iter().map(Job::to_string).collect();
        assert_eq!(
            names,
            [
                "decode-dense,d128,bf16,p64,r16",
                "decode-dense,d128,bf16,p64,r32",
                "decode-dense,d128,bf16,p64,r64",
                "decode-mixed,d256,f16,p16,r32"
            ]
        );
        // The default set's decode part: every decode variant, the append and selector kernels.
        let set = collect_specs(&[], true, false, arch).unwrap();
        for v in flashgen_codegen::DecodeVariant::ALL {
            assert!(set.iter().any(|j| matches!(j,
                Job::Decode(DecodeModule::Attention(s)) if s.variant == v && s.head_dim == 128)));
        }
        assert!(set
            .iter()
            .any(|j| j.to_string() == "decode-append,bf16,kv-bf16"));
        assert!(set
            .iter()
            .any(|j| j.to_string() == "decode-append,bf16,kv-int4tok"));
        assert!(set
            .iter()
            .any(|j| j.to_string() == "decode-selector,d64,bf16"));
        let e = collect_specs(
            &["decode-dense,d128,bf16,p48".to_string()],
            false,
            false,
            arch,
        )
        .unwrap_err();
        assert!(e[0].contains("page_size = 48"), "{e:?}");
    }

    #[test]
    fn invalid_specs_are_all_reported() {
        let texts = vec![
            "dense,d100,bf16".to_string(),
            "dense,d64,bf16".to_string(),
            "sparse,d64,bf16".to_string(),
        ];
        let errors = collect_specs(&texts, true, false, Arch::SM80).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("dense,d100,bf16") && errors[0].contains("head_dim"));
        assert!(errors[1].contains("unknown variant"));
    }

    #[test]
    fn rows_format_into_aligned_columns() {
        let width = 30;
        let head = header(width);
        let line = format_row(&ok_row("dense,d128,bf16,m128n64w4s1", Some(412), 0), width);
        assert_eq!(head.len(), line.len(), "{head}\n{line}");
        assert!(line.starts_with("dense,d128,bf16,m128n64w4s1 "));
        assert!(line.contains(" 168 ") && line.contains("0/0") && line.contains("99328"));
        assert!(line.ends_with("412 ms"));
        let cached = format_row(&ok_row("dense,d64,bf16,m128n64w4s2", None, 8), width);
        assert!(cached.ends_with("cache") && cached.contains("8/8"));

        let mut failed = ok_row("mixed,d256,f16,m64n64w4s1", Some(1), 0);
        failed.error = Some("kernel k failed to compile for sm_80:\nline 1: error".into());
        let line = format_row(&failed, width);
        assert!(
            line.ends_with("FAILED: kernel k failed to compile for sm_80:"),
            "{line}"
        );
    }

    #[test]
    fn totals_count_sources_spills_and_failures() {
        let mut failed = ok_row("c", None, 0);
        failed.error = Some("boom".into());
        failed.source = "failed";
        let rows = vec![
            ok_row("a", Some(300), 0),
            ok_row("b", Some(200), 4),
            ok_row("d", None, 0),
            failed,
        ];
        let line = totals(&rows, Arch::SM90, 2, 1.26);
        assert_eq!(
            line,
            "total: 4 kernels for sm_90a: 2 compiled (500 ms NVRTC), 1 from cache, 1 spilling, \
             1 failed; 1.3 s on 2 threads"
        );
        assert!(rows[1].spills() && !rows[0].spills() && rows[3].failed());
    }

    #[test]
    fn rows_serialise_with_every_field() {
        let json = serde_json::to_value(ok_row("a", Some(7), 0)).unwrap();
        for key in [
            "spec",
            "kernel",
            "arch",
            "registers",
            "spill_stores_bytes",
            "spill_loads_bytes",
            "dynamic_shared_bytes",
            "threads",
            "source",
            "compile_ms",
            "error",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["compile_ms"], 7);
        assert!(json["error"].is_null());
    }

    #[test]
    fn no_specs_means_no_rows() {
        let cache = KernelCache::new(None);
        let rows = compile_specs(&[], Arch::SM80, &cache, 4, |_| panic!("no rows"));
        assert!(rows.is_empty());
    }
}
