//! Decode over the paged KV cache against the f64 reference: append (rows and key statistics
//! exact), every decode variant at awkward shapes, and the page selector index for index.
//! Needs a CUDA GPU: run with `--include-ignored` (scripts/gpu-check.sh). Tests named
//! `sanitizer_*` are small and run under compute-sanitizer too.

use flashgen_codegen::DType;
use flashgen_reference as reference;
use flashgen_reference::{DecodeRule, PagedKv, Precision, Rng, Tolerance};
use flashgen_runtime::decode::{
    DecodeHeadKind, DecodeHeads, DecodeMask, DeviceAppend, DevicePageTable, KvCacheConfig,
    PageAllocator, PageSelection, PageSelector, PagedKvCache, SelectorConfig, StreamingWindow,
};
use flashgen_runtime::{Element, Layout, Runtime, Tensor};
use half::{bf16, f16};

#[path = "common/decode.rs"]
mod decode_common;
use decode_common::{decode_poisoned, runtime, Half};

/// Which tokens the case's decode reads.
#[derive(Clone, Debug)]
enum Rule {
    Dense,
    Streaming(StreamingWindow),
    /// Random page lists (each page kept with this probability, the newest always).
    Selected(f64),
    /// Half the kv heads streaming, half selected.
    Mixed(StreamingWindow, f64),
}

#[derive(Clone, Debug)]
struct Case {
    dtype: DType,
    head_dim: usize,
    page_size: usize,
    hq: usize,
    hkv: usize,
    q_len: usize,
    lens: Vec<usize>,
    rule: Rule,
    /// Sequence 1 shares the first full pages of sequence 0 (needs two sequences).
    shared_prefix: bool,
    /// Tokens appended after the selection was made (it is reused for a longer sequence).
    grow_after_selection: usize,
}

impl Case {
    fn new(lens: &[usize], hq: usize, hkv: usize, q_len: usize, rule: Rule) -> Self {
        Case {
            dtype: DType::Bf16,
            head_dim: 128,
            page_size: 64,
            hq,
            hkv,
            q_len,
            lens: lens.to_vec(),
            rule,
            shared_prefix: false,
            grow_after_selection: 0,
        }
    }
}

fn check(rt: &Runtime, case: &Case) {
    let result = match case.dtype {
        DType::Bf16 => run::<bf16>(rt, case),
        DType::F16 => run::<f16>(rt, case),
    };
    if let Err(e) = result {
        panic!("{case:?}\n{e}");
    }
}

/// The cache under test, its tables and host copies of what was appended.
struct Filled {
    cache: PagedKvCache,
    rows: Vec<Vec<u32>>,
    k_hist: Vec<Vec<f32>>,
    v_hist: Vec<Vec<f32>>,
}

fn config(case: &Case, num_pages: usize) -> KvCacheConfig {
    KvCacheConfig::new(
        num_pages,
        case.page_size,
        case.hkv,
        case.head_dim,
        case.dtype,
    )
}

/// Appends `tokens[b]` rows of (`k`, `v`) `[tokens, hkv, d]` per sequence at lengths `lens`
/// (after the append).
fn append<T: Half>(
    rt: &Runtime,
    cache: &mut PagedKvCache,
    rows: &[Vec<u32>],
    lens: &[usize],
    new: &[usize],
    k: &[f32],
    v: &[f32],
) -> Result<(), String> {
    let c = *cache.config();
    let table = DevicePageTable::new(rt, &c, rows, lens).map_err(|e| e.to_string())?;
    let batch = DeviceAppend::new(rt, &table, new).map_err(|e| e.to_string())?;
    let total = batch.total();
    let to_t = |x: &[f32]| -> Vec<T> {
        let mut out: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
        out.push(T::from_f32(0.0)); // never empty
        out
    };
    let s = rt.stream();
    let kd = s.clone_htod(&to_t(k)).map_err(|e| format!("{e:?}"))?;
    let vd = s.clone_htod(&to_t(v)).map_err(|e| format!("{e:?}"))?;
    let layout = Layout::packed(total, c.heads_kv, c.head_dim);
    cache
        .append(
            rt,
            &table,
            &batch,
            Tensor { data: &kd, layout },
            Tensor { data: &vd, layout },
        )
        .map_err(|e| e.to_string())
}

