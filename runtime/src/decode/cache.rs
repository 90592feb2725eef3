//! The paged KV cache: K and V pools `[pages, page_size, heads_kv, head_dim]` of 16-bit values
//! or quantized codes, the per-token scales and zero points or per-head scales of quantized
//! pools, the per-channel key max and min of every logical page (16 tokens) beside them, page
//! tables, a simple page allocator, and the append kernel's host side.
//!
//! Index data the kernels read (page tables, appended-token counts) is validated and uploaded
//! in one call and kept, with its host copy, in a value with private fields that is never
//! changed afterwards, so the host checks describe exactly what the kernels read.

use super::kernels::{decode_function, DecodeModule};
use crate::error::{invalid, DriverContext, Result};
use crate::plan::check_buffer_len;
use crate::runtime::{Element, Runtime, Tensor};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use flashgen_codegen::decode::{APPEND_THREADS, LOGICAL_PAGE, PAGE_SIZES};
use flashgen_codegen::{DType, KvDtype, KvDtypes, KvScaling};
use std::sync::atomic::{AtomicU64, Ordering};

/// The shape of a paged KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCacheConfig {
    /// Physical pages in each pool.
    pub num_pages: usize,
    /// Tokens per page: 16, 32, 64 or 128.
    pub page_size: usize,
    pub heads_kv: usize,
    /// 64, 128 or 256.
    pub head_dim: usize,
    /// The element type of the queries the cache serves, of the appended K and V and of the
    /// page statistics.
    pub dtype: DType,
    /// The K and V pools' storage formats (16-bit: `dtype` itself; or quantized).
    pub kv_dtype: KvDtypes,
}

impl KvCacheConfig {
    /// A cache storing K and V as `dtype` values.
    pub fn new(
        num_pages: usize,
        page_size: usize,
        heads_kv: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Self {
        KvCacheConfig {
            num_pages,
            page_size,
            heads_kv,
            head_dim,
            dtype,
            kv_dtype: KvDtypes::same(KvDtype::of(dtype)),
        }
    }

    /// The same cache with K and V in `kv` (e.g. `KvDtypes::same(KvDtype::Int8Token)`).
    pub fn with_kv(mut self, kv: KvDtypes) -> Self {
        self.kv_dtype = kv;
        self
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        for (name, kv) in [
            ("kv_dtype.k", self.kv_dtype.k),
            ("kv_dtype.v", self.kv_dtype.v),
        ] {
            if !kv.serves(self.dtype) {
                return Err(invalid(
                    name,
                    format!(
                        "is {kv}; a cache of {} queries stores {} or a quantized format (int8, int8tok, int4tok, fp8)",
                        self.dtype,
                        KvDtype::of(self.dtype)
                    ),
                ));
            }
        }
        if !PAGE_SIZES.contains(&(self.page_size as u32)) {
            return Err(invalid(
                "page_size",
                format!("is {}; allowed: 16, 32, 64, 128", self.page_size),
            ));
        }
        if !flashgen_codegen::decode::DECODE_HEAD_DIMS.contains(&(self.head_dim as u32)) {
            return Err(invalid(
                "head_dim",
                format!("is {}; allowed: 64, 128, 256", self.head_dim),
            ));
        }
        if self.heads_kv == 0 || self.heads_kv > 65_535 {
            return Err(invalid(
                "heads_kv",
                format!("is {}; allowed: 1 ..= 65535", self.heads_kv),
            ));
        }
        if self.num_pages == 0 || self.num_pages > i32::MAX as usize {
            return Err(invalid(
                "num_pages",
                format!("is {}; allowed: 1 ..= {}", self.num_pages, i32::MAX),
            ));
        }
        self.pool_elements()
            .and_then(|n| n.checked_mul(2))
            .ok_or_else(|| invalid("num_pages", "the pools' size overflows"))?;
        Ok(())
    }

    /// Bytes of one pool of format `kv`.
    pub fn pool_bytes(&self, kv: KvDtype) -> usize {
        self.num_pages * self.page_size * self.heads_kv * kv.row_bytes(self.head_dim)
    }

    /// Bytes of one token's row of one kv head in a pool of format `kv`.
    pub fn row_bytes(&self, kv: KvDtype) -> usize {
        kv.row_bytes(self.head_dim)
    }

    /// Index of the (scale, zero) pair of token `slot` of page `page`, kv head `h`, in a
    /// per-token parameter array (`[pages, heads_kv, page_size]` pairs of f32).
    pub fn param_index(&self, page: usize, slot: usize, h: usize) -> usize {
        (page * self.heads_kv + h) * self.page_size + slot
    }

    /// Logical pages (16 tokens) per physical page.
    pub fn logical_per_page(&self) -> usize {
        self.page_size / LOGICAL_PAGE as usize
    }

    /// Elements of one pool.
    pub fn pool_elements(&self) -> Option<usize> {
        self.num_pages
            .checked_mul(self.page_size)?
            .checked_mul(self.heads_kv)?
            .checked_mul(self.head_dim)
    }

    /// Elements of one statistics array (`[pages, page_size / 16, heads_kv, head_dim]`).
    pub fn stats_elements(&self) -> usize {
        self.num_pages * self.logical_per_page() * self.heads_kv * self.head_dim
    }

    /// Row index of token `slot` of physical page `page`, kv head `h`, in a pool (its byte
    /// offset is this times [`row_bytes`](Self::row_bytes)).
    pub fn token_row(&self, page: usize, slot: usize, h: usize) -> usize {
        (page * self.page_size + slot) * self.heads_kv + h
    }

    /// Element offset of logical page `logical` of physical page `page`, kv head `h`, in a
    /// statistics array.
    pub fn stats_offset(&self, page: usize, logical: usize, h: usize) -> usize {
        ((page * self.logical_per_page() + logical) * self.heads_kv + h) * self.head_dim
    }
}

/// Per-head scales of the K and V pools of the per-head formats (int8, fp8), fixed when the
/// cache is made (static calibration): `x` is stored as `q(x / s)` and read as `s * code`.
/// Each list is empty for a pool that takes no scale, one value (per tensor: every kv head) or
/// one per kv head; every scale positive and finite.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvScales {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

impl KvScales {
    /// One scale for all K and one for all V (per tensor).
    pub fn per_tensor(k: f32, v: f32) -> Self {
        KvScales {
            k: vec![k],
            v: vec![v],
        }
    }

