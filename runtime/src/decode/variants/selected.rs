//! Selected decode: the pages of a [`PageSelection`](crate::decode::PageSelection) per
//! (sequence, kv head), plus every page the sequence gained since the selection was made.

use super::{all_blocks, DecodeVariantHost, LOGICAL};
use crate::decode::attention::{DecodeHeads, DecodeMask, DecodeParams};
use crate::decode::cache::PageTable;
use crate::decode::selector::PageSelection;
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

    fn standard_mask<'a>(
        &self,
        _: &'a DecodeHeads,
        selection: &'a PageSelection,
    ) -> DecodeMask<'a> {
        DecodeMask::Selected(selection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::attention::choose_splits;
    use crate::decode::cache::KvCacheConfig;
    use flashgen_codegen::DType;

    /// b1 at 128k over pages of 64 with a 4096-token budget: 64 pages of 8 kv heads.
    fn long_table(len: usize) -> PageTable {
        let c = KvCacheConfig::new(2100, 64, 8, 128, DType::Bf16);
        let rows = vec![(0..len.div_ceil(64) as u32).collect::<Vec<u32>>()];
        PageTable::new(&c, &rows, &[len]).unwrap()
    }

    fn lists(n: usize, heads: usize, keep: usize) -> Vec<Vec<usize>> {
        (0..heads)
            .map(|h| {
                // Sink page, spread middle pages, the newest page.
                let mut l: Vec<usize> = (0..keep - 1).map(|i| (i * 31 + h) % (n - 1)).collect();
                l.push(n - 1);
                l.sort_unstable();
                l.dedup();
                while l.len() < keep {
                    let next = (0..n).find(|p| !l.contains(p)).unwrap();
                    l.push(next);
                    l.sort_unstable();
                }
                l
            })
            .collect()
    }

    #[test]
    fn the_split_count_follows_the_selection_not_the_sequence() {
        let table = long_table(131_072);
        let sel = SelectionInfo::from_lists(&table, 8, &lists(2048, 8, 64)).unwrap();
        // 64 pages of 4 blocks each: 256 blocks per kv head, not the sequence's 8192.
        for h in 0..8 {
            assert_eq!(selected_blocks(&sel, &table, 0, h), 256);
        }
        // 8 kv heads on 132 SMs x 2 CTAs: 32 splits of two 64-token tiles, all in one wave and
        // both tiles of a CTA in its pipeline's prologue.
        assert_eq!(choose_splits(8, 256, 264), (32, 8));
        // The whole sequence would have taken 33 splits of 62 tiles.
        assert_eq!(choose_splits(8, 8192, 264).0, 33);
    }

    #[test]
    fn pages_gained_after_the_selection_are_visited() {
        let sel = SelectionInfo::from_lists(&long_table(131_000), 8, &lists(2047, 8, 64)).unwrap();
        // The selection's newest page (2046) had 56 tokens; 16 tokens later it holds 64 (4
        // blocks) and page 2047 holds 8 (1 block).
        let grown = long_table(131_016);
        assert_eq!(selected_blocks(&sel, &grown, 0, 3), 63 * 4 + 4 + 1);
        // Unchanged length: the newest page's 56 tokens are 4 blocks (the last one partial).
        let same = long_table(131_000);
        assert_eq!(selected_blocks(&sel, &same, 0, 3), 63 * 4 + 4);
    }
}
