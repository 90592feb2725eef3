//! Decode attention over the paged cache: argument checks, the split count, and the launch of
//! the attention kernel (with more than one split, its last CTA of each (sequence, kv head)
//! merges the splits).

use super::cache::{DevicePageTable, KvCacheConfig, PageTable, PagedKvCache};
use super::kernels::{decode_function, DecodeModule};
use super::selector::PageSelection;
use super::variants;
use crate::config::DecodeBucket;
use crate::error::{invalid, DriverContext, Result};
use crate::layout::Layout;
use crate::plan::{check_buffer_len, softmax_scale};
use crate::runtime::{Element, Runtime, Tensor, TensorMut};
use cudarc::driver::{
    CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg, SyncOnDrop,
};
use flashgen_codegen::decode::{DECODE_BLOCK_N, DECODE_THREADS, MAX_Q_LEN};
use flashgen_codegen::{DType, DecodeSpec, DecodeVariant};
use std::sync::Mutex;

/// Sink and recent tokens of streaming heads (LServe: 128 + 256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamingWindow {
    pub sink: usize,
    pub recent: usize,
}

impl Default for StreamingWindow {
    fn default() -> Self {
        StreamingWindow {
            sink: 128,
            recent: 256,
        }
    }
}

/// The kind of one kv head in a mixed decode (all its query heads share it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum DecodeHeadKind {
    /// Reads the pages of the selection.
    Selected = 0,
    /// Reads the sink and recent tokens.
    Streaming = 1,
}

/// Per-kv-head kinds on the device, with the host copy; immutable.
pub struct DecodeHeads {
    kinds: Vec<DecodeHeadKind>,
    dev: CudaSlice<i32>,
}

impl DecodeHeads {
    /// Uploads one kind per kv head.
    pub fn new(rt: &Runtime, kinds: &[DecodeHeadKind]) -> Result<Self> {
        if kinds.is_empty() {
            return Err(invalid("kinds", "needs one kind per kv head"));
        }
        let raw: Vec<i32> = kinds.iter().map(|&k| k as i32).collect();
        Ok(DecodeHeads {
            kinds: kinds.to_vec(),
            dev: rt
                .stream()
                .clone_htod(&raw)
                .while_(|| "uploading the head kinds".into())?,
        })
    }

    pub fn kinds(&self) -> &[DecodeHeadKind] {
        &self.kinds
    }
}

/// Which cached tokens the new tokens attend to.
#[derive(Clone, Copy)]
pub enum DecodeMask<'a> {
    Dense,
    Streaming(StreamingWindow),
    Selected(&'a PageSelection),
    Mixed {
        heads: &'a DecodeHeads,
        streaming: StreamingWindow,
        selection: &'a PageSelection,
    },
}

impl<'a> DecodeMask<'a> {
    /// The mask of `variant`'s standard problem, as its registry module defines it (the
    /// tuner's targets): LServe's streaming window (sink 128, recent 256), `selection` and
    /// `heads` where the variant takes them.
    pub fn standard(
        variant: DecodeVariant,
        heads: &'a DecodeHeads,
        selection: &'a PageSelection,
    ) -> Self {
        variants::host(variant).standard_mask(heads, selection)
    }

    pub fn variant(&self) -> DecodeVariant {
        match self {
            DecodeMask::Dense => DecodeVariant::Dense,
            DecodeMask::Streaming(_) => DecodeVariant::Streaming,
            DecodeMask::Selected(_) => DecodeVariant::Selected,
            DecodeMask::Mixed { .. } => DecodeVariant::Mixed,
        }
    }

    fn selection(&self) -> Option<&PageSelection> {
        match self {
            DecodeMask::Selected(s) | DecodeMask::Mixed { selection: s, .. } => Some(s),
            _ => None,
        }
    }

    fn heads(&self) -> Option<&DecodeHeads> {
        match self {
            DecodeMask::Mixed { heads, .. } => Some(heads),
            _ => None,
        }
    }
}

