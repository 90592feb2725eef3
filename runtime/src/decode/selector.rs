//! Query-aware page selection (LServe's hierarchical selector over Quest's bound) and the page
//! selections the selected decode reads.
//!
//! A logical page (16 tokens) scores `sum_d max(q_d * kmax_d, q_d * kmin_d)`, an upper bound on
//! `q . k` for each of its keys, per query row of the GQA group (its `hq / hkv` heads times the
//! `q_len` new tokens). The group's rows are combined by their **max**: the group reads one set
//! of pages, and a page that any one head may attend to strongly must stay, since each head's
//! softmax is its own (a sum would let several indifferent heads outvote one head whose
//! attention is concentrated on that page, and a mean would dilute it). A physical page scores
//! the max of its logical pages that hold tokens. Per (sequence, kv head) the top
//! `budget / page_size` pages are kept, always with the first `sink_pages` pages and the newest
//! page; a context of at most that many pages keeps every page. Ties go to the lower page
//! index. Scores are computed in f32 on the GPU; forced pages score +inf, other scores are
//! clamped to the largest finite f32 and NaN ranks as -inf.

use super::attention::{check_qo, DecodeParams};
use super::cache::{DevicePageTable, PageTable, PagedKvCache};
use super::kernels::{decode_function, DecodeModule};
use crate::driver::{dependent_launch_supported, launch_dependent};
use crate::error::{invalid, DriverContext, Result};
use crate::runtime::{Element, Runtime, Tensor};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use flashgen_codegen::decode::{score_logical_per_cta, MAX_Q_LEN, SCORE_THREADS, SELECT_THREADS};
use std::ffi::c_void;

/// What a selection holds, on the host: per (sequence, kv head) how many pages and the last
/// (newest) one, and per sequence how many pages the sequence had when it was made (every
/// later page is read too). Kept beside the device copy; exactly what the kernel reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectionInfo {
    page_size: usize,
    batch: usize,
    heads_kv: usize,
    /// Entries per (sequence, kv head) row of the index buffer.
    stride: usize,
    counts: Vec<usize>,
    last: Vec<Option<usize>>,
    covers: Vec<usize>,
}

impl SelectionInfo {
    /// Validates page lists given by the caller (`lists[b * heads_kv + h]`: logical page
    /// indices of sequence `b`, strictly ascending, below its page count in `table`, holding
    /// its newest page).
    pub fn from_lists(table: &PageTable, heads_kv: usize, lists: &[Vec<usize>]) -> Result<Self> {
        let batch = table.batch();
        if heads_kv == 0 || lists.len() != batch * heads_kv {
            return Err(invalid(
                "lists",
                format!(
                    "has {} lists; batch {batch} x heads_kv {heads_kv} needed",
                    lists.len()
                ),
            ));
        }
        let mut counts = Vec::with_capacity(lists.len());
        let mut last = Vec::with_capacity(lists.len());
        for (i, list) in lists.iter().enumerate() {
            let (b, h) = (i / heads_kv, i % heads_kv);
            let n = table.used_pages(b);
            if n == 0 {
                return Err(invalid(
                    "table",
                    format!("sequence {b} holds no tokens to select from"),
                ));
            }
            if list.last() != Some(&(n - 1)) {
                return Err(invalid(
                    "lists",
                    format!(
                        "sequence {b}, kv head {h}: the list must end with the newest page {}",
                        n - 1
                    ),
                ));
            }
            if list.windows(2).any(|w| w[0] >= w[1]) {
                return Err(invalid(
                    "lists",
                    format!("sequence {b}, kv head {h}: pages must be strictly ascending"),
                ));
            }
            counts.push(list.len());
            last.push(list.last().copied());
        }
        let stride = counts.iter().copied().max().unwrap_or(1).max(1);
        Ok(SelectionInfo {
            page_size: table.page_size(),
            batch,
            heads_kv,
            stride,
            counts,
            last,
            covers: (0..batch).map(|b| table.used_pages(b)).collect(),
        })
    }

