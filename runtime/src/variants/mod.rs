//! The host side of each prefill variant, one module per variant: the checks of its launch
//! arguments, the kernel parameters it writes, and its work estimate (the visible fraction of
//! the query-key pairs, which sizes FLOP counts and picks the tuned config's shape bucket).
//! [`plan`](crate::plan::plan) and [`shape_key`](crate::tuned::shape_key) do the shared part of
//! a launch and hand the rest to the spec's variant through [`host`].
//!
//! The modules are declared from codegen's list of variants
//! ([`flashgen_codegen::for_each_variant!`]), the one place a variant is registered: each
//! `<module>.rs` here exports its variant's `HOST`.

use crate::error::{invalid, Result};
use crate::params::VariantBlock;
use crate::plan::{LaunchDesc, PlanContext};
use flashgen_codegen::{AttentionSpec, TileConfig, Variant};

/// The extents of a launch that a work estimate needs: queries and keys of one sequence (the
/// longest, for varlen batches; the keys not counting a prefix) and the prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub heads_q: usize,
    pub sq: usize,
    /// Local keys per sequence.
    pub sk: usize,
    /// Keys before the local ones ([`HostVariant::prefix_len`]).
    pub prefix: usize,
}

/// One variant's launch-time behaviour.
pub trait HostVariant: Sync {
    /// What the variant's own launch arguments are, for the message of a launch whose
    /// arguments fit another variant.
    fn arguments(&self) -> &'static str;

    /// Keys that precede the local keys of every sequence (APB's anchor and passing blocks).
    fn prefix_len(&self, d: &LaunchDesc) -> usize {
        let _ = d;
        0
    }

    /// Checks the variant's own arguments against the launch and writes its parameter block
    /// (the `Params` its codegen module declares), the kernel's second parameter.
    fn plan(&self, cx: &PlanContext, d: &LaunchDesc) -> Result<VariantBlock>;

    /// The kept fraction of the `sq x (prefix + sk)` pairs, averaged over query heads. Meant
    /// for launches that passed [`check_launch`](crate::plan::check_launch); on others it
    /// returns some fraction, never panics.
    fn density(&self, spec: &AttentionSpec, d: &LaunchDesc, e: &Extent) -> f64;

    /// The block sizes `(block_q, block_k)` of the block list the launch reads, if it reads one:
    /// the tile must divide them.
    fn mask_blocks(&self, d: &LaunchDesc) -> Option<(usize, usize)> {
        let _ = d;
        None
    }
}

/// Declares the host modules and [`host`] from the list of variants.
macro_rules! declare_hosts {
    ($($(#[$doc:meta])* $module:ident: $variant:ident,)*) => {
        $(mod $module;)*

        /// The host side of a variant. The match is exhaustive: a variant registered in codegen
        /// does not compile until its host module is written.
        pub fn host(variant: Variant) -> &'static dyn HostVariant {
            match variant {
                $(Variant::$variant => &$module::HOST,)*
            }
        }
    };
}

flashgen_codegen::for_each_variant!(declare_hosts);

/// The definition of a custom spec (the empty one, every key visible, when it has none).
pub(crate) fn custom_definition(
    spec: &flashgen_codegen::AttentionSpec,
) -> &'static flashgen_codegen::expr::CustomMods {
    custom::definition(spec)
}

/// The error of a launch whose arguments do not fit its kernel's variant.
pub(crate) fn wrong_arguments(variant: Variant) -> crate::error::Error {
    let expected: Vec<String> = Variant::ALL
        .iter()
        .map(|v| format!("{v}: {}", host(*v).arguments()))
        .collect();
    invalid(
        "mask",
        format!(
            "the arguments do not fit a {variant} kernel ({})",
            expected.join("; ")
        ),
    )
}

/// Checks that a tile's query and key tiles divide a block list's blocks.
pub(crate) fn check_blocks_fit(block_q: usize, block_k: usize, tile: &TileConfig) -> Result<()> {
    if !block_q.is_multiple_of(tile.block_m as usize) {
        return Err(invalid(
            "block_q",
            format!(
                "mask block_q = {block_q} must be a multiple of the tile's block_m = {} (use a tile with a smaller block_m, e.g. from flashgen_codegen::default_tile_for_blocks, or Runtime::attention_tuned, which picks one)",
                tile.block_m
            ),
        ));
    }
    if !block_k.is_multiple_of(tile.block_n as usize) {
        return Err(invalid(
            "block_k",
            format!(
                "mask block_k = {block_k} must be a multiple of the tile's block_n = {} (use a tile with a smaller block_n, e.g. from flashgen_codegen::default_tile_for_blocks, or Runtime::attention_tuned, which picks one)",
                tile.block_n
            ),
        ));
    }
    Ok(())
}
