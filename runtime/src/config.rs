//! The tuned-config file: which tile config won for a spec on a shape bucket, written by
//! `flashgen tune` and read by the runtime.
//!
//! The file is TOML, sorted and rounded so that re-tuning gives a small diff:
//!
//! ```toml
//! [tuned_on]
//! gpu = "NVIDIA H100 80GB HBM3"
//! compute_capability = "9.0"
//! sm_count = 132
//! nvrtc = "13.0"
//! template_digest = "3f5c…"
//! flashgen_version = "0.1.0"
//!
//! [[entry]]
//! spec = "dense,d128,bf16,causal,lse"
//! seq = "<=16k"
//! gqa = 1
//! density = ">=50%"
//! tile = "m128n128w8s1-wgmma"
//! ms = 1.2345
//! runner_up = "m128n64w4s1-wgmma"
//! runner_up_ms = 1.2801
//! default_ms = 1.2345
//! ```
//!
//! Entries are keyed by the spec without its tile ([`spec_key`]) and a [`Bucket`] of the problem
//! shape; [`TunedConfig::lookup`] picks the nearest bucket of the same spec.
//!
//! Decode launches have entries of their own, `[[decode]]`, keyed by the decode kernel the
//! heuristic would launch (its text form, row tile included: the smallest row tile that holds
//! the launch's `(hq / hkv) * q_len` query rows) and a [`DecodeBucket`]: the longest sequence's
//! class, the batch (rounded up to a power of two) and the kv heads. They hold the launch
//! parameters that won (`rows`, `splits`) in place of a tile:
//!
//! ```toml
//! [[decode]]
//! spec = "decode-dense,d128,bf16,p64,r16"
//! seq = ">64k"           # longest sequence in the batch
//! batch = 1              # batch rounded up to a power of two
//! heads_kv = 8
//! rows = 16              # row tile of the launch (at least the key's)
//! splits = 33            # KV splits per (sequence, kv head)
//! ms = 0.1611
//! default_splits = 33
//! default_ms = 0.1625
//! ```
//!
//! Files without `[[decode]]` entries load as before, and readers that predate them skip them.

use crate::files::read_regular;
use crate::runtime::DeviceInfo;
use flashgen_codegen::{
    parse_attention_spec, parse_decode_spec, parse_tile, validate, Arch, AttentionSpec, DecodeSpec,
    TileConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The environment variable naming a tuned-config file.
pub const CONFIG_ENV: &str = "FLASHGEN_CONFIG";

/// File name of the per-user tuned config inside `<config dir>/flashgen/`.
pub const CONFIG_FILE_NAME: &str = "tuned.toml";

/// Errors reading or writing a tuned-config file. Each names the file.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("tuned config {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tuned config {} is not valid TOML for flashgen: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("tuned config {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The key of a spec's entries: its text, `variant,d<head_dim>,dtype[,causal][,lse][,varlen]`
/// (a kernel's is `spec_key(&kernel.attention())`, [`KernelSpec::key`](flashgen_codegen::KernelSpec::key)).
pub fn spec_key(spec: &AttentionSpec) -> String {
    // A custom spec's tuned tile serves every definition.
    spec.without_definition().to_string()
}

/// Sequence-length class (keys per sequence), in powers of 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SeqClass {
    #[serde(rename = "<=1k")]
    Le1k,
    #[serde(rename = "<=4k")]
    Le4k,
    #[serde(rename = "<=16k")]
    Le16k,
    #[serde(rename = "<=64k")]
    Le64k,
    #[serde(rename = ">64k")]
    Gt64k,
}

impl SeqClass {
    pub const ALL: [SeqClass; 5] = [
        SeqClass::Le1k,
        SeqClass::Le4k,
        SeqClass::Le16k,
        SeqClass::Le64k,
        SeqClass::Gt64k,
    ];

    pub fn of(seq_len: usize) -> Self {
        match seq_len {
            0..=1024 => SeqClass::Le1k,
            1025..=4096 => SeqClass::Le4k,
            4097..=16384 => SeqClass::Le16k,
            16385..=65536 => SeqClass::Le64k,
            _ => SeqClass::Gt64k,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            SeqClass::Le1k => "<=1k",
            SeqClass::Le4k => "<=4k",
            SeqClass::Le16k => "<=16k",
            SeqClass::Le64k => "<=64k",
            SeqClass::Gt64k => ">64k",
        }
    }
}

impl fmt::Display for SeqClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Mask density class: the kept fraction of the `sq x sk` pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DensityClass {
    /// Everything kept (no mask beyond the sequence bounds).
    #[serde(rename = "dense")]
    Dense,
    #[serde(rename = ">=50%")]
    Ge50,
    #[serde(rename = ">=10%")]
    Ge10,
    #[serde(rename = "<10%")]
    Lt10,
}

impl DensityClass {
    pub const ALL: [DensityClass; 4] = [
        DensityClass::Dense,
        DensityClass::Ge50,
        DensityClass::Ge10,
        DensityClass::Lt10,
    ];

    /// The class of a kept fraction in `[0, 1]`.
    pub fn of(density: f64) -> Self {
        if density >= 0.999 {
            DensityClass::Dense
        } else if density >= 0.5 {
            DensityClass::Ge50
        } else if density >= 0.1 {
            DensityClass::Ge10
        } else {
            DensityClass::Lt10
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            DensityClass::Dense => "dense",
            DensityClass::Ge50 => ">=50%",
            DensityClass::Ge10 => ">=10%",
            DensityClass::Lt10 => "<10%",
        }
    }
}

impl fmt::Display for DensityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of one problem as the runtime sees it at launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShapeKey {
    /// Keys per sequence (`sk`; the longest sequence of a varlen batch).
    pub seq_len: usize,
    /// Query heads per kv head (`hq / hkv`).
    pub gqa: u32,
    /// Kept fraction of the `sq x sk` pairs (1 for dense, about 0.5 for causal).
    pub density: f64,
}

impl ShapeKey {
    pub fn bucket(&self) -> Bucket {
        Bucket {
            seq: SeqClass::of(self.seq_len),
            gqa: self.gqa.max(1),
            density: DensityClass::of(self.density),
        }
    }
}

/// The bucket a shape falls in: what config entries are keyed by (with the spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket {
    pub seq: SeqClass,
    pub gqa: u32,
    pub density: DensityClass,
}

impl Bucket {
    /// Distance for nearest-bucket lookup, compared lexicographically: sequence class first,
    /// then the GQA ratio (in powers of two), then the density class.
    fn distance(&self, other: &Bucket) -> (usize, u32, usize) {
        let log2 = |g: u32| 31 - g.max(1).leading_zeros();
        (
            self.seq.index().abs_diff(other.seq.index()),
            log2(self.gqa).abs_diff(log2(other.gqa)) * 2 + u32::from(self.gqa != other.gqa),
            self.density.index().abs_diff(other.density.index()),
        )
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq {} gqa {} density {}",
            self.seq, self.gqa, self.density
        )
    }
}

