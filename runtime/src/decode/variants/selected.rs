//! Selected decode: the pages of a [`PageSelection`](crate::decode::PageSelection) per
//! (sequence, kv head), plus every page the sequence gained since the selection was made.

use super::{all_blocks, DecodeVariantHost, LOGICAL};
use crate::decode::attention::{DecodeMask, DecodeParams};
use crate::decode::cache::PageTable;
use crate::decode::selector::SelectionInfo;
use crate::error::Result;
use flashgen_codegen::DecodeVariant;

pub(crate) struct Selected;

/// Blocks the selected schedule visits (`templates/decode/variants/selected.cuh`).
pub(crate) fn selected_blocks(sel: &SelectionInfo, table: &PageTable, b: usize, h: usize) -> usize {
    let per_page = table.page_size() / LOGICAL;
    let nblk = all_blocks(table.seq_len(b));
    let count = sel.count(b, h);
    let covers = sel.covers(b);
    let listed = match sel.last_page(b, h) {
        Some(last) => (count - 1) * per_page + nblk.saturating_sub(last * per_page).min(per_page),
        None => 0,
    };
    listed + nblk.saturating_sub(covers * per_page)
}

impl DecodeVariantHost for Selected {
    fn variant(&self) -> DecodeVariant {
        DecodeVariant::Selected
    }

    fn check(
        &self,
        mask: &DecodeMask<'_>,
        table: &PageTable,
        heads_kv: usize,
        _: usize,
        params: &mut DecodeParams,
    ) -> Result<()> {
        match mask {
            DecodeMask::Selected(sel) => sel.info().check_for(table, heads_kv, params),
            _ => unreachable!("the registry routes selected masks here"),
        }
    }

    fn visited_blocks(
        &self,
        mask: &DecodeMask<'_>,
        table: &PageTable,
        b: usize,
        h: usize,
        _: usize,
    ) -> usize {
        match mask {
            DecodeMask::Selected(sel) => selected_blocks(sel.info(), table, b, h),
            _ => 0,
        }
    }
}
