//! The small kernels of multi-host prefill (`templates/apb/merge.cu`): the log-sum-exp merge
//! of partial results into an f32 accumulator, the final rounding to the element type, and the
//! row gather that builds a passing block from selected positions. Compiled once per process
//! and element type with NVRTC, loaded once per CUDA context.

use crate::compile::compile;
use crate::error::{invalid, DriverContext, Result};
use crate::runtime::{Element, Runtime};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use flashgen_codegen::{DType, KernelSource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

const SOURCE: &str = include_str!("../../../templates/apb/merge.cu");
/// Threads per block of every kernel here (a warp per row).
const THREADS: u32 = 256;

fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::Bf16 => "bf16",
        DType::F16 => "f16",
    }
}

/// The three kernels of one element type, loaded into one context.
#[derive(Clone)]
struct Loaded {
    merge: CudaFunction,
    finish: CudaFunction,
    gather: CudaFunction,
}

/// The source of the kernels for `dtype`.
fn source(dtype: DType) -> KernelSource {
    let define = match dtype {
        DType::Bf16 => "FG_BF16",
        DType::F16 => "FG_F16",
    };
    KernelSource {
        kernel_name: format!("flashgen_apb_merge_{}", suffix(dtype)),
        code: format!(
            "#define {define} 1\n#define FG_SUFFIX {}\n{SOURCE}",
            suffix(dtype)
        ),
        threads: THREADS,
        shared_bytes: 0,
    }
}

/// The CUBIN of `dtype` for the runtime's arch, compiled once per process.
fn cubin(rt: &Runtime, dtype: DType) -> Result<Arc<Vec<u8>>> {
    type Cubins = Mutex<HashMap<(String, DType), Arc<Vec<u8>>>>;
    static CUBINS: OnceLock<Cubins> = OnceLock::new();
    let key = (rt.arch().sm_name(), dtype);
    let table = CUBINS.get_or_init(Default::default);
    if let Some(c) = table.lock().expect("cubin table lock").get(&key) {
        return Ok(c.clone());
    }
    let source = source(dtype);
    let (kernel, _ms) = compile(&source, rt.arch())?;
    let cubin = Arc::new(kernel.cubin);
    table
        .lock()
        .expect("cubin table lock")
        .insert(key, cubin.clone());
    Ok(cubin)
}

fn kernels(rt: &Runtime, dtype: DType) -> Result<Loaded> {
    type Table = Mutex<HashMap<(usize, DType), Loaded>>;
    static LOADED: OnceLock<Table> = OnceLock::new();
    // A context lives as long as any runtime on it; its address names it.
    let key = (Arc::as_ptr(rt.context()) as usize, dtype);
    let table = LOADED.get_or_init(Default::default);
    if let Some(k) = table.lock().expect("kernel table lock").get(&key) {
        return Ok(k.clone());
    }
    let cubin = cubin(rt, dtype)?;
    let module = rt
        .context()
        .load_module(cudarc::nvrtc::Ptx::from_binary((*cubin).clone()))
        .while_(|| "loading the APB merge kernels".into())?;
    let load = |name: &str| {
        let full = format!("{name}_{}", suffix(dtype));
        module
            .load_function(&full)
            .while_(|| format!("finding {full} in its module"))
    };
    let loaded = Loaded {
        merge: load("flashgen_apb_merge")?,
        finish: load("flashgen_apb_finish")?,
        gather: load("flashgen_apb_gather")?,
    };
    table
        .lock()
        .expect("kernel table lock")
        .insert(key, loaded.clone());
    Ok(loaded)
}

