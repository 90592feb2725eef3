//! Decode tuning: the launch parameters of a decode kernel (its row tile and its KV split
//! count; the kernel has no other knob: 64-token KV tiles, pipeline stages set by shared
//! memory) on a standard problem, chosen like prefill tiles: every candidate's output is gated
//! against the heuristic launch's on the same inputs, the heuristic and the fastest candidates
//! are re-timed interleaved with the shared timing function, and a candidate wins only if it
//! beats the heuristic by more than the noise. The result is a `[[decode]]` entry of the tuned
//! config, which [`Runtime::decode`] reads.

use crate::gate::{check_reference, gate};
use crate::gpu::{l2_bytes, time_launches, TuneElement, WARMUP_TIME};
use crate::target::SplitMix;
use crate::timing::{decide, finalists, input_sets, Measurement, TimingParams};
use crate::tuner::{TuneError, TuneEvent, TuneOptions};
use flashgen_codegen::decode::{decode_default_set, DECODE_BLOCK_N, DECODE_ROWS};
use flashgen_codegen::{DType, DecodeSpec};
use flashgen_runtime::config::{DecodeBucket, DecodeEntry};
use flashgen_runtime::cudarc::driver::CudaSlice;
use flashgen_runtime::decode::{
    exact_splits, plan_decode, DecodeArgs, DecodeChoice, DecodeHeadKind, DecodeHeads, DecodeMask,
    DecodePlan, DecodeShape, DeviceAppend, DevicePageTable, KvCacheConfig, PageSelection,
    PagedKvCache,
};
use flashgen_runtime::{Layout, Runtime, Tensor, TensorMut};
use half::{bf16, f16};
use std::fmt;
use std::time::{Duration, Instant};

/// A standard decode problem: `batch` sequences of `seq` tokens (the new one included), one new
/// token each, `heads_q` query heads over `heads_kv` kv heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeProblem {
    pub batch: usize,
    pub seq: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub q_len: usize,
}

/// The (batch, length) pairs of the default decode targets (the decode benchmark's): one long
/// sequence at 32k and 128k, 8 sequences of 32k, 32 of 8k; hq 32 over hkv 8.
pub const DECODE_PROBLEMS: [(usize, usize); 4] = [(1, 32768), (1, 131072), (8, 32768), (32, 8192)];

/// Tokens the selected heads of a standard problem read: LServe's budget.
pub const SELECTION_BUDGET: usize = 4096;

/// One decode tuning target: a decode kernel family (the spec; its row tile is the smallest
/// that holds the problem's group, what the heuristic launches and the config's key) on a
/// problem.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeTarget {
    pub spec: DecodeSpec,
    pub problem: DecodeProblem,
}

impl DecodeTarget {
    /// The standard problem for a spec: hq 32 over hkv 8, one new token, `batch` sequences of
    /// `seq` tokens; the spec's row tile becomes the group's.
    pub fn standard(spec: DecodeSpec, batch: usize, seq: usize) -> Self {
        let problem = DecodeProblem {
            batch,
            seq,
            heads_q: 32,
            heads_kv: 8,
            q_len: 1,
        };
        let group = problem.heads_q / problem.heads_kv * problem.q_len;
        let rows = DecodeSpec::rows_for(group, spec.head_dim).unwrap_or(spec.rows);
        DecodeTarget {
            spec: spec.with_rows(rows),
            problem,
        }
    }

    /// Checks that the target can be set up.
    pub fn check(&self) -> Result<(), String> {
        let p = &self.problem;
        self.spec.validate().map_err(|e| e.to_string())?;
        if p.batch == 0 || p.seq == 0 || p.heads_kv == 0 || p.q_len == 0 {
            return Err(format!(
                "batch, seq, heads and q_len must be positive; got {p:?}"
            ));
        }
        if !p.heads_q.is_multiple_of(p.heads_kv) || p.heads_q == 0 {
            return Err(format!(
                "heads_q = {} is not a positive multiple of heads_kv = {}",
                p.heads_q, p.heads_kv
            ));
        }
        if p.seq < p.q_len {
            return Err(format!(
                "seq = {} is shorter than q_len = {}",
                p.seq, p.q_len
            ));
        }
        let group = p.heads_q / p.heads_kv * p.q_len;
        if DecodeSpec::rows_for(group, self.spec.head_dim) != Some(self.spec.rows) {
            return Err(format!(
                "{} is not the heuristic's kernel for {group} query rows per kv head",
                self.spec
            ));
        }
        Ok(())
    }