/// The GPU a config was tuned on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuIdentity {
    pub name: String,
    pub arch: Arch,
    pub sm_count: u32,
}

impl From<&DeviceInfo> for GpuIdentity {
    fn from(d: &DeviceInfo) -> Self {
        GpuIdentity {
            name: d.name.clone(),
            arch: d.arch,
            sm_count: d.sm_count,
        }
    }
}

impl fmt::Display for GpuIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (compute capability {}.{}, {} SMs)",
            self.name, self.arch.major, self.arch.minor, self.sm_count
        )
    }
}

/// Where and with what a config was tuned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigHeader {
    pub gpu: String,
    /// `major.minor`, e.g. `9.0`.
    pub compute_capability: String,
    pub sm_count: u32,
    /// `major.minor` of the libnvrtc the kernels were compiled with.
    pub nvrtc: String,
    /// [`flashgen_codegen::template_digest`] of the templates the kernels were rendered from.
    pub template_digest: String,
    pub flashgen_version: String,
}

impl ConfigHeader {
    pub fn new(gpu: &GpuIdentity, nvrtc: (i32, i32), template_digest: &str) -> Self {
        ConfigHeader {
            gpu: gpu.name.clone(),
            compute_capability: format!("{}.{}", gpu.arch.major, gpu.arch.minor),
            sm_count: gpu.sm_count,
            nvrtc: format!("{}.{}", nvrtc.0, nvrtc.1),
            template_digest: template_digest.to_string(),
            flashgen_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The header's compute capability as an arch.
    pub fn arch(&self) -> Option<Arch> {
        let (major, minor) = self.compute_capability.split_once('.')?;
        Some(Arch::new(
            major.trim().parse().ok()?,
            minor.trim().parse().ok()?,
        ))
    }

    /// Whether the config was tuned on this kind of GPU (name, compute capability and SM count).
    pub fn gpu_matches(&self, gpu: &GpuIdentity) -> bool {
        self.gpu == gpu.name && self.arch() == Some(gpu.arch) && self.sm_count == gpu.sm_count
    }

    /// The GPU, as messages name it: `name (compute capability 9.0, 132 SMs)`.
    pub fn gpu_text(&self) -> String {
        format!(
            "{} (compute capability {}, {} SMs)",
            self.gpu, self.compute_capability, self.sm_count
        )
    }
}

/// The text form of an entry's spec in the file ([`spec_key`]), parsed once when the entry is
/// read.
mod spec_text {
    use super::{parse_attention_spec, parse_tile, spec_key, AttentionSpec};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(spec: &AttentionSpec, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&spec_key(spec))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AttentionSpec, D::Error> {
        let text = String::deserialize(d)?;
        // Any part after the variant that is a tile: said plainly, not as a parse error.
        if text
            .split(',')
            .skip(1)
            .any(|p| parse_tile(p.trim()).is_ok())
        {
            return Err(D::Error::custom(
                "the spec key must not include a tile; the tile goes in `tile`",
            ));
        }
        parse_attention_spec(&text).map_err(D::Error::custom)
    }
}

/// One tuned result: the winning tile of a spec on a shape bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// The spec without its tile; written as its text ([`spec_key`]), parsed when read.
    #[serde(with = "spec_text")]
    pub spec: AttentionSpec,
    pub seq: SeqClass,
    pub gqa: u32,
    pub density: DensityClass,
    /// The winning tile, as `TileConfig`'s text form.
    pub tile: String,
    /// Median milliseconds of the winner.
    pub ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_up: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_up_ms: Option<f64>,
    /// Median milliseconds of the heuristic default tile on the same inputs.
    pub default_ms: f64,
}

impl ConfigEntry {
    pub fn bucket(&self) -> Bucket {
        Bucket {
            seq: self.seq,
            gqa: self.gqa.max(1),
            density: self.density,
        }
    }

    /// What identifies an entry: its spec and bucket.
    fn key(&self) -> (AttentionSpec, Bucket) {
        (self.spec, self.bucket())
    }
}

/// The bucket of a decode launch: what decode entries are keyed by (with the spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecodeBucket {
    /// Class of the longest sequence of the batch (tokens, the new ones included).
    pub seq: SeqClass,
    /// The batch rounded up to a power of two.
    pub batch: u32,
    pub heads_kv: u32,
}

impl DecodeBucket {
    /// The bucket of a launch over `batch` sequences, the longest `max_len` tokens, with
    /// `heads_kv` kv heads.
    pub fn of(batch: usize, max_len: usize, heads_kv: usize) -> Self {
        let clamp = |n: usize| n.clamp(1, 1 << 30) as u32;
        DecodeBucket {
            seq: SeqClass::of(max_len),
            batch: clamp(batch).next_power_of_two(),
            heads_kv: clamp(heads_kv),
        }
    }

    /// Distance for nearest-bucket lookup, compared lexicographically: sequence class, then the
    /// batch and then the kv heads in powers of two (what the split count depends on).
    fn distance(&self, other: &DecodeBucket) -> (usize, u32, u32) {
        let log2 = |g: u32| 31 - g.max(1).leading_zeros();
        (
            self.seq.index().abs_diff(other.seq.index()),
            log2(self.batch).abs_diff(log2(other.batch)),
            log2(self.heads_kv).abs_diff(log2(other.heads_kv)) * 2
                + u32::from(self.heads_kv != other.heads_kv),
        )
    }
}

impl fmt::Display for DecodeBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seq {} batch {} heads_kv {}",
            self.seq, self.batch, self.heads_kv
        )
    }
}

/// The launch parameters of a decode kernel that a tune chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeParamsChoice {
    /// Query rows per CTA (a row tile at least as large as the launch's group needs).
    pub rows: u32,
    /// KV splits per (sequence, kv head).
    pub splits: u32,
}

/// One tuned decode result: the winning launch parameters of a decode kernel on a bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeEntry {
    /// The decode kernel the heuristic launches, as `DecodeSpec`'s text form writes it.
    pub spec: String,
    pub seq: SeqClass,
    pub batch: u32,
    pub heads_kv: u32,
    /// The winning row tile.
    pub rows: u32,
    /// The winning split count.
    pub splits: u32,
    /// Median milliseconds of the winner.
    pub ms: f64,
    /// The heuristic's split count on the tuned problem.
    pub default_splits: u32,
    /// Median milliseconds of the heuristic launch, timed alongside the winner.
    pub default_ms: f64,
}

impl DecodeEntry {
    pub fn bucket(&self) -> DecodeBucket {
        DecodeBucket {
            seq: self.seq,
            batch: self.batch.max(1),
            heads_kv: self.heads_kv.max(1),
        }
    }

    pub fn choice(&self) -> DecodeParamsChoice {
        DecodeParamsChoice {
            rows: self.rows,
            splits: self.splits,
        }
    }

    fn sort_key(&self) -> (&str, DecodeBucket) {
        (self.spec.as_str(), self.bucket())
    }
}

