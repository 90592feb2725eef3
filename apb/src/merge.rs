//! Ring attention's small kernels (`templates/apb/merge.cu`): the log-sum-exp merge of partial
//! results into an f32 accumulator and the final rounding to the element type. They are built
//! and loaded like the compression kernels, through the runtime's kernel cache, once per runtime.

use super::kernels::{ApbModule, MERGE_THREADS as THREADS};
use crate::error::{invalid, DriverContext, Result};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use flashgen_runtime::{Element, Runtime};

/// `name` of the merge module of `T` in `rt`'s context.
fn function<T: Element>(rt: &Runtime, name: &str) -> Result<CudaFunction> {
    super::kernels::function(rt, ApbModule::Merge(T::DTYPE), name)
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
    let merge = function::<T>(rt, "apb_merge")?;
    let cfg = warp_grid(shape.batch * shape.rows * shape.heads)?;
    let (b, r, h, d) = (
        int("batch", shape.batch)?,
        int("rows", shape.rows)?,
        int("heads", shape.heads)?,
        int("dim", shape.dim)?,
    );
    let init = i32::from(init);
    let mut launch = rt.stream().launch_builder(&merge);
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
    let finish = function::<T>(rt, "apb_finish")?;
    let blocks = n.div_ceil(THREADS as usize).min(65_535 * 16) as u32;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let n = n as i64;
    let mut launch = rt.stream().launch_builder(&finish);
    launch.arg(out).arg(acc).arg(&n);
    // SAFETY: argument types match; both buffers hold at least n elements.
    unsafe { launch.launch(cfg) }.while_(|| "launching the APB finish".into())?;
    Ok(())
}