    /// Checks the scales against the formats and returns them per kv head.
    pub fn per_head(&self, config: &KvCacheConfig) -> Result<(Vec<f32>, Vec<f32>)> {
        let check = |name: &'static str, kv: KvDtype, s: &[f32]| -> Result<Vec<f32>> {
            let needs = kv.scaling() == KvScaling::PerHead;
            if !needs {
                if !s.is_empty() {
                    return Err(invalid(
                        name,
                        format!("has {} scales; the {kv} pool takes none", s.len()),
                    ));
                }
                return Ok(Vec::new());
            }
            if s.is_empty() {
                return Err(invalid(
                    name,
                    format!("is missing: the {kv} pool needs one scale (per tensor) or one per kv head ({})", config.heads_kv),
                ));
            }
            if s.len() != 1 && s.len() != config.heads_kv {
                return Err(invalid(
                    name,
                    format!(
                        "has {} scales; the {kv} pool needs 1 (per tensor) or {} (per kv head)",
                        s.len(),
                        config.heads_kv
                    ),
                ));
            }
            if let Some(bad) = s.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                return Err(invalid(
                    name,
                    format!("holds {bad}; scales must be positive and finite"),
                ));
            }
            Ok(if s.len() == 1 {
                vec![s[0]; config.heads_kv]
            } else {
                s.to_vec()
            })
        };
        Ok((
            check("scales.k", config.kv_dtype.k, &self.k)?,
            check("scales.v", config.kv_dtype.v, &self.v)?,
        ))
    }
}

/// One pool on the device: codes (or 16-bit values) as bytes, and the per-token (scale, zero)
/// pairs or per-head scales of its format.
struct Pool {
    data: CudaSlice<u8>,
    /// Per-token formats: `[pages, heads_kv, page_size]` pairs (scale, zero).
    params: Option<CudaSlice<f32>>,
    /// Per-head formats: `[heads_kv]`, with the host copy.
    scales: Option<(CudaSlice<f32>, Vec<f32>)>,
}

/// The pools and page statistics on the device. Pools are bytes in their format (16-bit
/// values, int8 / fp8 codes, or int4 codes two a byte, see `flashgen_reference::quant`); the
/// statistics are 16-bit words of the cache's `dtype`.
pub struct PagedKvCache {
    config: KvCacheConfig,
    k: Pool,
    v: Pool,
    k_max: CudaSlice<u16>,
    k_min: CudaSlice<u16>,
}

impl PagedKvCache {
    /// Allocates zeroed pools and statistics. A pool of a per-head format (int8, fp8) needs
    /// its scales: use [`with_scales`](Self::with_scales).
    pub fn new(rt: &Runtime, config: KvCacheConfig) -> Result<Self> {
        Self::with_scales(rt, config, &KvScales::default())
    }

