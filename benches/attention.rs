//! Kernel benchmark on the GPU: useful TFLOP/s of each case, printed as a table and written as
//! JSON.
//!
//!   cargo bench --bench attention -- [--json FILE] [--sweep] [--only NAME[,NAME..]]
//!                                     [--tiles TILE[,TILE..]] [--uniform-inputs]
//!
//! Every case is a tuning target (`flashgen_tuning::TuneTarget`): its inputs are the tuner's
//! (`Workload`: the same random values, input sets rotated when the problem would sit in L2) and
//! its times come from the tuner's timing function (`flashgen_tuning::gpu::time_launches`: a
//! 200 ms warm-up, then back-to-back launches through `Runtime::attention`, each timed between
//! CUDA events, median), so a row and a tune of the same spec and shape measure the same thing.
//! FLOPs count the visible pairs (`TuneTarget::flops`).
//!
//! `--uniform-inputs` draws the inputs uniformly in [-2, 2) instead (what this benchmark did
//! before it took the tuner's), to measure what the input values change.
//!
//! `--sweep` also times every tile config of the search space and reports the fastest next to
//! the default; `--tiles` times the named tiles (e.g. `m64n128w4s2-wgmma-pipelined`) as extra
//! rows of each case they are valid for. The masks are the peers' (`shared/bench/peers.py`,
//! `benches/peers_extra.py`): streaming sink 128 window 2048, 10% of 128x128 blocks plus the
//! diagonal, half streaming heads; APB's local block over its anchor and passing blocks.

#[path = "common/timing.rs"]
mod timing;

use flashgen_codegen::{
    default_tile, parse_tile, search_space, validate, AttentionSpec, DType, TileConfig, Variant,
};
use flashgen_runtime::Runtime;
use flashgen_tuning::gpu::{InputValues, Workload};
use flashgen_tuning::{Shape, TargetMask, TuneTarget, DEFAULT_STREAMING};
use half::bf16;

/// One benchmark case: a name (what `--only` selects) and a tuning target.
struct Case {
    name: &'static str,
    target: TuneTarget,
}

fn spec(variant: Variant, head_dim: u32, causal: bool) -> AttentionSpec {
    AttentionSpec::new(variant, head_dim, DType::Bf16, causal).with_lse(true)
}

fn shape(heads: usize, kv_heads: usize, seq: usize) -> Shape {
    Shape {
        batch: 1,
        heads,
        kv_heads,
        seq,
    }
}

fn cases() -> Vec<Case> {
    let dense = |name, causal, seq, head_dim, heads| Case {
        name,
        target: TuneTarget {
            spec: spec(Variant::Dense, head_dim, causal),
            shape: shape(heads, heads, seq),
            mask: TargetMask::None,
        },
    };
    let s32k = |name, variant, causal, mask| Case {
        name,
        target: TuneTarget {
            spec: spec(variant, 128, causal),
            shape: shape(32, 32, 32768),
            mask,
        },
    };
    let mut gqa = dense("dense-causal-gqa", true, 16384, 128, 32);
    gqa.target.shape.kv_heads = 8;
    vec![
        dense("dense-causal", true, 4096, 128, 32),
        dense("dense", false, 4096, 128, 32),
        dense("dense-causal", true, 16384, 128, 32),
        dense("dense", false, 16384, 128, 32),
        dense("dense-causal", true, 4096, 64, 32),
        dense("dense", false, 4096, 64, 32),
        dense("dense-causal", true, 16384, 64, 32),
        dense("dense", false, 16384, 64, 32),
        gqa,
        dense("dense-causal", true, 32768, 128, 32),
        // Head dim 256 at 16 heads (the head dim of Gemma-style models).
        dense("dense-causal-d256", true, 16384, 256, 16),
        dense("dense-d256", false, 16384, 256, 16),
        s32k(
            "streaming",
            Variant::Streaming,
            false,
            TargetMask::Streaming(DEFAULT_STREAMING),
        ),
        s32k(
            "block-sparse",
            Variant::BlockSparse,
            true,
            TargetMask::RandomBlocks {
                density: 0.1,
                block: 128,
                seed: 7,
            },
        ),
        s32k(
            "mixed-half-stream",
            Variant::Mixed,
            true,
            TargetMask::HalfStreaming(DEFAULT_STREAMING),
        ),
        // APB on host 2 of 4 at 32k: 8192 local queries over an anchor of 2048, passing
        // blocks of 4096 and the 8192 local keys, GQA 32/8.
        Case {
            name: "apb",
            target: TuneTarget {
                spec: spec(Variant::Apb, 128, false),
                shape: shape(32, 8, 8192),
                mask: TargetMask::Apb {
                    anchor: 2048,
                    passing: 4096,
                },
            },
        },
    ]
}

