//! Kernel benchmark on the GPU: useful TFLOP/s of each case, timed with CUDA events (median of
//! repeated launches after a warm-up), printed as a table and written as JSON.
//!
//!   cargo bench --bench attention -- [--json FILE] [--sweep] [--only NAME[,NAME..]]
//!                                     [--tiles TILE[,TILE..]]
//!
//! `--sweep` also times every tile config of the search space and reports the fastest next to
//! the default; `--tiles` times the named tiles (e.g. `m64n128w4s2-wgmma-pipelined`) as extra
//! rows of each case they are valid for. The masks match `shared/bench/peers.py`, so the peers' numbers from the same
//! machine compare directly.

#[path = "common/timing.rs"]
mod timing;

use flashgen_codegen::{
    default_tile, parse_tile, search_space, validate, AttentionSpec, DType, KernelSpec, TileConfig,
    Variant,
};
use flashgen_runtime::cudarc::driver::{CudaSlice, CudaStream};
use flashgen_runtime::{
    dense_density, AttentionArgs, BlockMask, DeviceBlockMask, DeviceHeadKinds, HeadKind, Layout,
    Mask, Runtime, StreamingParams, Tensor, TensorMut,
};
use half::bf16;
use std::sync::Arc;

const WARMUP: usize = 5;
const REPS: usize = 25;

/// One benchmark case.
struct Case {
    name: &'static str,
    variant: Variant,
    causal: bool,
    heads: usize,
    kv_heads: usize,
    seq: usize,
    head_dim: usize,
    mask: CaseMask,
}

enum CaseMask {
    None,
    Streaming(StreamingParams),
    /// The peers' block-sparse mask: 128x128 blocks kept with probability `p`, plus the
    /// diagonal, lower-triangular, causal inside.
    RandomBlocks(f64),
    /// Half the heads streaming, half dense-causal.
    HalfStreaming(StreamingParams),
}

fn cases() -> Vec<Case> {
    let dense = |name, causal, seq, head_dim| Case {
        name,
        variant: Variant::Dense,
        causal,
        heads: 32,
        kv_heads: 32,
        seq,
        head_dim,
        mask: CaseMask::None,
    };
    let stream = StreamingParams {
        sink: 128,
        window: 2048,
    };
    vec![
        dense("dense-causal", true, 4096, 128),
        dense("dense", false, 4096, 128),
        dense("dense-causal", true, 16384, 128),
        dense("dense", false, 16384, 128),
        dense("dense-causal", true, 4096, 64),
        dense("dense", false, 4096, 64),
        dense("dense-causal", true, 16384, 64),
        dense("dense", false, 16384, 64),
        Case {
            kv_heads: 8,
            ..dense("dense-causal-gqa", true, 16384, 128)
        },
        dense("dense-causal", true, 32768, 128),
        Case {
            name: "streaming",
            variant: Variant::Streaming,
            mask: CaseMask::Streaming(stream),
            ..dense("", false, 32768, 128)
        },
        Case {
            name: "block-sparse",
            variant: Variant::BlockSparse,
            causal: true,
            mask: CaseMask::RandomBlocks(0.1),
            ..dense("", true, 32768, 128)
        },
        Case {
            name: "mixed-half-stream",
            variant: Variant::Mixed,
            causal: true,
            mask: CaseMask::HalfStreaming(stream),
            ..dense("", true, 32768, 128)
        },
    ]
}

struct Inputs {
    q: CudaSlice<bf16>,
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    o: CudaSlice<bf16>,
    lse: CudaSlice<f32>,
    q_layout: Layout,
    kv_layout: Layout,
}

fn random_bf16(n: usize, seed: u64) -> Vec<bf16> {
    // splitmix64 → uniform in [-2, 2): fresh, non-zero data with a realistic spread.
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            bf16::from_f32((z >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0)
        })
        .collect()
}

