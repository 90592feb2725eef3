//! The decode variants' host side, one module each, registered in [`REGISTRY`]: each checks
//! its own arguments, fills its part of the kernel parameters and says how many 16-token
//! blocks a (sequence, kv head) visits (the work estimate the split count and the benchmarks'
//! byte counts use, mirroring the variant's schedule in `templates/decode/variants/`).

mod dense;
mod mixed;
mod selected;
mod streaming;

use super::attention::{DecodeHeads, DecodeMask, DecodeParams};
use super::cache::PageTable;
use super::selector::PageSelection;
use crate::error::Result;
use flashgen_codegen::DecodeVariant;

/// What the attention launch needs from a decode variant.
pub(crate) trait DecodeVariantHost: Sync {
    fn variant(&self) -> DecodeVariant;

    /// Checks the variant's arguments in `mask` against the batch, and writes the variant's
    /// fields (streaming window, selection and head-kind pointers) into `params`.
    fn check(
        &self,
        mask: &DecodeMask<'_>,
        table: &PageTable,
        heads_kv: usize,
        q_len: usize,
        params: &mut DecodeParams,
    ) -> Result<()>;

    /// 16-token blocks (sequence `b`, kv head `h`) visits.
    fn visited_blocks(
        &self,
        mask: &DecodeMask<'_>,
        table: &PageTable,
        b: usize,
        h: usize,
        q_len: usize,
    ) -> usize;

    /// The mask of the variant's standard problem (the tuner's): LServe's streaming window,
    /// the given page selection and head kinds where the variant takes them.
    fn standard_mask<'a>(
        &self,
        heads: &'a DecodeHeads,
        selection: &'a PageSelection,
    ) -> DecodeMask<'a>;
}

/// The registry: one entry per decode variant.
pub(crate) static REGISTRY: [&dyn DecodeVariantHost; 4] = [
    &dense::Dense,
    &streaming::Streaming,
    &selected::Selected,
    &mixed::Mixed,
];

/// The registry entry of `variant`.
pub(crate) fn host(variant: DecodeVariant) -> &'static dyn DecodeVariantHost {
    *REGISTRY
        .iter()
        .find(|h| h.variant() == variant)
        .expect("every decode variant is registered")
}

const LOGICAL: usize = 16;

/// Blocks of the sequence: `ceil(len / 16)`.
pub(crate) fn all_blocks(len: usize) -> usize {
    len.div_ceil(LOGICAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_is_registered_once() {
        for v in DecodeVariant::ALL {
            assert_eq!(REGISTRY.iter().filter(|h| h.variant() == v).count(), 1);
        }
    }
}