/// Arguments of one decode launch. Q and O are `[batch, heads_q, q_len, head_dim]` as
/// `Layout { batch, seq: q_len, heads: heads_q, dim }` (`Layout::bhsd(batch, q_len, hq, d)`, or
/// any strides with a contiguous head dim); new token `t` of `q_len` sits at position
/// `seq_len - q_len + t` and the new tokens are causal among themselves (their K and V must
/// already be appended). `lse` is `[batch, heads_q, q_len]` f32, natural log.
pub struct DecodeArgs<'a, T> {
    pub q: Tensor<'a, T>,
    pub o: TensorMut<'a, T>,
    pub lse: Option<&'a mut CudaSlice<f32>>,
    pub scale: Option<f32>,
    pub mask: DecodeMask<'a>,
}

impl<'a, T> DecodeArgs<'a, T> {
    pub fn new(q: Tensor<'a, T>, o: TensorMut<'a, T>) -> Self {
        DecodeArgs {
            q,
            o,
            lse: None,
            scale: None,
            mask: DecodeMask::Dense,
        }
    }

    pub fn lse(mut self, lse: &'a mut CudaSlice<f32>) -> Self {
        self.lse = Some(lse);
        self
    }

    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    pub fn mask(mut self, mask: DecodeMask<'a>) -> Self {
        self.mask = mask;
        self
    }
}

/// The decode kernel's parameters (`DecodeParams` of `templates/decode/decode.cu`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecodeParams {
    pub q: u64,
    pub o: u64,
    pub lse: u64,
    pub k_pool: u64,
    pub v_pool: u64,
    pub block_table: u64,
    pub seq_lens: u64,
    pub part_o: u64,
    pub part_lse: u64,
    pub sel_index: u64,
    pub sel_count: u64,
    pub sel_covers: u64,
    pub head_kind: u64,
    pub k_params: u64,
    pub v_params: u64,
    pub k_scale: u64,
    pub v_scale: u64,
    pub split_done: u64,
    pub q_batch_stride: i64,
    pub q_head_stride: i64,
    pub q_row_stride: i64,
    pub o_batch_stride: i64,
    pub o_head_stride: i64,
    pub o_row_stride: i64,
    pub table_stride: i64,
    pub sel_stride: i64,
    pub batch: i32,
    pub heads_q: i32,
    pub heads_kv: i32,
    pub q_len: i32,
    pub num_splits: i32,
    pub blocks_per_split: i32,
    pub sink: i32,
    pub recent: i32,
    pub scale_log2: f32,
    pub unused: i32,
}

// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl DeviceRepr for DecodeParams {}

/// A checked decode launch: the kernel, its parameters (pointers not yet filled) and grid.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodePlan {
    pub spec: DecodeSpec,
    pub params: DecodeParams,
    pub num_splits: usize,
    /// The most 16-token blocks any (sequence, kv head) visits.
    pub max_blocks: usize,
    /// Visited 16-token blocks summed over (sequence, kv head): the KV the launch reads.
    pub total_blocks: usize,
}

/// The shape of the query side of a launch, for [`plan_decode`].
#[derive(Clone, Copy, Debug)]
pub struct DecodeShape {
    pub dtype: DType,
    pub q: Layout,
    pub q_len_elems: usize,
    pub o: Layout,
    pub o_len_elems: usize,
    /// Elements of the lse buffer, when one is given.
    pub lse_len: Option<usize>,
    pub scale: Option<f32>,
}

pub(super) fn check_qo(name: &'static str, l: &Layout, len: usize, head_dim: usize) -> Result<()> {
    if l.dim != head_dim {
        return Err(invalid(
            name,
            format!("head dim is {}, the cache holds {head_dim}", l.dim),
        ));
    }
    if l.strides[3] != 1 {
        return Err(invalid(name, "the head dim must be contiguous (stride 1)"));
    }
    for (axis, extent, stride) in [
        ("batch", l.batch, l.strides[0]),
        ("q_len", l.seq, l.strides[1]),
        ("heads", l.heads, l.strides[2]),
    ] {
        if extent > 1 && !stride.is_multiple_of(8) {
            return Err(invalid(
                name,
                format!("{axis} stride {stride} is not a multiple of 8 elements"),
            ));
        }
        if stride > i64::MAX as usize {
            return Err(invalid(name, format!("{axis} stride out of range")));
        }
    }
    check_buffer_len(name, len, l)
}