fn inputs(stream: &Arc<CudaStream>, c: &Case) -> Inputs {
    let q_layout = Layout::bshd(1, c.seq, c.heads, c.head_dim);
    let kv_layout = Layout::bshd(1, c.seq, c.kv_heads, c.head_dim);
    let up = |n, seed| stream.clone_htod(&random_bf16(n, seed)).expect("upload");
    Inputs {
        q: up(q_layout.numel(), 1),
        k: up(kv_layout.numel(), 2),
        v: up(kv_layout.numel(), 3),
        o: stream.alloc_zeros(q_layout.numel()).expect("alloc"),
        lse: stream.alloc_zeros(c.heads * c.seq).expect("alloc"),
        q_layout,
        kv_layout,
    }
}

fn random_blocks(seq: usize, p: f64) -> BlockMask {
    let nb = seq / 128;
    let mut state = 7u64;
    let mut keep = Vec::with_capacity(nb * nb);
    for i in 0..nb {
        for j in 0..nb {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = (state >> 11) as f64 / (1u64 << 53) as f64;
            keep.push(j <= i && (i == j || r < p));
        }
    }
    BlockMask::from_dense(&keep, 1, 1, nb, nb, 128, 128).expect("block mask")
}

/// Masks on the device for one case, and its useful-pair fraction.
struct DeviceMask {
    list: Option<DeviceBlockMask>,
    kinds: Option<DeviceHeadKinds>,
    density: f64,
}

fn device_mask(rt: &Runtime, c: &Case) -> DeviceMask {
    let s = c.seq;
    match &c.mask {
        CaseMask::None => DeviceMask {
            list: None,
            kinds: None,
            density: dense_density(s, s, c.causal),
        },
        CaseMask::Streaming(p) => DeviceMask {
            list: None,
            kinds: None,
            density: p.density(s, s),
        },
        CaseMask::RandomBlocks(p) => {
            let m = random_blocks(s, *p);
            let density = m.density(0, 0, s, s, true);
            DeviceMask {
                list: Some(rt.upload_block_mask(&m).expect("upload")),
                kinds: None,
                density,
            }
        }
        CaseMask::HalfStreaming(p) => {
            let kinds: Vec<HeadKind> = (0..c.heads)
                .map(|h| {
                    if h % 2 == 0 {
                        HeadKind::Streaming
                    } else {
                        HeadKind::DenseCausal
                    }
                })
                .collect();
            DeviceMask {
                list: None,
                kinds: Some(rt.upload_head_kinds(&kinds).expect("upload")),
                density: (p.density(s, s) + dense_density(s, s, true)) / 2.0,
            }
        }
    }
}

fn launch(
    rt: &Runtime,
    spec: &KernelSpec,
    c: &Case,
    x: &mut Inputs,
    m: &DeviceMask,
) -> flashgen_runtime::Result<()> {
    let mask = match &c.mask {
        CaseMask::None => Mask::None,
        CaseMask::Streaming(p) => Mask::Streaming(*p),
        CaseMask::RandomBlocks(_) => Mask::BlockSparse(m.list.as_ref().expect("list")),
        CaseMask::HalfStreaming(p) => Mask::Mixed {
            heads: m.kinds.as_ref().expect("kinds"),
            streaming: Some(*p),
            block_list: None,
        },
    };
    rt.attention(
        spec,
        AttentionArgs::new(
            Tensor {
                data: &x.q,
                layout: x.q_layout,
            },
            Tensor {
                data: &x.k,
                layout: x.kv_layout,
            },
            Tensor {
                data: &x.v,
                layout: x.kv_layout,
            },
            TensorMut {
                data: &mut x.o,
                layout: x.q_layout,
            },
        )
        .lse(&mut x.lse)
        .mask(mask),
    )
}