/// Allocates scattered pages, writes random histories of `lens` tokens (a prefill, then the
/// rest in decode steps of `step` tokens), optionally with sequence 1 on sequence 0's prefix
/// pages and NaN in the tokens `poison(b, t)` says nobody reads.
fn fill<T: Half>(
    rt: &Runtime,
    case: &Case,
    rng: &mut Rng,
    lens: &[usize],
    step: usize,
    poison: &dyn Fn(usize, usize) -> bool,
) -> Result<Filled, String> {
    let (hkv, d, ps) = (case.hkv, case.head_dim, case.page_size);
    let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum::<usize>() + 3;
    let c = config(case, pages);
    let mut cache = PagedKvCache::new(rt, c).map_err(|e| e.to_string())?;
    // A shuffled free list: block tables are non-contiguous.
    let mut alloc = PageAllocator::new(&c).map_err(|e| e.to_string())?;
    let mut free = alloc.allocate(pages).map_err(|e| e.to_string())?;
    for i in (1..free.len()).rev() {
        free.swap(i, rng.below(i + 1));
    }
    let row = d * hkv;
    let draw = |rng: &mut Rng, b: usize, n: usize| -> Vec<f32> {
        let mut x = rng.normal_vec_in(n * row, T::PRECISION);
        let _ = b;
        x.iter_mut().for_each(|v| *v = T::PRECISION.round(*v));
        x
    };
    let k_hist: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(b, &l)| draw(rng, b, l))
        .collect();
    let v_hist: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(b, &l)| draw(rng, b, l))
        .collect();
    let mut k_hist = k_hist;
    let mut v_hist = v_hist;
    for (b, l) in lens.iter().enumerate() {
        for t in 0..*l {
            if poison(b, t) {
                k_hist[b][t * row..(t + 1) * row].fill(f32::NAN);
                v_hist[b][t * row..(t + 1) * row].fill(f32::NAN);
            }
        }
    }
    let mut rows: Vec<Vec<u32>> = lens
        .iter()
        .map(|&l| (0..l.div_ceil(ps)).map(|_| free.pop().unwrap()).collect())
        .collect();
    let mut shared = 0;
    if case.shared_prefix && lens.len() > 1 {
        let full = (lens[0] / ps).min(lens[1] / ps);
        shared = full * ps;
        let prefix = rows[0][..full].to_vec();
        rows[1][..full].copy_from_slice(&prefix);
        // The shared tokens are sequence 0's.
        let (k0, v0) = (
            k_hist[0][..shared * row].to_vec(),
            v_hist[0][..shared * row].to_vec(),
        );
        k_hist[1][..shared * row].copy_from_slice(&k0);
        v_hist[1][..shared * row].copy_from_slice(&v0);
        // Sequence 0 alone first, so that the shared pages are written once.
        append::<T>(
            rt,
            &mut cache,
            &rows[..1],
            &lens[..1],
            &lens[..1],
            &k_hist[0],
            &v_hist[0],
        )?;
    }
    // A prefill of all but the last `step`-sized steps, then the steps.
    let mut done: Vec<usize> = lens
        .iter()
        .enumerate()
        .map(|(b, &l)| {
            if b == 0 && shared > 0 {
                l
            } else if b == 1 {
                shared
            } else {
                0
            }
        })
        .collect();
    let target: Vec<usize> = lens.iter().map(|&l| l.saturating_sub(3 * step)).collect();
    let mut phase = 0;
    loop {
        let next: Vec<usize> = (0..lens.len())
            .map(|b| {
                if phase == 0 {
                    target[b].max(done[b])
                } else {
                    (done[b] + step).min(lens[b])
                }
            })
            .collect();
        if next == done {
            if phase > 0 {
                break;
            }
            phase += 1;
            continue;
        }
        let new: Vec<usize> = (0..lens.len()).map(|b| next[b] - done[b]).collect();
        let k: Vec<f32> = (0..lens.len())
            .flat_map(|b| k_hist[b][done[b] * row..next[b] * row].to_vec())
            .collect();
        let v: Vec<f32> = (0..lens.len())
            .flat_map(|b| v_hist[b][done[b] * row..next[b] * row].to_vec())
            .collect();
        append::<T>(rt, &mut cache, &rows, &next, &new, &k, &v)?;
        done = next;
        phase += 1;
    }
    Ok(Filled {
        cache,
        rows,
        k_hist,
        v_hist,
    })
}

