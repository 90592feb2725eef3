//! The tuner: for each target, compile the candidate tiles in parallel, gate each against the
//! default tile's output, time them with CUDA events, decide, and report.

use crate::decode::{tune_decode, DecodeCandidate, DecodeRun, DecodeTarget, DecodeTargetReport};
use crate::gate::{check_reference, gate};
use crate::gpu::{l2_bytes, problem_bytes, time_launches, TuneElement, Workload, WARMUP_TIME};
use crate::prune::{compile_pipeline, CompileOutcome, PruneReason, Pruned};
use crate::space::candidate_tiles;
use crate::target::TuneTarget;
use crate::timing::{decide, finalists, input_sets, Measurement, TimingParams};
use flashgen_codegen::{template_digest, DType, TileConfig};
use flashgen_runtime::config::{ConfigEntry, ConfigHeader, GpuIdentity, ShapeKey};
use flashgen_runtime::{nvrtc_version, CacheSource, Runtime, TunedConfig};
use half::{bf16, f16};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Failures that stop a whole tune. A failure of one target is recorded in its report instead.
#[derive(Debug, Error)]
pub enum TuneError {
    #[error(transparent)]
    Runtime(#[from] flashgen_runtime::Error),
    #[error("{0}")]
    Device(String),
}

/// Progress of a tune, for a progress display.
#[derive(Clone, Debug, PartialEq)]
pub enum TuneEvent {
    /// A target begins; `tiles` candidate tiles will be considered.
    TargetStarted {
        index: usize,
        total: usize,
        target: String,
        tiles: usize,
    },
    /// The trusted result of the default tile is ready and the default is timed.
    Reference { tile: TileConfig, median_ms: f64 },
    /// A tile compiled (or came from the kernel cache) within the limits.
    Compiled {
        tile: TileConfig,
        source: CacheSource,
    },
    /// A tile was dropped.
    Pruned { tile: TileConfig, reason: String },
    /// A tile passed the gate and was timed.
    Measured {
        tile: TileConfig,
        median_ms: f64,
        spread: f64,
    },
    /// The default and the fastest candidates are re-timed interleaved for the decision.
    Remeasuring { tiles: Vec<TileConfig> },
    /// Something the user should know (a kernel-cache problem, a failed target).
    Warning(String),
    /// A decode target's candidate launch parameters are known.
    DecodeCandidates { count: usize },
    /// A decode candidate was gated and timed (`None`: dropped).
    DecodeMeasured {
        candidate: DecodeCandidate,
        median_ms: Option<f64>,
    },
    /// The heuristic and the fastest decode candidates are re-timed interleaved.
    DecodeRemeasuring { candidates: Vec<DecodeCandidate> },
    /// A decode target is done.
    DecodeTargetDone {
        index: usize,
        total: usize,
        winner: Option<DecodeCandidate>,
        speedup: Option<f64>,
    },
    /// A target is done.
    TargetDone {
        index: usize,
        total: usize,
        winner: Option<TileConfig>,
        speedup: Option<f64>,
    },
}

/// Options of one tune.
#[derive(Clone, Copy, Default)]
pub struct TuneOptions<'a> {
    /// Only the default and a few statically promising tiles per tensor-core kind.
    pub quick: bool,
    /// Wall-clock budget of the whole tune, shared evenly by the targets not yet tuned. Tiles not
    /// timed in time are reported as such; the default is always timed.
    pub time_budget: Option<Duration>,
    /// Called on the tuning thread for every [`TuneEvent`].
    pub progress: Option<&'a dyn Fn(&TuneEvent)>,
}

impl TuneOptions<'_> {
    pub(crate) fn emit(&self, event: TuneEvent) {
        if let Some(f) = self.progress {
            f(&event);
        }
    }
}

