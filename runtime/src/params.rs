//! The kernel's launch ABI: one parameter struct passed by value, byte for byte the
//! `FlashParams` of `templates/attention_fwd.cu` (version `KERNEL_ABI_VERSION`).

use cudarc::driver::DeviceRepr;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlashParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    pub lse: u64,
    pub cu_seqlens_q: u64,
    pub cu_seqlens_k: u64,
    pub q_batch_stride: i64,
    pub q_row_stride: i64,
    pub q_head_stride: i64,
    pub k_batch_stride: i64,
    pub k_row_stride: i64,
    pub k_head_stride: i64,
    pub v_batch_stride: i64,
    pub v_row_stride: i64,
    pub v_head_stride: i64,
    pub o_batch_stride: i64,
    pub o_row_stride: i64,
    pub o_head_stride: i64,
    pub lse_batch_stride: i64,
    pub lse_head_stride: i64,
    pub batch: i32,
    pub heads_q: i32,
    pub heads_kv: i32,
    pub seqlen_q: i32,
    pub seqlen_k: i32,
    pub scale_log2: f32,
    pub sink: i32,
    pub window: i32,
    pub block_q: i32,
    pub block_k: i32,
    pub list_heads: i32,
    pub max_blocks: i32,
    pub list_batch_stride: i64,
    pub list_head_stride: i64,
    pub kv_count: u64,
    pub kv_index: u64,
    pub head_kind: u64,
    pub head_order: u64,
    pub prefix_k: u64,
    pub prefix_v: u64,
    pub prefix_k_batch_stride: i64,
    pub prefix_k_row_stride: i64,
    pub prefix_k_head_stride: i64,
    pub prefix_v_batch_stride: i64,
    pub prefix_v_row_stride: i64,
    pub prefix_v_head_stride: i64,
    pub prefix_len: i32,
}

// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl DeviceRepr for FlashParams {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_the_template() {
        assert_eq!(size_of::<FlashParams>(), 336);
        assert_eq!(offset_of!(FlashParams, q_batch_stride), 56);
        assert_eq!(offset_of!(FlashParams, batch), 168);
        assert_eq!(offset_of!(FlashParams, scale_log2), 188);
        assert_eq!(offset_of!(FlashParams, sink), 192);
        assert_eq!(offset_of!(FlashParams, list_batch_stride), 216);
        assert_eq!(offset_of!(FlashParams, head_order), 256);
        assert_eq!(offset_of!(FlashParams, prefix_k), 264);
        assert_eq!(offset_of!(FlashParams, prefix_len), 328);
    }
}