    /// What the GPU selector will produce for `table`: `min(pages, budget_pages)` pages per
    /// (sequence, kv head), the newest among them.
    fn for_selector(table: &PageTable, heads_kv: usize, budget_pages: usize) -> Self {
        let batch = table.batch();
        let mut counts = Vec::with_capacity(batch * heads_kv);
        let mut last = Vec::with_capacity(batch * heads_kv);
        for b in 0..batch {
            let n = table.used_pages(b);
            for _ in 0..heads_kv {
                counts.push(n.min(budget_pages));
                last.push(Some(n - 1));
            }
        }
        SelectionInfo {
            page_size: table.page_size(),
            batch,
            heads_kv,
            stride: counts.iter().copied().max().unwrap_or(1).max(1),
            counts,
            last,
            covers: (0..batch).map(|b| table.used_pages(b)).collect(),
        }
    }

    pub fn count(&self, b: usize, h: usize) -> usize {
        self.counts[b * self.heads_kv + h]
    }

    pub fn last_page(&self, b: usize, h: usize) -> Option<usize> {
        self.last[b * self.heads_kv + h]
    }

    /// Pages sequence `b` had when the selection was made.
    pub fn covers(&self, b: usize) -> usize {
        self.covers[b]
    }

    pub fn heads_kv(&self) -> usize {
        self.heads_kv
    }

    /// Checks the selection against the table of a decode launch (same batch, page size and
    /// kv heads; no sequence shorter than when the selection was made) and fills the
    /// selection's stride.
    pub fn check_for(
        &self,
        table: &PageTable,
        heads_kv: usize,
        params: &mut DecodeParams,
    ) -> Result<()> {
        if self.batch != table.batch()
            || self.heads_kv != heads_kv
            || self.page_size != table.page_size()
        {
            return Err(invalid(
                "selection",
                format!(
                    "was made for batch {}, {} kv heads, pages of {}; the launch has batch {}, {heads_kv} kv heads, pages of {}",
                    self.batch, self.heads_kv, self.page_size, table.batch(), table.page_size()
                ),
            ));
        }
        for b in 0..self.batch {
            if table.used_pages(b) < self.covers[b] {
                return Err(invalid(
                    "selection",
                    format!(
                        "sequence {b} had {} pages when the selection was made and has {} now",
                        self.covers[b],
                        table.used_pages(b)
                    ),
                ));
            }
        }
        params.sel_stride = self.stride as i64;
        Ok(())
    }
}

/// A page selection on the device (`[batch, heads_kv, stride]` logical page indices,
/// ascending, with counts and the page count each sequence had), with its host description;
/// immutable. Made by [`PageSelector::select`] on the GPU or [`PageSelection::from_lists`].
pub struct PageSelection {
    info: SelectionInfo,
    index: CudaSlice<i32>,
    counts: CudaSlice<i32>,
    covers: CudaSlice<i32>,
}

impl PageSelection {
    /// A selection from caller-given page lists (see [`SelectionInfo::from_lists`]).
    pub fn from_lists(
        rt: &Runtime,
        table: &DevicePageTable,
        heads_kv: usize,
        lists: &[Vec<usize>],
    ) -> Result<Self> {
        let info = SelectionInfo::from_lists(table.host(), heads_kv, lists)?;
        let mut flat = vec![0i32; lists.len() * info.stride];
        for (i, list) in lists.iter().enumerate() {
            for (j, &p) in list.iter().enumerate() {
                flat[i * info.stride + j] = p as i32;
            }
        }
        let s = rt.stream();
        let index = s
            .clone_htod(&flat)
            .while_(|| "uploading the page lists".into())?;
        let counts: Vec<i32> = info.counts.iter().map(|&c| c as i32).collect();
        let covers: Vec<i32> = info.covers.iter().map(|&c| c as i32).collect();
        Ok(PageSelection {
            counts: s
                .clone_htod(&counts)
                .while_(|| "uploading the selection counts".into())?,
            covers: s
                .clone_htod(&covers)
                .while_(|| "uploading the selection extents".into())?,
            index,
            info,
        })
    }

