//! A quick tune on the GPU (ignored without one): it completes, its winner passed the gate, and
//! the config it writes answers for the tuned shape.

use flashgen_codegen::{default_set, AttentionSpec, DType, Variant};
use flashgen_runtime::{Runtime, TunedConfig};
use flashgen_tuning::{
    tune, Shape, TargetMask, TuneEvent, TuneOptions, TuneReport, TuneTarget, MAX_REL_L2,
};
use std::cell::RefCell;

#[test]
#[ignore = "needs a CUDA GPU"]
fn quick_tune_of_a_small_target() {
    let rt = Runtime::new(0).expect("a CUDA GPU");
    let spec = AttentionSpec::new(Variant::Dense, 64, DType::Bf16, true).with_lse(true);
    let target = TuneTarget {
        spec,
        shape: Shape {
            batch: 1,
            heads: 8,
            kv_heads: 2,
            seq: 1024,
        },
        mask: TargetMask::None,
    };
    let events = RefCell::new(Vec::new());
    let progress = |e: &TuneEvent| events.borrow_mut().push(e.clone());
    let options = TuneOptions {
        quick: true,
        time_budget: None,
        progress: Some(&progress),
    };
    let report = tune(&rt, std::slice::from_ref(&target), &options).expect("tune");
    let t = &report.targets[0];
    print_report(&report);
    assert_eq!(t.error, None, "{t:#?}");
    let winner = t.winner.as_ref().expect("a winner");
    assert!(winner.rel_l2 < MAX_REL_L2);
    assert!(winner.median_ms > 0.0 && winner.median_ms.is_finite());
    let default = t.default.as_ref().expect("the default was timed");
    assert!(default.median_ms > 0.0);
    // The winner is never slower than the default, timed in the same run.
    assert!(t.speedup().unwrap() >= 1.0);
    assert!(t.measured.len() >= 2, "{t:#?}");
    assert!(t.measured.iter().all(|m| m.rel_l2 < MAX_REL_L2));
    let events = events.into_inner();
    assert!(matches!(
        events.first(),
        Some(TuneEvent::TargetStarted { .. })
    ));
    assert!(matches!(events.last(), Some(TuneEvent::TargetDone { .. })));

    // The config answers for the tuned shape with the winner.
    let config = report.to_config();
    assert_eq!(config.lookup(&spec, &t.shape), Some(winner.tile));
    let path = std::env::temp_dir().join(format!("flashgen-gpu-tune-{}.toml", std::process::id()));
    config.save(&path).unwrap();
    let back = TunedConfig::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(back
        .check_matches(&(rt.info()).into(), report.nvrtc, &report.template_digest)
        .is_empty());

    // A second tune in the same runtime compiles nothing.
    let again = tune(
        &rt,
        std::slice::from_ref(&target),
        &TuneOptions {
            quick: true,
            ..Default::default()
        },
    )
    .expect("second tune");
    assert_eq!(again.targets[0].fresh_compiles, 0);
}