/// Whether two elements of a layout share an address.
fn overlaps(l: &Layout) -> bool {
    if l.numel() == 0 {
        return false;
    }
    let mut axes: Vec<(usize, usize)> = [
        (l.batch, l.strides[0]),
        (l.seq, l.strides[1]),
        (l.heads, l.strides[2]),
    ]
    .into_iter()
    .filter(|&(n, _)| n > 1)
    .map(|(n, s)| (s, n))
    .collect();
    axes.sort_unstable();
    let mut span = l.dim;
    for (stride, n) in axes {
        if stride < span {
            return true;
        }
        span = stride.saturating_mul(n);
    }
    false
}

/// How a decode launch chooses its row tile and split count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecodeChoice {
    /// The tuned config's entry for the launch's kernel and bucket
    /// ([`TunedConfig::lookup_decode`](crate::TunedConfig::lookup_decode)), else the heuristic.
    #[default]
    Tuned,
    /// The heuristic: the smallest row tile that holds the group, [`choose_splits`].
    Heuristic,
    /// The given row tile and split count; `None` takes the heuristic's for that part. A row
    /// tile smaller than the group needs, or not valid at the head dim, is an error; a split
    /// count is capped at one split per KV tile of the longest visit list.
    Given {
        rows: Option<u32>,
        splits: Option<usize>,
    },
}

/// The row tile and split count of a launch, once chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLaunch {
    /// The kernel that ran.
    pub spec: DecodeSpec,
    /// KV splits per (sequence, kv head) (1: the kernel writes O directly).
    pub splits: usize,
    /// Whether the row tile and splits came from the tuned config.
    pub tuned: bool,
}

/// The split count and blocks per split for `splits` wanted splits of a visit list of
/// `max_blocks` 16-token blocks: whole KV tiles per split, at most one split per tile.
pub fn exact_splits(max_blocks: usize, splits: usize) -> (usize, usize) {
    let per_tile = (DECODE_BLOCK_N / 16) as usize;
    let max_tiles = max_blocks.div_ceil(per_tile).max(1);
    let tiles_per_split = max_tiles.div_ceil(splits.clamp(1, max_tiles));
    (
        max_tiles.div_ceil(tiles_per_split),
        tiles_per_split * per_tile,
    )
}

/// Splits of each (sequence, kv head): enough CTAs to fill `slots` (SMs times CTAs per SM)
/// without a partial last wave, at most one per KV tile of the longest visit list.
pub fn choose_splits(work: usize, max_blocks: usize, slots: usize) -> (usize, usize) {
    let per_tile = (DECODE_BLOCK_N / 16) as usize;
    let max_tiles = max_blocks.div_ceil(per_tile).max(1);
    let wanted = if work >= slots {
        1
    } else {
        (slots / work.max(1)).max(1)
    };
    exact_splits(max_blocks, wanted.clamp(1, 1024).min(max_tiles))
}

/// Checks a decode launch against the cache and table (no GPU needed): dtypes, shapes,
/// strides, buffer sizes, `q_len` (1 ..= 8, at most every sequence's length), GQA, the
/// variant's own arguments; then picks the row tile and split count for `slots` concurrent
/// CTAs (the heuristic).
pub fn plan_decode(
    config: &KvCacheConfig,
    table: &PageTable,
    shape: &DecodeShape,
    mask: &DecodeMask<'_>,
    slots: usize,
) -> Result<DecodePlan> {
    plan_decode_with(config, table, shape, mask, slots, None, None)
}