/// One tile's result.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedTile {
    pub tile: TileConfig,
    pub median_ms: f64,
    /// Slowest over fastest of the samples behind the median.
    pub spread: f64,
    pub samples: usize,
    /// Relative L2 error of O against the default tile's output (0 for the default itself).
    pub rel_l2: f64,
}

/// The result for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetReport {
    pub target: TuneTarget,
    pub shape: ShapeKey,
    pub default_tile: TileConfig,
    /// The default tile's time (the baseline; also the trusted output's kernel).
    pub default: Option<TimedTile>,
    pub winner: Option<TimedTile>,
    pub runner_up: Option<TimedTile>,
    /// False when the winner did not beat the runner-up by more than the noise.
    pub confident: bool,
    /// Every timed tile that passed the gate, fastest first.
    pub measured: Vec<TimedTile>,
    /// Tiles dropped before or during timing, with the reason.
    pub pruned: Vec<Pruned>,
    /// Kernels that NVRTC compiled afresh (the others came from the kernel cache).
    pub fresh_compiles: usize,
    /// Why the target produced no result, if it did not.
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl TargetReport {
    /// Default time over winner time.
    pub fn speedup(&self) -> Option<f64> {
        match (&self.default, &self.winner) {
            (Some(d), Some(w)) if w.median_ms > 0.0 => Some(d.median_ms / w.median_ms),
            _ => None,
        }
    }

    /// The config entry of this target, when it has a winner and a default time.
    pub fn config_entry(&self) -> Option<ConfigEntry> {
        let (w, d) = (self.winner.as_ref()?, self.default.as_ref()?);
        let b = self.shape.bucket();
        Some(ConfigEntry {
            spec: self.target.spec,
            seq: b.seq,
            gqa: b.gqa,
            density: b.density,
            tile: w.tile.to_string(),
            ms: w.median_ms,
            runner_up: self.runner_up.as_ref().map(|r| r.tile.to_string()),
            runner_up_ms: self.runner_up.as_ref().map(|r| r.median_ms),
            default_ms: d.median_ms,
        })
    }
}

/// The result of a tune.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneReport {
    pub gpu: GpuIdentity,
    pub nvrtc: (i32, i32),
    pub template_digest: String,
    pub quick: bool,
    pub targets: Vec<TargetReport>,
    /// The decode targets' results.
    pub decode: Vec<DecodeTargetReport>,
    pub elapsed: Duration,
}

impl TuneReport {
    /// The config file of this tune: one entry per target with a winner (a later target in the
    /// same spec and bucket replaces an earlier one).
    pub fn to_config(&self) -> TunedConfig {
        let mut config = TunedConfig::new(ConfigHeader::new(
            &self.gpu,
            self.nvrtc,
            &self.template_digest,
        ));
        for t in &self.targets {
            if let Some(entry) = t.config_entry() {
                config.insert(entry);
            }
        }
        for t in &self.decode {
            if let Some(entry) = t.config_entry() {
                config.insert_decode(entry);
            }
        }
        config
    }

    pub fn into_config(self) -> TunedConfig {
        self.to_config()
    }
}

/// The tuner's knobs.
#[derive(Clone, Copy, Debug)]
pub struct Tuner {
    /// Timing parameters; `None` takes [`TimingParams::QUICK`] or [`TimingParams::FULL`].
    pub timing: Option<TimingParams>,
    /// NVRTC compile threads; 0 for one per core.
    pub compile_threads: usize,
    /// Seed of the random inputs (fixed, so two tunes see the same data).
    pub seed: u64,
}

impl Default for Tuner {
    fn default() -> Self {
        Tuner {
            timing: None,
            compile_threads: 0,
            seed: 0x5eed_f1a5,
        }
    }
}

/// Tunes `targets` on `rt`'s GPU with the default [`Tuner`].
pub fn tune(
    rt: &Runtime,
    targets: &[TuneTarget],
    options: &TuneOptions<'_>,
) -> Result<TuneReport, TuneError> {
    Tuner::default().tune(rt, targets, options)
}

