//! The textual forms of a spec and a kernel, used by the CLI, spec files and config files: an
//! [`AttentionSpec`] is `dense,d128,bf16,causal,lse,varlen`, a [`KernelSpec`] the same followed
//! by its tile, `dense,d128,bf16,causal,lse,varlen,m128n64w4s1`. The kernel's tile is optional
//! when parsing (the arch's default is used); `Display` always writes the canonical form with
//! the tile.

use crate::error::SpecError;
use crate::expr::Definition;
use crate::spec::{Arch, AttentionSpec, DType, KernelSpec, Mma, TileConfig, Variant};
use std::fmt;

impl fmt::Display for AttentionSpec {
    /// `variant,d<head_dim>,dtype[,causal][,lse][,varlen]`: the one writer of spec text. A
    /// custom spec's definition follows its variant in braces, in canonical form:
    /// `custom{mask = k <= q},d128,bf16`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.variant)?;
        if let Some(def) = self.definition {
            write!(f, "{{{def}}}")?;
        }
        write!(f, ",d{},{}", self.head_dim, self.dtype)?;
        for (on, flag) in [
            (self.causal, "causal"),
            (self.lse, "lse"),
            (self.varlen, "varlen"),
        ] {
            if on {
                write!(f, ",{flag}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for AttentionSpec {
    type Err = SpecError;
    /// [`parse_attention_spec`].
    fn from_str(text: &str) -> Result<Self, SpecError> {
        parse_attention_spec(text)
    }
}

impl KernelSpec {
    /// The spec text without the tile (the [`AttentionSpec`]'s): the key of tuned config
    /// entries and what the macro declares when no tile is given.
    pub fn key(&self) -> String {
        self.attention().to_string()
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.attention(), self.tile)
    }
}

fn parse_err(input: &str, reason: impl Into<String>) -> SpecError {
    SpecError::Parse {
        input: input.to_string(),
        reason: reason.into(),
    }
}

/// Parses `m128n64w4s1`, or `m128n128w8s1-wgmma` / `m64n128w4s2-wgmma-pipelined` for the
/// Hopper mainloops.
pub fn parse_tile(text: &str) -> Result<TileConfig, SpecError> {
    let bad = || {
        parse_err(
            text,
            "a tile is written m<block_m>n<block_n>w<warps>s<stages>[-wgmma|-wgmma-pipelined], \
             e.g. m128n64w4s1",
        )
    };
    let (body, mma) = [Mma::WgmmaPipelined, Mma::Wgmma]
        .into_iter()
        .find_map(|m| text.strip_suffix(m.suffix()).map(|b| (b, m)))
        .unwrap_or((text, Mma::Sync));
    let rest = body.strip_prefix('m').ok_or_else(bad)?;
    let (m, rest) = rest.split_once('n').ok_or_else(bad)?;
    let (n, rest) = rest.split_once('w').ok_or_else(bad)?;
    let (w, s) = rest.split_once('s').ok_or_else(bad)?;
    let num = |t: &str| match t.bytes().all(|b| b.is_ascii_digit()) {
        true => t.parse::<u32>().map_err(|_| bad()),
        false => Err(bad()),
    };
    Ok(TileConfig::new(num(m)?, num(n)?, num(w)?, num(s)?).with_mma(mma))
}

/// The parts after the variant, each remembered with the text that set it so that a second
/// one can be named in the error.
#[derive(Default)]
struct Parts<'a> {
    head_dim: Option<(u32, &'a str)>,
    dtype: Option<(DType, &'a str)>,
    tile: Option<(TileConfig, &'a str)>,
    causal: Option<((), &'a str)>,
    lse: Option<((), &'a str)>,
    varlen: Option<((), &'a str)>,
}

/// Sets a part that may appear once: a repeated or conflicting one (`d64,d128`, `bf16,f16`)
/// is an error rather than the last one silently winning.
fn set_once<'a, T>(
    slot: &mut Option<(T, &'a str)>,
    value: T,
    part: &'a str,
    what: &str,
    text: &str,
) -> Result<(), SpecError> {
    if let Some((_, first)) = slot {
        let reason = if *first == part {
            format!("duplicate part `{part}`; each part may appear once")
        } else {
            format!("duplicate {what}: `{first}` and `{part}`; give one")
        };
        return Err(parse_err(text, reason));
    }
    *slot = Some((value, part));
    Ok(())
}

fn find_variant(name: &str) -> Option<Variant> {
    Variant::from_name(name)
}

/// `d` and digits: a head dim part (whether the number fits is checked when parsing it).
fn is_head_dim(part: &str) -> bool {
    part.len() > 1 && part.starts_with('d') && part[1..].bytes().all(|b| b.is_ascii_digit())
}

impl<'a> Parts<'a> {
    fn add(&mut self, part: &'a str, variant: &str, text: &str) -> Result<(), SpecError> {
        match part {
            "causal" => set_once(&mut self.causal, (), part, "causal flag", text),
            "lse" => set_once(&mut self.lse, (), part, "lse flag", text),
            "varlen" => set_once(&mut self.varlen, (), part, "varlen flag", text),
            "bf16" => set_once(&mut self.dtype, DType::Bf16, part, "dtype", text),
            "f16" | "fp16" => set_once(&mut self.dtype, DType::F16, part, "dtype", text),
            p if find_variant(p).is_some() => {
                set_once(&mut Some(((), variant)), (), part, "variant", text)
            }
            p if is_head_dim(p) => {
                let d = p[1..]
                    .parse()
                    .map_err(|_| parse_err(text, format!("head dim `{p}` is not a number")))?;
                set_once(&mut self.head_dim, d, part, "head dim", text)
            }
            p if p.starts_with('m') => set_once(&mut self.tile, parse_tile(p)?, part, "tile", text),
            p => Err(parse_err(
                text,
                format!(
                    "unknown part `{p}`; allowed: d<head_dim>, bf16, f16, causal, lse, \
                     varlen, m<block_m>n<block_n>w<warps>s<stages>[-wgmma|-wgmma-pipelined]"
                ),
            )),
        }
    }
}

/// The parts of a spec text: the spec and the tile, if one is written. The variant's flags are
/// not checked here.
fn parse_parts(text: &str) -> Result<(AttentionSpec, Option<TileConfig>), SpecError> {
    let (definition, rest) = split_definition(text)?;
    let (spec, tile) = parse_plain_parts(text, rest)?;
    if definition.is_some() && !spec.variant.takes_definition() {
        return Err(parse_err(
            text,
            format!(
                "the {} variant takes no definition in braces (only custom does)",
                spec.variant
            ),
        ));
    }
    Ok((spec.with_definition(definition), tile))
}

/// A definition in braces after the variant name (`custom{mask = k <= q},d128,bf16`): the
/// interned definition and the text with the braces removed. Braces nest (`if` branches).
fn split_definition(text: &str) -> Result<(Option<Definition>, String), SpecError> {
    let Some(open) = text.find('{') else {
        return Ok((None, text.to_string()));
    };
    let mut depth = 0usize;
    let mut close = None;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or_else(|| parse_err(text, "unclosed `{` of a definition"))?;
    if text[..open].contains(',') {
        return Err(parse_err(
            text,
            "a definition in braces follows the variant name",
        ));
    }
    let definition = Definition::parse(&text[open + 1..close])
        .map_err(|e| parse_err(text, format!("invalid definition: {e}")))?;
    Ok((
        Some(definition),
        format!("{}{}", &text[..open], &text[close + 1..]),
    ))
}

fn parse_plain_parts(
    text: &str,
    rest: String,
) -> Result<(AttentionSpec, Option<TileConfig>), SpecError> {
    let mut parts = rest.split(',').map(str::trim).filter(|p| !p.is_empty());
    let variant_name = parts.next().ok_or_else(|| parse_err(text, "empty spec"))?;
    let variant = find_variant(variant_name).ok_or_else(|| {
        parse_err(
            text,
            format!(
                "unknown variant `{variant_name}`; allowed values: {}",
                Variant::names()
            ),
        )
    })?;
    let mut found = Parts::default();
    for part in parts {
        found.add(part, variant_name, text)?;
    }
    let (head_dim, _) = found
        .head_dim
        .ok_or_else(|| parse_err(text, "missing head dim, e.g. d128"))?;
    let (dtype, _) = found
        .dtype
        .ok_or_else(|| parse_err(text, "missing dtype: bf16 or f16"))?;
    let spec = AttentionSpec::new(variant, head_dim, dtype, found.causal.is_some())
        .with_lse(found.lse.is_some())
        .with_varlen(found.varlen.is_some());
    Ok((spec, found.tile.map(|(tile, _)| tile)))
}

/// Parses a spec without a tile (`dense,d128,bf16,causal,lse`, what an [`AttentionSpec`]
/// writes) and checks it ([`validate_attention`](crate::validate::validate_attention)).
/// Each part may appear once; a tile is an error (a kernel's text, [`parse_spec`]).
pub fn parse_attention_spec(text: &str) -> Result<AttentionSpec, SpecError> {
    let (spec, tile) = parse_parts(text)?;
    if tile.is_some() {
        return Err(parse_err(
            text,
            "a spec has no tile (a kernel's text is a spec and a tile)",
        ));
    }
    crate::validate::validate_attention(&spec)?;
    Ok(spec)
}

/// Parses a kernel's text (a spec and a tile) and validates it for `arch`; a missing tile
/// takes the arch's default. Each part may appear once.
pub fn parse_spec(text: &str, arch: Arch) -> Result<KernelSpec, SpecError> {
    let (spec, tile) = parse_parts(text)?;
    // The default tile depends on the flags, so it is chosen once they are set.
    let kernel = match tile {
        Some(tile) => spec.with_tile(tile),
        None => spec.with_default_tile(arch),
    };
    crate::validate::validate(&kernel, arch)?;
    Ok(kernel)
}

/// Parses `sm_80`, `sm_90a`, `8.6`, `90`, `sm_100`, `12.0`: one of [`Arch::KNOWN`]. The `a`
/// suffix is accepted where the compiled target has it (sm_90a); elsewhere it would be
/// silently dropped, so it is an error.
pub fn parse_arch(text: &str) -> Result<Arch, SpecError> {
    let unknown = || SpecError::UnknownArch {
        input: text.to_string(),
    };
    let t = text.trim();
    let t = t.strip_prefix("sm_").unwrap_or(t);
    let (t, arch_specific) = match t.strip_suffix('a') {
        Some(rest) => (rest, true),
        None => (t, false),
    };
    let number = |s: &str| match s.len() {
        1..=3 if s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<u32>().ok(),
        _ => None,
    };
    let arch = match t.split_once('.') {
        Some((major, minor)) => Arch::new(
            number(major).ok_or_else(unknown)?,
            number(minor).ok_or_else(unknown)?,
        ),
        None => {
            let n = number(t).filter(|n| *n >= 10).ok_or_else(unknown)?;
            Arch::new(n / 10, n % 10)
        }
    };
    if !arch.is_known() || (arch_specific && !arch.sm_name().ends_with('a')) {
        return Err(unknown());
    }
    Ok(arch)
}
