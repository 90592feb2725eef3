//! Declares kernels of several variants with `flashgen::attention_kernel!` and, when a CUDA GPU
//! is present, runs each on random inputs and prints max |o| and a checksum. Without a GPU it
//! prints the declared specs and the first lines of their sm_90a CUDA.
//!
//! ```text
//! cargo run --release --example declare_kernels
//! ```

use flashgen::half::bf16;
use flashgen::runtime::cudarc::driver::CudaSlice;
use flashgen::{
    attention_kernel, BlockMask, HeadKind, Layout, Runtime, Tensor, TensorMut, TileConfig,
};
use std::process::ExitCode;

attention_kernel! {
    /// Causal prefill; the log-sum-exp lets partial results be merged.
    pub struct Prefill: dense(causal), head_dim = 128, dtype = bf16, lse, gqa = 4;

    /// StreamingLLM-style A-shaped mask: 128 sink tokens and a 2048-token window.
    pub struct LlamaStreaming: streaming(sink = 128, window = 2048), head_dim = 128, dtype = bf16,
        gqa = 4;

    /// Block-sparse over a BSR list of 128 x 128 blocks, causal inside the blocks.
    pub struct Sparse: block_sparse(block_q = 128, block_k = 128, causal), head_dim = 128,
        dtype = bf16, gqa = 4, tile = m128n64w4s1;

    /// LServe/DuoAttention-style heads: each query head dense, causal, streaming or
    /// block-sparse, in one launch.
    pub struct DuoHeads: mixed(sink = 64, window = 512, block_q = 128, block_k = 128, causal),
        head_dim = 128, dtype = bf16, gqa = 4;
}

const BATCH: usize = 1;
const SEQ: usize = 4096;
const HEADS_Q: usize = 32;
const HEADS_KV: usize = 8;
const DIM: usize = 128;

/// A small xorshift generator: the example needs no other crate.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn bf16_vec(&mut self, n: usize) -> Vec<bf16> {
        (0..n).map(|_| bf16::from_f32(self.next_f32())).collect()
    }
}

fn print_declarations() {
    for (name, spec, cuda) in [
        ("Prefill", Prefill::SPEC, Prefill::CUDA_SM90),
        (
            "LlamaStreaming",
            LlamaStreaming::SPEC,
            LlamaStreaming::CUDA_SM90,
        ),
        ("Sparse", Sparse::SPEC, Sparse::CUDA_SM90),
        ("DuoHeads", DuoHeads::SPEC, DuoHeads::CUDA_SM90),
    ] {
        println!("{name}: {spec}");
        println!(
            "  CUDA for sm_90a ({} lines), first lines:",
            cuda.lines().count()
        );
        for line in cuda.lines().filter(|l| !l.trim().is_empty()).take(4) {
            println!("  | {line}");
        }
    }
}

/// Max |o| and the sum of o.
fn summary(rt: &Runtime, o: &CudaSlice<bf16>) -> flashgen::Result<(f32, f64)> {
    rt.stream()
        .synchronize()
        .map_err(|e| invalid(format!("kernel failed: {e:?}")))?;
    let host: Vec<bf16> = rt
        .stream()
        .clone_dtoh(o)
        .map_err(|e| invalid(format!("download: {e:?}")))?;
    let max = host.iter().map(|x| x.to_f32().abs()).fold(0.0, f32::max);
    let sum = host.iter().map(|x| f64::from(x.to_f32())).sum();
    Ok((max, sum))
}

fn invalid(reason: String) -> flashgen::Error {
    flashgen::Error::InvalidArgument {
        arg: "example",
        reason,
    }
}

/// A random block list with about `density` of the blocks (and every diagonal block) kept.
fn random_blocks(rng: &mut Rng, heads: usize, density: f32) -> flashgen::Result<BlockMask> {
    let blocks = SEQ.div_ceil(128);
    let keep: Vec<bool> = (0..heads * blocks * blocks)
        .map(|i| {
            let (row, col) = (i / blocks % blocks, i % blocks);
            row == col || (rng.next_f32() + 1.0) / 2.0 < density
        })
        .collect();
    Ok(BlockMask::from_dense(
        &keep, BATCH, heads, blocks, blocks, 128, 128,
    )?)
}