impl Tuner {
    pub fn tune(
        &self,
        rt: &Runtime,
        targets: &[TuneTarget],
        options: &TuneOptions<'_>,
    ) -> Result<TuneReport, TuneError> {
        self.tune_all(rt, targets, &[], options)
    }

    /// Tunes attention targets, then decode targets; the time budget is shared by all of them.
    pub fn tune_all(
        &self,
        rt: &Runtime,
        targets: &[TuneTarget],
        decode: &[DecodeTarget],
        options: &TuneOptions<'_>,
    ) -> Result<TuneReport, TuneError> {
        let start = Instant::now();
        let total = targets.len() + decode.len();
        // Each target gets an even share of what is left of the budget when it starts.
        let deadline = |index: usize| {
            options.time_budget.map(|budget| {
                let left = budget.saturating_sub(start.elapsed());
                Instant::now() + left / (total - index).max(1) as u32
            })
        };
        let nvrtc = nvrtc_version()?;
        let l2 = l2_bytes(rt).map_err(TuneError::Device)?;
        let params = self.timing.unwrap_or(if options.quick {
            TimingParams::QUICK
        } else {
            TimingParams::FULL
        });
        let mut reports = Vec::with_capacity(targets.len());
        for (index, target) in targets.iter().enumerate() {
            let deadline = deadline(index);
            let ctx = TargetRun {
                rt,
                target,
                options,
                params,
                l2,
                deadline,
                threads: self.compile_threads,
                seed: self.seed.wrapping_add(index as u64),
            };
            options.emit(TuneEvent::TargetStarted {
                index,
                total,
                target: target.to_string(),
                tiles: ctx.tiles().len(),
            });
            let report = match target.spec.dtype {
                DType::Bf16 => ctx.run::<bf16>(),
                DType::F16 => ctx.run::<f16>(),
            };
            if let Some(e) = &report.error {
                options.emit(TuneEvent::Warning(format!("{target}: {e}")));
            }
            for w in rt.take_warnings() {
                options.emit(TuneEvent::Warning(w));
            }
            options.emit(TuneEvent::TargetDone {
                index,
                total,
                winner: report.winner.as_ref().map(|w| w.tile),
                speedup: report.speedup(),
            });
            reports.push(report);
        }
        let decode = tune_decode(
            rt,
            decode,
            options,
            params,
            self.seed,
            &DecodeRun {
                first_index: targets.len(),
                total,
                deadline: &deadline,
            },
        )?;
        Ok(TuneReport {
            gpu: GpuIdentity::from(rt.info()),
            nvrtc,
            template_digest: template_digest().to_string(),
            quick: options.quick,
            targets: reports,
            decode,
            elapsed: start.elapsed(),
        })
    }
}

/// One target's tune.
struct TargetRun<'a> {
    rt: &'a Runtime,
    target: &'a TuneTarget,
    options: &'a TuneOptions<'a>,
    params: TimingParams,
    l2: usize,
    deadline: Option<Instant>,
    threads: usize,
    seed: u64,
}

fn timed(m: &Measurement, rel_l2: f64) -> TimedTile {
    TimedTile {
        tile: m.tile,
        median_ms: m.median_ms(),
        spread: m.spread(),
        samples: m.basis().len(),
        rel_l2,
    }
}