/// Checks a decode entry and writes its spec canonically; the reason when it cannot be used.
fn check_decode_entry(e: &mut DecodeEntry) -> Result<(), String> {
    let spec = parse_decode_spec(&e.spec).map_err(|err| err.to_string())?;
    e.spec = spec.to_string();
    spec.with_rows(e.rows)
        .validate()
        .map_err(|err| format!("rows = {}: {err}", e.rows))?;
    if e.rows < spec.rows {
        return Err(format!(
            "rows = {} is smaller than the key's row tile {}",
            e.rows, spec.rows
        ));
    }
    if e.splits == 0 || e.default_splits == 0 {
        return Err("splits = 0; allowed: 1 or more".into());
    }
    if e.batch == 0 || !e.batch.is_power_of_two() {
        return Err(format!("batch = {}; allowed: a power of two", e.batch));
    }
    if e.heads_kv == 0 {
        return Err("heads_kv = 0; allowed: 1 or more".into());
    }
    Ok(())
}

/// A tuned-config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TunedConfig {
    pub tuned_on: ConfigHeader,
    #[serde(default, rename = "entry")]
    pub entries: Vec<ConfigEntry>,
    /// Decode launch parameters (`[[decode]]`), after the attention entries.
    #[serde(default, rename = "decode", skip_serializing_if = "Vec::is_empty")]
    pub decode: Vec<DecodeEntry>,
}

/// A config file as read, before its entries are checked one by one.
#[derive(Deserialize)]
struct RawConfig {
    tuned_on: ConfigHeader,
    #[serde(default, rename = "entry")]
    entries: Vec<toml::Value>,
    #[serde(default, rename = "decode")]
    decode: Vec<toml::Value>,
}

/// An entry as warnings name it: its spec and bucket as written.
fn entry_name(value: &toml::Value) -> String {
    let field = |key: &str| match value.get(key) {
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".to_string(),
    };
    format!(
        "{} seq {} gqa {} density {}",
        field("spec"),
        field("seq"),
        field("gqa"),
        field("density")
    )
}

/// A decode entry as warnings name it: its spec and bucket as written.
fn decode_entry_name(value: &toml::Value) -> String {
    let field = |key: &str| match value.get(key) {
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".to_string(),
    };
    format!(
        "{} seq {} batch {} heads_kv {}",
        field("spec"),
        field("seq"),
        field("batch"),
        field("heads_kv")
    )
}

/// The largest config file read. A tune writes about 200 bytes an entry.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// Checks one entry (its spec parsed as it was read) against the config's arch; the reason
/// when it cannot be used.
fn check_entry(e: &ConfigEntry, arch: Arch) -> Result<(), String> {
    let tile = parse_tile(&e.tile).map_err(|err| format!("tile: {err}"))?;
    validate(&e.spec.with_tile(tile), arch).map_err(|err| format!("tile {}: {err}", e.tile))?;
    if let Some(runner_up) = &e.runner_up {
        parse_tile(runner_up).map_err(|err| format!("runner_up: {err}"))?;
    }
    if e.gqa == 0 {
        return Err("gqa = 0; allowed: 1 or more".into());
    }
    Ok(())
}

/// Rounds milliseconds to 0.1 µs so that files do not churn on noise digits.
fn round_ms(ms: f64) -> f64 {
    (ms * 1e4).round() / 1e4
}

impl TunedConfig {
    pub fn new(header: ConfigHeader) -> Self {
        TunedConfig {
            tuned_on: header,
            entries: Vec::new(),
            decode: Vec::new(),
        }
    }

    /// Adds an entry, replacing one with the same spec and bucket.
    pub fn insert(&mut self, entry: ConfigEntry) {
        self.entries.retain(|e| e.key() != entry.key());
        self.entries.push(entry);
        self.normalize();
    }

    /// Adds a decode entry, replacing one with the same spec and bucket.
    pub fn insert_decode(&mut self, entry: DecodeEntry) {
        self.decode.retain(|e| e.sort_key() != entry.sort_key());
        self.decode.push(entry);
        self.normalize();
    }

    /// Takes `other`'s header and entries; entries of `self` that `other` does not re-tune stay.
    /// One pass through a map keyed by spec and bucket: O(n log n) in the entries.
    pub fn merge(&mut self, other: TunedConfig) {
        self.tuned_on = other.tuned_on;
        let mut by_key: BTreeMap<(AttentionSpec, Bucket), ConfigEntry> = BTreeMap::new();
        for entry in std::mem::take(&mut self.entries)
            .into_iter()
            .chain(other.entries)
        {
            by_key.insert(entry.key(), entry);
        }
        self.entries = by_key.into_values().collect();
        let mut by_key: BTreeMap<(String, DecodeBucket), DecodeEntry> = BTreeMap::new();
        for entry in std::mem::take(&mut self.decode)
            .into_iter()
            .chain(other.decode)
        {
            by_key.insert((entry.spec.clone(), entry.bucket()), entry);
        }
        self.decode = by_key.into_values().collect();
        self.normalize();
    }

    /// Sorts entries (spec text, then bucket: the order files have always been written in)
    /// and rounds times.
    pub fn normalize(&mut self) {
        for e in &mut self.entries {
            e.ms = round_ms(e.ms);
            e.default_ms = round_ms(e.default_ms);
            e.runner_up_ms = e.runner_up_ms.map(round_ms);
        }
        self.entries
            .sort_by_cached_key(|e| (spec_key(&e.spec), e.bucket()));
        for e in &mut self.decode {
            e.ms = round_ms(e.ms);
            e.default_ms = round_ms(e.default_ms);
        }
        self.decode.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }

    /// The TOML text of the config (sorted).
    pub fn to_toml(&self) -> String {
        let mut sorted = self.clone();
        sorted.normalize();
        toml::to_string_pretty(&sorted).expect("a tuned config serialises to TOML")
    }