fn run(rt: &Runtime) -> flashgen::Result<()> {
    let (ql, kl) = (
        Layout::bshd(BATCH, SEQ, HEADS_Q, DIM),
        Layout::bshd(BATCH, SEQ, HEADS_KV, DIM),
    );
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let up = |x: Vec<bf16>| {
        rt.stream()
            .clone_htod(&x)
            .map_err(|e| invalid(format!("upload: {e:?}")))
    };
    let q = up(rng.bf16_vec(ql.numel()))?;
    let k = up(rng.bf16_vec(kl.numel()))?;
    let v = up(rng.bf16_vec(kl.numel()))?;
    let mut o = up(vec![bf16::ZERO; ql.numel()])?;
    let mut lse: CudaSlice<f32> = rt
        .stream()
        .alloc_zeros(BATCH * HEADS_Q * SEQ)
        .map_err(|e| invalid(format!("alloc: {e:?}")))?;
    let qt = || Tensor {
        data: &q,
        layout: ql,
    };
    let (kt, vt) = (
        || Tensor {
            data: &k,
            layout: kl,
        },
        || Tensor {
            data: &v,
            layout: kl,
        },
    );
    println!(
        "{} (sm_{}{}): b{BATCH} s{SEQ} hq{HEADS_Q} hkv{HEADS_KV} d{DIM}",
        rt.info().name,
        rt.arch().major,
        rt.arch().minor
    );
    let report = |name: &str, spec: flashgen::KernelSpec, o: &CudaSlice<bf16>| {
        let (max, sum) = summary(rt, o)?;
        println!("{name:<15} {spec:<45} max|o| = {max:.4}  checksum = {sum:.4}");
        Ok::<(), flashgen::Error>(())
    };

    let kernel = Prefill::new(rt)?;
    let o_t = TensorMut {
        data: &mut o,
        layout: ql,
    };
    kernel.forward(rt, qt(), kt(), vt(), o_t, &mut lse)?;
    report("Prefill", kernel.spec(), &o)?;

    let kernel = LlamaStreaming::new(rt)?;
    let o_t = TensorMut {
        data: &mut o,
        layout: ql,
    };
    kernel.forward(rt, qt(), kt(), vt(), o_t)?;
    report("LlamaStreaming", kernel.spec(), &o)?;

    let kernel = Sparse::new(rt)?;
    assert_eq!(kernel.spec().tile, TileConfig::new(128, 64, 4, 1));
    let list = rt.upload_block_mask(&random_blocks(&mut rng, 1, 0.1)?)?;
    let o_t = TensorMut {
        data: &mut o,
        layout: ql,
    };
    kernel.forward(rt, qt(), kt(), vt(), o_t, &list)?;
    report("Sparse", kernel.spec(), &o)?;

    let kernel = DuoHeads::new(rt)?;
    let kinds: Vec<HeadKind> = (0..HEADS_Q)
        .map(|h| match h % 4 {
            0 => HeadKind::Dense,
            1 => HeadKind::DenseCausal,
            2 => HeadKind::Streaming,
            _ => HeadKind::BlockSparse,
        })
        .collect();
    let heads = rt.upload_head_kinds(&kinds)?;
    let list = rt.upload_block_mask(&random_blocks(&mut rng, HEADS_Q, 0.2)?)?;
    let o_t = TensorMut {
        data: &mut o,
        layout: ql,
    };
    kernel.forward(rt, qt(), kt(), vt(), o_t, &heads, &list)?;
    report("DuoHeads", kernel.spec(), &o)?;
    Ok(())
}

fn main() -> ExitCode {
    let rt = match Runtime::new(0) {
        Ok(rt) => rt,
        Err(e) => {
            println!("no CUDA GPU ({e}); the declared kernels:");
            print_declarations();
            return ExitCode::SUCCESS;
        }
    };
    match run(&rt) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