/// Median milliseconds of one launch.
fn time(
    rt: &Runtime,
    f: impl FnMut() -> flashgen_runtime::Result<()>,
) -> flashgen_runtime::Result<f64> {
    timing::median_ms(rt, WARMUP, REPS, f)
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let sweep = args.iter().any(|a| a == "--sweep");
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
        "{:<18} {:<22} {:<12} {:>9} {:>9}  fastest tile (sweep)",
        "case", "shape", "tile", "ms", "TFLOP/s"
    );
    let mut rows = Vec::new();
    for c in cases() {
        if let Some(only) = &only {
            if !only.iter().any(|o| o == c.name) {
                continue;
            }
        }
        let base =
            AttentionSpec::new(c.variant, c.head_dim as u32, DType::Bf16, c.causal).with_lse(true);
        let default = default_tile(&base, rt.arch());
        let mut x = inputs(rt.stream(), &c);
        let m = device_mask(&rt, &c);
        let flops = 4.0 * c.heads as f64 * c.head_dim as f64 * (c.seq * c.seq) as f64 * m.density;
        let measure = |x: &mut Inputs, tile: TileConfig| {
            let spec = base.with_tile(tile);
            time(&rt, || launch(&rt, &spec, &c, x, &m))
        };
        let ms = match measure(&mut x, default) {
            Ok(ms) => ms,
            Err(e) => {
                println!("{:<18} failed: {e}", c.name);
                continue;
            }
        };
        let mut best_tile = None;
        if sweep {
            for tile in search_space(&base, rt.arch()) {
                if let Ok(t) = measure(&mut x, tile) {
                    if best_tile.is_none_or(|(_, b)| t < b) {
                        best_tile = Some((tile, t));
                    }
                }
            }
        }
        let row = Row {
            case: c.name.to_string(),
            shape: format!("b1 h{}/{} s{} d{}", c.heads, c.kv_heads, c.seq, c.head_dim),
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
            "{:<18} {:<22} {:<12} {:>9.3} {:>9.1}  {best}",
            row.case, row.shape, row.tile, row.ms, row.tflops
        );
        let shape = row.shape.clone();
        rows.push(row);
        for &tile in &extra_tiles {
            if tile == default || validate(&base.with_tile(tile), rt.arch()).is_err() {
                continue;
            }
            match measure(&mut x, tile) {
                Ok(ms) => {
                    println!(
                        "{:<18} {:<22} {:<12} {:>9.3} {:>9.1}",
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
        if let CaseMask::HalfStreaming(p) = c.mask {
            // The same tile kinds as the one-launch rows: each half's default, then each named tile.
            for tile in std::iter::once(None).chain(extra_tiles.iter().copied().map(Some)) {
                let name = tile.map_or("default".to_string(), |t| t.to_string());
                match two_launches(&rt, &c, p, tile) {
                    Ok(ms) => {
                        println!(
                            "{:<18} {:<22} {:<12} {:>9.3} {:>9.1}  (streaming and dense-causal halves as two launches)",
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
/// a dense-causal kernel over the other half.
/// With `tile`, both halves use it where it is valid for them.
fn two_launches(
    rt: &Runtime,
    c: &Case,
    p: StreamingParams,
    tile: Option<TileConfig>,
) -> flashgen_runtime::Result<f64> {
    let half = Case {
        name: "half",
        variant: Variant::Streaming,
        causal: false,
        heads: c.heads / 2,
        kv_heads: c.kv_heads / 2,
        seq: c.seq,
        head_dim: c.head_dim,
        mask: CaseMask::Streaming(p),
    };
    let dense_half = Case {
        variant: Variant::Dense,
        causal: true,
        mask: CaseMask::None,
        ..half
    };
    let (mut xs, mut xd) = (inputs(rt.stream(), &half), inputs(rt.stream(), &dense_half));
    let (ms_, md) = (device_mask(rt, &half), device_mask(rt, &dense_half));
    let spec = |case: &Case| {
        let s = KernelSpec::new(
            case.variant,
            case.head_dim as u32,
            DType::Bf16,
            case.causal,
            rt.arch(),
        )
        .with_lse(true);
        match tile {
            Some(t) if validate(&s.with_tile(t), rt.arch()).is_ok() => s.with_tile(t),
            _ => s,
        }
    };
    let (ss, sd) = (spec(&half), spec(&dense_half));
    time(rt, || {
        launch(rt, &ss, &half, &mut xs, &ms_)?;
        launch(rt, &sd, &dense_half, &mut xd, &md)
    })
}