    /// Parses TOML text; `path` only names the file in errors. Entries that cannot be used
    /// are left out; [`from_toml_checked`](Self::from_toml_checked) also says which and why.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_checked(text, path).map(|(config, _)| config)
    }

    /// Parses TOML text and checks every entry against the header's arch: an entry whose spec,
    /// tile or bucket is invalid (a tile that does not fit the spec, say), or that repeats an
    /// earlier entry's spec and bucket, is left out with a warning naming it, so that it can
    /// neither win a lookup nor hide a valid entry of a farther bucket. Bad TOML or a bad
    /// header is an error.
    pub fn from_toml_checked(text: &str, path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let arch = raw.tuned_on.arch().ok_or_else(|| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "tuned_on.compute_capability = {:?} is not `major.minor`",
                raw.tuned_on.compute_capability
            ),
        })?;
        let mut config = TunedConfig::new(raw.tuned_on);
        let mut warnings = Vec::new();
        let mut seen = HashSet::new();
        for (i, value) in raw.entries.into_iter().enumerate() {
            let name = entry_name(&value);
            let checked = value
                .try_into::<ConfigEntry>()
                .map_err(|e| e.to_string().trim_end().to_string())
                .and_then(|e| {
                    check_entry(&e, arch)?;
                    match seen.insert(e.key()) {
                        true => Ok(e),
                        false => Err("the same spec and bucket as an earlier entry".to_string()),
                    }
                });
            match checked {
                Ok(e) => config.entries.push(e),
                Err(reason) => warnings.push(format!(
                    "tuned config {}: entry {} ({name}): {reason}; the entry is skipped",
                    path.display(),
                    i + 1,
                )),
            }
        }
        let mut seen = HashSet::new();
        for (i, value) in raw.decode.into_iter().enumerate() {
            let name = decode_entry_name(&value);
            let checked = value
                .try_into::<DecodeEntry>()
                .map_err(|e| e.to_string().trim_end().to_string())
                .and_then(|mut e| {
                    check_decode_entry(&mut e)?;
                    match seen.insert((e.spec.clone(), e.bucket())) {
                        true => Ok(e),
                        false => Err("the same spec and bucket as an earlier entry".to_string()),
                    }
                });
            match checked {
                Ok(e) => config.decode.push(e),
                Err(reason) => warnings.push(format!(
                    "tuned config {}: decode entry {} ({name}): {reason}; the entry is skipped",
                    path.display(),
                    i + 1,
                )),
            }
        }
        config.normalize();
        Ok((config, warnings))
    }

    /// Reads a config file. A missing or unreadable file (or anything but a regular file of at
    /// most [`MAX_CONFIG_BYTES`]), bad TOML or a bad header is an error naming the file and the
    /// problem; unusable entries are left out ([`load_checked`](Self::load_checked) says which).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::load_checked(path).map(|(config, _)| config)
    }

    /// As [`load`](Self::load), with a warning for each entry left out.
    pub fn load_checked(path: impl AsRef<Path>) -> Result<(Self, Vec<String>), ConfigError> {
        let path = path.as_ref();
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = read_regular(path, MAX_CONFIG_BYTES).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            io(std::io::Error::new(
                ErrorKind::InvalidData,
                "not UTF-8 text",
            ))
        })?;
        Self::from_toml_checked(&text, path)
    }

    /// Writes the config atomically (a temporary file in the same folder, synced, then renamed),
    /// creating the folder if needed.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref();
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| CONFIG_FILE_NAME.to_string());
        let tmp = dir.join(format!(
            ".{file_name}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        let text = self.to_toml();
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// The entry of `spec` in the bucket nearest to `shape`: nearest sequence class, then GQA
    /// ratio, then density class.
    pub fn lookup_entry(&self, spec: &AttentionSpec, shape: &ShapeKey) -> Option<&ConfigEntry> {
        let want = shape.bucket();
        self.entries
            .iter()
            .filter(|e| e.spec == *spec)
            .min_by_key(|e| want.distance(&e.bucket()))
    }

    /// The tile of the entry for `spec` in the bucket nearest to `shape` among
    /// the entries whose tile parses and passes `accept`: an entry that cannot serve a launch
    /// never hides a farther one that can.
    pub fn lookup_where(
        &self,
        spec: &AttentionSpec,
        shape: &ShapeKey,
        accept: impl Fn(&TileConfig) -> bool,
    ) -> Option<TileConfig> {
        let want = shape.bucket();
        self.entries
            .iter()
            .filter(|e| e.spec == *spec)
            .filter_map(|e| Some((want.distance(&e.bucket()), parse_tile(&e.tile).ok()?)))
            .filter(|(_, tile)| accept(tile))
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, tile)| tile)
    }

    /// The tuned tile for `spec` on `shape`, if the config has the spec and its tile is valid
    /// for the spec on the config's arch.
    pub fn lookup(&self, spec: &AttentionSpec, shape: &ShapeKey) -> Option<TileConfig> {
        let entry = self.lookup_entry(spec, shape)?;
        let tile = parse_tile(&entry.tile).ok()?;
        let arch = self.tuned_on.arch()?;
        validate(&spec.with_tile(tile), arch).ok()?;
        Some(tile)
    }

    /// The decode entry of the kernel `spec` (the heuristic's, its row tile the group's) in the
    /// bucket nearest to `bucket`: nearest sequence class, then batch, then kv heads.
    pub fn lookup_decode(&self, spec: &DecodeSpec, bucket: &DecodeBucket) -> Option<&DecodeEntry> {
        let key = spec.to_string();
        self.decode
            .iter()
            .filter(|e| e.spec == key)
            .min_by_key(|e| bucket.distance(&e.bucket()))
    }

    /// Warnings about where the config came from, compared with this machine: another GPU,
    /// another template version, another NVRTC version. Empty when everything matches.
    pub fn check_matches(
        &self,
        gpu: &GpuIdentity,
        nvrtc: (i32, i32),
        template_digest: &str,
    ) -> Vec<String> {
        let h = &self.tuned_on;
        let mut out = Vec::new();
        if !h.gpu_matches(gpu) {
            out.push(format!(
                "tuned on {}, but this GPU is {gpu}; the tuned configs do not apply to it",
                h.gpu_text()
            ));
        }
        out.extend(self.check_build(Some(nvrtc), template_digest));
        out
    }

    /// The part of [`check_matches`](Self::check_matches) that needs no GPU: warnings about
    /// another template version or another NVRTC version (`None`: no NVRTC to compare with).
    pub fn check_build(&self, nvrtc: Option<(i32, i32)>, template_digest: &str) -> Vec<String> {
        let h = &self.tuned_on;
        let mut out = Vec::new();
        if h.template_digest != template_digest {
            out.push(format!(
                "tuned with kernel templates {}, but these templates are {}; run `flashgen tune` \
                 again",
                short(&h.template_digest),
                short(template_digest)
            ));
        }
        if let Some(nvrtc) = nvrtc {
            let nvrtc_text = format!("{}.{}", nvrtc.0, nvrtc.1);
            if h.nvrtc != nvrtc_text {
                out.push(format!(
                    "tuned with NVRTC {}, but NVRTC {nvrtc_text} is loaded; run `flashgen tune` \
                     again",
                    h.nvrtc
                ));
            }
        }
        out
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// How a config file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// A path the caller passed.
    Explicit,
    /// `$FLASHGEN_CONFIG`.
    Env,
    /// `<user config dir>/flashgen/tuned.toml`.
    UserConfigDir,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigOrigin::Explicit => "given path",
            ConfigOrigin::Env => CONFIG_ENV,
            ConfigOrigin::UserConfigDir => "user config dir",
        })
    }
}

/// `<user config dir>/flashgen/tuned.toml`: where `flashgen tune` writes by default.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("flashgen").join(CONFIG_FILE_NAME))
}

/// Finds the config file: an explicit path, then `$FLASHGEN_CONFIG`, then the user config
/// dir's `flashgen/tuned.toml`. An explicit or `$FLASHGEN_CONFIG` path is returned whether or
/// not it exists (loading then says it is missing); the user config dir's file only if it exists.
pub fn discover(explicit: Option<&Path>) -> Option<(PathBuf, ConfigOrigin)> {
    discover_in(explicit, std::env::var_os(CONFIG_ENV), default_path())
}