    pub fn info(&self) -> &SelectionInfo {
        &self.info
    }

    pub(crate) fn buffers(&self) -> (&CudaSlice<i32>, &CudaSlice<i32>, &CudaSlice<i32>) {
        (&self.index, &self.counts, &self.covers)
    }

    pub(crate) fn check_table(&self, table: &DevicePageTable) -> Result<()> {
        let mut scratch = DecodeParams::default();
        self.info
            .check_for(table.host(), self.info.heads_kv, &mut scratch)
    }

    /// Copies the page lists back (synchronises): `lists[b * heads_kv + h]`, ascending.
    pub fn download(&self, rt: &Runtime) -> Result<Vec<Vec<usize>>> {
        let flat: Vec<i32> = rt
            .stream()
            .clone_dtoh(&self.index)
            .while_(|| "downloading the page selection".into())?;
        Ok(self
            .info
            .counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                flat[i * self.info.stride..i * self.info.stride + c]
                    .iter()
                    .map(|&p| p as usize)
                    .collect()
            })
            .collect())
    }
}

/// The page selector's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectorConfig {
    /// Tokens kept per (sequence, kv head); LServe: 4096. `budget / page_size` pages.
    pub budget: usize,
    /// Leading pages always kept (the attention sink).
    pub sink_pages: usize,
    /// Decode steps a selection is reused for before [`PageSelector::refresh`] recomputes it
    /// (LServe: 4).
    pub refresh_every: usize,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            budget: 4096,
            sink_pages: 1,
            refresh_every: 4,
        }
    }
}

/// The selector's kernel parameters (`SelectorParams` of `templates/decode/select.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct SelectorParams {
    q: u64,
    k_max: u64,
    k_min: u64,
    block_table: u64,
    seq_lens: u64,
    scores: u64,
    sel_index: u64,
    sel_count: u64,
    sel_covers: u64,
    q_batch_stride: i64,
    q_head_stride: i64,
    q_row_stride: i64,
    table_stride: i64,
    score_stride: i64,
    sel_stride: i64,
    batch: i32,
    heads_q: i32,
    heads_kv: i32,
    q_len: i32,
    page_size: i32,
    sink_pages: i32,
    keep_pages: i32,
    unused: i32,
}

// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl cudarc::driver::DeviceRepr for SelectorParams {}

/// Makes page selections on the GPU; counts the decode steps since the last one so that the
/// engine can reuse a selection for `refresh_every` steps ([`refresh`](Self::refresh)), or
/// call [`select`](Self::select) whenever it chooses.
#[derive(Clone, Debug)]
pub struct PageSelector {
    config: SelectorConfig,
    steps_since: Option<usize>,
}

impl PageSelector {
    pub fn new(config: SelectorConfig) -> Result<Self> {
        if config.budget == 0 {
            return Err(invalid("budget", "must be at least one page of tokens"));
        }
        if config.refresh_every == 0 {
            return Err(invalid("refresh_every", "must be at least 1"));
        }
        if config.budget > i32::MAX as usize || config.sink_pages > i32::MAX as usize {
            return Err(invalid("budget", "budget and sink pages must fit in i32"));
        }
        Ok(PageSelector {
            config,
            steps_since: None,
        })
    }

    pub fn config(&self) -> &SelectorConfig {
        &self.config
    }

    /// Pages kept per (sequence, kv head) for a page size, checked against the forced pages.
    pub fn budget_pages(&self, page_size: usize) -> Result<usize> {
        let pages = self.config.budget / page_size;
        if pages < self.config.sink_pages + 1 {
            return Err(invalid(
                "budget",
                format!(
                    "{} tokens are {pages} pages of {page_size}; the {} sink pages and the newest page need {}",
                    self.config.budget,
                    self.config.sink_pages,
                    self.config.sink_pages + 1
                ),
            ));
        }
        Ok(pages)
    }

