//! Top-k selection and gather: the host side of `templates/apb/select.cu` and `gather.cu`, and
//! a CPU mirror of the selection rule.
//!
//! The rule, per (batch, kv head) row of f32 scores: the `lp` positions with the highest scores,
//! ties broken by lower position, returned in ascending position order. Both zeros are equal.
//! NaN scores rank below every number (even -inf), so they are picked only when fewer than `lp`
//! scores of the row are numbers, and then by position like any tie; nothing is checked on the
//! host, so compression never waits for the GPU.

use super::kernels::{elementwise_grid, ApbModule, SELECT_THREADS};
use super::validate::BlockShape;
use crate::error::{invalid, DriverContext, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use flashgen_runtime::{Element, Runtime, Tensor};

/// The order-preserving u32 key of a score (the kernel's `apb_order_key`): larger key, better.
pub fn order_key(score: f32) -> u32 {
    if score.is_nan() {
        return 0;
    }
    let u = if score == 0.0 { 0 } else { score.to_bits() };
    if u & 0x8000_0000 != 0 {
        !u
    } else {
        u | 0x8000_0000
    }
}

/// The CPU mirror of the selection rule over one row: the `lp` chosen positions, ascending.
///
/// # Panics
/// If `lp` exceeds the row length (the GPU path returns an error instead).
pub fn select_row(scores: &[f32], lp: usize) -> Vec<i32> {
    assert!(lp <= scores.len(), "lp {lp} > row length {}", scores.len());
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        order_key(scores[b])
            .cmp(&order_key(scores[a]))
            .then(a.cmp(&b))
    });
    let mut chosen: Vec<i32> = order[..lp].iter().map(|&p| p as i32).collect();
    chosen.sort_unstable();
    chosen
}

/// The CPU mirror over `[rows, n]` scores: `[rows, lp]` positions.
pub fn select_rows(scores: &[f32], n: usize, lp: usize) -> Vec<i32> {
    scores
        .chunks(n)
        .flat_map(|row| select_row(row, lp))
        .collect()
}