fn discover_in(
    explicit: Option<&Path>,
    env: Option<OsString>,
    user: Option<PathBuf>,
) -> Option<(PathBuf, ConfigOrigin)> {
    if let Some(p) = explicit {
        return Some((p.to_path_buf(), ConfigOrigin::Explicit));
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), ConfigOrigin::Env));
    }
    user.filter(|p| p.is_file())
        .map(|p| (p, ConfigOrigin::UserConfigDir))
}

/// The outcome of finding and checking the config for this machine.
#[derive(Clone, Debug)]
pub struct Discovered {
    pub path: PathBuf,
    pub origin: ConfigOrigin,
    /// The config to use: `None` when the file was tuned on another GPU.
    pub config: Option<TunedConfig>,
    /// Everything the user should hear about (never silent when a file is stale or ignored).
    pub warnings: Vec<String>,
}

impl TunedConfig {
    /// Finds ([`discover`]), loads and checks the config for this machine. A file tuned on this
    /// GPU is used even when stale (other templates or NVRTC), with a warning; a file tuned on
    /// another GPU is not used, with a warning. `Ok(None)` when there is no file to read.
    pub fn discover_for(
        explicit: Option<&Path>,
        gpu: &GpuIdentity,
        nvrtc: (i32, i32),
        template_digest: &str,
    ) -> Result<Option<Discovered>, ConfigError> {
        let Some((path, origin)) = discover(explicit) else {
            return Ok(None);
        };
        let (config, skipped) = TunedConfig::load_checked(&path)?;
        let mut found = accept(config, path, origin, gpu, nvrtc, template_digest);
        found.warnings.splice(0..0, skipped);
        Ok(Some(found))
    }
}

