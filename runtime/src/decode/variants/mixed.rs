//! Mixed decode: per kv head streaming or selected ([`DecodeHeads`](crate::decode::DecodeHeads)),
//! in one launch.

use super::selected::selected_blocks;
use super::streaming::{check_window, streaming_blocks};
use super::DecodeVariantHost;
use crate::decode::attention::{
    DecodeHeadKind, DecodeHeads, DecodeMask, DecodeParams, StreamingWindow,
};
use crate::decode::cache::PageTable;
use crate::decode::selector::PageSelection;
use crate::error::{invalid, Result};
use flashgen_codegen::DecodeVariant;

pub(crate) struct Mixed;

impl DecodeVariantHost for Mixed {
    fn variant(&self) -> DecodeVariant {
        DecodeVariant::Mixed
    }

    fn check(
        &self,
        mask: &DecodeMask<'_>,
        table: &PageTable,
        heads_kv: usize,
        _: usize,
        params: &mut DecodeParams,
    ) -> Result<()> {
        let DecodeMask::Mixed {
            heads,
            streaming,
            selection,
        } = mask
        else {
            unreachable!("the registry routes mixed masks here")
        };
        if heads.kinds().len() != heads_kv {
            return Err(invalid(
                "heads",
                format!("has {} kinds for {heads_kv} kv heads", heads.kinds().len()),
            ));
        }
        check_window(streaming, params)?;
        selection.info().check_for(table, heads_kv, params)
    }

    fn visited_blocks(
        &self,
        mask: &DecodeMask<'_>,
        table: &PageTable,
        b: usize,
        h: usize,
        q_len: usize,
    ) -> usize {
        let DecodeMask::Mixed {
            heads,
            streaming,
            selection,
        } = mask
        else {
            return 0;
        };
        match heads.kinds().get(h) {
            Some(DecodeHeadKind::Streaming) => streaming_blocks(streaming, table.seq_len(b), q_len),
            Some(DecodeHeadKind::Selected) => selected_blocks(selection.info(), table, b, h),
            None => 0,
        }
    }

    fn standard_mask<'a>(
        &self,
        heads: &'a DecodeHeads,
        selection: &'a PageSelection,
    ) -> DecodeMask<'a> {
        DecodeMask::Mixed {
            heads,
            streaming: StreamingWindow::default(),
            selection,
        }
    }
}