    /// One decode step: returns a fresh selection when none is given or the given one has
    /// served `refresh_every` steps, else `None` (keep using the current one).
    pub fn refresh<T: Element>(
        &mut self,
        rt: &Runtime,
        cache: &PagedKvCache,
        table: &DevicePageTable,
        q: Tensor<'_, T>,
        current: Option<&PageSelection>,
    ) -> Result<Option<PageSelection>> {
        let due = match (current, self.steps_since) {
            (None, _) | (_, None) => true,
            (Some(_), Some(n)) => n + 1 >= self.config.refresh_every,
        };
        if due {
            let sel = self.select(rt, cache, table, q)?;
            self.steps_since = Some(0);
            Ok(Some(sel))
        } else {
            self.steps_since = self.steps_since.map(|n| n + 1);
            Ok(None)
        }
    }

    /// Scores the pages of every (sequence, kv head) of `table` with the queries `q`
    /// (`[batch, heads_q, q_len, head_dim]`, as the decode's) and keeps the best.
    pub fn select<T: Element>(
        &self,
        rt: &Runtime,
        cache: &PagedKvCache,
        table: &DevicePageTable,
        q: Tensor<'_, T>,
    ) -> Result<PageSelection> {
        let c = *cache.config();
        table.check_for(&c)?;
        let host = table.host();
        let keep = self.budget_pages(c.page_size)?;
        if T::DTYPE != c.dtype {
            return Err(invalid(
                "q",
                format!("is {}, the cache serves {}", T::DTYPE, c.dtype),
            ));
        }
        let l = q.layout;
        if l.batch != host.batch() || l.dim != c.head_dim || l.strides[3] != 1 {
            return Err(invalid(
                "q",
                format!(
                    "must be [batch {}, heads_q, q_len, {}] with a contiguous head dim",
                    host.batch(),
                    c.head_dim
                ),
            ));
        }
        if l.seq == 0 || l.seq > MAX_Q_LEN {
            return Err(invalid(
                "q",
                format!("q_len is {}; allowed: 1 ..= {MAX_Q_LEN}", l.seq),
            ));
        }
        if l.heads == 0
            || !l.heads.is_multiple_of(c.heads_kv)
            || l.heads / c.heads_kv * l.seq > 64
            || l.heads > 65_535
        {
            return Err(invalid(
                "q",
                format!(
                    "{} heads: must be a multiple of heads_kv = {} with (hq / hkv) * q_len <= 64",
                    l.heads, c.heads_kv
                ),
            ));
        }
        // The scorer reads Q in 16-byte vectors, as the decode kernel does.
        check_qo("q", &l, q.data.len(), c.head_dim)?;
        if (0..host.batch()).any(|b| host.seq_len(b) == 0) {
            return Err(invalid(
                "table",
                "every sequence needs at least one token to select from",
            ));
        }
        let info = SelectionInfo::for_selector(host, c.heads_kv, keep);
        let (batch, rows) = (host.batch(), host.batch() * c.heads_kv);
        let max_used = (0..batch).map(|b| host.used_pages(b)).max().unwrap_or(1);
        // The scorer's CTAs each cover a run of logical pages (16 tokens) of one (sequence,
        // kv head).
        let per_cta = score_logical_per_cta(c.head_dim as u32) as usize;
        let chunks = (max_used * (c.page_size / 16)).div_ceil(per_cta);
        if chunks > 65_535 || batch > 65_535 || c.heads_kv > 65_535 {
            return Err(invalid(
                "table",
                format!(
                    "{max_used} pages per sequence, batch {batch}: the selector's grid allows \
                     {} pages of {} and a batch of 65535",
                    65_535 * per_cta / (c.page_size / 16),
                    c.page_size
                ),
            ));
        }
        let s = rt.stream();
        // Every score, index entry, count and extent that is used is written by the kernels
        // below first: no clearing, no upload. (The selected decode's page prefetch loads list
        // entries past a row's count without using them; `compute-sanitizer --tool initcheck`
        // reports those loads.)
        // SAFETY (each alloc): plain f32/i32 device memory, uninitialised until written.
        let mut scores = unsafe { s.alloc::<f32>(rows * max_used) }
            .while_(|| "allocating the page scores".into())?;
        let alloc = |len: usize| {
            unsafe { s.alloc::<i32>(len) }.while_(|| "allocating the page selection".into())
        };
        let (mut index, mut counts, mut covers) =
            (alloc(rows * info.stride)?, alloc(rows)?, alloc(batch)?);
        {
            let (qp, _g0) = q.data.device_ptr(s);
            if qp % 16 != 0 {
                return Err(invalid(
                    "q",
                    format!("base address {qp:#x} is not 16-byte aligned"),
                ));
            }
            let (kmax, _g1) = cache.k_max().device_ptr(s);
            let (kmin, _g2) = cache.k_min().device_ptr(s);
            let (bt, _g3) = table.table().device_ptr(s);
            let (lens, _g4) = table.lens().device_ptr(s);
            let (sc, _g5) = scores.device_ptr_mut(s);
            let (ix, _g6) = index.device_ptr_mut(s);
            let (cn, _g7) = counts.device_ptr_mut(s);
            let (cv, _g8) = covers.device_ptr_mut(s);
            let params = SelectorParams {
                q: qp,
                k_max: kmax,
                k_min: kmin,
                block_table: bt,
                seq_lens: lens,
                scores: sc,
                sel_index: ix,
                sel_count: cn,
                sel_covers: cv,
                q_batch_stride: l.strides[0] as i64,
                q_head_stride: l.strides[2] as i64,
                q_row_stride: l.strides[1] as i64,
                table_stride: host.max_pages() as i64,
                score_stride: max_used as i64,
                sel_stride: info.stride as i64,
                batch: batch as i32,
                heads_q: l.heads as i32,
                heads_kv: c.heads_kv as i32,
                q_len: l.seq as i32,
                page_size: c.page_size as i32,
                sink_pages: self.config.sink_pages as i32,
                keep_pages: keep as i32,
                unused: 0,
            };
            let module = DecodeModule::Selector(c.dtype, c.head_dim as u32);
            let score = decode_function(rt, module, "fg_decode_page_scores")?;
            // The kv heads along x: CTAs launched together read the same pages' statistics
            // for every head (adjacent in memory).
            let cfg = LaunchConfig {
                grid_dim: (c.heads_kv as u32, chunks as u32, batch as u32),
                block_dim: (SCORE_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut launch = s.launch_builder(&score);
            launch.arg(&params);
            // SAFETY: q was checked against its layout; the table's pages against the pool
            // (and so the statistics); scores hold every row at their stride.
            unsafe { launch.launch(cfg) }.while_(|| "launching fg_decode_page_scores".into())?;
            let select = decode_function(rt, module, "fg_decode_page_select")?;
            let cfg = LaunchConfig {
                grid_dim: (c.heads_kv as u32, batch as u32, 1),
                block_dim: (SELECT_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: each (sequence, kv head) CTA reads its n <= max_used scores and writes
            // min(n, keep) <= stride index entries, its count and (kv head 0) its extent; the
            // kernel waits for the scorer before it reads the scores.
            unsafe {
                if dependent_launch_supported(rt.info()) {
                    let mut arg = &params as *const SelectorParams as *mut c_void;
                    launch_dependent(s, &select, cfg, std::slice::from_mut(&mut arg))
                } else {
                    s.launch_builder(&select).arg(&params).launch(cfg).map(drop)
                }
            }
            .while_(|| "launching fg_decode_page_select".into())?;
        }
        Ok(PageSelection {
            info,
            index,
            counts,
            covers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::cache::KvCacheConfig;
    use flashgen_codegen::{DType, KvDtype, KvDtypes};

    fn table() -> PageTable {
        let c = KvCacheConfig {
            num_pages: 32,
            page_size: 32,
            heads_kv: 2,
            head_dim: 64,
            dtype: DType::Bf16,
            kv_dtype: KvDtypes::same(KvDtype::Bf16),
        };
        PageTable::new(&c, &[vec![0, 1, 2, 3], vec![4, 5]], &[100, 40]).unwrap()
    }

    #[test]
    fn page_lists_are_checked() {
        let t = table();
        let ok = vec![vec![0, 3], vec![1, 2, 3], vec![1], vec![0, 1]];
        let info = SelectionInfo::from_lists(&t, 2, &ok).unwrap();
        assert_eq!(info.count(0, 1), 3);
        assert_eq!(info.covers(1), 2);
        for (lists, needle) in [
            (vec![vec![3]], "lists"),
            (vec![vec![0, 2], vec![3], vec![1], vec![1]], "newest page 3"),
            (vec![vec![3, 3], vec![3], vec![1], vec![1]], "ascending"),
            (vec![vec![0, 4], vec![3], vec![1], vec![1]], "newest page 3"),
            (vec![vec![], vec![3], vec![1], vec![1]], "newest"),
        ] {
            let e = SelectionInfo::from_lists(&t, 2, &lists)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{lists:?}: {e}");
        }
        // A longer table is fine, a shorter one is not.
        let mut p = DecodeParams::default();
        info.check_for(&t, 2, &mut p).unwrap();
        assert!(info.check_for(&t, 1, &mut p).is_err());
        let c = KvCacheConfig {
            num_pages: 32,
            page_size: 32,
            heads_kv: 2,
            head_dim: 64,
            dtype: DType::Bf16,
            kv_dtype: KvDtypes::same(KvDtype::Bf16),
        };
        let shorter = PageTable::new(&c, &[vec![0, 1, 2, 3], vec![4, 5]], &[100, 20]).unwrap();
        assert!(info
            .check_for(&shorter, 2, &mut p)
            .unwrap_err()
            .to_string()
            .contains("had 2 pages"));
    }

    /// The struct mirrors `SelectorParams` of templates/decode/select.cu: 9 pointers, 6 i64,
    /// 8 i32, in that order.
    #[test]
    fn params_match_the_kernel_struct() {
        use std::mem::{offset_of, size_of};
        assert_eq!(offset_of!(SelectorParams, sel_covers), 8 * 8);
        assert_eq!(offset_of!(SelectorParams, q_batch_stride), 9 * 8);
        assert_eq!(offset_of!(SelectorParams, batch), 15 * 8);
        assert_eq!(offset_of!(SelectorParams, keep_pages), 15 * 8 + 6 * 4);
        assert_eq!(size_of::<SelectorParams>(), 15 * 8 + 8 * 4);
        let code = flashgen_codegen::decode::render_selector(flashgen_codegen::DType::Bf16, 128)
            .unwrap()
            .code;
        let fields = code
            .split("struct SelectorParams {")
            .nth(1)
            .and_then(|rest| rest.split("};").next())
            .expect("the kernel declares SelectorParams");
        assert!(fields.contains("int* sel_count;") && fields.contains("int* sel_covers;"));
        assert_eq!(fields.matches('*').count(), 9, "{fields}");
    }

    #[test]
    fn selector_settings_are_checked() {
        assert!(PageSelector::new(SelectorConfig {
            budget: 0,
            ..Default::default()
        })
        .is_err());
        assert!(PageSelector::new(SelectorConfig {
            refresh_every: 0,
            ..Default::default()
        })
        .is_err());
        let s = PageSelector::new(SelectorConfig {
            budget: 128,
            sink_pages: 1,
            refresh_every: 4,
        })
        .unwrap();
        assert_eq!(s.budget_pages(64).unwrap(), 2);
        assert!(s
            .budget_pages(128)
            .unwrap_err()
            .to_string()
            .contains("need 2"));
        let info = SelectionInfo::for_selector(&table(), 2, 2);
        assert_eq!(info.count(0, 0), 2);
        assert_eq!(info.count(1, 1), 2);
        assert_eq!(info.last_page(0, 1), Some(3));
    }
}