/// [`plan_decode`] with a given row tile and split count (`None`: the heuristic's). A row tile
/// smaller than the group's or invalid at the head dim is an error naming it.
pub fn plan_decode_with(
    config: &KvCacheConfig,
    table: &PageTable,
    shape: &DecodeShape,
    mask: &DecodeMask<'_>,
    slots: usize,
    given_rows: Option<u32>,
    given_splits: Option<usize>,
) -> Result<DecodePlan> {
    config.validate()?;
    if table.page_size() != config.page_size {
        return Err(invalid("table", "page size differs from the cache's"));
    }
    if shape.dtype != config.dtype {
        return Err(invalid(
            "q",
            format!(
                "is {}, the cache serves {} queries (its pools: {})",
                shape.dtype, config.dtype, config.kv_dtype
            ),
        ));
    }
    let (q, o) = (&shape.q, &shape.o);
    check_qo("q", q, shape.q_len_elems, config.head_dim)?;
    check_qo("o", o, shape.o_len_elems, config.head_dim)?;
    if (o.batch, o.seq, o.heads) != (q.batch, q.seq, q.heads) {
        return Err(invalid("o", "must have q's shape"));
    }
    if overlaps(o) {
        return Err(invalid(
            "o",
            "its rows overlap (two outputs would share memory)",
        ));
    }
    let batch = table.batch();
    if q.batch != batch {
        return Err(invalid(
            "q",
            format!("batch is {}, the page table's is {batch}", q.batch),
        ));
    }
    let q_len = q.seq;
    if q_len == 0 || q_len > MAX_Q_LEN {
        return Err(invalid(
            "q",
            format!("q_len is {q_len}; allowed: 1 ..= {MAX_Q_LEN}"),
        ));
    }
    for b in 0..batch {
        if table.seq_len(b) < q_len {
            return Err(invalid(
                "table",
                format!(
                    "sequence {b} holds {} tokens, fewer than the {q_len} new ones (append them first)",
                    table.seq_len(b)
                ),
            ));
        }
    }
    let (hq, hkv) = (q.heads, config.heads_kv);
    if hq == 0 || !hq.is_multiple_of(hkv) || hq > 65_535 {
        return Err(invalid(
            "q",
            format!("has {hq} heads; must be a positive multiple of heads_kv = {hkv}"),
        ));
    }
    let group_rows = hq / hkv * q_len;
    let rows = DecodeSpec::rows_for(group_rows, config.head_dim as u32).ok_or_else(|| {
        invalid(
            "q",
            format!(
                "(hq / hkv) * q_len = {group_rows} query rows per kv head; at most {} at head dim {}",
                DecodeSpec::max_rows(config.head_dim as u32),
                config.head_dim
            ),
        )
    })?;
    let rows = match given_rows {
        None => rows,
        Some(r) => {
            let spec = DecodeSpec::new(
                mask.variant(),
                config.head_dim as u32,
                shape.dtype,
                config.page_size as u32,
            )
            .with_rows(r);
            spec.validate()
                .map_err(|e| invalid("rows", e.to_string()))?;
            if r < rows {
                return Err(invalid(
                    "rows",
                    format!(
                        "a row tile of {r} cannot hold the {group_rows} query rows per kv head"
                    ),
                ));
            }
            r
        }
    };
    let rows_total = batch * hq * q_len;
    if let Some(n) = shape.lse_len {
        if n < rows_total {
            return Err(invalid(
                "lse",
                format!("has {n} elements; [batch, heads_q, q_len] needs {rows_total}"),
            ));
        }
    }
    let scale = softmax_scale(shape.scale, config.head_dim as u32)?;
    let mut params = DecodeParams {
        q_batch_stride: q.strides[0] as i64,
        q_row_stride: q.strides[1] as i64,
        q_head_stride: q.strides[2] as i64,
        o_batch_stride: o.strides[0] as i64,
        o_row_stride: o.strides[1] as i64,
        o_head_stride: o.strides[2] as i64,
        table_stride: table.max_pages() as i64,
        batch: batch as i32,
        heads_q: hq as i32,
        heads_kv: hkv as i32,
        q_len: q_len as i32,
        scale_log2: scale * std::f32::consts::LOG2_E,
        ..DecodeParams::default()
    };
    let host = variants::host(mask.variant());
    host.check(mask, table, hkv, q_len, &mut params)?;
    let mut max_blocks = 0;
    let mut total_blocks = 0;
    for b in 0..batch {
        for h in 0..hkv {
            let n = host.visited_blocks(mask, table, b, h, q_len);
            max_blocks = max_blocks.max(n);
            total_blocks += n;
        }
    }
    let (num_splits, blocks_per_split) = match given_splits {
        Some(n) => exact_splits(max_blocks, n),
        None => choose_splits(batch * hkv, max_blocks, slots),
    };
    params.num_splits = num_splits as i32;
    params.blocks_per_split = blocks_per_split as i32;
    let spec = DecodeSpec::new(
        mask.variant(),
        config.head_dim as u32,
        shape.dtype,
        config.page_size as u32,
    )
    .with_kv_dtypes(config.kv_dtype)
    .with_rows(rows);
    Ok(DecodePlan {
        spec,
        params,
        num_splits,
        max_blocks,
        total_blocks,
    })
}

