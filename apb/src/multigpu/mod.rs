//! Communication between the hosts of a sequence-parallel prefill: one rank per GPU (one
//! thread per rank here; a process per rank needs only another NCCL id exchange), or N
//! simulated hosts that share one GPU and run in turn.
//!
//! [`Communicator`] is what the prefill code calls; [`NcclComm`] runs it over NCCL and
//! [`SimComm`] runs the very same calls on one GPU, which is how the multi-host semantics are
//! tested where only one GPU exists. [`run_hosts`] runs a per-host function on every rank.

pub mod nccl;
pub mod sim;

pub use nccl::{
    nccl_group, nccl_present, nccl_version, IdExchange, InProcessIds, NcclComm, NcclId,
};
pub use sim::{SimComm, SimGroup, SimTimes};

use crate::error::{invalid, Result};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr};
use std::sync::Arc;

/// One point-to-point message of [`Communicator::exchange_raw`]: `bytes` at device address
/// `ptr`, to or from rank `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawMsg {
    pub peer: usize,
    pub ptr: u64,
    pub bytes: usize,
}

/// The collectives a multi-host prefill needs. Every rank calls the same collectives in the
/// same order; the work is enqueued on [`stream`](Self::stream) and ordered after what that
/// stream did before.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// The stream the collectives run on (the rank's runtime stream).
    fn stream(&self) -> &Arc<CudaStream>;

    /// Called by [`run_hosts`] before the rank's work starts (a simulated host waits for its
    /// turn here).
    fn begin(&self) -> Result<()> {
        Ok(())
    }

    /// Called by [`run_hosts`] after the rank's work, `ok` false when it failed.
    fn end(&self, ok: bool) {
        let _ = ok;
    }

    /// All-gather: rank `r`'s `bytes` at `send` land at `recv + r * bytes` on every rank.
    ///
    /// # Safety
    /// `send` must address `bytes` readable bytes and `recv` `world_size * bytes` writable
    /// bytes of device memory on this rank's GPU, live until the stream has run the copy; `recv`
    /// may overlap `send` only as `send == recv + rank * bytes`.
    unsafe fn all_gather_raw(&self, send: u64, recv: u64, bytes: usize) -> Result<()>;

    /// Broadcast in place: `root`'s `bytes` at `buf` are copied to `buf` on every rank.
    ///
    /// # Safety
    /// `buf` must address `bytes` bytes of device memory on this rank's GPU, live until the
    /// stream has run the copy.
    unsafe fn broadcast_raw(&self, buf: u64, bytes: usize, root: usize) -> Result<()>;

    /// Grouped point-to-point messages: each send must be matched by the peer's receive of the
    /// same size (in order, per pair of ranks).
    ///
    /// # Safety
    /// Every message must address `bytes` bytes of device memory on this rank's GPU (readable
    /// for sends, writable for receives, receives disjoint from everything else), live until
    /// the stream has run the copy.
    unsafe fn exchange_raw(&self, sends: &[RawMsg], recvs: &[RawMsg]) -> Result<()>;

    /// Returns once every rank has reached the barrier and this rank's stream is idle.
    fn barrier(&self) -> Result<()>;
}

fn bytes_of<T>(count: usize) -> usize {
    count * std::mem::size_of::<T>()
}