    /// Allocates zeroed pools and statistics, with the per-head scales of int8 and fp8 pools.
    pub fn with_scales(rt: &Runtime, config: KvCacheConfig, scales: &KvScales) -> Result<Self> {
        config.validate()?;
        let (ks, vs) = scales.per_head(&config)?;
        let s = rt.stream();
        let pool = |kv: KvDtype, host_scales: Vec<f32>, what: &str| -> Result<Pool> {
            let data = s
                .alloc_zeros::<u8>(config.pool_bytes(kv).max(16))
                .while_(|| format!("allocating the {what} pool"))?;
            let params = if kv.scaling() == KvScaling::PerToken {
                let n = 2 * config.num_pages * config.heads_kv * config.page_size;
                Some(
                    s.alloc_zeros::<f32>(n.max(4))
                        .while_(|| format!("allocating the {what} scales"))?,
                )
            } else {
                None
            };
            let scales = if host_scales.is_empty() {
                None
            } else {
                let dev = s
                    .clone_htod(&host_scales)
                    .while_(|| format!("uploading the {what} scales"))?;
                Some((dev, host_scales))
            };
            Ok(Pool {
                data,
                params,
                scales,
            })
        };
        let alloc = |n: usize, what: &str| {
            s.alloc_zeros::<u16>(n.max(1))
                .while_(|| format!("allocating the {what}"))
        };
        Ok(PagedKvCache {
            config,
            k: pool(config.kv_dtype.k, ks, "K")?,
            v: pool(config.kv_dtype.v, vs, "V")?,
            k_max: alloc(config.stats_elements(), "key max statistics")?,
            k_min: alloc(config.stats_elements(), "key min statistics")?,
        })
    }

    pub fn config(&self) -> &KvCacheConfig {
        &self.config
    }

    /// The K pool's bytes, `[pages, page_size, heads_kv, row_bytes]`.
    pub fn k_pool(&self) -> &CudaSlice<u8> {
        &self.k.data
    }

    pub fn v_pool(&self) -> &CudaSlice<u8> {
        &self.v.data
    }

    /// Per-token formats: the K pool's (scale, zero) pairs, `[pages, heads_kv, page_size, 2]`.
    pub fn k_params(&self) -> Option<&CudaSlice<f32>> {
        self.k.params.as_ref()
    }

    pub fn v_params(&self) -> Option<&CudaSlice<f32>> {
        self.v.params.as_ref()
    }

    /// Per-head formats: the K pool's scale of each kv head.
    pub fn k_scales(&self) -> &[f32] {
        self.k.scales.as_ref().map_or(&[], |s| &s.1)
    }

    pub fn v_scales(&self) -> &[f32] {
        self.v.scales.as_ref().map_or(&[], |s| &s.1)
    }

    pub(crate) fn k_scales_dev(&self) -> Option<&CudaSlice<f32>> {
        self.k.scales.as_ref().map(|s| &s.0)
    }

    pub(crate) fn v_scales_dev(&self) -> Option<&CudaSlice<f32>> {
        self.v.scales.as_ref().map(|s| &s.0)
    }

    /// Per-channel key max of each logical page, `[pages, page_size / 16, heads_kv, head_dim]`,
    /// of the values the cache returns (dequantized), rounded up to `dtype`.
    pub fn k_max(&self) -> &CudaSlice<u16> {
        &self.k_max
    }

    /// As [`k_max`](Self::k_max), the min rounded down.
    pub fn k_min(&self) -> &CudaSlice<u16> {
        &self.k_min
    }

