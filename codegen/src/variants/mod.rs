//! The variant registry: the one table every prefill variant is registered in. Each variant is
//! a module here (its name, flags, CLI summary, launch arguments, macro parameters and CUDA
//! schedule) plus its schedule file under `templates/variants/`; spec text, the CLI, the macro,
//! the renderer, the tuner and the runtime's launch planning read this table instead of
//! matching on variants.
//!
//! A variant is registered by one line of [`for_each_variant!`](crate::for_each_variant): its
//! module's name and its [`Variant`] value. Codegen declares from that list its variant modules,
//! the [`Variant`] enum and [`REGISTRY`]; the runtime declares from the same list its host
//! modules (`flashgen_runtime::variants`) and their table.

use crate::block::{BlockLayout, MAX_BLOCK_BYTES};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The list of registered variants, in registry order: for each, the name of its module (the
/// same in `codegen/src/variants/` and `runtime/src/variants/`, each exporting its row: `INFO`
/// here, `HOST` in the runtime), then its [`Variant`] value with that value's documentation.
/// It calls `$callback!` with the list, so each crate declares its own modules and table from it;
/// this is the only place a variant is registered.
///
/// The modules it declares are not seen by `cargo fmt` (macro-declared modules never are);
/// `scripts/test.sh` formats `codegen/src/variants/` and `runtime/src/variants/` by path.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_variant {
    ($callback:ident) => {
        $callback! {
            /// Every key, or with `causal` every key at or before the query's position.
            dense: Dense,
            /// A-shaped mask: sink tokens plus a local window, causal (`sink`, `window` at
            /// launch).
            streaming: Streaming,
            /// Keys in the listed blocks of a BSR block list; with `causal` also only `j <= pos`.
            block_sparse: BlockSparse,
            /// One of dense, dense-causal, streaming, block-sparse per query head, in one launch;
            /// the `causal` flag applies to the block-sparse heads.
            mixed: Mixed,
            /// APB: the local block's queries over KV = [anchor | passing | local], the first two
            /// from a separate prefix buffer and fully visible, the local block causal.
            apb: Apb,
            /// A user-defined mask and score modifier (expressions over `b, h, q, k` and `s`,
            /// the spec's definition), over a block classification of the mask.
            custom: Custom,
        }
    };
}

/// Declares the variant modules, [`Variant`] and [`REGISTRY`] from the list.
macro_rules! declare_variants {
    ($($(#[$doc:meta])* $module:ident: $variant:ident,)*) => {
        $(pub mod $module;)*

        /// Which keys a query sees; the rows of the semantics table in DESIGN.md. Each value has
        /// one row in [`REGISTRY`], which says everything else about it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum Variant {
            $($(#[$doc])* $variant,)*
        }

        /// The registry, in the order variants are listed (CLI help, default set,
        /// `Variant::ALL`).
        pub const REGISTRY: &[&VariantInfo] = &[$(&$module::INFO,)*];

        /// The variants' module names, in registry order (`<module>.rs` in
        /// `codegen/src/variants/` and `runtime/src/variants/`).
        pub const MODULES: &[&str] = &[$(stringify!($module),)*];
    };
}

for_each_variant!(declare_variants);

/// The launch arguments a variant's kernel reads beyond q, k, v and o (and lse, varlen): what
/// the runtime's safe API takes (`flashgen_runtime::Mask`, `AttentionArgs::prefix`), what the
/// macro's `forward` passes and what the tuner's standard problem builds. A variant with a new
/// kind of argument adds a value here and its handling in those three places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchArgs {
    /// None: the spec's flags decide the mask (`Mask::None`).
    None,
    /// Sink and window (`Mask::Streaming`); the macro passes the declared `SINK` and `WINDOW`.
    Streaming,
    /// A BSR block list (`Mask::BlockSparse`), in blocks of the declared `BLOCK_Q` x `BLOCK_K`.
    BlockList,
    /// A kind per query head, with sink and window and a block list for the heads of those
    /// kinds (`Mask::Mixed`).
    HeadKinds,
    /// Keys and values of a prefix buffer before the local keys (`AttentionArgs::prefix`;
    /// APB's anchor and passing blocks).
    Prefix,
    /// Values of the spec definition's parameters and the mask's block classification
    /// (`Mask::Custom`; built from the definition when not given).
    Custom,
}

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

/// What a variant's kernels prefer of their default tile ([`crate::default_tile`], which
/// applies them per head dim and arch), measured per variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilePrefs {
    /// Keys per step of the one-warpgroup wgmma tiles (64 query rows over 4 warps) below
    /// head dim 256.
    pub wgmma_block_n: u32,
    /// Whether d256 on sm_90a takes 128 query rows over two warpgroups (`m128n64w8s1-wgmma`)
    /// instead of one warpgroup's `m64n64w4s1-wgmma`.
    pub wgmma_d256_two_warpgroups: bool,
    /// Whether the mma.sync tiles of 128 query rows take 8 warps (16 rows each) at the middle
    /// head dims, where 4 warps' 32 rows each no longer fit in registers.
    pub sync_eight_warps: bool,
}

impl TilePrefs {
    /// The tiles of a variant with no measured preference of its own.
    pub const STANDARD: TilePrefs = TilePrefs {
        wgmma_block_n: 128,
        wgmma_d256_two_warpgroups: false,
        sync_eight_warps: false,
    };
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
    /// The launch arguments its kernel reads.
    pub args: LaunchArgs,
    /// The schedule file the variant brings, if any: its name under `templates/` and its text
    /// (`include_str!`). Variants may include each other's files.
    pub schedule_file: Option<(&'static str, &'static str)>,
    /// The schedule files (names under `templates/`) the kernel includes, in order.
    pub includes: &'static [&'static str],
    /// The schedule the kernel runs.
    pub schedule: Schedule,
    /// The numeric parameters the macro declares for it.
    pub params: &'static [VariantParam],
    /// Its own kernel parameter block (`struct VariantParams`, the kernel's second parameter):
    /// the layout of the `#[repr(C)]` struct its module declares with
    /// [`param_block!`](crate::param_block), which the runtime's host variant writes.
    pub block: &'static BlockLayout,
    /// Its preferences for the default tile.
    pub tiles: TilePrefs,
}

