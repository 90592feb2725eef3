//! Streaming decode: sink plus recent tokens (`t <= p` and (`t < sink` or `p - t < recent`));
//! other pages are never read.

use super::{all_blocks, DecodeVariantHost, LOGICAL};
use crate::decode::attention::{DecodeHeads, DecodeMask, DecodeParams, StreamingWindow};
use crate::decode::cache::PageTable;
use crate::decode::selector::PageSelection;
use crate::error::{invalid, Result};
use flashgen_codegen::DecodeVariant;

pub(crate) struct Streaming;

/// Checks a window and writes it into the parameters.
pub(crate) fn check_window(w: &StreamingWindow, params: &mut DecodeParams) -> Result<()> {
    if w.recent == 0 {
        return Err(invalid(
            "recent",
            "must be at least 1 (a new token sees itself)",
        ));
    }
    if w.sink > i32::MAX as usize || w.recent > i32::MAX as usize {
        return Err(invalid("sink", "sink and recent must fit in i32"));
    }
    params.sink = w.sink as i32;
    params.recent = w.recent as i32;
    Ok(())
}

/// Blocks the streaming schedule visits (`templates/decode/variants/streaming.cuh`).
pub(crate) fn streaming_blocks(w: &StreamingWindow, len: usize, q_len: usize) -> usize {
    let sink_blocks = all_blocks(w.sink.min(len));
    let first_pos = len - q_len;
    let lo = (first_pos + 1).saturating_sub(w.recent);
    let recent_block0 = sink_blocks.max(lo / LOGICAL);
    sink_blocks + all_blocks(len).saturating_sub(recent_block0)
}

impl DecodeVariantHost for Streaming {
    fn variant(&self) -> DecodeVariant {
        DecodeVariant::Streaming
    }

    fn check(
        &self,
        mask: &DecodeMask<'_>,
        _: &PageTable,
        _: usize,
        _: usize,
        params: &mut DecodeParams,
    ) -> Result<()> {
        match mask {
            DecodeMask::Streaming(w) => check_window(w, params),
            _ => unreachable!("the registry routes streaming masks here"),
        }
    }

    fn visited_blocks(
        &self,
        mask: &DecodeMask<'_>,
        table: &PageTable,
        b: usize,
        _: usize,
        q_len: usize,
    ) -> usize {
        match mask {
            DecodeMask::Streaming(w) => streaming_blocks(w, table.seq_len(b), q_len),
            _ => 0,
        }
    }

    fn standard_mask<'a>(&self, _: &'a DecodeHeads, _: &'a PageSelection) -> DecodeMask<'a> {
        DecodeMask::Streaming(StreamingWindow::default())
    }
}