impl TargetRun<'_> {
    fn smem_limit(&self) -> u32 {
        self.rt.info().max_shared_per_block_optin
    }

    fn tiles(&self) -> Vec<TileConfig> {
        candidate_tiles(
            &self.target.spec,
            self.rt.arch(),
            self.smem_limit(),
            self.options.quick,
        )
    }

    fn over_budget(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn run<T: TuneElement>(&self) -> TargetReport {
        let start = Instant::now();
        let tiles = self.tiles();
        let default_tile = tiles[0];
        let mut report = TargetReport {
            target: self.target.clone(),
            shape: self.target.shape_key(),
            default_tile,
            default: None,
            winner: None,
            runner_up: None,
            confident: false,
            measured: Vec::new(),
            pruned: Vec::new(),
            fresh_compiles: 0,
            error: None,
            elapsed: Duration::ZERO,
        };
        if let Err(e) = self.tune_into::<T>(&tiles, &mut report) {
            report.error = Some(e);
        }
        report.elapsed = start.elapsed();
        report
    }

    fn tune_into<T: TuneElement>(
        &self,
        tiles: &[TileConfig],
        report: &mut TargetReport,
    ) -> Result<(), String> {
        let (rt, target, params) = (self.rt, self.target, &self.params);
        target.check()?;
        let arch = rt.arch();
        let default_tile = tiles[0];
        let sets = input_sets(problem_bytes(target), self.l2, params.max_input_sets);
        let mut work = Workload::<T>::new(rt, target, sets, self.seed)?;

        // The trusted result and the baseline: the default tile, compiled here first so that
        // the compile threads find it in the cache.
        let default_spec = target.spec_with(default_tile);
        let hit = rt
            .cache()
            .get_or_compile(&default_spec, arch)
            .map_err(|e| format!("the default tile {default_tile} does not compile: {e}"))?;
        if matches!(hit.source, CacheSource::Compiled { .. }) {
            report.fresh_compiles += 1;
        }
        if let Some(w) = hit.warning {
            self.options.emit(TuneEvent::Warning(w));
        }
        rt.kernel(&default_spec)
            .map_err(|e| format!("the default tile {default_tile} does not load: {e}"))?;
        let (ref_o, ref_lse) = work
            .run_poisoned(rt, &default_spec)
            .map_err(|e| format!("the default tile {default_tile} failed: {e}"))?;
        check_reference(&ref_o, ref_lse.as_deref())?;
        // The first pass of the default follows compiles that left the GPU idle: it gets the
        // full warm-up. It only ranks; the reported times come from the interleaved re-timing.
        let samples = time_launches(rt, WARMUP_TIME, params.reps, |i| {
            work.launch(rt, &default_spec, i % sets)
        })?;
        let default_measurement = Measurement::new(default_tile, samples);
        report.default = Some(timed(&default_measurement, 0.0));
        self.options.emit(TuneEvent::Reference {
            tile: default_tile,
            median_ms: default_measurement.median_ms(),
        });

        // Compile on CPU threads while this thread gates and times what is ready.
        // The default is always a finalist, whatever the pipeline reports about its tile.
        let mut eligible: Vec<(Measurement, f64)> = vec![(default_measurement, 0.0)];
        let mut seen: HashSet<TileConfig> = HashSet::new();
        let cache = rt.cache();
        compile_pipeline(
            &target.spec,
            arch,
            self.smem_limit(),
            tiles,
            self.threads,
            |spec| cache.get_or_compile(spec, arch).map_err(|e| e.to_string()),
            |outcome| {
                seen.insert(outcome.tile());
                let candidate = match outcome {
                    CompileOutcome::Pruned(p) => {
                        self.options.emit(TuneEvent::Pruned {
                            tile: p.tile,
                            reason: p.reason.to_string(),
                        });
                        report.pruned.push(p);
                        return true;
                    }
                    CompileOutcome::Ready(c) => c,
                };
                if matches!(candidate.source, CacheSource::Compiled { .. }) {
                    report.fresh_compiles += 1;
                }
                if let Some(w) = &candidate.cache_warning {
                    self.options.emit(TuneEvent::Warning(w.clone()));
                }
                self.options.emit(TuneEvent::Compiled {
                    tile: candidate.tile,
                    source: candidate.source,
                });
                if candidate.tile == default_tile {
                    return true;
                }
                if self.over_budget() {
                    report.pruned.push(Pruned {
                        tile: candidate.tile,
                        reason: PruneReason::TimeBudget,
                    });
                    return false;
                }
                match self.gate_and_time(&mut work, candidate.tile, &ref_o, ref_lse.as_deref()) {
                    Ok((m, rel_l2)) => {
                        self.options.emit(TuneEvent::Measured {
                            tile: m.tile,
                            median_ms: m.median_ms(),
                            spread: m.spread(),
                        });
                        eligible.push((m, rel_l2));
                    }
                    Err(reason) => {
                        self.options.emit(TuneEvent::Pruned {
                            tile: candidate.tile,
                            reason: reason.to_string(),
                        });
                        report.pruned.push(Pruned {
                            tile: candidate.tile,
                            reason,
                        });
                    }
                }
                true
            },
        );
        for &tile in tiles {
            if !seen.contains(&tile) {
                report.pruned.push(Pruned {
                    tile,
                    reason: PruneReason::TimeBudget,
                });
            }
        }
        let position = |t: &TileConfig| tiles.iter().position(|x| x == t);
        report.pruned.sort_by_key(|p| position(&p.tile));

        // Decide: the default and the fastest candidates, re-timed interleaved in one run.
        let (mut ms, rel): (Vec<Measurement>, Vec<f64>) = eligible.into_iter().unzip();
        let last = finalists(&ms, 0, params.max_contenders);
        self.options.emit(TuneEvent::Remeasuring {
            tiles: last.iter().map(|&i| ms[i].tile).collect(),
        });
        let specs: Vec<_> = ms.iter().map(|m| target.spec_with(m.tile)).collect();
        let decision = decide(&mut ms, params, 0, |order| {
            time_launches(rt, WARMUP_TIME, order.len(), |i| {
                work.launch(rt, &specs[order[i]], i % sets)
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
        // The default's time is the one it was compared with.
        report.default = Some(timed(&ms[0], 0.0));
        Ok(())
    }

    /// Loads a candidate, checks its output against the trusted one, and times it.
    fn gate_and_time<T: TuneElement>(
        &self,
        work: &mut Workload<T>,
        tile: TileConfig,
        ref_o: &[f32],
        ref_lse: Option<&[f32]>,
    ) -> Result<(Measurement, f64), PruneReason> {
        let rt = self.rt;
        let spec = self.target.spec_with(tile);
        let (o, lse) = work
            .run_poisoned(rt, &spec)
            .map_err(PruneReason::LaunchFailed)?;
        let lse_pair = match (lse.as_deref(), ref_lse) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        let g = gate(&o, ref_o, lse_pair).map_err(PruneReason::GateFailed)?;
        let sets = work.sets();
        let samples = time_launches(rt, self.params.warmup_time, self.params.reps, |i| {
            work.launch(rt, &spec, i % sets)
        })
        .map_err(PruneReason::LaunchFailed)?;
        Ok((Measurement::new(tile, samples), g.rel_l2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::{Arch, AttentionSpec, Variant};
    use flashgen_runtime::config::{DensityClass, SeqClass};

    fn tt(tile: TileConfig, ms: f64) -> TimedTile {
        TimedTile {
            tile,
            median_ms: ms,
            spread: 1.01,
            samples: 11,
            rel_l2: 1e-3,
        }
    }

    fn report() -> TuneReport {
        let arch = Arch::SM90;
        let dense = AttentionSpec::new(Variant::Dense, 128, DType::Bf16, true).with_lse(true);
        let t1 = TuneTarget::standard(dense, 16384);
        let t2 = TuneTarget::standard(dense, 4096);
        let t3 = TuneTarget::standard(
            AttentionSpec::new(Variant::Streaming, 64, DType::Bf16, false).with_lse(true),
            16384,
        );
        let a = TileConfig::new(128, 128, 8, 1).with_mma(flashgen_codegen::Mma::Wgmma);
        let b = TileConfig::new(64, 128, 4, 1).with_mma(flashgen_codegen::Mma::Wgmma);
        let target = |t: TuneTarget, winner: Option<TimedTile>, runner_up, default| TargetReport {
            shape: t.shape_key(),
            default_tile: a,
            target: t,
            default,
            winner: winner.clone(),
            runner_up,
            confident: true,
            measured: winner.into_iter().collect(),
            pruned: vec![Pruned {
                tile: TileConfig::new(128, 128, 8, 2),
                reason: PruneReason::Spills {
                    registers: 255,
                    stores: 8,
                    loads: 8,
                },
            }],
            fresh_compiles: 0,
            error: None,
            elapsed: Duration::from_secs(1),
        };
        TuneReport {
            gpu: GpuIdentity {
                name: "NVIDIA H100 80GB HBM3".into(),
                arch,
                sm_count: 132,
            },
            nvrtc: (13, 0),
            template_digest: "digest".into(),
            quick: true,
            decode: vec![],
            targets: vec![
                target(t1, Some(tt(b, 2.0)), Some(tt(a, 2.2)), Some(tt(a, 2.2))),
                target(t2, Some(tt(a, 0.5)), None, Some(tt(a, 0.5))),
                // A failed target (no winner) yields no entry.
                target(t3, None, None, Some(tt(a, 1.0))),
            ],
            elapsed: Duration::from_secs(3),
        }
    }

    #[test]
    fn report_becomes_a_config() {
        let r = report();
        assert!((r.targets[0].speedup().unwrap() - 1.1).abs() < 1e-12);
        assert_eq!(r.targets[2].speedup(), None);
        let c = r.clone().into_config();
        assert_eq!(c, r.to_config());
        assert_eq!(c.tuned_on.gpu, "NVIDIA H100 80GB HBM3");
        assert_eq!(c.tuned_on.compute_capability, "9.0");
        assert_eq!(c.tuned_on.sm_count, 132);
        assert_eq!(c.tuned_on.nvrtc, "13.0");
        assert_eq!(c.tuned_on.template_digest, "digest");
        assert_eq!(c.entries.len(), 2);
        // Sorted by bucket: the 4k entry first.
        let e = &c.entries[0];
        assert_eq!(e.spec.to_string(), "dense,d128,bf16,causal,lse");
        assert_eq!(
            (e.seq, e.gqa, e.density),
            (SeqClass::Le4k, 1, DensityClass::Ge50)
        );
        assert_eq!(e.tile, "m128n128w8s1-wgmma");
        assert_eq!(e.runner_up, None);
        let e = &c.entries[1];
        assert_eq!(e.seq, SeqClass::Le16k);
        assert_eq!(e.tile, "m64n128w4s1-wgmma");
        assert_eq!(e.ms, 2.0);
        assert_eq!(e.runner_up.as_deref(), Some("m128n128w8s1-wgmma"));
        assert_eq!(e.runner_up_ms, Some(2.2));
        assert_eq!(e.default_ms, 2.2);
        // The config answers for the tuned shapes with the winners, through the text form.
        let path =
            std::env::temp_dir().join(format!("flashgen-tuning-{}.toml", std::process::id()));
        c.save(&path).unwrap();
        let back = TunedConfig::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        for t in r.targets.iter().filter(|t| t.winner.is_some()) {
            assert_eq!(
                back.lookup(&t.target.spec, &t.shape),
                Some(t.winner.as_ref().unwrap().tile)
            );
        }
    }

    #[test]
    fn pruned_reasons_read_well() {
        let r = report();
        let text = r.targets[0].pruned[0].reason.to_string();
        assert_eq!(
            text,
            "spills registers (255 registers, 8 bytes spill stores, 8 bytes spill loads)"
        );
        assert_eq!(
            PruneReason::SharedMemory {
                needed: 300_000,
                limit: 232_448
            }
            .to_string(),
            "needs 300000 bytes of shared memory; the device allows 232448 per block"
        );
    }
}