// Every block is the kernel's `VariantParams` and fits the runtime's launch buffer.
const _: () = {
    let mut i = 0;
    while i < REGISTRY.len() {
        assert!(REGISTRY[i].block.size <= MAX_BLOCK_BYTES);
        assert!(REGISTRY[i].block.align <= 16);
        i += 1;
    }
};

impl VariantInfo {
    /// Whether keys come in two segments: a prefix buffer (`prefix_k`, `prefix_v`) before the
    /// local keys (APB's anchor and passing blocks).
    pub fn prefix(&self) -> bool {
        self.args == LaunchArgs::Prefix
    }
}

/// The schedule files of every variant, `(name, text)`, in registry order, each once.
pub fn schedule_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    REGISTRY.iter().filter_map(|i| i.schedule_file)
}

impl Variant {
    /// Every registered variant, in registry order.
    pub const ALL: [Variant; REGISTRY.len()] = {
        let mut all = [REGISTRY[0].variant; REGISTRY.len()];
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

    /// Whether the variant's kernel is generated from a user definition (a mask and score
    /// modifier in braces in its spec text), read from its kind of launch arguments.
    pub fn takes_definition(self) -> bool {
        self.info().args == LaunchArgs::Custom
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
    use crate::block::VARIANT_PARAMS;

    #[test]
    fn every_variant_has_one_row_and_its_files_are_embedded() {
        for (i, info) in REGISTRY.iter().enumerate() {
            assert_eq!(Variant::ALL[i], info.variant);
            assert_eq!(info.variant.info().name, info.name);
            assert_eq!(Variant::from_name(info.name), Some(info.variant));
            assert!(!info.summary.is_empty());
            for file in info.includes {
                assert!(
                    schedule_files().any(|(n, _)| n == *file),
                    "{}: {file} is no variant's schedule file",
                    info.name
                );
            }
            if let Schedule::PerHead(cases) = info.schedule {
                assert!(!cases.is_empty());
                // The per-head dispatch reads the kinds and the order from the block.
                for field in ["head_kind", "head_order"] {
                    assert!(info.block.fields.iter().any(|f| f.name == field));
                }
            }
            assert_eq!(info.block.c_name, VARIANT_PARAMS, "{}", info.name);
        }
        let names: std::collections::HashSet<_> = REGISTRY.iter().map(|i| i.name).collect();
        assert_eq!(names.len(), REGISTRY.len(), "names are unique");
        let files: std::collections::HashSet<_> = schedule_files().map(|(n, _)| n).collect();
        assert_eq!(
            files.len(),
            schedule_files().count(),
            "schedule files are unique"
        );
    }
}
