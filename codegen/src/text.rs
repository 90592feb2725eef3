//! The textual form of a spec, used by the CLI, spec files and config files:
//! `dense,d128,bf16,causal,lse,varlen,m128n64w4s1`. The tile is optional when parsing (the
//! arch's default is used); `Display` always writes the canonical form with the tile.

use crate::error::SpecError;
use crate::spec::{Arch, DType, KernelSpec, Mma, TileConfig, Variant};
use std::fmt;

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},d{},{}", self.variant, self.head_dim, self.dtype)?;
        if self.causal {
            f.write_str(",causal")?;
        }
        if self.lse {
            f.write_str(",lse")?;
        }
        if self.varlen {
            f.write_str(",varlen")?;
        }
        write!(f, ",{}", self.tile)
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
    let num = |t: &str| t.parse::<u32>().map_err(|_| bad());
    Ok(TileConfig::new(num(m)?, num(n)?, num(w)?, num(s)?).with_mma(mma))
}

/// Parses a spec and validates it for `arch`; a missing tile takes the arch's default.
pub fn parse_spec(text: &str, arch: Arch) -> Result<KernelSpec, SpecError> {
    let mut parts = text.split(',').map(str::trim).filter(|p| !p.is_empty());
    let variant_name = parts.next().ok_or_else(|| parse_err(text, "empty spec"))?;
    let variant = Variant::ALL
        .into_iter()
        .find(|v| v.name() == variant_name)
        .ok_or_else(|| {
            let allowed: Vec<_> = Variant::ALL.iter().map(|v| v.name()).collect();
            parse_err(
                text,
                format!(
                    "unknown variant `{variant_name}`; allowed values: {}",
                    allowed.join(", ")
                ),
            )
        })?;
    let (mut head_dim, mut dtype, mut tile) = (None, None, None);
    let (mut causal, mut lse, mut varlen) = (false, false, false);
    for part in parts {
        match part {
            "causal" => causal = true,
            "lse" => lse = true,
            "varlen" => varlen = true,
            "bf16" => dtype = Some(DType::Bf16),
            "f16" | "fp16" => dtype = Some(DType::F16),
            p if p.starts_with('d')
                && p[1..].chars().all(|c| c.is_ascii_digit())
                && p.len() > 1 =>
            {
                head_dim = Some(
                    p[1..]
                        .parse::<u32>()
                        .map_err(|_| parse_err(text, format!("head dim `{p}` is not a number")))?,
                );
            }
            p if p.starts_with('m') => tile = Some(parse_tile(p)?),
            p => {
                return Err(parse_err(
                    text,
                    format!(
                        "unknown part `{p}`; allowed: d<head_dim>, bf16, f16, causal, lse, \
                         varlen, m<block_m>n<block_n>w<warps>s<stages>[-wgmma|-wgmma-pipelined]"
                    ),
                ))
            }
        }
    }
    let head_dim = head_dim.ok_or_else(|| parse_err(text, "missing head dim, e.g. d128"))?;
    let dtype = dtype.ok_or_else(|| parse_err(text, "missing dtype: bf16 or f16"))?;
    let mut spec = KernelSpec::new(variant, head_dim, dtype, causal, arch)
        .with_lse(lse)
        .with_varlen(varlen);
    // The default tile depends on the flags, so it is chosen once they are set.
    spec.tile = tile.unwrap_or_else(|| crate::space::default_tile(&spec, arch));
    crate::validate::validate(&spec, arch)?;
    Ok(spec)
}

/// Parses `sm_80`, `sm_90a`, `8.0`, `90`.
pub fn parse_arch(text: &str) -> Result<Arch, SpecError> {
    let bad = || parse_err(text, "an arch is written sm_80, sm_90a, 8.0 or 90");
    let t = text.trim();
    let t = t.strip_prefix("sm_").unwrap_or(t);
    let t = t.strip_suffix('a').unwrap_or(t);
    let arch = if let Some((major, minor)) = t.split_once('.') {
        Arch::new(
            major.parse().map_err(|_| bad())?,
            minor.parse().map_err(|_| bad())?,
        )
    } else {
        let n: u32 = t.parse().map_err(|_| bad())?;
        if !(10..=199).contains(&n) {
            return Err(bad());
        }
        Arch::new(n / 10, n % 10)
    };
    if !arch.is_supported() {
        return Err(SpecError::Arch { arch });
    }
    Ok(arch)
}
