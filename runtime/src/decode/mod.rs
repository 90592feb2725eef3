//! Decode over a paged KV cache, after LServe.
//!
//! - [`PagedKvCache`]: K and V pools `[pages, page_size, heads_kv, head_dim]` (page size 16,
//!   32, 64 or 128) with the per-channel key max and min of every logical page (16 tokens);
//!   [`DevicePageTable`] (page ids per sequence and lengths), [`PageAllocator`] for tests and
//!   examples, and [`PagedKvCache::append`], one kernel that writes new tokens and updates the
//!   statistics.
//! - [`Runtime::decode`](crate::Runtime::decode): `q_len` 1 ..= 8 new tokens per sequence
//!   against the cache, all query heads of a GQA group in one tile, split-KV with an lse merge;
//!   variants dense, streaming (sink + recent), selected (a [`PageSelection`]) and mixed per
//!   kv head, one kernel skeleton with per-variant hooks (`variants`).
//! - [`PageSelector`]: the query-aware page selector (Quest bound, hierarchical pages), with
//!   explicit reuse of its selection across steps.

pub mod attention;
pub mod cache;
pub mod kernels;
pub mod selector;
mod variants;

pub use attention::{
    choose_splits, exact_splits, plan_decode, plan_decode_with, DecodeArgs, DecodeChoice,
    DecodeHeadKind, DecodeHeads, DecodeLaunch, DecodeMask, DecodePlan, DecodeShape,
    StreamingWindow,
};
pub use cache::{
    plan_append, DeviceAppend, DevicePageTable, KvCacheConfig, KvScales, PageAllocator, PageTable,
    PagedKvCache,
};
pub use kernels::DecodeModule;
pub use selector::{PageSelection, PageSelector, SelectionInfo, SelectorConfig};
