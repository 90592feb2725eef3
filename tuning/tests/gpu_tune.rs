//! A quick tune on the GPU (ignored without one): it completes, its winner passed the gate, and
//! the config it writes answers for the tuned shape.

use flashgen_codegen::{default_set, DType, KernelSpec, Variant};
use flashgen_runtime::{Runtime, TunedConfig};
use flashgen_tuning::{
    tune, Shape, TargetMask, TuneEvent, TuneOptions, TuneReport, TuneTarget, MAX_REL_L2,
};
use std::cell::RefCell;

#[test]
#[ignore = "needs a CUDA GPU"]
fn quick_tune_of_a_small_target() {
    let rt = Runtime::new(0).expect("a CUDA GPU");
    let spec = KernelSpec::new(Variant::Dense, 64, DType::Bf16, true, rt.arch()).with_lse(true);
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
    assert!(t.speedup().unwrap() >= 0.5);
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
    let targets: Vec<_> = default_set(rt.arch())
        .into_iter()
        .filter(|s| s.head_dim == 128 && (s.causal || !s.variant.accepts_causal()))
        .map(|s| TuneTarget::standard(s, 16384))
        .collect();
    assert_eq!(targets.len(), 5);
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
        assert!(
            t.speedup().unwrap() >= 0.98,
            "{}: the default is a candidate",
            t.target
        );
    }
}
