//! Index data the kernels read from device memory (varlen offsets, block lists, head kinds),
//! each built from host data in one call that checks it, uploads it and keeps the host copy.
//! The types have private fields and no mutators: what the host-side launch checks read is
//! always exactly what the kernel reads, so no safe call can pair a checked host copy with a
//! different device copy.

use crate::error::{invalid, DriverContext, Result};
use crate::masks::{heavy_first_order, BlockMask, HeadKind};
use cudarc::driver::{CudaSlice, CudaStream};
use std::sync::Arc;

/// The `cu_seqlens` of a packed varlen batch (`batch + 1` entries each, starting at 0 and
/// non-decreasing), on the device and on the host.
pub struct DeviceVarlen {
    host_q: Vec<i32>,
    host_k: Vec<i32>,
    dev_q: CudaSlice<i32>,
    dev_k: CudaSlice<i32>,
}

impl DeviceVarlen {
    /// Checks both arrays and copies them to the device on `stream`.
    pub(crate) fn upload(
        stream: &Arc<CudaStream>,
        cu_seqlens_q: &[i32],
        cu_seqlens_k: &[i32],
    ) -> Result<Self> {
        check_cu_seqlens("cu_seqlens_q", cu_seqlens_q)?;
        check_cu_seqlens("cu_seqlens_k", cu_seqlens_k)?;
        if cu_seqlens_q.len() != cu_seqlens_k.len() {
            return Err(invalid(
                "cu_seqlens_k",
                format!(
                    "has {} entries but cu_seqlens_q has {}: both describe the same batch",
                    cu_seqlens_k.len(),
                    cu_seqlens_q.len()
                ),
            ));
        }
        Ok(DeviceVarlen {
            host_q: cu_seqlens_q.to_vec(),
            host_k: cu_seqlens_k.to_vec(),
            dev_q: stream
                .clone_htod(cu_seqlens_q)
                .while_(|| "uploading cu_seqlens_q".into())?,
            dev_k: stream
                .clone_htod(cu_seqlens_k)
                .while_(|| "uploading cu_seqlens_k".into())?,
        })
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.host_q.len() - 1
    }

    /// The query offsets, as uploaded.
    pub fn cu_seqlens_q(&self) -> &[i32] {
        &self.host_q
    }

    /// The key offsets, as uploaded.
    pub fn cu_seqlens_k(&self) -> &[i32] {
        &self.host_k
    }

    pub(crate) fn device_q(&self) -> &CudaSlice<i32> {
        &self.dev_q
    }

    pub(crate) fn device_k(&self) -> &CudaSlice<i32> {
        &self.dev_k
    }
}

/// Shape rules of one `cu_seqlens` array that hold whatever tensors it is used with: at least
/// two entries, at most 65535 sequences, starting at 0, non-decreasing. Whether it fits the
/// packed tensors is checked per launch.
pub(crate) fn check_cu_seqlens(name: &'static str, cu: &[i32]) -> Result<()> {
    if cu.len() < 2 {
        return Err(invalid(
            name,
            format!(
                "has {} entries; a batch of b sequences needs b + 1 >= 2",
                cu.len()
            ),
        ));
    }
    if cu.len() - 1 > 65_535 {
        return Err(invalid(
            name,
            format!(
                "describes {} sequences; at most 65535 per launch",
                cu.len() - 1
            ),
        ));
    }
    if cu[0] != 0 {
        return Err(invalid(
            name,
            format!("must start at 0, starts at {}", cu[0]),
        ));
    }
    if let Some((b, pair)) = cu.windows(2).enumerate().find(|(_, p)| p[1] < p[0]) {
        return Err(invalid(
            name,
            format!("decreases at batch {b}: {} then {}", pair[0], pair[1]),
        ));
    }
    Ok(())
}

/// A block list on the device, with the host copy it was uploaded from.
pub struct DeviceBlockMask {
    mask: BlockMask,
    kv_count: CudaSlice<i32>,
    kv_index: CudaSlice<i32>,
}

impl DeviceBlockMask {
    /// Checks the list's own structure (lengths, counts, index ranges, order, sizes that fit
    /// the kernel's 32-bit arithmetic) and copies it to the device.
    pub(crate) fn upload(stream: &Arc<CudaStream>, mask: &BlockMask) -> Result<Self> {
        mask.validate_structure()?;
        Ok(DeviceBlockMask {
            mask: mask.clone(),
            kv_count: stream
                .clone_htod(&mask.kv_count)
                .while_(|| "uploading kv_count".into())?,
            kv_index: stream
                .clone_htod(&mask.kv_index)
                .while_(|| "uploading kv_index".into())?,
        })
    }

    /// The list as uploaded.
    pub fn mask(&self) -> &BlockMask {
        &self.mask
    }

    pub(crate) fn device_count(&self) -> &CudaSlice<i32> {
        &self.kv_count
    }

    pub(crate) fn device_index(&self) -> &CudaSlice<i32> {
        &self.kv_index
    }
}

/// Per-head kinds of a mixed-heads launch on the device, with their heavy-first launch order.
pub struct DeviceHeadKinds {
    kinds: Vec<HeadKind>,
    kinds_dev: CudaSlice<i32>,
    order_dev: CudaSlice<i32>,
}

impl DeviceHeadKinds {
    pub(crate) fn upload(stream: &Arc<CudaStream>, kinds: &[HeadKind]) -> Result<Self> {
        if kinds.is_empty() {
            return Err(invalid(
                "head_kind",
                "needs one kind per query head, got none",
            ));
        }
        if kinds.len() > 65_535 {
            return Err(invalid(
                "head_kind",
                format!("has {} entries; at most 65535 heads", kinds.len()),
            ));
        }
        let raw: Vec<i32> = kinds.iter().map(|&k| k as i32).collect();
        let order = heavy_first_order(kinds);
        Ok(DeviceHeadKinds {
            kinds: kinds.to_vec(),
            kinds_dev: stream
                .clone_htod(&raw)
                .while_(|| "uploading head kinds".into())?,
            order_dev: stream
                .clone_htod(&order)
                .while_(|| "uploading the head order".into())?,
        })
    }

    /// The kinds as uploaded, one per query head.
    pub fn kinds(&self) -> &[HeadKind] {
        &self.kinds
    }

    pub(crate) fn device_kinds(&self) -> &CudaSlice<i32> {
        &self.kinds_dev
    }

    pub(crate) fn device_order(&self) -> &CudaSlice<i32> {
        &self.order_dev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cu_seqlens_shape_rules() {
        check_cu_seqlens("cu_seqlens_q", &[0, 3, 3, 10]).unwrap();
        for bad in [&[][..], &[0], &[1, 4], &[0, 5, 4]] {
            let err = check_cu_seqlens("cu_seqlens_q", bad).unwrap_err();
            assert!(err.to_string().contains("cu_seqlens_q"), "{err}");
        }
        let too_many = vec![0; 65_537];
        assert!(check_cu_seqlens("cu_seqlens_k", &too_many).is_err());
    }
}