/// Inputs of a case on the device, and the timing of a spec on them.
struct Bench<'a> {
    rt: &'a Runtime,
    target: TuneTarget,
    work: Workload<bf16>,
}

impl<'a> Bench<'a> {
    fn new(rt: &'a Runtime, target: &TuneTarget, values: InputValues) -> Result<Self, String> {
        let sets = timing::input_sets_for(rt, target)?;
        let work = Workload::with_values(rt, target, sets, timing::seed(), values)?;
        Ok(Bench {
            rt,
            target: target.clone(),
            work,
        })
    }

    /// Median milliseconds of `tile` on the case.
    fn time(&mut self, tile: TileConfig) -> Result<f64, String> {
        let spec = self.target.spec_with(tile);
        let (rt, sets) = (self.rt, self.work.sets());
        let work = &mut self.work;
        timing::median_ms_at(rt, |i| work.launch(rt, &spec, i % sets))
    }
}

#[derive(serde::Serialize)]
struct Row {
    case: String,
    shape: String,
    backend: &'static str,
    tile: String,
    ms: f64,
    tflops: f64,
    best_tile: Option<String>,
    best_ms: Option<f64>,
}

fn shape_text(t: &TuneTarget) -> String {
    let s = &t.shape;
    let keys = match t.mask {
        TargetMask::Apb { anchor, passing } => format!(" over {anchor}+{passing}+{}", s.seq),
        _ => String::new(),
    };
    format!(
        "b{} h{}/{} s{}{keys} d{}",
        s.batch, s.heads, s.kv_heads, s.seq, t.spec.head_dim
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let sweep = args.iter().any(|a| a == "--sweep");
    let values = if args.iter().any(|a| a == "--uniform-inputs") {
        InputValues::Uniform
    } else {
        InputValues::Bell
    };
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_string).collect());
    let extra_tiles: Vec<TileConfig> = match args
        .iter()
        .position(|a| a == "--tiles")
        .and_then(|i| args.get(i + 1))
    {
        Some(list) => match list.split(',').map(parse_tile).collect() {
            Ok(tiles) => tiles,
            Err(e) => {
                eprintln!("--tiles: {e}");
                std::process::exit(2);
            }
        },
        None => Vec::new(),
    };

    let rt = match Runtime::new(0) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("the attention benchmark needs a CUDA GPU: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "{} ({}, {} SMs)",
        rt.info().name,
        rt.arch(),
        rt.info().sm_count
    );
    println!(
        "{:<18} {:<34} {:<28} {:>9} {:>9}  fastest tile (sweep)",
        "case", "shape", "tile", "ms", "TFLOP/s"
    );
    let mut rows = Vec::new();
    for c in cases() {
        if let Some(only) = &only {
            if !only.iter().any(|o| o == c.name) {
                continue;
            }
        }
        let t = &c.target;
        let default = default_tile(&t.spec, rt.arch());
        let flops = t.flops();
        let shape = shape_text(t);
        let mut bench = match Bench::new(&rt, t, values) {
            Ok(b) => b,
            Err(e) => {
                println!("{:<18} failed: {e}", c.name);
                continue;
            }
        };
        let ms = match bench.time(default) {
            Ok(ms) => ms,
            Err(e) => {
                println!("{:<18} failed: {e}", c.name);
                continue;
            }
        };
        let mut best_tile = None;
        if sweep {
            for tile in search_space(&t.spec, rt.arch()) {
                if let Ok(ms) = bench.time(tile) {
                    if best_tile.is_none_or(|(_, b)| ms < b) {
                        best_tile = Some((tile, ms));
                    }
                }
            }
        }
        let row = Row {
            case: c.name.to_string(),
            shape: shape.clone(),
            backend: "flashgen",
            tile: default.to_string(),
            ms,
            tflops: flops / ms / 1e9,
            best_tile: best_tile.map(|(t, _)| t.to_string()),
            best_ms: best_tile.map(|(_, b)| b),
        };
        let best = best_tile
            .map(|(t, b)| format!("{t} {b:.3} ms {:.1} TFLOP/s", flops / b / 1e9))
            .unwrap_or_default();
        println!(
            "{:<18} {:<34} {:<28} {:>9.3} {:>9.1}  {best}",
            row.case, row.shape, row.tile, row.ms, row.tflops
        );
        rows.push(row);
        for &tile in &extra_tiles {
            if tile == default || validate(&t.spec.with_tile(tile), rt.arch()).is_err() {
                continue;
            }
            match bench.time(tile) {
                Ok(ms) => {
                    println!(
                        "{:<18} {:<34} {:<28} {:>9.3} {:>9.1}",
                        c.name,
                        shape,
                        tile.to_string(),
                        ms,
                        flops / ms / 1e9
                    );
                    rows.push(Row {
                        case: c.name.to_string(),
                        shape: shape.clone(),
                        backend: "flashgen",
                        tile: tile.to_string(),
                        ms,
                        tflops: flops / ms / 1e9,
                        best_tile: None,
                        best_ms: None,
                    });
                }
                Err(e) => println!("{:<18} {tile} failed: {e}", c.name),
            }
        }
        drop(bench);
        if let TargetMask::HalfStreaming(_) = t.mask {
            // The same tile kinds as the one-launch rows: each half's default, then each named tile.
            for tile in std::iter::once(None).chain(extra_tiles.iter().copied().map(Some)) {
                let name = tile.map_or("default".to_string(), |t| t.to_string());
                match two_launches(&rt, t, tile, values) {
                    Ok(ms) => {
                        println!(
                            "{:<18} {:<34} {:<28} {:>9.3} {:>9.1}  (streaming and dense-causal halves as two launches)",
                            "mixed-2-launches", shape, name, ms, flops / ms / 1e9
                        );
                        rows.push(Row {
                            case: "mixed-2-launches".into(),
                            shape: shape.clone(),
                            backend: "flashgen",
                            tile: name,
                            ms,
                            tflops: flops / ms / 1e9,
                            best_tile: None,
                            best_ms: None,
                        });
                    }
                    Err(e) => println!("mixed-2-launches {name} failed: {e}"),
                }
            }
        }
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialise");
        std::fs::write(&path, text).expect("write json");
        println!("wrote {path}");
    }
}