    /// The config bucket the target's result is filed under.
    pub fn bucket(&self) -> DecodeBucket {
        let p = &self.problem;
        DecodeBucket::of(p.batch, p.seq, p.heads_kv)
    }

    fn cache_config(&self, copies: usize) -> KvCacheConfig {
        let p = &self.problem;
        KvCacheConfig::new(
            p.batch * self.pages_per_sequence() * copies.max(1),
            self.spec.page_size as usize,
            p.heads_kv,
            self.spec.head_dim as usize,
            self.spec.dtype,
        )
        .with_kv(self.spec.kv_dtype)
    }

    fn pages_per_sequence(&self) -> usize {
        self.problem.seq.div_ceil(self.spec.page_size as usize)
    }

    /// The standard page lists of selected heads: the first and the newest page and random
    /// others up to [`SELECTION_BUDGET`] tokens, per (sequence, kv head), ascending.
    fn selection_lists(&self, seed: u64) -> Vec<Vec<usize>> {
        let n = self.pages_per_sequence();
        let keep = (SELECTION_BUDGET / self.spec.page_size as usize).clamp(2, n.max(2));
        let mut rng = SplitMix(seed);
        let mut lists = Vec::new();
        for _ in 0..self.problem.batch * self.problem.heads_kv {
            let mut list: Vec<usize> = if keep >= n {
                (0..n).collect()
            } else {
                // A partial shuffle of the middle pages picks the rest.
                let mut middle: Vec<usize> = (1..n - 1).collect();
                for i in 0..keep - 2 {
                    let j = i + (rng.next_u64() % (middle.len() - i) as u64) as usize;
                    middle.swap(i, j);
                }
                let mut l = middle[..keep - 2].to_vec();
                l.extend([0, n - 1]);
                l
            };
            list.sort_unstable();
            list.dedup();
            lists.push(list);
        }
        lists
    }
}

impl fmt::Display for DecodeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.problem;
        write!(
            f,
            "{} b{} s{} h{}/{}",
            self.spec, p.batch, p.seq, p.heads_q, p.heads_kv
        )?;
        if p.q_len > 1 {
            write!(f, " q{}", p.q_len)?;
        }
        Ok(())
    }
}

/// The built-in decode targets: every kernel of [`decode_default_set`] on every problem of
/// [`DECODE_PROBLEMS`].
pub fn default_decode_targets() -> Vec<DecodeTarget> {
    let mut out = Vec::new();
    for spec in decode_default_set() {
        for (batch, seq) in DECODE_PROBLEMS {
            out.push(DecodeTarget::standard(spec, batch, seq));
        }
    }
    out
}

/// Launch parameters of a decode kernel: what a decode tune chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecodeCandidate {
    pub rows: u32,
    pub splits: usize,
}

impl fmt::Display for DecodeCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{} splits {}", self.rows, self.splits)
    }
}