/// Keeps a buffer's stream guard until the launch is issued and returns its address.
fn keep<'a>(guards: &mut Vec<SyncOnDrop<'a>>, (ptr, guard): (u64, SyncOnDrop<'a>)) -> u64 {
    guards.push(guard);
    ptr
}

/// The split-KV scratch of one runtime, grown on demand and reused by every launch on the
/// runtime's stream (launches are ordered on it): partial outputs and lse, and the arrival
/// counters of the (sequence, kv head) groups (zeroed when allocated; the kernel leaves them
/// at zero).
#[derive(Default)]
pub(crate) struct DecodeScratch {
    bufs: Mutex<ScratchBuffers>,
}

#[derive(Default)]
struct ScratchBuffers {
    partials: Option<CudaSlice<f32>>,
    counters: Option<CudaSlice<i32>>,
}

impl Runtime {
    /// Runs decode attention over `cache` for the sequences of `table` (their lengths include
    /// the `q_len` new tokens, whose K and V must already be appended), with the row tile and
    /// split count of the tuned config's entry for the launch ([`DecodeChoice::Tuned`]), else
    /// the heuristic's. Every argument is checked before anything is compiled or launched.
    /// Returns the kernel spec that ran.
    pub fn decode<T: Element>(
        &self,
        cache: &PagedKvCache,
        table: &DevicePageTable,
        args: DecodeArgs<'_, T>,
    ) -> Result<DecodeSpec> {
        self.decode_with(cache, table, args, DecodeChoice::Tuned)
            .map(|l| l.spec)
    }