/// The mixed case's two halves as separate launches: a streaming kernel over half the heads and
/// a dense-causal kernel over the other half, timed as one launch of both.
/// With `tile`, both halves use it where it is valid for them.
fn two_launches(
    rt: &Runtime,
    mixed: &TuneTarget,
    tile: Option<TileConfig>,
    values: InputValues,
) -> Result<f64, String> {
    let TargetMask::HalfStreaming(p) = mixed.mask else {
        return Err("not a half-streaming case".into());
    };
    let s = mixed.shape;
    let half = Shape {
        heads: s.heads / 2,
        kv_heads: s.kv_heads / 2,
        ..s
    };
    let d = mixed.spec.head_dim;
    let streaming = TuneTarget {
        spec: spec(Variant::Streaming, d, false),
        shape: half,
        mask: TargetMask::Streaming(p),
    };
    let causal = TuneTarget {
        spec: spec(Variant::Dense, d, true),
        shape: half,
        mask: TargetMask::None,
    };
    let kernel = |t: &TuneTarget| {
        let default = t.spec.with_default_tile(rt.arch());
        match tile {
            Some(tile) if validate(&t.spec.with_tile(tile), rt.arch()).is_ok() => {
                t.spec.with_tile(tile)
            }
            _ => default,
        }
    };
    let (ks, kd) = (kernel(&streaming), kernel(&causal));
    let (mut ws, mut wd) = (
        Bench::new(rt, &streaming, values)?,
        Bench::new(rt, &causal, values)?,
    );
    let (ss, sd) = (ws.work.sets(), wd.work.sets());
    timing::median_ms_at(rt, |i| {
        ws.work.launch(rt, &ks, i % ss)?;
        wd.work.launch(rt, &kd, i % sd)
    })
}