/// The candidates of a target whose heuristic launch is `default` and whose longest visit list
/// holds `max_blocks` 16-token blocks, the default first. Row tiles: every valid tile at least
/// the group's (`quick`: the group's only). Split counts: the powers of two, the heuristic's and
/// 1/2, 2/3, 3/2 and 2 times it (`quick`: the heuristic's, half and double it, and 1), each as
/// the launch would run it (whole KV tiles per split), without repeats.
pub fn decode_candidates(
    default: DecodeCandidate,
    max_rows: u32,
    max_blocks: usize,
    quick: bool,
) -> Vec<DecodeCandidate> {
    let per_tile = (DECODE_BLOCK_N / 16) as usize;
    let max_tiles = max_blocks.div_ceil(per_tile).max(1);
    let h = default.splits.max(1);
    let mut splits: Vec<usize> = vec![h, (h / 2).max(1), 2 * h, 1];
    if !quick {
        splits.extend(
            std::iter::successors(Some(1usize), |s| Some(s * 2)).take_while(|&s| s <= max_tiles),
        );
        splits.extend([(2 * h / 3).max(1), 3 * h / 2]);
    }
    let rows: Vec<u32> = if quick {
        vec![default.rows]
    } else {
        DECODE_ROWS
            .into_iter()
            .filter(|&r| r >= default.rows && r <= max_rows)
            .collect()
    };
    let mut out = vec![default];
    for &r in &rows {
        for &s in &splits {
            let c = DecodeCandidate {
                rows: r,
                splits: exact_splits(max_blocks, s).0,
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// One candidate's result.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeTimed {
    pub candidate: DecodeCandidate,
    pub median_ms: f64,
    pub spread: f64,
    pub samples: usize,
    /// Relative L2 error of O against the heuristic launch's output.
    pub rel_l2: f64,
}

/// The result of one decode target.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeTargetReport {
    pub target: DecodeTarget,
    /// The heuristic launch: its row tile and split count.
    pub default_candidate: Option<DecodeCandidate>,
    pub default: Option<DecodeTimed>,
    pub winner: Option<DecodeTimed>,
    pub runner_up: Option<DecodeTimed>,
    pub confident: bool,
    /// Every timed candidate that passed the gate, fastest first.
    pub measured: Vec<DecodeTimed>,
    /// Candidates dropped, with the reason.
    pub pruned: Vec<(DecodeCandidate, String)>,
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl DecodeTargetReport {
    /// Default time over winner time.
    pub fn speedup(&self) -> Option<f64> {
        match (&self.default, &self.winner) {
            (Some(d), Some(w)) if w.median_ms > 0.0 => Some(d.median_ms / w.median_ms),
            _ => None,
        }
    }

    /// The config entry of this target, when it has a winner: the winner's parameters (the
    /// heuristic's own when it won, so that a re-tune replaces an older entry).
    pub fn config_entry(&self) -> Option<DecodeEntry> {
        let (w, d) = (self.winner.as_ref()?, self.default.as_ref()?);
        let b = self.target.bucket();
        Some(DecodeEntry {
            spec: self.target.spec.to_string(),
            seq: b.seq,
            batch: b.batch,
            heads_kv: b.heads_kv,
            rows: w.candidate.rows,
            splits: w.candidate.splits as u32,
            ms: w.median_ms,
            default_splits: d.candidate.splits as u32,
            default_ms: d.median_ms,
        })
    }
}

/// A decode target's inputs on the device: one cache, and page tables that map each sequence
/// onto its pages in different rotations (the input sets: each reads other physical pages, so
/// small visit lists do not stay in L2), with the selection and head kinds of the variant.
struct DecodeWork<T: TuneElement> {
    target: DecodeTarget,
    cache: PagedKvCache,
    tables: Vec<DevicePageTable>,
    selections: Vec<PageSelection>,
    heads: DecodeHeads,
    q: CudaSlice<T>,
    o: CudaSlice<T>,
    lse: CudaSlice<f32>,
    q_layout: Layout,
}

fn err(e: impl fmt::Display) -> String {
    e.to_string()
}

/// Tokens appended per call while filling the cache.
const FILL_CHUNK: usize = 8192;

impl<T: TuneElement> DecodeWork<T> {
    fn new(rt: &Runtime, target: &DecodeTarget, seed: u64, l2: usize) -> Result<Self, String> {
        let p = target.problem;
        let config = target.cache_config(1);
        let mut cache = PagedKvCache::new(rt, config).map_err(err)?;
        let per_seq = target.pages_per_sequence();
        let rows: Vec<Vec<u32>> = (0..p.batch)
            .map(|b| ((b * per_seq) as u32..((b + 1) * per_seq) as u32).collect())
            .collect();
        // One random chunk appended repeatedly: random enough for timing, cheap to make.
        let mut rng = SplitMix(seed);
        let mut random = |n: usize| -> Vec<T> {
            (0..n.max(1))
                .map(|_| T::from_f32((2.0 * (rng.uniform() + rng.uniform() - 1.0)) as f32))
                .collect()
        };
        let row = p.heads_kv * target.spec.head_dim as usize;
        let chunk = random(FILL_CHUNK * row);
        let mut done = 0;
        while done < p.seq {
            let n = FILL_CHUNK.min(p.seq - done);
            let table =
                DevicePageTable::new(rt, &config, &rows, &vec![done + n; p.batch]).map_err(err)?;
            let append = DeviceAppend::new(rt, &table, &vec![n; p.batch]).map_err(err)?;
            let data: Vec<T> = (0..p.batch)
                .flat_map(|_| chunk[..n * row].iter().copied())
                .collect();
            let kv = rt
                .stream()
                .clone_htod(&data)
                .map_err(|e| format!("{e:?}"))?;
            let layout = Layout::packed(p.batch * n, p.heads_kv, target.spec.head_dim as usize);
            cache
                .append(
                    rt,
                    &table,
                    &append,
                    Tensor { data: &kv, layout },
                    Tensor { data: &kv, layout },
                )
                .map_err(err)?;
            done += n;
        }
        let lens = vec![p.seq; p.batch];
        let table0 = DevicePageTable::new(rt, &config, &rows, &lens).map_err(err)?;
        let q_layout = Layout::bhsd(p.batch, p.q_len, p.heads_q, target.spec.head_dim as usize);
        let heads: Vec<DecodeHeadKind> = (0..p.heads_kv)
            .map(|h| {
                if h % 2 == 0 {
                    DecodeHeadKind::Streaming
                } else {
                    DecodeHeadKind::Selected
                }
            })
            .collect();
        let heads = DecodeHeads::new(rt, &heads).map_err(err)?;
        let selection0 =
            PageSelection::from_lists(rt, &table0, p.heads_kv, &target.selection_lists(seed))
                .map_err(err)?;
        let q_host = random(q_layout.required_len());
        let mut work = DecodeWork {
            target: target.clone(),
            cache,
            tables: vec![table0],
            selections: vec![selection0],
            heads,
            q: rt
                .stream()
                .clone_htod(&q_host)
                .map_err(|e| format!("{e:?}"))?,
            o: rt
                .stream()
                .alloc_zeros::<T>(q_layout.required_len())
                .map_err(|e| format!("{e:?}"))?,
            lse: rt
                .stream()
                .alloc_zeros::<f32>(p.batch * p.heads_q * p.q_len)
                .map_err(|e| format!("{e:?}"))?,
            q_layout,
        };
        // Rotated tables until the sets read twice the L2 between two uses of one.
        let plan = work.plan(0)?;
        let kv = target.spec.kv_dtype;
        let d = target.spec.head_dim as usize;
        let read =
            plan.total_blocks * 16 * row / p.heads_kv / d * (kv.k.row_bytes(d) + kv.v.row_bytes(d));
        let sets = input_sets(read, l2, TimingParams::FULL.max_input_sets).min(per_seq);
        for j in 1..sets {
            let shift = j * per_seq / sets;
            let rotated: Vec<Vec<u32>> = rows
                .iter()
                .map(|r| (0..per_seq).map(|i| r[(i + shift) % per_seq]).collect())
                .collect();
            let table = DevicePageTable::new(rt, &config, &rotated, &lens).map_err(err)?;
            let selection = PageSelection::from_lists(
                rt,
                &table,
                p.heads_kv,
                &target.selection_lists(seed.wrapping_add(j as u64)),
            )
            .map_err(err)?;
            work.tables.push(table);
            work.selections.push(selection);
        }
        Ok(work)
    }

    fn mask(&self, set: usize) -> DecodeMask<'_> {
        DecodeMask::standard(self.target.spec.variant, &self.heads, &self.selections[set])
    }

    /// The heuristic's plan on set `set` with one CTA slot (for the visit lists).
    fn plan(&self, set: usize) -> Result<DecodePlan, String> {
        let shape = DecodeShape {
            dtype: self.target.spec.dtype,
            q: self.q_layout,
            q_len_elems: self.q.len(),
            o: self.q_layout,
            o_len_elems: self.o.len(),
            lse_len: Some(self.lse.len()),
            scale: None,
        };
        plan_decode(
            self.cache.config(),
            self.tables[set].host(),
            &shape,
            &self.mask(set),
            1,
        )
        .map_err(err)
    }

    fn sets(&self) -> usize {
        self.tables.len()
    }

    /// Launches with `choice` on input set `set` (asynchronously); the splits it ran.
    fn launch(&mut self, rt: &Runtime, choice: DecodeChoice, set: usize) -> Result<usize, String> {
        let set = set % self.tables.len();
        let mask =
            DecodeMask::standard(self.target.spec.variant, &self.heads, &self.selections[set]);
        let (q_layout, table) = (self.q_layout, &self.tables[set]);
        let args = DecodeArgs::new(
            Tensor {
                data: &self.q,
                layout: q_layout,
            },
            TensorMut {
                data: &mut self.o,
                layout: q_layout,
            },
        )
        .lse(&mut self.lse)
        .mask(mask);
        rt.decode_with(&self.cache, table, args, choice)
            .map(|l| l.splits)
            .map_err(err)
    }

    /// Runs `choice` on set 0 over NaN-poisoned O and lse; O and lse as f32, and the splits.
    fn run_poisoned(
        &mut self,
        rt: &Runtime,
        choice: DecodeChoice,
    ) -> Result<(Vec<f32>, Vec<f32>, usize), String> {
        let s = rt.stream().clone();
        s.memcpy_htod(&vec![T::NAN; self.o.len()], &mut self.o)
            .map_err(|e| format!("{e:?}"))?;
        s.memcpy_htod(&vec![f32::NAN; self.lse.len()], &mut self.lse)
            .map_err(|e| format!("{e:?}"))?;
        let splits = self.launch(rt, choice, 0)?;
        s.synchronize().map_err(|e| format!("{e:?}"))?;
        let o: Vec<T> = s.clone_dtoh(&self.o).map_err(|e| format!("{e:?}"))?;
        let lse: Vec<f32> = s.clone_dtoh(&self.lse).map_err(|e| format!("{e:?}"))?;
        Ok((o.into_iter().map(T::to_f32).collect(), lse, splits))
    }
}

fn given(c: DecodeCandidate) -> DecodeChoice {
    DecodeChoice::Given {
        rows: Some(c.rows),
        splits: Some(c.splits),
    }
}

fn timed(m: &Measurement<DecodeCandidate>, rel_l2: f64) -> DecodeTimed {
    DecodeTimed {
        candidate: m.tile,
        median_ms: m.median_ms(),
        spread: m.spread(),
        samples: m.basis().len(),
        rel_l2,
    }
}

/// Where a run of decode targets sits in a whole tune: the index of its first target, the
/// targets of the whole tune, and the deadline of each target (`None`: no budget).
pub(crate) struct DecodeRun<'a> {
    pub first_index: usize,
    pub total: usize,
    pub deadline: &'a dyn Fn(usize) -> Option<Instant>,
}

/// Tunes decode targets on `rt`'s GPU: one report per target (a failed target records its
/// error). `seed` seeds the random inputs.
pub(crate) fn tune_decode(
    rt: &Runtime,
    targets: &[DecodeTarget],
    options: &TuneOptions<'_>,
    params: TimingParams,
    seed: u64,
    run: &DecodeRun<'_>,
) -> Result<Vec<DecodeTargetReport>, TuneError> {
    let l2 = l2_bytes(rt).map_err(TuneError::Device)?;
    let setting = Setting {
        rt,
        options,
        params: &params,
        l2,
    };
    let (first_index, total) = (run.first_index, run.total);
    let mut out = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        let start = Instant::now();
        let index = first_index + i;
        let deadline = (run.deadline)(index);
        options.emit(TuneEvent::TargetStarted {
            index,
            total,
            target: target.to_string(),
            tiles: 0,
        });
        let mut report = DecodeTargetReport {
            target: target.clone(),
            default_candidate: None,
            default: None,
            winner: None,
            runner_up: None,
            confident: false,
            measured: Vec::new(),
            pruned: Vec::new(),
            error: None,
            elapsed: Duration::ZERO,
        };
        let seed = seed.wrapping_add(index as u64);
        let result = match target.spec.dtype {
            DType::Bf16 => tune_one::<bf16>(&setting, target, seed, deadline, &mut report),
            DType::F16 => tune_one::<f16>(&setting, target, seed, deadline, &mut report),
        };
        if let Err(e) = result {
            options.emit(TuneEvent::Warning(format!("{target}: {e}")));
            report.error = Some(e);
        }
        for w in rt.take_warnings() {
            options.emit(TuneEvent::Warning(w));
        }
        report.elapsed = start.elapsed();
        options.emit(TuneEvent::DecodeTargetDone {
            index,
            total,
            winner: report.winner.as_ref().map(|w| w.candidate),
            speedup: report.speedup(),
        });
        out.push(report);
    }
    Ok(out)
}