/// Blocks for `warps` warps of work.
fn warp_grid(warps: usize) -> Result<LaunchConfig> {
    let per_block = (THREADS / 32) as usize;
    let blocks = warps.div_ceil(per_block);
    if blocks > i32::MAX as usize {
        return Err(invalid("rows", "too many rows for one launch"));
    }
    Ok(LaunchConfig {
        grid_dim: (blocks.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn int(name: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| invalid(name, format!("{v} does not fit in 32 bits")))
}

/// Shape of the rows a merge works on: O `[batch, rows, heads, dim]`, lse `[batch, heads, rows]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeShape {
    pub batch: usize,
    pub rows: usize,
    pub heads: usize,
    pub dim: usize,
}

impl MergeShape {
    pub fn o_len(&self) -> usize {
        self.batch * self.rows * self.heads * self.dim
    }

    pub fn lse_len(&self) -> usize {
        self.batch * self.heads * self.rows
    }
}

/// Merges a partial result (`part_o`, `part_lse`) over keys disjoint from those already in the
/// f32 accumulator: `lse = log(e^acc_lse + e^part_lse)`, `o` weighted accordingly. With `init`
/// the accumulator is overwritten by the partial instead.
pub fn merge_into<T: Element>(
    rt: &Runtime,
    shape: MergeShape,
    acc_o: &mut CudaSlice<f32>,
    acc_lse: &mut CudaSlice<f32>,
    part_o: &CudaSlice<T>,
    part_lse: &CudaSlice<f32>,
    init: bool,
) -> Result<()> {
    let (o_len, lse_len) = (shape.o_len(), shape.lse_len());
    for (name, have, need) in [
        ("acc_o", acc_o.len(), o_len),
        ("acc_lse", acc_lse.len(), lse_len),
        ("part_o", part_o.len(), o_len),
        ("part_lse", part_lse.len(), lse_len),
    ] {
        if have < need {
            return Err(invalid(
                name,
                format!("buffer has {have} elements, the merge needs {need}"),
            ));
        }
    }
    if o_len == 0 {
        return Ok(());
    }
    let k = kernels(rt, T::DTYPE)?;
    let cfg = warp_grid(shape.batch * shape.rows * shape.heads)?;
    let (b, r, h, d) = (
        int("batch", shape.batch)?,
        int("rows", shape.rows)?,
        int("heads", shape.heads)?,
        int("dim", shape.dim)?,
    );
    let init = i32::from(init);
    let mut launch = rt.stream().launch_builder(&k.merge);
    launch
        .arg(acc_o)
        .arg(acc_lse)
        .arg(part_o)
        .arg(part_lse)
        .arg(&b)
        .arg(&r)
        .arg(&h)
        .arg(&d)
        .arg(&init);
    // SAFETY: argument types match the kernel's signature; every buffer holds at least the
    // elements the shape addresses (checked above).
    unsafe { launch.launch(cfg) }.while_(|| "launching the APB merge".into())?;
    Ok(())
}

/// `out[..n] = acc[..n]` rounded to the element type.
pub fn finish<T: Element>(
    rt: &Runtime,
    acc: &CudaSlice<f32>,
    out: &mut CudaSlice<T>,
    n: usize,
) -> Result<()> {
    if acc.len() < n || out.len() < n {
        return Err(invalid(
            "out",
            format!(
                "finishing {n} elements needs buffers of at least that many (acc {}, out {})",
                acc.len(),
                out.len()
            ),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let k = kernels(rt, T::DTYPE)?;
    let blocks = n.div_ceil(THREADS as usize).min(65_535 * 16) as u32;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let n = n as i64;
    let mut launch = rt.stream().launch_builder(&k.finish);
    launch.arg(out).arg(acc).arg(&n);
    // SAFETY: argument types match; both buffers hold at least n elements.
    unsafe { launch.launch(cfg) }.while_(|| "launching the APB finish".into())?;
    Ok(())
}

/// Shape of a gather: `src [batch, rows, heads, dim]`, `index [batch, heads, count]`,
/// `out [batch, count, heads, dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherShape {
    pub batch: usize,
    pub rows: usize,
    pub count: usize,
    pub heads: usize,
    pub dim: usize,
}

/// `out[b, j, h, :] = src[b, index[b, h, j], h, :]`; an index outside `0..rows` gives a zero
/// row (callers check indices before uploading them).
pub fn gather_rows<T: Element>(
    rt: &Runtime,
    shape: GatherShape,
    src: &CudaSlice<T>,
    index: &CudaSlice<i32>,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let GatherShape {
        batch,
        rows,
        count,
        heads,
        dim,
    } = shape;
    for (name, have, need) in [
        ("src", src.len(), batch * rows * heads * dim),
        ("index", index.len(), batch * heads * count),
        ("out", out.len(), batch * count * heads * dim),
    ] {
        if have < need {
            return Err(invalid(
                name,
                format!("buffer has {have} elements, the gather needs {need}"),
            ));
        }
    }
    if batch * count * heads * dim == 0 {
        return Ok(());
    }
    let k = kernels(rt, T::DTYPE)?;
    let cfg = warp_grid(batch * count * heads)?;
    let args = [
        int("batch", batch)?,
        int("rows", rows)?,
        int("count", count)?,
        int("heads", heads)?,
        int("dim", dim)?,
    ];
    let mut launch = rt.stream().launch_builder(&k.gather);
    launch.arg(out).arg(src).arg(index);
    for a in &args {
        launch.arg(a);
    }
    // SAFETY: argument types match; every buffer holds the elements the shape addresses.
    unsafe { launch.launch(cfg) }.while_(|| "launching the APB gather".into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgen_codegen::Arch;

    #[test]
    fn the_kernels_compile_for_every_dtype_and_arch_without_spills() {
        if !crate::libs::nvrtc_present() {
            eprintln!("skipped: no libnvrtc");
            return;
        }
        for dtype in [DType::Bf16, DType::F16] {
            for arch in [Arch::new(8, 0), Arch::new(9, 0)] {
                let (k, _) = compile(&source(dtype), arch).unwrap();
                assert!(!k.cubin.is_empty());
                assert!(!k.report.spills(), "{dtype:?} {arch:?}: {}", k.log);
                for name in ["merge", "finish", "gather"] {
                    let symbol = format!("flashgen_apb_{name}_{}", suffix(dtype));
                    assert!(k.log.contains(&symbol), "{symbol} missing from\n{}", k.log);
                }
            }
        }
    }
}