/// Selects `lp` positions of each of the `rows` rows of `scores` (`[rows, n]` f32) on the GPU:
/// `[rows, lp]` ascending positions.
pub fn top_k(
    rt: &Runtime,
    scores: &CudaSlice<f32>,
    rows: usize,
    n: usize,
    lp: usize,
) -> Result<CudaSlice<i32>> {
    if rows == 0 || n == 0 {
        return Err(invalid("scores", "needs at least one row of one score"));
    }
    if lp == 0 || lp > n {
        return Err(invalid("lp", format!("is {lp}; must be 1 ..= {n}")));
    }
    if scores.len() != rows * n {
        return Err(invalid(
            "scores",
            format!(
                "holds {} values; [{rows}, {n}] is {}",
                scores.len(),
                rows * n
            ),
        ));
    }
    if rows > i32::MAX as usize || n > i32::MAX as usize {
        return Err(invalid("scores", "rows and length must fit in 32 bits"));
    }
    let f = super::kernels::function(rt, ApbModule::Select, "apb_topk_select")?;
    let mut positions = rt
        .stream()
        .alloc_zeros::<i32>(rows * lp)
        .while_(|| "allocating the selected positions".into())?;
    let (n32, lp32) = (n as i32, lp as i32);
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (SELECT_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = rt.stream().launch_builder(&f);
    launch.arg(scores).arg(&n32).arg(&lp32).arg(&mut positions);
    // SAFETY: scores holds rows * n f32 and positions rows * lp i32 (checked above); the kernel
    // reads and writes only within those rows.
    unsafe { launch.launch(cfg) }.while_(|| "launching apb_topk_select".into())?;
    Ok(positions)
}

/// Gathers the K and V rows at `positions` (`[batch, heads_kv, lp]`, each in `0..local`, as
/// [`top_k`] returns them) into `out_k` and `out_v`, `[batch, lp, heads_kv, dim]`.
#[allow(clippy::too_many_arguments)]
pub fn gather<T: Element>(
    rt: &Runtime,
    shape: &BlockShape,
    k: &Tensor<'_, T>,
    v: &Tensor<'_, T>,
    positions: &CudaSlice<i32>,
    lp: usize,
    out_k: &mut CudaSlice<T>,
    out_v: &mut CudaSlice<T>,
) -> Result<()> {
    super::validate::check_outputs(shape, lp, out_k.len(), out_v.len())?;
    if positions.len() != shape.rows() * lp {
        return Err(invalid(
            "positions",
            format!(
                "holds {}; [batch, heads_kv, lp] is {}",
                positions.len(),
                shape.rows() * lp
            ),
        ));
    }
    let f = super::kernels::function(rt, ApbModule::Gather, "apb_gather")?;
    let total = shape.compressed_len(lp);
    let (lp32, heads32, dim32, total64) = (
        lp as i32,
        shape.heads_kv as i32,
        shape.dim as i32,
        total as i64,
    );
    let ks = k.layout.strides.map(|s| s as i64);
    let vs = v.layout.strides.map(|s| s as i64);
    let cfg = LaunchConfig {
        grid_dim: (elementwise_grid(total), 1, 1),
        block_dim: (super::kernels::ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = rt.stream().launch_builder(&f);
    launch
        .arg(k.data)
        .arg(v.data)
        .arg(positions)
        .arg(out_k)
        .arg(out_v)
        .arg(&lp32)
        .arg(&heads32)
        .arg(&dim32)
        .arg(&total64);
    for s in ks.iter().chain(vs.iter()) {
        launch.arg(s);
    }
    // SAFETY: k and v hold what their layouts address (validated with the block), positions
    // are within the local block, and the outputs hold exactly `total` elements.
    unsafe { launch.launch(cfg) }.while_(|| "launching apb_gather".into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_the_scores() {
        let xs = [
            f32::NEG_INFINITY,
            -1e30,
            -1.5,
            -1e-40,
            0.0,
            1e-40,
            1.5,
            1e30,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} vs {}", w[0], w[1]);
        }
        assert_eq!(order_key(-0.0), order_key(0.0));
        assert!(order_key(f32::NAN) < order_key(f32::NEG_INFINITY));
        assert_eq!(order_key(-f32::NAN), order_key(f32::NAN));
    }

    #[test]
    fn picks_the_best_and_returns_them_in_position_order() {
        let s = [0.1, 0.9, 0.3, 0.8, -2.0, 0.5];
        assert_eq!(select_row(&s, 3), vec![1, 3, 5]);
        assert_eq!(select_row(&s, 1), vec![1]);
        assert_eq!(select_row(&s, 6), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn ties_go_to_the_lower_position() {
        let s = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
        assert_eq!(select_row(&s, 2), vec![1, 3]);
        assert_eq!(select_row(&s, 4), vec![0, 1, 3, 5]);
        let flat = [7.0f32; 10];
        assert_eq!(select_row(&flat, 3), vec![0, 1, 2]);
        assert_eq!(select_row(&[0.0, -0.0, 0.0], 2), vec![0, 1]);
    }

    #[test]
    fn nan_ranks_below_every_number() {
        let s = [f32::NAN, f32::NEG_INFINITY, f32::NAN, -1.0];
        assert_eq!(select_row(&s, 2), vec![1, 3]);
        assert_eq!(select_row(&s, 3), vec![0, 1, 3]);
    }

    /// The kernel's algorithm step by step on the CPU (`fg_topk_block` of
    /// `templates/device/topk.cuh` with `threads` threads of `kpt` keys): up to 4 radix passes
    /// of 8 bits, stopping once the bucket holding the lp-th key is taken whole, then the
    /// compaction of each chunk of `threads * kpt` keys, every thread placing its keys by one
    /// exclusive scan of its (above, in-bucket) counts, so CI checks the selection logic and
    /// its output positions without a GPU.
    fn radix_select_row(scores: &[f32], lp: usize, threads: usize, kpt: usize) -> Vec<i32> {
        let n = scores.len();
        let keys: Vec<u32> = scores.iter().map(|&s| order_key(s)).collect();
        let (mut prefix, mut mask, mut k) = (0u32, 0u32, lp as u32);
        for shift in [24u32, 16, 8, 0] {
            let mut hist = [0u32; 256];
            for &key in keys.iter().filter(|&&key| key & mask == prefix) {
                hist[((key >> shift) & 255) as usize] += 1;
            }
            let mut above = 0u32;
            let digit = (0..256usize)
                .rev()
                .find(|&d| {
                    if above + hist[d] >= k {
                        true
                    } else {
                        above += hist[d];
                        false
                    }
                })
                .expect("the row holds at least k keys under the prefix");
            prefix |= (digit as u32) << shift;
            k -= above;
            mask |= 255 << shift;
            if hist[digit] == k {
                break;
            }
        }
        let take_eq = k;
        let taken = |eq: u32| eq.min(take_eq);
        let mut out = vec![-1i32; lp];
        let (mut eq_base, mut out_base) = (0u32, 0u32);
        let chunk = threads * kpt;
        let mut base = 0;
        while base < n && out_base < lp as u32 {
            let at_key = |t: usize, i: usize| {
                let j = base + t * kpt + i;
                (j < n).then(|| (j, keys[j] & mask))
            };
            let counts: Vec<(u32, u32)> = (0..threads)
                .map(|t| {
                    let (mut gt, mut eq) = (0u32, 0u32);
                    for (_, m) in (0..kpt).filter_map(|i| at_key(t, i)) {
                        gt += u32::from(m > prefix);
                        eq += u32::from(m == prefix);
                    }
                    (gt, eq)
                })
                .collect();
            let (mut gt_before, mut eq_before) = (0u32, 0u32);
            for (t, &(gt, eq)) in counts.iter().enumerate() {
                let mut eq_rank = eq_base + eq_before;
                let mut at = out_base + gt_before + taken(eq_rank) - taken(eq_base);
                for (j, m) in (0..kpt).filter_map(|i| at_key(t, i)) {
                    if m > prefix || (m == prefix && eq_rank < take_eq) {
                        out[at as usize] = j as i32;
                        at += 1;
                    }
                    eq_rank += u32::from(m == prefix);
                }
                gt_before += gt;
                eq_before += eq;
            }
            out_base += gt_before + taken(eq_base + eq_before) - taken(eq_base);
            eq_base += eq_before;
            base += chunk;
        }
        assert_eq!(out_base, lp as u32, "every position placed");
        out
    }

    #[test]
    fn the_kernels_radix_select_matches_the_rule() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for n in [1usize, 2, 7, 100, 1000, 4097] {
            for flavour in 0..4 {
                let scores: Vec<f32> = (0..n)
                    .map(|_| match flavour {
                        0 => (next() as f32 / u32::MAX as f32) * 8.0 - 4.0,
                        1 => (next() % 5) as f32,
                        2 => f32::from_bits(next()),
                        _ => [f32::NAN, -0.0, 0.0, f32::NEG_INFINITY, 1.0][next() as usize % 5],
                    })
                    .collect();
                for lp in [1, n / 3, n / 2, n - 1, n] {
                    let lp = lp.clamp(1, n);
                    // APB's CTA, the decode selector's, and a small one for many chunks.
                    for (threads, kpt) in [(1024, 4), (512, 4), (3, 5)] {
                        assert_eq!(
                            radix_select_row(&scores, lp, threads, kpt),
                            select_row(&scores, lp),
                            "n {n} flavour {flavour} lp {lp} threads {threads} kpt {kpt}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rows_are_independent() {
        let s = [3.0, 1.0, 2.0, 1.0, 3.0, 2.0];
        assert_eq!(select_rows(&s, 3, 2), vec![0, 2, 1, 2]);
    }
}