fn accept(
    config: TunedConfig,
    path: PathBuf,
    origin: ConfigOrigin,
    gpu: &GpuIdentity,
    nvrtc: (i32, i32),
    template_digest: &str,
) -> Discovered {
    let problems = config.check_matches(gpu, nvrtc, template_digest);
    let usable = config.tuned_on.gpu_matches(gpu);
    let warnings = problems
        .into_iter()
        .map(|w| {
            let what = if usable {
                "still used"
            } else {
                "not used; the heuristic defaults apply"
            };
            format!("tuned config {} ({origin}): {w} ({what})", path.display())
        })
        .collect();
    Discovered {
        path,
        origin,
        config: usable.then_some(config),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::{DType, Variant};

    fn gpu() -> GpuIdentity {
        GpuIdentity {
            name: "NVIDIA H100 80GB HBM3".into(),
            arch: Arch::SM90,
            sm_count: 132,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "flashgen-config-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn entry(
        spec: &str,
        seq: SeqClass,
        gqa: u32,
        density: DensityClass,
        tile: &str,
    ) -> ConfigEntry {
        ConfigEntry {
            spec: spec.parse().unwrap(),
            seq,
            gqa,
            density,
            tile: tile.into(),
            ms: 1.0,
            runner_up: Some("m64n64w4s1".into()),
            runner_up_ms: Some(1.1),
            default_ms: 1.2,
        }
    }

    fn sample() -> TunedConfig {
        let mut c = TunedConfig::new(ConfigHeader::new(&gpu(), (13, 0), "abcdef0123456789"));
        c.insert(entry(
            "dense,d128,bf16,causal,lse",
            SeqClass::Le16k,
            1,
            DensityClass::Ge50,
            "m128n128w8s1-wgmma",
        ));
        c.insert(entry(
            "dense,d128,bf16,causal,lse",
            SeqClass::Le4k,
            1,
            DensityClass::Ge50,
            "m128n64w8s1-wgmma",
        ));
        c.insert(entry(
            "dense,d128,bf16,causal,lse",
            SeqClass::Le16k,
            4,
            DensityClass::Ge50,
            "m64n128w4s1-wgmma",
        ));
        c.insert(entry(
            "streaming,d64,bf16,lse",
            SeqClass::Le16k,
            1,
            DensityClass::Ge10,
            "m64n64w4s1",
        ));
        c
    }

    fn dense_spec() -> AttentionSpec {
        AttentionSpec::new(Variant::Dense, 128, DType::Bf16, true).with_lse(true)
    }

    fn decode_entry(spec: &str, seq: SeqClass, batch: u32, rows: u32, splits: u32) -> DecodeEntry {
        DecodeEntry {
            spec: spec.into(),
            seq,
            batch,
            heads_kv: 8,
            rows,
            splits,
            ms: 0.1,
            default_splits: 33,
            default_ms: 0.11,
        }
    }

    #[test]
    fn decode_entries_round_trip_and_answer_the_nearest_bucket() {
        let dir = temp_dir("decode");
        let path = dir.join("tuned.toml");
        let mut c = sample();
        let spec = "decode-dense,d128,bf16,p64,r16";
        c.insert_decode(decode_entry(spec, SeqClass::Gt64k, 1, 16, 24));
        c.insert_decode(decode_entry(spec, SeqClass::Le64k, 8, 32, 4));
        c.insert_decode(decode_entry(spec, SeqClass::Le64k, 8, 16, 3));
        assert_eq!(c.decode.len(), 2);
        c.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[[decode]]"), "{text}");
        let back = TunedConfig::load(&path).unwrap();
        assert_eq!(back, c);
        let key = flashgen_codegen::parse_decode_spec(spec).unwrap();
        let at = |batch, len| {
            back.lookup_decode(&key, &DecodeBucket::of(batch, len, 8))
                .map(|e| (e.rows, e.splits))
        };
        assert_eq!(at(1, 131072), Some((16, 24)));
        assert_eq!(at(6, 40000), Some((16, 3)));
        // 128k at batch 8: the sequence class decides first.
        assert_eq!(at(8, 200000), Some((16, 24)));
        let other = key.with_rows(32);
        assert!(back
            .lookup_decode(&other, &DecodeBucket::of(1, 1000, 8))
            .is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_without_decode_entries_still_load_and_bad_decode_entries_are_skipped() {
        let c = sample();
        let old = c.to_toml();
        assert!(!old.contains("decode"));
        assert_eq!(
            TunedConfig::from_toml(&old, Path::new("old.toml")).unwrap(),
            c
        );
        let mut with = c.clone();
        for (spec, rows, splits) in [
            ("decode-dense,d128,bf16,p64,r16", 16, 4),
            ("decode-dense,d128,bf16,p48,r16", 16, 4),
            ("decode-dense,d256,bf16,p64,r16", 64, 4),
            ("decode-dense,d128,bf16,p64,r32", 16, 4),
            ("decode-dense,d128,bf16,p64,r16", 16, 0),
        ] {
            with.decode
                .push(decode_entry(spec, SeqClass::Le16k, 1, rows, splits));
        }
        with.decode.push(decode_entry(
            "decode-dense,d128,bf16,p64,r16",
            SeqClass::Le16k,
            1,
            32,
            8,
        ));
        let text = toml::to_string_pretty(&with).unwrap();
        let (loaded, warnings) =
            TunedConfig::from_toml_checked(&text, Path::new("t.toml")).unwrap();
        assert_eq!(loaded.decode.len(), 1);
        assert_eq!(loaded.decode[0].splits, 4);
        assert_eq!(warnings.len(), 5, "{warnings:?}");
        for (w, needle) in warnings.iter().zip([
            "page_size = 48",
            "rows = 64",
            "smaller than the key's row tile",
            "splits = 0",
            "same spec and bucket",
        ]) {
            assert!(w.contains("decode entry") && w.contains(needle), "{w}");
        }
        // Merging keeps decode entries this run did not re-tune.
        let mut merged = c.clone();
        merged.merge(loaded.clone());
        assert_eq!(merged.decode, loaded.decode);
    }

    #[test]
    fn spec_key_drops_the_tile() {
        assert_eq!(spec_key(&dense_spec()), "dense,d128,bf16,causal,lse");
        let s = AttentionSpec::new(Variant::BlockSparse, 64, DType::F16, false).with_varlen(true);
        assert_eq!(spec_key(&s), "block-sparse,d64,f16,varlen");
        // The key parses back to the same spec, and is a kernel's key (with any tile).
        assert_eq!(flashgen_codegen::parse_attention_spec(&spec_key(&s)), Ok(s));
        let back = flashgen_codegen::parse_spec(&spec_key(&s), Arch::SM80).unwrap();
        assert_eq!(back.key(), spec_key(&s));
    }

    #[test]
    fn buckets() {
        assert_eq!(SeqClass::of(1024), SeqClass::Le1k);
        assert_eq!(SeqClass::of(1025), SeqClass::Le4k);
        assert_eq!(SeqClass::of(16384), SeqClass::Le16k);
        assert_eq!(SeqClass::of(65536), SeqClass::Le64k);
        assert_eq!(SeqClass::of(65537), SeqClass::Gt64k);
        assert_eq!(DensityClass::of(1.0), DensityClass::Dense);
        assert_eq!(DensityClass::of(0.5001), DensityClass::Ge50);
        assert_eq!(DensityClass::of(0.12), DensityClass::Ge10);
        assert_eq!(DensityClass::of(0.03), DensityClass::Lt10);
        let b = ShapeKey {
            seq_len: 4096,
            gqa: 0,
            density: 1.0,
        }
        .bucket();
        assert_eq!(b.gqa, 1);
    }

    #[test]
    fn round_trip_is_sorted_and_stable() {
        let dir = temp_dir("round-trip");
        let path = dir.join("sub").join("tuned.toml");
        let c = sample();
        c.save(&path).unwrap();
        let back = TunedConfig::load(&path).unwrap();
        assert_eq!(back, c);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[tuned_on]\n"), "{text}");
        assert!(text.contains("seq = \"<=4k\""), "{text}");
        assert!(text.contains("density = \">=50%\""), "{text}");
        // Saving what was loaded writes the same bytes; no temporary files remain.
        back.save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("tuned.toml")]);
        // Entries are sorted by spec, then bucket, whatever the insertion order.
        let keys: Vec<_> = back
            .entries
            .iter()
            .map(|e| (e.spec.to_string(), e.bucket()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn insert_replaces_the_same_key_and_merge_keeps_others() {
        let mut c = sample();
        let n = c.entries.len();
        let mut e = entry(
            "dense,d128,bf16,causal,lse",
            SeqClass::Le16k,
            1,
            DensityClass::Ge50,
            "m64n64w4s1",
        );
        e.ms = 0.123456789;
        c.insert(e.clone());
        assert_eq!(c.entries.len(), n);
        let got = c.lookup_entry(
            &dense_spec(),
            &ShapeKey {
                seq_len: 16384,
                gqa: 1,
                density: 0.5,
            },
        );
        assert_eq!(got.unwrap().tile, "m64n64w4s1");
        assert_eq!(got.unwrap().ms, 0.1235);

        let mut other = TunedConfig::new(ConfigHeader::new(&gpu(), (13, 1), "ffff"));
        other.insert(entry(
            "apb,d128,bf16,lse",
            SeqClass::Le16k,
            4,
            DensityClass::Ge50,
            "m64n128w4s1-wgmma",
        ));
        c.merge(other);
        assert_eq!(c.entries.len(), n + 1);
        assert_eq!(c.tuned_on.nvrtc, "13.1");
    }

    #[test]
    fn lookup_takes_the_nearest_bucket() {
        let c = sample();
        let spec = dense_spec();
        let at = |seq_len, gqa, density| {
            c.lookup(
                &spec,
                &ShapeKey {
                    seq_len,
                    gqa,
                    density,
                },
            )
            .map(|t| t.to_string())
        };
        // Exact buckets.
        assert_eq!(at(16384, 1, 0.5).as_deref(), Some("m128n128w8s1-wgmma"));
        assert_eq!(at(4096, 1, 0.5).as_deref(), Some("m128n64w8s1-wgmma"));
        assert_eq!(at(8192, 4, 0.5).as_deref(), Some("m64n128w4s1-wgmma"));
        // 64k is nearest to the 16k class; GQA 8 is nearer to 4 than to 1.
        assert_eq!(at(65536, 1, 0.5).as_deref(), Some("m128n128w8s1-wgmma"));
        assert_eq!(at(65536, 8, 0.5).as_deref(), Some("m64n128w4s1-wgmma"));
        // Short sequences go to the 4k class before GQA or density are considered.
        assert_eq!(at(512, 4, 0.05).as_deref(), Some("m128n64w8s1-wgmma"));
        // GQA 2 is equally far from 1 and 4 in powers of two: ties go to the smaller ratio.
        assert_eq!(at(16384, 2, 0.5).as_deref(), Some("m128n128w8s1-wgmma"));
        // A kernel's spec finds the entry whatever the kernel's tile; another spec has none.
        assert_eq!(
            c.lookup(
                &spec.with_tile(TileConfig::new(64, 32, 4, 1)).attention(),
                &ShapeKey {
                    seq_len: 16384,
                    gqa: 1,
                    density: 0.5
                }
            )
            .map(|t| t.to_string())
            .as_deref(),
            Some("m128n128w8s1-wgmma")
        );
        assert_eq!(
            c.lookup(
                &spec.with_lse(false),
                &ShapeKey {
                    seq_len: 16384,
                    gqa: 1,
                    density: 0.5
                }
            ),
            None
        );
    }

    #[test]
    fn lookup_skips_a_tile_invalid_for_the_spec() {
        let mut c = sample();
        // wgmma needs head dim 64, 128 or 256.
        c.insert(entry(
            "dense,d96,bf16",
            SeqClass::Le4k,
            1,
            DensityClass::Dense,
            "m64n64w4s1-wgmma",
        ));
        let spec = AttentionSpec::new(Variant::Dense, 96, DType::Bf16, false);
        let shape = ShapeKey {
            seq_len: 4096,
            gqa: 1,
            density: 1.0,
        };
        assert!(c.lookup_entry(&spec, &shape).is_some());
        assert_eq!(c.lookup(&spec, &shape), None);
    }

    #[test]
    fn stale_and_foreign_files_warn() {
        let c = sample();
        assert!(c
            .check_matches(&gpu(), (13, 0), "abcdef0123456789")
            .is_empty());

        let w = c.check_matches(&gpu(), (13, 0), "0000");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("templates abcdef012345"), "{w:?}");

        let w = c.check_matches(&gpu(), (12, 8), "abcdef0123456789");
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("NVRTC 13.0") && w[0].contains("12.8"),
            "{w:?}"
        );

        let a100 = GpuIdentity {
            name: "NVIDIA A100-SXM4-80GB".into(),
            arch: Arch::SM80,
            sm_count: 108,
        };
        let w = c.check_matches(&a100, (13, 0), "abcdef0123456789");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("H100") && w[0].contains("A100"), "{w:?}");

        // Same name and arch, fewer SMs (a MIG slice or another SKU): another GPU.
        let small = GpuIdentity {
            sm_count: 66,
            ..gpu()
        };
        assert_eq!(
            c.check_matches(&small, (13, 0), "abcdef0123456789").len(),
            1
        );

        // Policy: stale on this GPU is used with warnings; another GPU is not used, with one.
        let p = PathBuf::from("/x/tuned.toml");
        let d = accept(
            c.clone(),
            p.clone(),
            ConfigOrigin::Env,
            &gpu(),
            (12, 8),
            "0000",
        );
        assert!(d.config.is_some());
        assert_eq!(d.warnings.len(), 2);
        assert!(d.warnings.iter().all(|w| w.contains("still used")
            && w.contains("/x/tuned.toml")
            && w.contains(CONFIG_ENV)));
        let d = accept(
            c.clone(),
            p.clone(),
            ConfigOrigin::Explicit,
            &a100,
            (13, 0),
            "abcdef0123456789",
        );
        assert!(d.config.is_none());
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("not used"));
        let d = accept(
            c,
            p,
            ConfigOrigin::Explicit,
            &gpu(),
            (13, 0),
            "abcdef0123456789",
        );
        assert!(d.config.is_some() && d.warnings.is_empty());
    }

    #[test]
    fn corrupt_files_are_clear_errors() {
        let dir = temp_dir("corrupt");
        let path = dir.join("tuned.toml");

        std::fs::write(&path, "[tuned_on\ngpu = ").unwrap();
        let e = TunedConfig::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }));
        let text = e.to_string();
        assert!(text.contains(path.to_str().unwrap()), "{text}");
        assert!(text.contains("line 1"), "{text}");

        // Valid TOML, a bad header: the whole file is an error.
        let good = sample().to_toml();
        for (from, to, expect) in [
            ("sm_count = 132\n", "", "sm_count"),
            (
                "compute_capability = \"9.0\"",
                "compute_capability = \"nine\"",
                "major.minor",
            ),
        ] {
            assert!(good.contains(from), "{from} not in {good}");
            std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
            let text = TunedConfig::load(&path).unwrap_err().to_string();
            assert!(text.contains(path.to_str().unwrap()), "{text}");
            assert!(text.contains(expect), "expected {expect:?} in: {text}");
        }

        let missing = dir.join("missing.toml");
        let e = TunedConfig::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert!(e.to_string().contains("missing.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_entries_are_skipped_with_a_warning_naming_them() {
        let dir = temp_dir("bad-entries");
        let path = dir.join("tuned.toml");
        let good = sample().to_toml();
        let n = sample().entries.len();
        for (from, to, expect) in [
            ("seq = \"<=4k\"", "seq = \"<=5k\"", "<=5k"),
            ("tile = \"m128n64w8s1-wgmma\"", "tile = \"m128x\"", "m128x"),
            // Parses as a tile but is not a valid one: it would load, then every launch in
            // its bucket would silently take the default tile.
            (
                "tile = \"m128n64w8s1-wgmma\"",
                "tile = \"m256n64w4s1\"",
                "tile.block_m = 256",
            ),
            (
                "spec = \"streaming,d64,bf16,lse\"",
                "spec = \"streaming,d65,bf16,lse\"",
                "head_dim = 65",
            ),
            (
                "spec = \"streaming,d64,bf16,lse\"",
                "spec = \"streaming,d64,bf16,lse,m64n64w4s1\"",
                "must not include a tile",
            ),
            (
                "spec = \"streaming,d64,bf16,lse\"",
                "spec = \"streaming,d64,bf16,bf16,lse\"",
                "duplicate part `bf16`",
            ),
            ("gqa = 4", "gqa = 0", "gqa = 0"),
        ] {
            assert!(good.contains(from), "{from} not in {good}");
            std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
            let (config, warnings) = TunedConfig::load_checked(&path)
                .unwrap_or_else(|e| panic!("{to}: the file is usable: {e}"));
            assert_eq!(config.entries.len(), n - 1, "{to}");
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            let w = &warnings[0];
            assert!(w.contains(path.to_str().unwrap()), "{w}");
            assert!(w.contains("entry ") && w.contains("skipped"), "{w}");
            assert!(w.contains(expect), "expected {expect:?} in: {w}");
            assert_eq!(TunedConfig::load(&path).unwrap(), config);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn skipped_entries_are_among_the_warnings_of_discovery() {
        let dir = temp_dir("discover-skipped");
        let path = dir.join("tuned.toml");
        let text = sample()
            .to_toml()
            .replacen("tile = \"m64n64w4s1\"", "tile = \"m64n64w4s9\"", 1);
        std::fs::write(&path, text).unwrap();
        let found = TunedConfig::discover_for(Some(&path), &gpu(), (13, 0), "abcdef0123456789")
            .unwrap()
            .unwrap();
        assert_eq!(
            found.config.unwrap().entries.len(),
            sample().entries.len() - 1
        );
        assert_eq!(found.warnings.len(), 1, "{:?}", found.warnings);
        assert!(
            found.warnings[0].contains("m64n64w4s9"),
            "{:?}",
            found.warnings
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_invalid_nearer_entry_does_not_hide_a_valid_farther_one() {
        let mut c = sample();
        let spec = dense_spec();
        let shape = ShapeKey {
            seq_len: 2048,
            gqa: 1,
            density: 0.5,
        };
        // The exact bucket holds a tile that is not valid; the <=16k one is valid.
        c.entries.retain(|e| e.seq != SeqClass::Le4k);
        let mut bad = entry(
            "dense,d128,bf16,causal,lse",
            SeqClass::Le4k,
            1,
            DensityClass::Ge50,
            "m256n64w4s1",
        );
        bad.runner_up = None;
        c.entries.push(bad);
        let text = c.to_toml();
        let (loaded, warnings) =
            TunedConfig::from_toml_checked(&text, Path::new("t.toml")).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("dense,d128,bf16,causal,lse seq <=4k"),
            "{warnings:?}"
        );
        assert_eq!(
            loaded
                .lookup(&spec, &shape)
                .map(|t| t.to_string())
                .as_deref(),
            Some("m128n128w8s1-wgmma")
        );
        // Kept as is, the invalid entry wins the lookup and no tuned tile applies.
        assert_eq!(c.lookup(&spec, &shape), None);
    }

    #[test]
    fn repeated_entries_keep_the_first() {
        let c = sample();
        let mut text = c.to_toml();
        let first = text.find("[[entry]]").unwrap();
        let next = text[first + 1..].find("[[entry]]").unwrap() + first + 1;
        let copy = text[first..next].replace("ms = 1.0\n", "ms = 9.0\n");
        text.push('\n');
        text.push_str(&copy);
        let (loaded, warnings) =
            TunedConfig::from_toml_checked(&text, Path::new("t.toml")).unwrap();
        assert_eq!(loaded, c);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("same spec and bucket"), "{warnings:?}");
    }

    /// A file as tuned configs have always been written loads with its specs parsed, and is
    /// written back byte for byte.
    #[test]
    fn spec_text_is_parsed_once_and_written_back_unchanged() {
        let text = r#"[tuned_on]
gpu = "NVIDIA H100 80GB HBM3"
compute_capability = "9.0"
sm_count = 132
nvrtc = "13.0"
template_digest = "3f5c"
flashgen_version = "0.1.0"

[[entry]]
spec = "block-sparse,d64,f16,causal,varlen"
seq = "<=4k"
gqa = 4
density = "<10%"
tile = "m64n64w4s1"
ms = 1.0
default_ms = 1.5

[[entry]]
spec = "dense,d128,bf16,causal,lse"
seq = "<=16k"
gqa = 1
density = ">=50%"
tile = "m128n128w8s1-wgmma"
ms = 1.2345
runner_up = "m128n64w4s1-wgmma"
runner_up_ms = 1.2801
default_ms = 1.2345
"#;
        let (c, warnings) = TunedConfig::from_toml_checked(text, Path::new("t.toml")).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let want = AttentionSpec::new(Variant::BlockSparse, 64, DType::F16, true).with_varlen(true);
        assert_eq!(c.entries[0].spec, want);
        assert_eq!(c.entries[1].spec, dense_spec());
        assert_eq!(c.to_toml(), text);
    }

    #[test]
    fn every_variant_loads() {
        // A spec key that starts with `m` (mixed) is not a tile.
        let mut c = sample();
        c.insert(entry(
            "mixed,d128,bf16,lse",
            SeqClass::Le16k,
            1,
            DensityClass::Ge50,
            "m64n128w4s1-wgmma",
        ));
        let (loaded, warnings) =
            TunedConfig::from_toml_checked(&c.to_toml(), Path::new("t.toml")).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(loaded, c);
    }

    #[test]
    fn special_files_are_errors_not_hangs() {
        let dir = temp_dir("special");
        let zero = dir.join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = TunedConfig::load(&zero).unwrap_err().to_string();
        assert!(
            e.contains("not a regular file") && e.contains("zero.toml"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn merging_twenty_thousand_entries() {
        // 20 000 distinct buckets of one spec, re-tuned in half of them.
        let header = ConfigHeader::new(&gpu(), (13, 0), "abcdef0123456789");
        let config = |tile: &str, gqas: std::ops::Range<u32>| {
            let mut c = TunedConfig::new(header.clone());
            for gqa in gqas {
                for seq in SeqClass::ALL {
                    for density in DensityClass::ALL {
                        c.entries
                            .push(entry("dense,d64,bf16", seq, gqa, density, tile));
                    }
                }
            }
            c
        };
        let mut old = config("m64n64w4s1", 1..1001);
        let fresh = config("m128n64w4s1", 501..1501);
        assert_eq!((old.entries.len(), fresh.entries.len()), (20_000, 20_000));
        let start = std::time::Instant::now();
        old.merge(fresh);
        eprintln!("merged 20000 + 20000 entries in {:?}", start.elapsed());
        assert_eq!(old.entries.len(), 30_000);
        let tile_of = |gqa| {
            old.entries
                .iter()
                .filter(|e| e.gqa == gqa)
                .map(|e| e.tile.as_str())
                .collect::<HashSet<_>>()
        };
        assert_eq!(tile_of(500), HashSet::from(["m64n64w4s1"]));
        assert_eq!(tile_of(501), HashSet::from(["m128n64w4s1"]));
        assert_eq!(tile_of(1500), HashSet::from(["m128n64w4s1"]));
        assert!(old.entries.windows(2).all(
            |w| (w[0].spec.to_string(), w[0].bucket()) < (w[1].spec.to_string(), w[1].bucket())
        ));
    }

    #[test]
    fn discovery_order() {
        let dir = temp_dir("discovery");
        let user = dir.join("user").join("flashgen").join(CONFIG_FILE_NAME);
        let explicit = dir.join("explicit.toml");
        let env_path = dir.join("env.toml");

        // The user config dir's file counts only when it exists.
        assert_eq!(discover_in(None, None, Some(user.clone())), None);
        sample().save(&user).unwrap();
        assert_eq!(
            discover_in(None, None, Some(user.clone())),
            Some((user.clone(), ConfigOrigin::UserConfigDir))
        );
        // The environment variable wins over the user dir (an empty value is unset).
        assert_eq!(
            discover_in(None, Some(env_path.clone().into()), Some(user.clone())),
            Some((env_path.clone(), ConfigOrigin::Env))
        );
        assert_eq!(
            discover_in(None, Some(OsString::new()), Some(user.clone())),
            Some((user.clone(), ConfigOrigin::UserConfigDir))
        );
        // An explicit path wins over both.
        assert_eq!(
            discover_in(
                Some(&explicit),
                Some(env_path.clone().into()),
                Some(user.clone())
            ),
            Some((explicit.clone(), ConfigOrigin::Explicit))
        );

        // Through the real environment variable, restored afterwards.
        let saved = std::env::var_os(CONFIG_ENV);
        sample().save(&env_path).unwrap();
        std::env::set_var(CONFIG_ENV, &env_path);
        let found = discover(None);
        let loaded = TunedConfig::discover_for(None, &gpu(), (13, 0), "abcdef0123456789");
        std::env::set_var(CONFIG_ENV, dir.join("absent.toml"));
        let absent = TunedConfig::discover_for(None, &gpu(), (13, 0), "abcdef0123456789");
        match saved {
            Some(v) => std::env::set_var(CONFIG_ENV, v),
            None => std::env::remove_var(CONFIG_ENV),
        }
        assert_eq!(found, Some((env_path.clone(), ConfigOrigin::Env)));
        let loaded = loaded.unwrap().unwrap();
        assert_eq!(loaded.config, Some(sample()));
        assert!(loaded.warnings.is_empty());
        // A file named by the variable but absent is an error, not a silent fallback.
        assert!(absent.unwrap_err().to_string().contains("absent.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
