//! Dense decode: every cached token at or before the query's position.

use super::{all_blocks, DecodeVariantHost};
use crate::decode::attention::{DecodeHeads, DecodeMask, DecodeParams};
use crate::decode::cache::PageTable;
use crate::decode::selector::PageSelection;
use crate::error::Result;
use flashgen_codegen::DecodeVariant;

pub(crate) struct Dense;

impl DecodeVariantHost for Dense {
    fn variant(&self) -> DecodeVariant {
        DecodeVariant::Dense
    }

    fn check(
        &self,
        _: &DecodeMask<'_>,
        _: &PageTable,
        _: usize,
        _: usize,
        _: &mut DecodeParams,
    ) -> Result<()> {
        Ok(())
    }

    fn visited_blocks(
        &self,
        _: &DecodeMask<'_>,
        table: &PageTable,
        b: usize,
        _: usize,
        _: usize,
    ) -> usize {
        all_blocks(table.seq_len(b))
    }

    fn standard_mask<'a>(&self, _: &'a DecodeHeads, _: &'a PageSelection) -> DecodeMask<'a> {
        DecodeMask::Dense
    }
}