fn print_report(report: &TuneReport) {
    for t in &report.targets {
        println!(
            "{} ({:.1} s, {} fresh compiles)",
            t.target,
            t.elapsed.as_secs_f64(),
            t.fresh_compiles
        );
        if let Some(e) = &t.error {
            println!("  error: {e}");
        }
        for m in &t.measured {
            println!(
                "  {:<22} {:>8.4} ms  spread {:.3}  n {:>2}  rel_l2 {:.2e}",
                m.tile.to_string(),
                m.median_ms,
                m.spread,
                m.samples,
                m.rel_l2
            );
        }
        for p in &t.pruned {
            println!("  {:<22} pruned: {}", p.tile.to_string(), p.reason);
        }
        println!(
            "  winner {:?} runner-up {:?} default {:?} speedup {:?} confident {}",
            t.winner.as_ref().map(|w| w.tile.to_string()),
            t.runner_up.as_ref().map(|w| w.tile.to_string()),
            t.default.as_ref().map(|w| w.median_ms),
            t.speedup(),
            t.confident
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn quick_tune_of_one_target_per_variant() {
    let rt = Runtime::new(0).expect("a CUDA GPU");
    let targets: Vec<_> = default_set()
        .into_iter()
        .filter(|s| s.head_dim == 128 && (s.causal || !s.variant.accepts_causal()))
        .map(|s| TuneTarget::standard(s, 16384))
        .collect();
    // One target per registered variant.
    assert_eq!(targets.len(), Variant::ALL.len());
    let report = tune(
        &rt,
        &targets,
        &TuneOptions {
            quick: true,
            ..Default::default()
        },
    )
    .expect("tune");
    print_report(&report);
    println!("{}", report.to_config().to_toml());
    for t in &report.targets {
        assert_eq!(t.error, None, "{}", t.target);
        let w = t.winner.as_ref().expect("a winner");
        assert!(w.rel_l2 < MAX_REL_L2);
        // The default is timed interleaved with the winner, which must beat it to win.
        assert!(
            t.speedup().unwrap() >= 1.0,
            "{}: a winner slower than the default",
            t.target
        );
        if w.tile != t.default_tile {
            assert!(t.speedup().unwrap() > 1.0 + flashgen_tuning::timing::MIN_MARGIN);
        }
    }
}

/// The runtime launches the tuned tile from a config, and ignores (with a warning) a config
/// tuned on another GPU.
#[test]
#[ignore = "needs a CUDA GPU"]
fn runtime_launches_the_tuned_tile() {
    use flashgen_codegen::{default_tile, search_space, template_digest};
    use flashgen_runtime::config::{ConfigEntry, ConfigHeader, GpuIdentity};
    use flashgen_runtime::{nvrtc_version, AttentionArgs, Layout, Tensor, TensorMut, TileSource};
    use half::bf16;

    let rt = Runtime::new(0).expect("a CUDA GPU");
    let spec = AttentionSpec::new(Variant::Dense, 64, DType::Bf16, true);
    let default = default_tile(&spec, rt.arch());
    let other = search_space(&spec, rt.arch())
        .into_iter()
        .find(|t| *t != default)
        .expect("more than one tile");
    let (b, s, h, d) = (1, 1000, 4, 64);
    let layout = Layout::bshd(b, s, h, d);
    let shape = flashgen_runtime::ShapeKey {
        seq_len: s,
        gqa: 1,
        density: flashgen_runtime::dense_density(s, s, true),
    };
    let gpu = GpuIdentity::from(rt.info());
    let header = ConfigHeader::new(&gpu, nvrtc_version().unwrap(), template_digest());
    let mut config = TunedConfig::new(header);
    let b_ = shape.bucket();
    config.insert(ConfigEntry {
        spec,
        seq: b_.seq,
        gqa: b_.gqa,
        density: b_.density,
        tile: other.to_string(),
        ms: 1.0,
        runner_up: None,
        runner_up_ms: None,
        default_ms: 1.5,
    });
    let dir = std::env::temp_dir().join(format!("flashgen-tuned-launch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tuned.toml");
    config.save(&path).unwrap();
    assert!(rt.use_tuned_config(&path).unwrap().is_empty());
    assert_eq!(rt.select_tile(&spec, &shape), (other, TileSource::Tuned));

    let data: Vec<bf16> = (0..layout.numel())
        .map(|i| bf16::from_f32(((i * 7919 % 1000) as f32 / 500.0) - 1.0))
        .collect();
    let q = rt.stream().clone_htod(&data).unwrap();
    let mut o = rt
        .stream()
        .clone_htod(&vec![bf16::NAN; layout.numel()])
        .unwrap();
    let ran = rt
        .attention_tuned(
            &spec,
            AttentionArgs::new(
                Tensor { data: &q, layout },
                Tensor { data: &q, layout },
                Tensor { data: &q, layout },
                TensorMut {
                    data: &mut o,
                    layout,
                },
            ),
        )
        .expect("tuned launch");
    assert_eq!(ran.tile, other);
    let out = rt.stream().clone_dtoh(&o).unwrap();
    assert!(
        out.iter().all(|x| x.is_finite()),
        "the tuned launch wrote every output"
    );

    // A file from another GPU is not used, and says why.
    let mut foreign = config.clone();
    foreign.tuned_on.gpu = "Some Other GPU".into();
    foreign.save(&path).unwrap();
    let rt2 = Runtime::new(0).unwrap();
    let warnings = rt2.use_tuned_config(&path).unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("Some Other GPU") && w.contains("not used")),
        "{warnings:?}"
    );
    assert_eq!(
        rt2.select_tile(&spec, &shape),
        (default, TileSource::Default)
    );
    // A corrupt file is an error naming it.
    std::fs::write(&path, "tuned_on = 3\n[[entry]]\n").unwrap();
    let rt3 = Runtime::new(0).unwrap();
    let err = rt3.use_tuned_config(&path).unwrap_err().to_string();
    assert!(err.contains("tuned.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A quick decode tune: its winners passed the gate and are never slower than the heuristic,
/// its `[[decode]]` entries survive the file, and a runtime that reads the file launches the
/// tuned row tile and split count.
#[test]
#[ignore = "needs a CUDA GPU"]
fn quick_decode_tune_writes_entries_the_runtime_reads() {
    use flashgen_codegen::{DecodeSpec, DecodeVariant};
    use flashgen_runtime::decode::{
        DecodeArgs, DecodeChoice, DeviceAppend, DevicePageTable, KvCacheConfig, PagedKvCache,
    };
    use flashgen_runtime::{Layout, Tensor, TensorMut};
    use flashgen_tuning::{DecodeTarget, Tuner};
    use half::bf16;

    let rt = Runtime::new(0).expect("a CUDA GPU");
    let (batch, seq) = (2, 5000);
    let dense = DecodeSpec::new(DecodeVariant::Dense, 128, DType::Bf16, 64);
    let targets = vec![
        DecodeTarget::standard(dense, batch, seq),
        DecodeTarget::standard(
            DecodeSpec::new(DecodeVariant::Mixed, 64, DType::Bf16, 32),
            1,
            9000,
        ),
    ];
    let report = Tuner::default()
        .tune_all(
            &rt,
            &[],
            &targets,
            &TuneOptions {
                quick: true,
                ..Default::default()
            },
        )
        .expect("tune");
    for t in &report.decode {
        println!(
            "{} default {:?} {:?} winner {:?} speedup {:?}",
            t.target,
            t.default_candidate,
            t.default,
            t.winner,
            t.speedup()
        );
        assert_eq!(t.error, None, "{}", t.target);
        let w = t.winner.as_ref().expect("a winner");
        assert!(w.rel_l2 < MAX_REL_L2);
        assert!(t.speedup().unwrap() >= 1.0, "{}", t.target);
        assert!(t.measured.len() >= 2, "{t:#?}");
    }
    let config = report.to_config();
    assert_eq!(config.decode.len(), 2);
    let dir = std::env::temp_dir().join(format!("flashgen-decode-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tuned.toml");
    config.save(&path).unwrap();
    let back = TunedConfig::load(&path).unwrap();
    assert_eq!(back.decode, config.decode);

    // Force a winner other than the heuristic's split count, and check that it is launched.
    let mut forced = back.clone();
    let entry = &mut forced.decode[0];
    assert_eq!(entry.spec, dense.to_string());
    entry.splits = if entry.default_splits > 1 { 1 } else { 2 };
    let want_splits = entry.splits as usize;
    forced.save(&path).unwrap();
    let rt2 = Runtime::new(0).unwrap();
    rt2.use_tuned_config(&path).unwrap();

    let config = KvCacheConfig::new(batch * seq.div_ceil(64), 64, 8, 128, DType::Bf16);
    let mut cache = PagedKvCache::new(&rt2, config).unwrap();
    let per = seq.div_ceil(64);
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|b| ((b * per) as u32..((b + 1) * per) as u32).collect())
        .collect();
    let lens = vec![seq; batch];
    let table = DevicePageTable::new(&rt2, &config, &rows, &lens).unwrap();
    let append = DeviceAppend::new(&rt2, &table, &lens).unwrap();
    let kv_layout = Layout::packed(batch * seq, 8, 128);
    let kv: Vec<bf16> = (0..kv_layout.numel())
        .map(|i| bf16::from_f32(((i * 7919 % 1000) as f32 / 500.0) - 1.0))
        .collect();
    let kv = rt2.stream().clone_htod(&kv).unwrap();
    let kvt = || Tensor {
        data: &kv,
        layout: kv_layout,
    };
    cache.append(&rt2, &table, &append, kvt(), kvt()).unwrap();
    let ql = Layout::bhsd(batch, 1, 32, 128);
    let q = rt2
        .stream()
        .clone_htod(&vec![bf16::ONE; ql.numel()])
        .unwrap();
    let mut outs = Vec::new();
    for choice in [DecodeChoice::Tuned, DecodeChoice::Heuristic] {
        let mut o = rt2
            .stream()
            .clone_htod(&vec![bf16::NAN; ql.numel()])
            .unwrap();
        let launch = rt2
            .decode_with(
                &cache,
                &table,
                DecodeArgs::new(
                    Tensor {
                        data: &q,
                        layout: ql,
                    },
                    TensorMut {
                        data: &mut o,
                        layout: ql,
                    },
                ),
                choice,
            )
            .unwrap();
        if choice == DecodeChoice::Tuned {
            assert!(launch.tuned, "the tuned entry was not used");
            assert_eq!(launch.splits, want_splits);
        } else {
            assert!(!launch.tuned);
        }
        let out: Vec<bf16> = rt2.stream().clone_dtoh(&o).unwrap();
        assert!(out.iter().all(|x| x.is_finite()));
        outs.push(out);
    }
    let (a, b) = (&outs[0], &outs[1]);
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.to_f64(), y.to_f64());
        diff += (x - y) * (x - y);
        norm += y * y;
    }
    assert!((diff / norm.max(1e-30)).sqrt() < 1e-2);
    std::fs::remove_dir_all(&dir).unwrap();
}
