//! The variant registry: the one table every prefill variant is registered in. Each variant is
//! a module here (its name, flags, CLI summary, macro parameters and CUDA schedule) plus its
//! schedule file under `templates/variants/`; spec text, the CLI, the macro, the renderer and
//! the runtime's launch planning read this table instead of matching on variants.

mod apb;
mod block_sparse;
mod dense;
mod mixed;
mod streaming;

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which keys a query sees; the rows of the semantics table in DESIGN.md. Each value has one
/// row in [`REGISTRY`], which says everything else about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Every key, or with `causal` every key at or before the query's position.
    Dense,
    /// A-shaped mask: sink tokens plus a local window, causal (`sink`, `window` at launch).
    Streaming,
    /// Keys in the listed blocks of a BSR block list; with `causal` also only `j <= pos`.
    BlockSparse,
    /// One of dense, dense-causal, streaming, block-sparse per query head, in one launch; the
    /// `causal` flag applies to the block-sparse heads.
    Mixed,
    /// APB: the local block's queries over KV = [anchor | passing | local], the first two from
    /// a separate prefix buffer and fully visible, the local block causal.
    Apb,
}

/// The registry, in the order variants are listed (CLI help, default set, `Variant::ALL`).
pub const REGISTRY: [&VariantInfo; 5] = [
    &dense::INFO,
    &streaming::INFO,
    &block_sparse::INFO,
    &mixed::INFO,
    &apb::INFO,
];

/// How a numeric launch parameter of a variant is read where it is declared (the macro).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A non-negative token count.
    Count,
    /// A positive size in tokens.
    Positive,
}

/// A numeric parameter of a variant that the macro bakes into the generated struct (`sink` ->
/// `SINK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VariantParam {
    pub name: &'static str,
    pub kind: ParamKind,
    /// The value error messages show in examples.
    pub example: u32,
}

pub const SINK: VariantParam = VariantParam {
    name: "sink",
    kind: ParamKind::Count,
    example: 128,
};
pub const WINDOW: VariantParam = VariantParam {
    name: "window",
    kind: ParamKind::Count,
    example: 2048,
};
pub const BLOCK_Q: VariantParam = VariantParam {
    name: "block_q",
    kind: ParamKind::Positive,
    example: 128,
};
pub const BLOCK_K: VariantParam = VariantParam {
    name: "block_k",
    kind: ParamKind::Positive,
    example: 128,
};

/// One case of a per-head dispatch: the head kind's C constant and the schedule its heads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HeadCase {
    pub kind: &'static str,
    pub schedule: &'static str,
}

/// Which schedule the kernel's CTAs run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// One schedule type for every CTA (`typedef <type> Schedule;`).
    One(&'static str),
    /// A schedule per query head, chosen by the head's kind (`p.head_kind`) and run in the
    /// order `p.head_order`; the last case is the `default:` one.
    PerHead(&'static [HeadCase]),
}

/// Everything codegen knows about one variant.
#[derive(Debug)]
pub struct VariantInfo {
    pub variant: Variant,
    /// The name in spec text, the CLI, config keys and (with `-` as `_`) the macro.
    pub name: &'static str,
    /// One line for the CLI's help and the README's spec table.
    pub summary: &'static str,
    /// Whether the `causal` flag means something for this variant.
    pub causal: bool,
    /// Whether packed varlen batches are supported.
    pub varlen: bool,
    /// Whether keys come in two segments: a prefix buffer (`prefix_k`, `prefix_v`) before the
    /// local keys (APB's anchor and passing blocks).
    pub prefix: bool,
    /// The schedule files (names under `templates/`) the kernel includes, in order.
    pub includes: &'static [&'static str],
    /// The schedule the kernel runs.
    pub schedule: Schedule,
    /// The numeric parameters the macro declares for it.
    pub params: &'static [VariantParam],
}

/// The schedule files of every variant: `(name, text)`, each embedded once.
pub const SCHEDULE_FILES: &[(&str, &str)] = &[
    (
        "variants/dense.cuh",
        include_str!("../../../templates/variants/dense.cuh"),
    ),
    (
        "variants/streaming.cuh",
        include_str!("../../../templates/variants/streaming.cuh"),
    ),
    (
        "variants/block_sparse.cuh",
        include_str!("../../../templates/variants/block_sparse.cuh"),
    ),
    (
        "variants/mixed.cuh",
        include_str!("../../../templates/variants/mixed.cuh"),
    ),
];

impl Variant {
    /// Every registered variant, in registry order.
    pub const ALL: [Variant; REGISTRY.len()] = {
        let mut all = [Variant::Dense; REGISTRY.len()];
        let mut i = 0;
        while i < REGISTRY.len() {
            all[i] = REGISTRY[i].variant;
            i += 1;
        }
        all
    };

    /// The variant's row of [`REGISTRY`].
    pub fn info(self) -> &'static VariantInfo {
        REGISTRY
            .iter()
            .find(|i| i.variant == self)
            .expect("every variant has a row in REGISTRY (checked by its tests)")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Whether the `causal` flag means something for this variant.
    pub fn accepts_causal(self) -> bool {
        self.info().causal
    }

    /// Whether packed varlen batches are supported.
    pub fn accepts_varlen(self) -> bool {
        self.info().varlen
    }

    /// The variant of a name as written in spec text and on the command line.
    pub fn from_name(name: &str) -> Option<Variant> {
        REGISTRY.iter().find(|i| i.name == name).map(|i| i.variant)
    }

    /// The registered names, comma-separated, for messages and help.
    pub fn names() -> String {
        let names: Vec<_> = REGISTRY.iter().map(|i| i.name).collect();
        names.join(", ")
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_one_row_and_its_files_are_embedded() {
        for (i, info) in REGISTRY.iter().enumerate() {
            assert_eq!(Variant::ALL[i], info.variant);
            assert_eq!(info.variant.info().name, info.name);
            assert_eq!(Variant::from_name(info.name), Some(info.variant));
            assert!(!info.summary.is_empty());
            for file in info.includes {
                assert!(
                    SCHEDULE_FILES.iter().any(|(n, _)| n == file),
                    "{}: {file} is not in SCHEDULE_FILES",
                    info.name
                );
            }
            if let Schedule::PerHead(cases) = info.schedule {
                assert!(!cases.is_empty());
            }
        }
        let names: std::collections::HashSet<_> = REGISTRY.iter().map(|i| i.name).collect();
        assert_eq!(names.len(), REGISTRY.len(), "names are unique");
    }
}