    /// Writes new tokens' K and V into their pages (quantizing them for quantized pools) and
    /// updates the touched logical pages' key statistics, in one kernel. `k_new` and `v_new`
    /// are packed `[tokens, heads_kv, head_dim]` of the cache's `dtype` (`Layout::packed`, any
    /// row and head strides), sequence by sequence as `append` counts them; `append` must have
    /// been made for `table`, whose lengths include the new tokens.
    pub fn append<T: Element>(
        &mut self,
        rt: &Runtime,
        table: &DevicePageTable,
        append: &DeviceAppend,
        k_new: Tensor<'_, T>,
        v_new: Tensor<'_, T>,
    ) -> Result<()> {
        let c = self.config;
        table.check_for(&c)?;
        if append.table_id != table.id {
            return Err(invalid(
                "append",
                "was made for another page table; make it from the table passed here",
            ));
        }
        if T::DTYPE != c.dtype {
            return Err(invalid(
                "k_new",
                format!("is {}, the cache takes {}", T::DTYPE, c.dtype),
            ));
        }
        let tokens = append.total;
        for (name, t) in [("k_new", &k_new), ("v_new", &v_new)] {
            check_packed(name, t.layout, t.data.len(), tokens, c.heads_kv, c.head_dim)?;
        }
        if tokens == 0 {
            return Ok(());
        }
        let s = rt.stream();
        let (k_ptr, _gk) = k_new.data.device_ptr(s);
        let (v_ptr, _gv) = v_new.data.device_ptr(s);
        for (name, ptr) in [("k_new", k_ptr), ("v_new", v_ptr)] {
            if ptr % 16 != 0 {
                return Err(invalid(
                    name,
                    format!("base address {ptr:#x} is not 16-byte aligned"),
                ));
            }
        }
        let (kp, _g1) = self.k.data.device_ptr_mut(s);
        let (vp, _g2) = self.v.data.device_ptr_mut(s);
        let (kmax, _g3) = self.k_max.device_ptr_mut(s);
        let (kmin, _g4) = self.k_min.device_ptr_mut(s);
        let (bt, _g5) = table.table.device_ptr(s);
        let (lens, _g6) = table.lens.device_ptr(s);
        let (cu, _g7) = append.cu_new.device_ptr(s);
        let (k_params, _g8) = opt_ptr(s, self.k.params.as_mut());
        let (v_params, _g9) = opt_ptr(s, self.v.params.as_mut());
        let (k_scale, _g10) = opt_ptr(s, self.k.scales.as_mut().map(|x| &mut x.0));
        let (v_scale, _g11) = opt_ptr(s, self.v.scales.as_mut().map(|x| &mut x.0));
        let params = AppendParams {
            k_new: k_ptr,
            v_new: v_ptr,
            k_pool: kp,
            v_pool: vp,
            k_max: kmax,
            k_min: kmin,
            k_params,
            v_params,
            k_scale,
            v_scale,
            block_table: bt,
            seq_lens: lens,
            cu_new: cu,
            k_row_stride: k_new.layout.strides[1] as i64,
            k_head_stride: k_new.layout.strides[2] as i64,
            v_row_stride: v_new.layout.strides[1] as i64,
            v_head_stride: v_new.layout.strides[2] as i64,
            table_stride: table.host.max_pages as i64,
            heads_kv: c.heads_kv as i32,
            head_dim: c.head_dim as i32,
            page_size: c.page_size as i32,
            unused: 0,
        };
        let f = decode_function(
            rt,
            DecodeModule::Append(c.dtype, c.kv_dtype),
            "fg_decode_append",
        )?;
        let cfg = LaunchConfig {
            grid_dim: (
                append.max_logical_span as u32,
                c.heads_kv as u32,
                table.host.batch() as u32,
            ),
            block_dim: (APPEND_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = s.launch_builder(&f);
        launch.arg(&params);
        // SAFETY: every pointer comes from a live buffer checked above against what the kernel
        // addresses: the new rows against their layouts and `append`'s counts, the pages
        // through the table (validated against this cache's page count), the statistics and
        // per-token parameters through the same pages, the per-head scales hold heads_kv
        // values (KvScales::per_head); the guards order the launch on the stream.
        unsafe { launch.launch(cfg) }.while_(|| "launching fg_decode_append".into())?;
        Ok(())
    }
}

/// The address of an optional buffer (0 when absent) and its stream guard.
fn opt_ptr<'a>(
    s: &'a std::sync::Arc<cudarc::driver::CudaStream>,
    x: Option<&'a mut CudaSlice<f32>>,
) -> (u64, Option<cudarc::driver::SyncOnDrop<'a>>) {
    match x {
        Some(x) => {
            let (p, g) = x.device_ptr_mut(s);
            (p, Some(g))
        }
        None => (0, None),
    }
}

/// Checks a packed `[tokens, heads, dim]` tensor of new tokens.
fn check_packed(
    name: &'static str,
    l: crate::layout::Layout,
    len: usize,
    tokens: usize,
    heads: usize,
    dim: usize,
) -> Result<()> {
    if l.batch != 1 || l.seq != tokens || l.heads != heads || l.dim != dim {
        return Err(invalid(
            name,
            format!(
                "has shape [{}, {}, {}, {}]; expected packed [1, {tokens}, {heads}, {dim}] (the appended tokens)",
                l.batch, l.seq, l.heads, l.dim
            ),
        ));
    }
    if l.strides[3] != 1 {
        return Err(invalid(name, "the head dim must be contiguous"));
    }
    if (tokens > 1 && !l.strides[1].is_multiple_of(8))
        || (heads > 1 && !l.strides[2].is_multiple_of(8))
    {
        return Err(invalid(
            name,
            "row and head strides must be multiples of 8 elements (16-byte copies)",
        ));
    }
    check_buffer_len(name, len, &l)
}

/// The append kernel's parameters (`AppendParams` of `templates/decode/append.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AppendParams {
    k_new: u64,
    v_new: u64,
    k_pool: u64,
    v_pool: u64,
    k_max: u64,
    k_min: u64,
    k_params: u64,
    v_params: u64,
    k_scale: u64,
    v_scale: u64,
    block_table: u64,
    seq_lens: u64,
    cu_new: u64,
    k_row_stride: i64,
    k_head_stride: i64,
    v_row_stride: i64,
    v_head_stride: i64,
    table_stride: i64,
    heads_kv: i32,
    head_dim: i32,
    page_size: i32,
    unused: i32,
}

// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl cudarc::driver::DeviceRepr for AppendParams {}

/// A batch's page tables and sequence lengths on the host, validated against a cache shape.
/// Sequence `b` holds `seq_len(b)` tokens; token `t` lives in physical page
/// `pages(b)[t / page_size]` at slot `t % page_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageTable {
    page_size: usize,
    num_pages: usize,
    max_pages: usize,
    /// `[batch, max_pages]`, rows padded with -1 (never read).
    entries: Vec<i32>,
    seq_lens: Vec<i32>,
}

impl PageTable {
    /// Validates the rows (physical page ids, one per `page_size` tokens) and lengths against
    /// the cache shape: every page id below `num_pages`, enough pages for each length. Rows may
    /// hold more pages than their length needs, and may share pages (e.g. a common prefix).
    pub fn new(config: &KvCacheConfig, rows: &[Vec<u32>], seq_lens: &[usize]) -> Result<Self> {
        config.validate()?;
        if rows.is_empty() {
            return Err(invalid("rows", "the batch is empty"));
        }
        if rows.len() != seq_lens.len() {
            return Err(invalid(
                "seq_lens",
                format!("has {} entries for {} rows", seq_lens.len(), rows.len()),
            ));
        }
        if rows.len() > 65_535 {
            return Err(invalid("rows", format!("batch {} > 65535", rows.len())));
        }
        let max_pages = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        if max_pages > i32::MAX as usize {
            return Err(invalid("rows", "a row is longer than i32::MAX pages"));
        }
        let mut entries = vec![-1i32; rows.len() * max_pages];
        let mut lens = Vec::with_capacity(rows.len());
        for (b, (row, &len)) in rows.iter().zip(seq_lens).enumerate() {
            let need = len.div_ceil(config.page_size);
            if need > row.len() {
                return Err(invalid(
                    "seq_lens",
                    format!(
                        "sequence {b} has {len} tokens, which need {need} pages of {}; its row has {}",
                        config.page_size,
                        row.len()
                    ),
                ));
            }
            if len > i32::MAX as usize {
                return Err(invalid(
                    "seq_lens",
                    format!("sequence {b}: {len} > i32::MAX"),
                ));
            }
            for (i, &page) in row.iter().enumerate() {
                if page as usize >= config.num_pages {
                    return Err(invalid(
                        "rows",
                        format!(
                            "sequence {b}, page {i}: id {page} is out of range (the pool has {} pages)",
                            config.num_pages
                        ),
                    ));
                }
                entries[b * max_pages + i] = page as i32;
            }
            lens.push(len as i32);
        }
        Ok(PageTable {
            page_size: config.page_size,
            num_pages: config.num_pages,
            max_pages,
            entries,
            seq_lens: lens,
        })
    }