fn download<T: Half>(rt: &Runtime, x: &flashgen_runtime::cudarc::driver::CudaSlice<u16>) -> Vec<T> {
    let bits: Vec<u16> = rt.stream().clone_dtoh(x).unwrap();
    bits.into_iter().map(T::from_bits).collect()
}

/// A 16-bit pool's values (the pools are bytes).
fn download_pool<T: Half>(
    rt: &Runtime,
    x: &flashgen_runtime::cudarc::driver::CudaSlice<u8>,
) -> Vec<T> {
    let bytes: Vec<u8> = rt.stream().clone_dtoh(x).unwrap();
    bytes
        .chunks(2)
        .map(|b| T::from_bits(u16::from_le_bytes([b[0], b[1]])))
        .collect()
}

fn random_lists(
    rng: &mut Rng,
    lens: &[usize],
    hkv: usize,
    ps: usize,
    keep: f64,
) -> Vec<Vec<usize>> {
    let mut lists = Vec::new();
    for &l in lens {
        let n = l.div_ceil(ps);
        for _ in 0..hkv {
            lists.push(
                (0..n)
                    .filter(|&p| p + 1 == n || rng.bernoulli(keep))
                    .collect(),
            );
        }
    }
    lists
}

fn run<T: Half>(rt: &Runtime, case: &Case) -> Result<(), String> {
    let mut rng = Rng::fresh();
    let seed = format!(
        "(seed {}: rerun with FLASHGEN_SEED={})",
        rng.seed(),
        rng.seed()
    );
    let (hq, hkv, d, ps, q_len) = (case.hq, case.hkv, case.head_dim, case.page_size, case.q_len);
    let lens = &case.lens;
    let batch = lens.len();
    let grow = case.grow_after_selection;
    let sel_lens: Vec<usize> = lens.iter().map(|&l| l - grow).collect();

    // Selections (by the host) over the lengths before the last `grow` tokens.
    let keep = match case.rule {
        Rule::Selected(k) | Rule::Mixed(_, k) => Some(k),
        _ => None,
    };
    let lists = keep.map(|k| random_lists(&mut rng, &sel_lens, hkv, ps, k));
    let streaming_heads: Vec<bool> = (0..hkv).map(|h| h % 2 == 1).collect();
    let window = match case.rule {
        Rule::Streaming(w) | Rule::Mixed(w, _) => Some(w),
        _ => None,
    };
    let reference_rule = match &case.rule {
        Rule::Dense => DecodeRule::Dense,
        Rule::Streaming(w) => DecodeRule::Streaming {
            sink: w.sink,
            recent: w.recent,
        },
        Rule::Selected(_) => DecodeRule::Selected {
            pages: lists.clone().unwrap(),
            covers: sel_lens.iter().map(|l| l.div_ceil(ps)).collect(),
        },
        Rule::Mixed(w, _) => DecodeRule::Mixed {
            streaming_heads: streaming_heads.clone(),
            sink: w.sink,
            recent: w.recent,
            pages: lists.clone().unwrap(),
            covers: sel_lens.iter().map(|l| l.div_ceil(ps)).collect(),
        },
    };
    // Tokens in blocks no kv head's visit list holds get NaN: they must never be read.
    // (Not with a shared prefix: a shared page may be read through the other sequence.)
    let never_read = |b: usize, t: usize| -> bool {
        if case.shared_prefix {
            return false;
        }
        let len = lens[b];
        let blk = t / 16;
        (0..hkv).all(|h| {
            let block_start = blk * 16;
            let block_end = (block_start + 16).min(len);
            (block_start..block_end).all(|tt| {
                (len - q_len..len).all(|pos| !reference_rule.visible(b, h, hkv, ps, tt, pos))
            }) && match &case.rule {
                // Streaming reads whole blocks between sink and the window start.
                Rule::Streaming(w) | Rule::Mixed(w, _)
                    if streaming_heads.get(h).copied().unwrap_or(true) =>
                {
                    let sink_blocks = w.sink.min(len).div_ceil(16);
                    let lo = (len - q_len + 1).saturating_sub(w.recent) / 16;
                    blk >= sink_blocks && blk < lo.max(sink_blocks)
                }
                _ => true,
            }
        })
    };
    let step = 1 + rng.below(3);
    let filled = fill::<T>(rt, case, &mut rng, lens, step, &never_read)?;
    let c = *filled.cache.config();

    let table = DevicePageTable::new(rt, &c, &filled.rows, lens).map_err(|e| e.to_string())?;
    let sel_table =
        DevicePageTable::new(rt, &c, &filled.rows, &sel_lens).map_err(|e| e.to_string())?;
    let selection = match &lists {
        Some(l) => {
            Some(PageSelection::from_lists(rt, &sel_table, hkv, l).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let heads_kinds: Vec<DecodeHeadKind> = streaming_heads
        .iter()
        .map(|&s| {
            if s {
                DecodeHeadKind::Streaming
            } else {
                DecodeHeadKind::Selected
            }
        })
        .collect();
    let heads = DecodeHeads::new(rt, &heads_kinds).map_err(|e| e.to_string())?;
    let mask = match &case.rule {
        Rule::Dense => DecodeMask::Dense,
        Rule::Streaming(w) => DecodeMask::Streaming(*w),
        Rule::Selected(_) => DecodeMask::Selected(selection.as_ref().unwrap()),
        Rule::Mixed(..) => DecodeMask::Mixed {
            heads: &heads,
            streaming: window.unwrap(),
            selection: selection.as_ref().unwrap(),
        },
    };

    let q_layout = Layout::bhsd(batch, q_len, hq, d);
    let q_host: Vec<T> = rng
        .normal_vec_in(q_layout.required_len(), T::PRECISION)
        .into_iter()
        .map(T::from_f32)
        .collect();
    let out = decode_poisoned(rt, &filled.cache, &table, &q_host, q_layout, mask)?;
    let (spec, o_out, lse_out) = (out.spec, out.o, out.lse);

    // The reference reads the pools back: what the append wrote is what it attends over.
    let k_pool = download_pool::<T>(rt, filled.cache.k_pool());
    let v_pool = download_pool::<T>(rt, filled.cache.v_pool());
    let tables: Vec<Vec<usize>> = filled
        .rows
        .iter()
        .map(|r| r.iter().map(|&p| p as usize).collect())
        .collect();
    let kv = PagedKv {
        k: &k_pool,
        v: &v_pool,
        page_size: ps,
        heads_kv: hkv,
        head_dim: d,
        tables: &tables,
        seq_lens: lens,
    };
    // The append wrote exactly the histories (NaN stays NaN).
    for (b, &len) in lens.iter().enumerate() {
        for h in 0..hkv {
            let (gk, gv) = kv.gather(b, h);
            for t in 0..len {
                for ch in 0..d {
                    let want = filled.k_hist[b][(t * hkv + h) * d + ch] as f64;
                    let got = gk[t * d + ch];
                    let wv = filled.v_hist[b][(t * hkv + h) * d + ch] as f64;
                    if !(want == got || want.is_nan() && got.is_nan())
                        || !(wv == gv[t * d + ch] || wv.is_nan())
                    {
                        return Err(format!("{spec}: append wrote the wrong value at sequence {b} token {t} head {h} channel {ch} {seed}"));
                    }
                }
            }
        }
    }
    let want = reference::decode_attention(&q_host, hq, q_len, &kv, &reference_rule, None);
    reference::check_close(&o_out, &want.o, &Tolerance::rel(1e-2).with_poison(f32::NAN))
        .map_err(|m| format!("{spec}: O differs {seed}\n{m}"))?;
    reference::check_lse(&lse_out, &want.lse, 2e-3, Some(f32::NAN))
        .map_err(|m| format!("{spec}: lse differs {seed}\n{m}"))?;
    Ok(())
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn dense_awkward_lengths_and_gqa() {
    let rt = runtime();
    for (hq, hkv) in [(4, 4), (8, 2), (32, 4)] {
        for lens in [vec![1], vec![17], vec![64], vec![1000, 1, 130, 4097]] {
            check(&rt, &Case::new(&lens, hq, hkv, 1, Rule::Dense));
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn dense_speculative_rows_every_page_size_and_dtype() {
    let rt = runtime();
    for ps in [16, 32, 64, 128] {
        for q_len in [2, 5, 8] {
            for dtype in [DType::Bf16, DType::F16] {
                let mut c = Case::new(&[300, 8, 77], 8, 2, q_len, Rule::Dense);
                c.page_size = ps;
                c.dtype = dtype;
                check(&rt, &c);
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn every_head_dim_and_row_tile() {
    let rt = runtime();
    for d in [64, 128, 256] {
        // 4, 32 and 64 rows per kv head (at most 32 at d256).
        for (hq, q_len) in [(4, 1), (16, 4), (32, 4)] {
            if d == 256 && hq / 2 * q_len > 32 {
                continue;
            }
            let mut c = Case::new(&[555, 33], hq, 2, q_len, Rule::Dense);
            c.head_dim = d;
            check(&rt, &c);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn long_sequences_use_many_splits() {
    let rt = runtime();
    check(&rt, &Case::new(&[40_000], 8, 2, 1, Rule::Dense));
    check(
        &rt,
        &Case::new(&[20_000, 3_000, 9_999], 32, 8, 4, Rule::Dense),
    );
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn shared_prefix_pages() {
    let rt = runtime();
    let mut c = Case::new(&[700, 450], 8, 2, 2, Rule::Dense);
    c.shared_prefix = true;
    check(&rt, &c);
    c.rule = Rule::Selected(0.4);
    check(&rt, &c);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn streaming_reads_sink_and_recent_only() {
    let rt = runtime();
    for (sink, recent) in [(128, 256), (5, 37), (0, 1), (64, 4096)] {
        for q_len in [1, 3, 8] {
            let w = StreamingWindow { sink, recent };
            check(
                &rt,
                &Case::new(&[2000, 130, 9, 600], 8, 4, q_len, Rule::Streaming(w)),
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn selected_pages_and_reuse_across_steps() {
    let rt = runtime();
    for ps in [16, 64, 128] {
        for keep in [0.0, 0.3, 1.0] {
            let mut c = Case::new(&[3000, 64, 1, 999], 8, 2, 1, Rule::Selected(keep));
            c.page_size = ps;
            check(&rt, &c);
            // The selection was made 3 tokens ago (maybe on a page boundary since).
            c.grow_after_selection = 1;
            c.q_len = 1;
            c.lens = vec![3000, 65, 2, 1025];
            check(&rt, &c);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn mixed_heads_in_one_launch() {
    let rt = runtime();
    for q_len in [1, 4] {
        let w = StreamingWindow {
            sink: 128,
            recent: 256,
        };
        // A sequence holds at least its q_len new tokens: the shortest is exactly that long.
        let mut c = Case::new(&[5000, 300, q_len], 16, 4, q_len, Rule::Mixed(w, 0.2));
        check(&rt, &c);
        c.dtype = DType::F16;
        c.page_size = 32;
        check(&rt, &c);
    }
}

/// Integer keys and queries make the f32 scores exact, so the GPU selection must equal the
/// reference index for index, ties included.
#[allow(clippy::too_many_arguments)]
fn selector_case<T: Half>(
    rt: &Runtime,
    d: usize,
    lens: &[usize],
    ps: usize,
    hq: usize,
    hkv: usize,
    q_len: usize,
    budget: usize,
    sink_pages: usize,
) {
    let mut rng = Rng::fresh();
    let seed = format!("(seed {})", rng.seed());
    let case = Case {
        page_size: ps,
        head_dim: d,
        dtype: <T as Element>::DTYPE,
        ..Case::new(lens, hq, hkv, q_len, Rule::Dense)
    };
    let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum();
    let c = config(&case, pages);
    let mut cache = PagedKvCache::new(rt, c).unwrap();
    let mut alloc = PageAllocator::new(&c).unwrap();
    let mut rows: Vec<Vec<u32>> = Vec::new();
    for &l in lens {
        let mut r = Vec::new();
        alloc.grow(&mut r, l).unwrap();
        r.reverse();
        rows.push(r);
    }
    let ints = |rng: &mut Rng, n: usize, m: usize| -> Vec<f32> {
        (0..n)
            .map(|_| rng.below(2 * m + 1) as f32 - m as f32)
            .collect()
    };
    let row = hkv * d;
    let total: usize = lens.iter().sum();
    let k = ints(&mut rng, total * row, 4);
    let v = ints(&mut rng, total * row, 1);
    append::<T>(rt, &mut cache, &rows, lens, lens, &k, &v).unwrap();
    let table = DevicePageTable::new(rt, &c, &rows, lens).unwrap();
    let q_layout = Layout::bhsd(lens.len(), q_len, hq, d);
    let q_host: Vec<T> = ints(&mut rng, q_layout.required_len(), 2)
        .into_iter()
        .map(T::from_f32)
        .collect();
    let q = rt.stream().clone_htod(&q_host).unwrap();
    let selector = PageSelector::new(SelectorConfig {
        budget,
        sink_pages,
        refresh_every: 4,
    })
    .unwrap();
    let sel = selector
        .select(
            rt,
            &cache,
            &table,
            Tensor {
                data: &q,
                layout: q_layout,
            },
        )
        .unwrap();
    let got = sel.download(rt).unwrap();
    let k_pool = download_pool::<T>(rt, cache.k_pool());
    let tables: Vec<Vec<usize>> = rows
        .iter()
        .map(|r| r.iter().map(|&p| p as usize).collect())
        .collect();
    let kv = PagedKv {
        k: &k_pool,
        v: &k_pool,
        page_size: ps,
        heads_kv: hkv,
        head_dim: d,
        tables: &tables,
        seq_lens: lens,
    };
    let want = reference::select_pages(&q_host, hq, q_len, &kv, budget / ps, sink_pages);
    assert_eq!(got, want, "selection differs {seed}");
    // The statistics are exact: the max and min of each logical page's keys.
    let kmax = download::<T>(rt, cache.k_max());
    let kmin = download::<T>(rt, cache.k_min());
    for (b, &len) in lens.iter().enumerate() {
        for h in 0..hkv {
            for (lp, (hi, lo)) in kv.page_stats(b, h).iter().enumerate() {
                let page = tables[b][lp * 16 / ps];
                let at = c.stats_offset(page, (lp * 16 % ps) / 16, h);
                for ch in 0..d {
                    assert_eq!(
                        reference::Element::to_f64(kmax[at + ch]),
                        hi[ch],
                        "kmax b{b} h{h} lp{lp} {seed}"
                    );
                    assert_eq!(
                        reference::Element::to_f64(kmin[at + ch]),
                        lo[ch],
                        "kmin b{b} h{h} lp{lp} {seed}"
                    );
                }
            }
            let _ = len;
        }
    }
    // Decoding over the GPU's selection matches the reference over the same pages.
    let o_out = decode_poisoned(
        rt,
        &cache,
        &table,
        &q_host,
        q_layout,
        DecodeMask::Selected(&sel),
    )
    .unwrap()
    .o;
    let v_pool = download_pool::<T>(rt, cache.v_pool());
    let kv = PagedKv { v: &v_pool, ..kv };
    let rule = DecodeRule::Selected {
        pages: want,
        covers: lens.iter().map(|l| l.div_ceil(ps)).collect(),
    };
    let r = reference::decode_attention(&q_host, hq, q_len, &kv, &rule, None);
    reference::check_close(&o_out, &r.o, &Tolerance::rel(1e-2))
        .unwrap_or_else(|m| panic!("selected decode {seed}\n{m}"));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn selector_matches_the_reference_index_for_index() {
    let rt = runtime();
    selector_case::<bf16>(&rt, 128, &[5000, 100, 1, 4096], 64, 32, 8, 1, 1024, 1);
    selector_case::<f16>(&rt, 128, &[3333, 700], 16, 8, 2, 3, 256, 2);
    selector_case::<bf16>(&rt, 128, &[9000], 128, 4, 4, 2, 4096, 1);
    // Budget larger than every context: every page.
    selector_case::<bf16>(&rt, 128, &[900, 17], 32, 8, 8, 1, 4096, 1);
}

/// The scorer's tensor-core tiles at every head dim and page size: groups of 8 logical pages
/// that span eight pages of 16 tokens or one of 128, the 64-row maximum (four row tiles), row
/// counts that are not a multiple of 16 (the padding rows take no part), sequences shorter
/// than one group and sequences ending inside a logical page.
#[test]
#[ignore = "needs a CUDA GPU"]
fn selector_at_every_head_dim_and_row_count() {
    let rt = runtime();
    selector_case::<bf16>(&rt, 64, &[5000, 129, 2], 128, 32, 1, 2, 1024, 1);
    selector_case::<f16>(&rt, 128, &[3000, 40], 32, 16, 2, 8, 512, 2);
    selector_case::<bf16>(&rt, 256, &[2100, 33], 16, 12, 4, 3, 512, 1);
    selector_case::<f16>(&rt, 256, &[4097, 700], 128, 32, 2, 2, 2048, 1);
    selector_case::<bf16>(&rt, 64, &[1000, 17], 64, 6, 2, 1, 256, 1);
}

/// Rows of more pages than the top-k keeps in registers (512 threads x 4: 2048 pages), so the
/// later chunks are read again each pass and compacted after the first; one row keeps every
/// page of a multi-chunk context. Integer scores tie often, so the bucket is rarely taken whole
/// before the last pass.
#[test]
#[ignore = "needs a CUDA GPU"]
fn selector_rows_longer_than_the_register_chunk() {
    let rt = runtime();
    selector_case::<bf16>(&rt, 128, &[40_000, 3_000, 17], 16, 8, 2, 1, 8192, 1);
    selector_case::<bf16>(&rt, 128, &[33_000, 700], 16, 4, 4, 1, 40_000, 2);
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn selector_reuse_is_explicit() {
    let rt = runtime();
    let case = Case::new(&[500], 8, 2, 1, Rule::Dense);
    let c = config(&case, 8);
    let mut cache = PagedKvCache::new(&rt, c).unwrap();
    let rows = vec![vec![0u32, 1, 2, 3, 4, 5, 6, 7]];
    let mut rng = Rng::fresh();
    let k = rng.normal_vec_in(500 * 2 * 128, Precision::Bf16);
    append::<bf16>(&rt, &mut cache, &rows, &[500], &[500], &k, &k).unwrap();
    let table = DevicePageTable::new(&rt, &c, &rows, &[500]).unwrap();
    let q_layout = Layout::bhsd(1, 1, 8, 128);
    let q = rt
        .stream()
        .alloc_zeros::<bf16>(q_layout.required_len())
        .unwrap();
    let mut selector = PageSelector::new(SelectorConfig {
        budget: 128,
        sink_pages: 1,
        refresh_every: 4,
    })
    .unwrap();
    let mut current = None;
    let mut refreshed = Vec::new();
    for _ in 0..9 {
        let fresh = selector
            .refresh(
                &rt,
                &cache,
                &table,
                Tensor {
                    data: &q,
                    layout: q_layout,
                },
                current.as_ref(),
            )
            .unwrap();
        refreshed.push(fresh.is_some());
        if let Some(s) = fresh {
            current = Some(s);
        }
    }
    assert_eq!(
        refreshed,
        [true, false, false, false, true, false, false, false, true]
    );
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_decode_variants() {
    let rt = runtime();
    let w = StreamingWindow {
        sink: 16,
        recent: 40,
    };
    check(&rt, &Case::new(&[150, 2, 40], 4, 2, 2, Rule::Dense));
    check(&rt, &Case::new(&[150, 1, 40], 4, 2, 1, Rule::Dense));
    check(&rt, &Case::new(&[150, 3], 4, 2, 1, Rule::Streaming(w)));
    check(&rt, &Case::new(&[150, 70], 4, 2, 1, Rule::Selected(0.5)));
    check(&rt, &Case::new(&[150, 70], 8, 4, 2, Rule::Mixed(w, 0.5)));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn sanitizer_decode_selector_and_append() {
    let rt = runtime();
    selector_case::<bf16>(&rt, 128, &[300, 20], 16, 4, 2, 1, 64, 1);
    // Logical pages past the tokens of a 128-token page: never read.
    selector_case::<bf16>(&rt, 64, &[300, 20], 128, 8, 2, 2, 256, 1);
}