/// What every decode target of a tune shares.
struct Setting<'a> {
    rt: &'a Runtime,
    options: &'a TuneOptions<'a>,
    params: &'a TimingParams,
    l2: usize,
}

fn tune_one<T: TuneElement>(
    setting: &Setting<'_>,
    target: &DecodeTarget,
    seed: u64,
    deadline: Option<Instant>,
    report: &mut DecodeTargetReport,
) -> Result<(), String> {
    let Setting {
        rt,
        options,
        params,
        l2,
    } = *setting;
    target.check()?;
    let mut work = DecodeWork::<T>::new(rt, target, seed, l2)?;
    let sets = work.sets();
    // The trusted output and the heuristic's parameters.
    let (ref_o, ref_lse, splits) = work
        .run_poisoned(rt, DecodeChoice::Heuristic)
        .map_err(|e| format!("the heuristic launch failed: {e}"))?;
    check_reference(&ref_o, Some(&ref_lse))?;
    let default = DecodeCandidate {
        rows: target.spec.rows,
        splits,
    };
    report.default_candidate = Some(default);
    let plan = work.plan(0)?;
    let candidates = decode_candidates(
        default,
        DecodeSpec::max_rows(target.spec.head_dim),
        plan.max_blocks,
        options.quick,
    );
    options.emit(TuneEvent::DecodeCandidates {
        count: candidates.len(),
    });
    let first = time_launches(rt, WARMUP_TIME, params.reps, |i| {
        work.launch(rt, DecodeChoice::Heuristic, i % sets).map(drop)
    })?;
    let mut eligible: Vec<(Measurement<DecodeCandidate>, f64)> =
        vec![(Measurement::new(default, first), 0.0)];
    for &c in &candidates[1..] {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            report.pruned.push((c, "time budget".into()));
            continue;
        }
        let outcome = (|| -> Result<(Measurement<DecodeCandidate>, f64), String> {
            let (o, lse, _) = work.run_poisoned(rt, given(c))?;
            let g = gate(&o, &ref_o, Some((&lse, &ref_lse)))?;
            let samples = time_launches(rt, params.warmup_time, params.reps, |i| {
                work.launch(rt, given(c), i % sets).map(drop)
            })?;
            Ok((Measurement::new(c, samples), g.rel_l2))
        })();
        match outcome {
            Ok((m, rel)) => {
                options.emit(TuneEvent::DecodeMeasured {
                    candidate: c,
                    median_ms: Some(m.median_ms()),
                });
                eligible.push((m, rel));
            }
            Err(reason) => {
                options.emit(TuneEvent::DecodeMeasured {
                    candidate: c,
                    median_ms: None,
                });
                report.pruned.push((c, reason));
            }
        }
    }
    let (mut ms, rel): (Vec<_>, Vec<f64>) = eligible.into_iter().unzip();
    options.emit(TuneEvent::DecodeRemeasuring {
        candidates: finalists(&ms, 0, params.max_contenders)
            .into_iter()
            .map(|i| ms[i].tile)
            .collect(),
    });
    let choices: Vec<DecodeChoice> = ms
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i == 0 {
                DecodeChoice::Heuristic
            } else {
                given(m.tile)
            }
        })
        .collect();
    let decision = decide(&mut ms, params, 0, |order| {
        time_launches(rt, WARMUP_TIME, order.len(), |i| {
            work.launch(rt, choices[order[i]], i % sets).map(drop)
        })
    })?;
    let mut order: Vec<usize> = (0..ms.len()).collect();
    order.sort_by(|&a, &b| ms[a].median_ms().total_cmp(&ms[b].median_ms()));
    report.measured = order.iter().map(|&i| timed(&ms[i], rel[i])).collect();
    if let Some(d) = decision {
        report.winner = Some(timed(&ms[d.winner], rel[d.winner]));
        report.runner_up = d.runner_up.map(|i| timed(&ms[i], rel[i]));
        report.confident = d.confident;
    }
    report.default = Some(timed(&ms[0], 0.0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::DecodeVariant;

    #[test]
    fn default_targets_cover_the_decode_default_set() {
        let t = default_decode_targets();
        assert_eq!(t.len(), decode_default_set().len() * DECODE_PROBLEMS.len());
        for target in &t {
            target.check().unwrap();
            // GQA 4 at one new token: 4 rows, the 16-row tile.
            assert_eq!(target.spec.rows, 16);
        }
        for v in DecodeVariant::ALL {
            assert!(t.iter().any(|x| x.spec.variant == v), "{v} missing");
        }
        let long = t.iter().find(|x| x.problem.seq == 131072).unwrap();
        assert_eq!(long.bucket().seq, flashgen_runtime::config::SeqClass::Gt64k);
        assert!(long.to_string().ends_with("b1 s131072 h32/8"), "{long}");
    }

    #[test]
    fn candidates_start_with_the_default_and_run_as_launched() {
        let default = DecodeCandidate {
            rows: 16,
            splits: 33,
        };
        // 128k tokens: 8192 blocks, 2048 tiles.
        let all = decode_candidates(default, 64, 8192, false);
        assert_eq!(all[0], default);
        assert!(all.iter().any(|c| c.rows == 64));
        assert!(all.iter().any(|c| c.splits == 1));
        assert!(all
            .iter()
            .any(|c| c.splits == exact_splits(8192, 66).0 && c.splits > 33));
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        for c in &all {
            assert_eq!(exact_splits(8192, c.splits).0, c.splits, "{c}");
        }
        let quick = decode_candidates(default, 64, 8192, true);
        assert!(quick.len() <= 4 && quick.iter().all(|c| c.rows == 16));
        // A short list caps the splits at one per tile; d256 caps the rows at 32.
        let short = decode_candidates(
            DecodeCandidate {
                rows: 16,
                splits: 2,
            },
            32,
            8,
            false,
        );
        assert!(short.iter().all(|c| c.splits <= 2 && c.rows <= 32));
    }

    #[test]
    fn selection_lists_are_valid_and_within_the_budget() {
        let spec = DecodeSpec::new(DecodeVariant::Selected, 128, DType::Bf16, 64);
        for (batch, seq) in [(1, 32768), (2, 100), (1, 64 * 70)] {
            let t = DecodeTarget::standard(spec, batch, seq);
            let n = t.pages_per_sequence();
            let lists = t.selection_lists(5);
            assert_eq!(lists.len(), batch * 8);
            for l in &lists {
                assert!(l.windows(2).all(|w| w[0] < w[1]));
                assert_eq!(l.first(), Some(&0));
                assert_eq!(l.last(), Some(&(n - 1)));
                assert!(l.len() <= (SELECTION_BUDGET / 64).max(2).min(n));
            }
        }
    }

    #[test]
    fn reports_become_decode_entries() {
        let t = DecodeTarget::standard(
            DecodeSpec::new(DecodeVariant::Dense, 128, DType::Bf16, 64),
            8,
            32768,
        );
        let tt = |rows, splits, ms| DecodeTimed {
            candidate: DecodeCandidate { rows, splits },
            median_ms: ms,
            spread: 1.01,
            samples: 25,
            rel_l2: 1e-3,
        };
        let report = DecodeTargetReport {
            target: t.clone(),
            default_candidate: Some(DecodeCandidate {
                rows: 16,
                splits: 4,
            }),
            default: Some(tt(16, 4, 0.30)),
            winner: Some(tt(16, 8, 0.27)),
            runner_up: None,
            confident: true,
            measured: vec![],
            pruned: vec![],
            error: None,
            elapsed: Duration::ZERO,
        };
        let e = report.config_entry().unwrap();
        assert_eq!(e.spec, "decode-dense,d128,bf16,p64,r16");
        assert_eq!((e.batch, e.heads_kv, e.rows, e.splits), (8, 8, 16, 8));
        assert_eq!(e.default_splits, 4);
        assert!((report.speedup().unwrap() - 0.30 / 0.27).abs() < 1e-12);
    }
}