    pub fn batch(&self) -> usize {
        self.seq_lens.len()
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Entries per row.
    pub fn max_pages(&self) -> usize {
        self.max_pages
    }

    pub fn seq_len(&self, b: usize) -> usize {
        self.seq_lens[b] as usize
    }

    pub fn seq_lens(&self) -> Vec<usize> {
        self.seq_lens.iter().map(|&l| l as usize).collect()
    }

    /// Pages sequence `b` uses: `ceil(seq_len / page_size)`.
    pub fn used_pages(&self, b: usize) -> usize {
        self.seq_len(b).div_ceil(self.page_size)
    }

    /// The physical ids of the pages sequence `b` uses.
    pub fn pages(&self, b: usize) -> Vec<usize> {
        self.entries[b * self.max_pages..b * self.max_pages + self.used_pages(b)]
            .iter()
            .map(|&p| p as usize)
            .collect()
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A [`PageTable`] on the device, with its host copy; immutable.
pub struct DevicePageTable {
    id: u64,
    host: PageTable,
    table: CudaSlice<i32>,
    lens: CudaSlice<i32>,
}

impl DevicePageTable {
    /// Validates (as [`PageTable::new`]) and uploads a batch's page tables and lengths.
    pub fn new(
        rt: &Runtime,
        config: &KvCacheConfig,
        rows: &[Vec<u32>],
        seq_lens: &[usize],
    ) -> Result<Self> {
        let host = PageTable::new(config, rows, seq_lens)?;
        let s = rt.stream();
        Ok(DevicePageTable {
            id: next_id(),
            table: s
                .clone_htod(&host.entries)
                .while_(|| "uploading the page table".into())?,
            lens: s
                .clone_htod(&host.seq_lens)
                .while_(|| "uploading the sequence lengths".into())?,
            host,
        })
    }

    /// The host copy, exactly what the device copy holds.
    pub fn host(&self) -> &PageTable {
        &self.host
    }

    pub(crate) fn table(&self) -> &CudaSlice<i32> {
        &self.table
    }

    pub(crate) fn lens(&self) -> &CudaSlice<i32> {
        &self.lens
    }

    /// The table was validated against a cache of this page size and at most this many pages.
    pub(crate) fn check_for(&self, c: &KvCacheConfig) -> Result<()> {
        if self.host.page_size != c.page_size || self.host.num_pages > c.num_pages {
            return Err(invalid(
                "table",
                format!(
                    "was made for pages of {} tokens in a pool of {}; the cache has pages of {} in a pool of {}",
                    self.host.page_size, self.host.num_pages, c.page_size, c.num_pages
                ),
            ));
        }
        Ok(())
    }
}

/// How many tokens each sequence of a [`DevicePageTable`] gains in one append, validated and
/// uploaded (as offsets `cu_new[batch + 1]`); immutable. The table's lengths include them.
pub struct DeviceAppend {
    table_id: u64,
    new_tokens: Vec<usize>,
    total: usize,
    max_logical_span: usize,
    cu_new: CudaSlice<i32>,
}

impl DeviceAppend {
    /// Checks the counts against `table` (one per sequence, none above the sequence's length)
    /// and that no page receives tokens from two sequences or is read by another sequence
    /// while it is written (shared pages must be full).
    pub fn new(rt: &Runtime, table: &DevicePageTable, new_tokens: &[usize]) -> Result<Self> {
        let (cu, span) = plan_append(&table.host, new_tokens)?;
        Ok(DeviceAppend {
            table_id: table.id,
            new_tokens: new_tokens.to_vec(),
            total: *cu.last().expect("batch >= 1") as usize,
            max_logical_span: span,
            cu_new: rt
                .stream()
                .clone_htod(&cu)
                .while_(|| "uploading the appended-token offsets".into())?,
        })
    }

    pub fn new_tokens(&self) -> &[usize] {
        &self.new_tokens
    }

    /// Tokens appended over the batch (rows of `k_new`).
    pub fn total(&self) -> usize {
        self.total
    }
}

/// The host checks of an append: returns `cu_new` and the largest number of logical pages
/// one sequence touches (the grid's x extent).
pub fn plan_append(table: &PageTable, new_tokens: &[usize]) -> Result<(Vec<i32>, usize)> {
    if new_tokens.len() != table.batch() {
        return Err(invalid(
            "new_tokens",
            format!(
                "has {} entries for a batch of {}",
                new_tokens.len(),
                table.batch()
            ),
        ));
    }
    let mut cu = vec![0i32];
    let mut span = 0usize;
    // Physical page -> the sequence that writes it.
    let mut writer: std::collections::HashMap<usize, usize> = Default::default();
    let logical = LOGICAL_PAGE as usize;
    for (b, &n) in new_tokens.iter().enumerate() {
        let len = table.seq_len(b);
        if n > len {
            return Err(invalid(
                "new_tokens",
                format!(
                    "sequence {b} appends {n} tokens but its length (after the append) is {len}"
                ),
            ));
        }
        let total = *cu.last().expect("non-empty") as usize + n;
        if total > i32::MAX as usize {
            return Err(invalid(
                "new_tokens",
                "more than i32::MAX tokens in one append",
            ));
        }
        cu.push(total as i32);
        if n == 0 {
            continue;
        }
        let old = len - n;
        span = span.max((len - 1) / logical - old / logical + 1);
        let pages = table.pages(b);
        for (i, &page) in pages.iter().enumerate().skip(old / table.page_size) {
            if let Some(other) = writer.insert(page, b) {
                return Err(invalid(
                    "new_tokens",
                    format!(
                        "physical page {page} would receive tokens of sequence {other} and of sequence {b} (logical page {i})"
                    ),
                ));
            }
        }
    }
    // A page being written must not be read through another row (or twice through its own).
    for (b, &n) in new_tokens.iter().enumerate() {
        let pages = table.pages(b);
        let old_first = table.seq_len(b).saturating_sub(n) / table.page_size;
        for (i, page) in pages.iter().enumerate() {
            if let Some(&w) = writer.get(page) {
                let own_write = w == b && (n > 0 && i >= old_first);
                if !own_write {
                    return Err(invalid(
                        "new_tokens",
                        format!(
                            "physical page {page} receives tokens of sequence {w} but is also page {i} of sequence {b}"
                        ),
                    ));
                }
            }
        }
    }
    Ok((cu, span.max(1)))
}

/// A free list of physical pages, for tests and examples (allocation is the engine's
/// business). Pages are handed out lowest id first.
#[derive(Clone, Debug)]
pub struct PageAllocator {
    page_size: usize,
    free: std::collections::BTreeSet<u32>,
    num_pages: usize,
}

impl PageAllocator {
    pub fn new(config: &KvCacheConfig) -> Result<Self> {
        config.validate()?;
        Ok(PageAllocator {
            page_size: config.page_size,
            free: (0..config.num_pages as u32).collect(),
            num_pages: config.num_pages,
        })
    }

    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    /// `n` pages, or an error (nothing taken) when fewer are free.
    pub fn allocate(&mut self, n: usize) -> Result<Vec<u32>> {
        if n > self.free.len() {
            return Err(invalid(
                "pages",
                format!("{n} requested, {} free", self.free.len()),
            ));
        }
        Ok((0..n)
            .map(|_| self.free.pop_first().expect("counted"))
            .collect())
    }

    /// Grows `row` to hold `tokens` tokens.
    pub fn grow(&mut self, row: &mut Vec<u32>, tokens: usize) -> Result<()> {
        let need = tokens.div_ceil(self.page_size);
        if need > row.len() {
            let more = self.allocate(need - row.len())?;
            row.extend(more);
        }
        Ok(())
    }

    /// Returns pages to the free list; an id out of range or already free is an error
    /// (nothing is returned then).
    pub fn release(&mut self, pages: &[u32]) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for &p in pages {
            if p as usize >= self.num_pages || self.free.contains(&p) || !seen.insert(p) {
                return Err(invalid("pages", format!("page {p} is not allocated")));
            }
        }
        self.free.extend(seen);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KvCacheConfig {
        KvCacheConfig {
            num_pages: 16,
            page_size: 32,
            heads_kv: 2,
            head_dim: 64,
            dtype: DType::Bf16,
            kv_dtype: KvDtypes::same(KvDtype::Bf16),
        }
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn config_fields_are_checked() {
        for (c, needle) in [
            (
                KvCacheConfig {
                    page_size: 48,
                    ..config()
                },
                "page_size",
            ),
            (
                KvCacheConfig {
                    head_dim: 96,
                    ..config()
                },
                "head_dim",
            ),
            (
                KvCacheConfig {
                    heads_kv: 0,
                    ..config()
                },
                "heads_kv",
            ),
            (
                KvCacheConfig {
                    num_pages: 0,
                    ..config()
                },
                "num_pages",
            ),
            (
                KvCacheConfig {
                    num_pages: usize::MAX / 2,
                    ..config()
                },
                "num_pages",
            ),
        ] {
            assert!(err(c.validate()).contains(needle), "{c:?}");
        }
        config().validate().unwrap();
    }

    #[test]
    fn quantized_formats_and_scales_are_checked() {
        let c = config();
        // A 16-bit pool of the other dtype.
        let bad = c.with_kv(KvDtypes::new(KvDtype::F16, KvDtype::Int8Token));
        assert!(err(bad.validate()).contains("kv_dtype.k"));
        let bad = c.with_kv(KvDtypes::new(KvDtype::Int8Token, KvDtype::F16));
        assert!(err(bad.validate()).contains("kv_dtype.v"));
        // Quantized pools serve either dtype.
        for kv in KvDtype::QUANTIZED {
            for dtype in [DType::Bf16, DType::F16] {
                KvCacheConfig { dtype, ..c }
                    .with_kv(KvDtypes::same(kv))
                    .validate()
                    .unwrap();
            }
        }
        let q = c.with_kv(KvDtypes::new(KvDtype::Int8, KvDtype::Fp8));
        for (scales, needle) in [
            (KvScales::default(), "scales.k"),
            (
                KvScales {
                    k: vec![1.0],
                    v: vec![],
                },
                "scales.v",
            ),
            (
                KvScales {
                    k: vec![1.0; 3],
                    v: vec![1.0],
                },
                "has 3 scales",
            ),
            (KvScales::per_tensor(0.0, 1.0), "positive and finite"),
            (KvScales::per_tensor(1.0, f32::NAN), "positive and finite"),
            (
                KvScales::per_tensor(1.0, f32::INFINITY),
                "positive and finite",
            ),
        ] {
            assert!(err(scales.per_head(&q)).contains(needle), "{scales:?}");
        }
        // Per tensor: the same scale for every kv head; per head as given.
        let (k, v) = KvScales::per_tensor(0.5, 2.0).per_head(&q).unwrap();
        assert_eq!((k, v), (vec![0.5, 0.5], vec![2.0, 2.0]));
        let per_head = KvScales {
            k: vec![1.0, 3.0],
            v: vec![2.0],
        };
        assert_eq!(per_head.per_head(&q).unwrap().0, vec![1.0, 3.0]);
        // Scales for a pool that takes none.
        let tok = c.with_kv(KvDtypes::same(KvDtype::Int4Token));
        assert!(err(KvScales::per_tensor(1.0, 1.0).per_head(&tok)).contains("takes none"));
        assert!(err(KvScales::per_tensor(1.0, 1.0).per_head(&c)).contains("takes none"));
        // Bytes and parameter layout.
        assert_eq!(tok.row_bytes(KvDtype::Int4Token), 32);
        assert_eq!(tok.pool_bytes(KvDtype::Int4Token), 16 * 32 * 2 * 32);
        assert_eq!(tok.param_index(3, 5, 1), (3 * 2 + 1) * 32 + 5);
        assert_eq!(tok.token_row(3, 5, 1), (3 * 32 + 5) * 2 + 1);
    }

    #[test]
    fn page_tables_are_checked() {
        let c = config();
        assert!(err(PageTable::new(&c, &[], &[])).contains("empty"));
        assert!(err(PageTable::new(&c, &[vec![0]], &[1, 2])).contains("seq_lens"));
        assert!(err(PageTable::new(&c, &[vec![0]], &[33])).contains("need 2 pages"));
        assert!(err(PageTable::new(&c, &[vec![0, 16]], &[33])).contains("id 16 is out of range"));
        let t = PageTable::new(&c, &[vec![3, 1, 7], vec![3]], &[40, 32]).unwrap();
        assert_eq!(t.max_pages(), 3);
        assert_eq!(t.pages(0), vec![3, 1]);
        assert_eq!(t.pages(1), vec![3]);
        assert_eq!(t.used_pages(0), 2);
    }

    #[test]
    fn appends_are_checked() {
        let c = config();
        // Sequence 0: 40 tokens in pages 3, 1; sequence 1: 32 tokens in page 3 (shared, full).
        let t = PageTable::new(&c, &[vec![3, 1], vec![3]], &[40, 32]).unwrap();
        assert!(err(plan_append(&t, &[1])).contains("entries"));
        assert!(err(plan_append(&t, &[41, 0])).contains("length"));
        // Appending 8 tokens to sequence 0 writes page 1 only: fine.
        let (cu, span) = plan_append(&t, &[8, 0]).unwrap();
        assert_eq!(cu, vec![0, 8, 8]);
        assert_eq!(span, 1);
        // 9 tokens reach into the shared page 3.
        assert!(err(plan_append(&t, &[9, 0])).contains("also page 0 of sequence 1"));
        // Two sequences writing one page.
        let t2 = PageTable::new(&c, &[vec![5], vec![5]], &[4, 4]).unwrap();
        assert!(err(plan_append(&t2, &[1, 1])).contains("would receive"));
        // A prefill of 40 tokens spans three logical pages.
        let t3 = PageTable::new(&c, &[vec![0, 2]], &[40]).unwrap();
        assert_eq!(plan_append(&t3, &[40]).unwrap(), (vec![0, 40], 3));
        assert_eq!(plan_append(&t3, &[9]).unwrap().1, 2); // tokens 31..40
    }

    #[test]
    fn allocator_hands_out_and_takes_back() {
        let mut a = PageAllocator::new(&config()).unwrap();
        let mut row = Vec::new();
        a.grow(&mut row, 65).unwrap();
        assert_eq!(row, vec![0, 1, 2]);
        assert!(a.allocate(14).is_err());
        assert_eq!(a.free_pages(), 13);
        assert!(a.release(&[1, 1]).is_err());
        assert!(a.release(&[99]).is_err());
        a.release(&[1]).unwrap();
        assert!(a.release(&[1]).is_err());
        assert_eq!(a.allocate(1).unwrap(), vec![1]);
    }
}