impl dyn Communicator + '_ {
    /// All-gather of the first `count` elements of `send` into `recv` (rank `r`'s at
    /// `r * count`).
    pub fn all_gather<T: DeviceRepr>(
        &self,
        send: &CudaSlice<T>,
        count: usize,
        recv: &mut CudaSlice<T>,
    ) -> Result<()> {
        if send.len() < count || recv.len() < count * self.world_size() {
            return Err(invalid(
                "all_gather",
                format!(
                    "{count} elements from each of {} ranks need a send buffer of {count} and a \
                     receive buffer of {}; got {} and {}",
                    self.world_size(),
                    count * self.world_size(),
                    send.len(),
                    recv.len()
                ),
            ));
        }
        let s = self.stream();
        let (src, _g1) = send.device_ptr(s);
        let (dst, _g2) = recv.device_ptr_mut(s);
        // SAFETY: both buffers are live slices of the checked lengths, distinct allocations.
        unsafe { self.all_gather_raw(src, dst, bytes_of::<T>(count)) }
    }

    /// Broadcast of the first `count` elements of `buf` from `root`.
    pub fn broadcast<T: DeviceRepr>(
        &self,
        buf: &mut CudaSlice<T>,
        count: usize,
        root: usize,
    ) -> Result<()> {
        if buf.len() < count || root >= self.world_size() {
            return Err(invalid(
                "broadcast",
                format!(
                    "{count} elements from root {root} of {} ranks; the buffer holds {}",
                    self.world_size(),
                    buf.len()
                ),
            ));
        }
        let (ptr, _g) = buf.device_ptr_mut(self.stream());
        // SAFETY: a live slice of at least `count` elements.
        unsafe { self.broadcast_raw(ptr, bytes_of::<T>(count), root) }
    }

    /// Grouped sends and receives: `(peer, buffer, count)`, the first `count` elements.
    pub fn exchange<T: DeviceRepr>(
        &self,
        sends: &[(usize, &CudaSlice<T>, usize)],
        recvs: &mut [(usize, &mut CudaSlice<T>, usize)],
    ) -> Result<()> {
        let world = self.world_size();
        let s = self.stream();
        let mut guards = Vec::new();
        let mut raw_sends = Vec::new();
        for (peer, buf, count) in sends {
            if *peer >= world || buf.len() < *count {
                return Err(invalid(
                    "exchange",
                    format!(
                        "send of {count} elements to rank {peer} of {world} from a buffer of {}",
                        buf.len()
                    ),
                ));
            }
            let (ptr, g) = buf.device_ptr(s);
            guards.push(g);
            raw_sends.push(RawMsg {
                peer: *peer,
                ptr,
                bytes: bytes_of::<T>(*count),
            });
        }
        let mut raw_recvs = Vec::new();
        for (peer, buf, count) in recvs.iter_mut() {
            if *peer >= world || buf.len() < *count {
                return Err(invalid(
                    "exchange",
                    format!("receive of {count} elements from rank {peer} of {world} into a buffer of {}", buf.len()),
                ));
            }
            let (ptr, g) = buf.device_ptr_mut(s);
            guards.push(g);
            raw_recvs.push(RawMsg {
                peer: *peer,
                ptr,
                bytes: bytes_of::<T>(*count),
            });
        }
        // SAFETY: every message is a live slice of the checked length; receive buffers are
        // exclusive borrows, so disjoint from the rest.
        let result = unsafe { self.exchange_raw(&raw_sends, &raw_recvs) };
        drop(guards);
        result
    }
}

/// Runs `f(rank, item)` for every item on a scoped thread of its own and returns the results
/// in rank order; a thread's panic is raised again here.
fn on_rank_threads<I, R, F>(items: &[I], f: F) -> Vec<R>
where
    I: Sync,
    R: Send,
    F: Fn(usize, &I) -> R + Sync,
{
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(rank, item)| {
                let f = &f;
                s.spawn(move || f(rank, item))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Runs `host(rank, comm)` on every rank, one thread each, and returns the results in rank
/// order, or the first error (a rank's own failure before the failures it caused elsewhere).
pub fn run_hosts<C, R, F>(comms: &[C], host: F) -> Result<Vec<R>>
where
    C: Communicator,
    R: Send,
    F: Fn(usize, &C) -> Result<R> + Sync,
{
    if comms.is_empty() {
        return Err(invalid("hosts", "there must be at least one host"));
    }
    let results = on_rank_threads(comms, |rank, comm| {
        comm.begin()?;
        // A panicking host still ends its turn, so the others are not left waiting.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host(rank, comm)));
        comm.end(matches!(result, Ok(Ok(_))));
        match result {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    let first_own = results
        .iter()
        .position(|r| matches!(r, Err(e) if !sim::is_peer_failure(e)));
    let first = first_own.or_else(|| results.iter().position(|r| r.is_err()));
    match first {
        Some(i) => Err(results
            .into_iter()
            .nth(i)
            .expect("index in range")
            .err()
            .expect("an error")),
        None => Ok(results.into_iter().map(|r| r.expect("no error")).collect()),
    }
}