    /// [`decode`](Self::decode) with the row tile and split count chosen by `choice`; returns
    /// the kernel that ran and its split count.
    pub fn decode_with<T: Element>(
        &self,
        cache: &PagedKvCache,
        table: &DevicePageTable,
        mut args: DecodeArgs<'_, T>,
        choice: DecodeChoice,
    ) -> Result<DecodeLaunch> {
        let config = *cache.config();
        table.check_for(&config)?;
        if let Some(sel) = args.mask.selection() {
            sel.check_table(table)?;
        }
        let shape = DecodeShape {
            dtype: T::DTYPE,
            q: args.q.layout,
            q_len_elems: args.q.data.len(),
            o: args.o.layout,
            o_len_elems: args.o.data.len(),
            lse_len: args.lse.as_ref().map(|l| l.len()),
            scale: args.scale,
        };
        // The heuristic's kernel first: it checks every argument, and it is the tuned config's
        // key. The split count needs the kernel's occupancy, the kernel needs the row tile.
        let first = plan_decode(&config, table.host(), &shape, &args.mask, 1)?;
        let (rows, splits, tuned) = match choice {
            DecodeChoice::Heuristic => (None, None, false),
            DecodeChoice::Given { rows, splits } => (rows, splits, false),
            DecodeChoice::Tuned => {
                let host = table.host();
                let max_len = (0..host.batch())
                    .map(|b| host.seq_len(b))
                    .max()
                    .unwrap_or(0);
                let bucket = DecodeBucket::of(host.batch(), max_len, config.heads_kv);
                let found = self.tuned_config().and_then(|c| {
                    let e = c.lookup_decode(&first.spec, &bucket)?;
                    // An entry whose row tile does not fit this launch is left aside.
                    let fits = e.rows >= first.spec.rows
                        && first.spec.with_rows(e.rows).validate().is_ok();
                    fits.then_some(e.choice())
                });
                match found {
                    Some(c) => (Some(c.rows), Some(c.splits as usize), true),
                    None => (None, None, false),
                }
            }
        };
        // The given row tile is checked before its kernel is loaded.
        let checked = plan_decode_with(&config, table.host(), &shape, &args.mask, 1, rows, splits)?;
        let spec = checked.spec;
        let name = spec.kernel_name();
        let module = DecodeModule::Attention(spec);
        let smem = spec.shared_bytes(self.arch());
        let f = decode_function(self, module, &name)?;
        let plan = match splits {
            Some(_) => checked,
            None => {
                let per_sm = f
                    .occupancy_max_active_blocks_per_multiprocessor(
                        DECODE_THREADS,
                        smem as usize,
                        None,
                    )
                    .while_(|| format!("reading the occupancy of {name}"))?
                    .max(1);
                let slots = self.info().sm_count as usize * per_sm as usize;
                plan_decode_with(
                    &config,
                    table.host(),
                    &shape,
                    &args.mask,
                    slots,
                    rows,
                    splits,
                )?
            }
        };
        let mut params = plan.params;
        let rows_total = table.host().batch() * args.q.layout.heads * args.q.layout.seq;
        let d = config.head_dim;
        let scratch_len = if plan.num_splits > 1 {
            rows_total * plan.num_splits * (d + 1)
        } else {
            0
        } + if args.lse.is_none() { rows_total } else { 0 };

        let s = self.stream();
        let mut scratch = self
            .decode_scratch
            .bufs
            .lock()
            .expect("decode scratch lock");
        let ScratchBuffers { partials, counters } = &mut *scratch;
        let mut guards: Vec<SyncOnDrop<'_>> = Vec::new();
        if scratch_len > 0 && partials.as_ref().is_none_or(|b| b.len() < scratch_len) {
            *partials = Some(
                s.alloc_zeros::<f32>(scratch_len)
                    .while_(|| "allocating the split-KV scratch".into())?,
            );
        }
        let groups = table.host().batch() * config.heads_kv;
        if plan.num_splits > 1 && counters.as_ref().is_none_or(|b| b.len() < groups) {
            *counters = Some(
                s.alloc_zeros::<i32>(groups)
                    .while_(|| "allocating the split counters".into())?,
            );
        }
        params.q = keep(&mut guards, args.q.data.device_ptr(s));
        params.o = keep(&mut guards, args.o.data.device_ptr_mut(s));
        params.k_pool = keep(&mut guards, cache.k_pool().device_ptr(s));
        params.v_pool = keep(&mut guards, cache.v_pool().device_ptr(s));
        params.block_table = keep(&mut guards, table.table().device_ptr(s));
        params.seq_lens = keep(&mut guards, table.lens().device_ptr(s));
        if let Some(sel) = args.mask.selection() {
            let (index, count, covers) = sel.buffers();
            params.sel_index = keep(&mut guards, index.device_ptr(s));
            params.sel_count = keep(&mut guards, count.device_ptr(s));
            params.sel_covers = keep(&mut guards, covers.device_ptr(s));
        }
        if let Some(heads) = args.mask.heads() {
            params.head_kind = keep(&mut guards, heads.dev.device_ptr(s));
        }
        if let Some(x) = cache.k_params() {
            params.k_params = keep(&mut guards, x.device_ptr(s));
        }
        if let Some(x) = cache.v_params() {
            params.v_params = keep(&mut guards, x.device_ptr(s));
        }
        if let Some(x) = cache.k_scales_dev() {
            params.k_scale = keep(&mut guards, x.device_ptr(s));
        }
        if let Some(x) = cache.v_scales_dev() {
            params.v_scale = keep(&mut guards, x.device_ptr(s));
        }
        let scratch_base = match partials.as_mut() {
            Some(buf) if scratch_len > 0 => keep(&mut guards, buf.device_ptr_mut(s)),
            _ => 0,
        };
        let mut at = scratch_base;
        if plan.num_splits > 1 {
            if let Some(counters) = counters.as_mut() {
                params.split_done = keep(&mut guards, counters.device_ptr_mut(s));
            }
            params.part_o = at;
            at += (rows_total * plan.num_splits * d * 4) as u64;
            params.part_lse = at;
            at += (rows_total * plan.num_splits * 4) as u64;
        }
        params.lse = match args.lse.as_deref_mut() {
            Some(l) => keep(&mut guards, l.device_ptr_mut(s)),
            None => at,
        };
        for (name, p) in [("q", params.q), ("o", params.o)] {
            if p % 16 != 0 {
                return Err(invalid(
                    name,
                    format!("base address {p:#x} is not 16-byte aligned"),
                ));
            }
        }
        let (hkv, batch) = (config.heads_kv as u32, table.host().batch() as u32);
        let cfg = LaunchConfig {
            grid_dim: (plan.num_splits as u32, hkv, batch),
            block_dim: (DECODE_THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        let mut launch = s.launch_builder(&f);
        launch.arg(&params);
        // SAFETY: plan_decode checked q, o and lse against their layouts and the table, the
        // table's page ids against the pool size (DevicePageTable), the selection's pages
        // against the table's lengths and the head kinds' count; the scratch holds the
        // partials of every row and split; the guards keep the buffers ordered on the stream.
        unsafe { launch.launch(cfg) }.while_(|| format!("launching {name}"))?;
        drop(guards);
        drop(scratch);
        Ok(DecodeLaunch {
            spec: plan.spec,
            splits: plan.num_splits,
            tuned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::{KvDtype, KvDtypes};

    fn config() -> KvCacheConfig {
        KvCacheConfig {
            num_pages: 64,
            page_size: 64,
            heads_kv: 2,
            head_dim: 128,
            dtype: DType::Bf16,
            kv_dtype: KvDtypes::same(KvDtype::Bf16),
        }
    }

    fn shape(batch: usize, q_len: usize, hq: usize) -> DecodeShape {
        let l = Layout::bhsd(batch, q_len, hq, 128);
        DecodeShape {
            dtype: DType::Bf16,
            q: l,
            q_len_elems: l.required_len(),
            o: l,
            o_len_elems: l.required_len(),
            lse_len: Some(batch * hq * q_len),
            scale: None,
        }
    }

    fn table(lens: &[usize]) -> PageTable {
        let mut next = 0u32;
        let rows: Vec<Vec<u32>> = lens
            .iter()
            .map(|&l| {
                let n = l.div_ceil(64) as u32;
                let row = (next..next + n).collect();
                next += n;
                row
            })
            .collect();
        PageTable::new(&config(), &rows, lens).unwrap()
    }

    fn err(r: Result<DecodePlan>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn every_argument_is_checked() {
        let c = config();
        let t = table(&[100, 7]);
        let ok = shape(2, 1, 8);
        let plan = plan_decode(&c, &t, &ok, &DecodeMask::Dense, 132).unwrap();
        assert_eq!(plan.spec.rows, 16);
        assert_eq!(plan.max_blocks, 7);
        let cases: Vec<(DecodeShape, &str)> = vec![
            (
                DecodeShape {
                    dtype: DType::F16,
                    ..ok
                },
                "serves bf16 queries",
            ),
            (shape(1, 1, 8), "batch is 1"),
            (shape(2, 9, 8), "q_len is 9"),
            (shape(2, 8, 8), "fewer than the 8 new ones"),
            (shape(2, 1, 7), "multiple of heads_kv"),
            (shape(2, 1, 0), "multiple of heads_kv"),
            (
                DecodeShape {
                    q_len_elems: 10,
                    ..ok
                },
                "buffer has 10",
            ),
            (
                DecodeShape {
                    o_len_elems: 10,
                    ..ok
                },
                "buffer has 10",
            ),
            (
                DecodeShape {
                    lse_len: Some(15),
                    ..ok
                },
                "lse",
            ),
            (
                DecodeShape {
                    scale: Some(f32::NAN),
                    ..ok
                },
                "scale",
            ),
            (
                DecodeShape {
                    scale: Some(-1.0),
                    ..ok
                },
                "scale",
            ),
            (
                DecodeShape {
                    o: ok.o.with_strides([0, 128, 128, 1]),
                    ..ok
                },
                "overlap",
            ),
            (
                DecodeShape {
                    o: Layout::bhsd(2, 1, 4, 128),
                    ..ok
                },
                "must have q's shape",
            ),
        ];
        for (s, needle) in cases {
            let e = err(plan_decode(&c, &t, &s, &DecodeMask::Dense, 132));
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let mut strided = ok;
        strided.q = Layout::bhsd(2, 1, 8, 128).with_strides([1024, 128, 129, 1]);
        assert!(
            err(plan_decode(&c, &t, &strided, &DecodeMask::Dense, 132)).contains("multiple of 8")
        );
        let mut wrong_dim = ok;
        wrong_dim.q = Layout::bhsd(2, 1, 8, 64);
        assert!(err(plan_decode(&c, &t, &wrong_dim, &DecodeMask::Dense, 132)).contains("head dim"));
        // 64 kv heads... 32 query heads per kv head with q_len 4 is 128 rows.
        let many = KvCacheConfig { heads_kv: 1, ..c };
        let t1 = PageTable::new(&many, &[vec![0]], &[8]).unwrap();
        assert!(err(plan_decode(
            &many,
            &t1,
            &shape(1, 4, 32),
            &DecodeMask::Dense,
            132
        ))
        .contains("at most 64"));
        // Streaming needs a positive recent window.
        let w = DecodeMask::Streaming(StreamingWindow { sink: 4, recent: 0 });
        assert!(err(plan_decode(&c, &t, &ok, &w, 132)).contains("recent"));
    }

    #[test]
    fn rows_follow_the_group() {
        let c = config();
        let t = table(&[100]);
        let plan = plan_decode(&c, &t, &shape(1, 4, 16), &DecodeMask::Dense, 132).unwrap();
        assert_eq!(plan.spec.rows, 32);
        let plan = plan_decode(&c, &t, &shape(1, 8, 16), &DecodeMask::Dense, 132).unwrap();
        assert_eq!(plan.spec.rows, 64);
    }

    #[test]
    fn splits_fill_the_gpu() {
        // b1 at 128k with 8 kv heads on 132 SMs x 2: 33 splits of one wave.
        let blocks = 131072 / 16;
        let (splits, per) = choose_splits(8, blocks, 264);
        assert_eq!(splits, 33);
        assert!(splits * per >= blocks && (splits - 1) * per < blocks);
        // Enough (sequence, kv head) pairs: no split.
        assert_eq!(choose_splits(256, 512, 264).0, 1);
        // b8 s32k: 64 pairs, 4 splits.
        assert_eq!(choose_splits(64, 2048, 264).0, 4);
        // Short sequences never get more splits than tiles.
        assert_eq!(choose_splits(1, 3, 264), (1, 4));
        let streaming = StreamingWindow {
            sink: 128,
            recent: 256,
        };
        let t = table(&[4000]);
        let plan = plan_decode(
            &config(),
            &t,
            &shape(1, 1, 8),
            &DecodeMask::Streaming(streaming),
            264,
        )
        .unwrap();
        // 8 sink blocks + the 16 blocks of the window (positions 3744 ..= 3999).
        assert_eq!(plan.max_blocks, 8 + 16);
    }

    #[test]
    fn given_rows_and_splits_are_checked_and_applied() {
        let c = config();
        let t = table(&[4000]);
        let ok = shape(1, 1, 8);
        let given =
            |rows, splits| plan_decode_with(&c, &t, &ok, &DecodeMask::Dense, 264, rows, splits);
        // 4000 tokens: 250 blocks, 63 KV tiles.
        let plan = given(Some(32), Some(4)).unwrap();
        assert_eq!((plan.spec.rows, plan.num_splits), (32, 4));
        assert_eq!(plan.params.blocks_per_split as usize * 4, 16 * 4 * 4);
        // At most one split per KV tile; at least one.
        assert_eq!(given(None, Some(1000)).unwrap().num_splits, 63);
        assert_eq!(given(None, Some(0)).unwrap().num_splits, 1);
        // The heuristic's where nothing is given.
        assert_eq!(
            given(None, None).unwrap(),
            plan_decode(&c, &t, &ok, &DecodeMask::Dense, 264).unwrap()
        );
        // A row tile the group does not fit in, or an invalid one, is an error naming it.
        let group32 = shape(1, 4, 16);
        let e = plan_decode_with(&c, &t, &group32, &DecodeMask::Dense, 264, Some(16), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rows") && e.contains("32 query rows"), "{e}");
        let e = given(Some(48), None).unwrap_err().to_string();
        assert!(e.contains("rows = 48"), "{e}");
    }

    #[test]
    fn exact_splits_cover_the_longest_list() {
        for blocks in [1usize, 4, 5, 250, 8192] {
            for want in [1usize, 2, 3, 7, 33, 5000] {
                let (n, per) = exact_splits(blocks, want);
                assert!(n >= 1 && n <= want.max(1));
                assert!(
                    n * per >= blocks && (n - 1) * per < blocks,
                    "{blocks} {want}"
                );
                assert_eq!(per % 4, 0);
            }
        }
    }

    #[test]
    fn params_match_the_kernel_struct() {
        use std::mem::{offset_of, size_of};
        // 18 pointers, 8 i64 strides, then the i32 / f32 fields.
        assert_eq!(offset_of!(DecodeParams, q_batch_stride), 18 * 8);
        assert_eq!(offset_of!(DecodeParams, batch), 26 * 8);
        assert_eq!(offset_of!(DecodeParams, scale_log2), 26 * 8 + 8 * 4);
        assert_eq!(size_of::<DecodeParams>(), 26 * 8 + 10 * 4);
    }
}
