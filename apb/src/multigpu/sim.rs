//! N simulated hosts on one GPU. Every host is a thread running the same code as on N GPUs,
//! but the hosts take turns: host 0 runs until its next collective, then host 1, ... and the
//! last host to arrive carries out the collective (device-to-device copies on the shared
//! stream) before host 0 continues. The result is exactly that of N GPUs; the per-host GPU
//! time of each turn can be recorded ([`SimGroup::with_timing`]).

use super::{Communicator, RawMsg};
use crate::error::{DriverContext, Error, Result};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaStream};
use flashgen_runtime::Runtime;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The text that marks an error caused by another host's failure.
const PEER_FAILED: &str = "another simulated host failed";

/// Whether `e` only reports that another host failed.
pub(crate) fn is_peer_failure(e: &Error) -> bool {
    matches!(e, Error::Communicator(m) if m.starts_with(PEER_FAILED))
}

#[derive(Clone, Debug)]
enum Op {
    AllGather {
        send: u64,
        recv: u64,
        bytes: usize,
    },
    Broadcast {
        buf: u64,
        bytes: usize,
        root: usize,
    },
    Exchange {
        sends: Vec<RawMsg>,
        recvs: Vec<RawMsg>,
    },
    Barrier,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::AllGather { .. } => "all_gather",
            Op::Broadcast { .. } => "broadcast",
            Op::Exchange { .. } => "exchange",
            Op::Barrier => "barrier",
        }
    }
}

struct State {
    turn: usize,
    ops: Vec<Option<Op>>,
    finished: Vec<bool>,
    failure: Option<String>,
    /// Per host: the events that open and close each of its turns.
    turns: Vec<Vec<(CudaEvent, CudaEvent)>>,
    /// The events around each collective's copies.
    comm: Vec<(CudaEvent, CudaEvent)>,
    open: Option<CudaEvent>,
}

struct Shared {
    world: usize,
    stream: Arc<CudaStream>,
    timing: bool,
    state: Mutex<State>,
    wake: Condvar,
}

/// The communicators of N simulated hosts sharing one runtime's GPU and stream.
pub struct SimGroup {
    shared: Arc<Shared>,
}

/// One simulated host.
pub struct SimComm {
    shared: Arc<Shared>,
    rank: usize,
}

/// GPU time of a simulated run, from the events of [`SimGroup::with_timing`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimTimes {
    /// Per host: the sum of its turns (its own kernels and copies), milliseconds.
    pub host_ms: Vec<f64>,
    /// The collectives' copies, milliseconds.
    pub comm_ms: f64,
}

impl SimGroup {
    /// `world` hosts on `rt`'s GPU.
    pub fn new(rt: &Runtime, world: usize) -> Result<Self> {
        Self::build(rt, world, false)
    }

    /// As [`new`](Self::new), recording CUDA events around every turn and collective.
    pub fn with_timing(rt: &Runtime, world: usize) -> Result<Self> {
        Self::build(rt, world, true)
    }

    fn build(rt: &Runtime, world: usize, timing: bool) -> Result<Self> {
        if world == 0 {
            return Err(crate::error::invalid(
                "hosts",
                "there must be at least one simulated host",
            ));
        }
        Ok(SimGroup {
            shared: Arc::new(Shared {
                world,
                stream: rt.stream().clone(),
                timing,
                state: Mutex::new(State {
                    turn: 0,
                    ops: vec![None; world],
                    finished: vec![false; world],
                    failure: None,
                    turns: (0..world).map(|_| Vec::new()).collect(),
                    comm: Vec::new(),
                    open: None,
                }),
                wake: Condvar::new(),
            }),
        })
    }

    /// The hosts' communicators, rank order. A group runs once: its hosts finish for good.
    pub fn comms(&self) -> Vec<SimComm> {
        (0..self.shared.world)
            .map(|rank| SimComm {
                shared: self.shared.clone(),
                rank,
            })
            .collect()
    }

    /// The recorded GPU times (waits for the stream). Zero without timing.
    pub fn times(&self) -> Result<SimTimes> {
        let st = self.shared.lock();
        let span = |(a, b): &(CudaEvent, CudaEvent)| {
            a.elapsed_ms(b)
                .map(f64::from)
                .while_(|| "reading simulated host times".into())
        };
        let mut host_ms = Vec::with_capacity(st.turns.len());
        for turns in &st.turns {
            let mut total = 0.0;
            for t in turns {
                total += span(t)?;
            }
            host_ms.push(total);
        }
        let mut comm_ms = 0.0;
        for c in &st.comm {
            comm_ms += span(c)?;
        }
        Ok(SimTimes { host_ms, comm_ms })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("simulated host state lock")
    }

    fn event(&self) -> Result<Option<CudaEvent>> {
        if !self.timing {
            return Ok(None);
        }
        self.stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map(Some)
            .while_(|| "recording a simulated-host event".into())
    }

    /// Opens host `rank`'s turn (timing).
    fn open_turn(&self, st: &mut State) -> Result<()> {
        st.open = self.event()?;
        Ok(())
    }

    /// Closes host `rank`'s turn (timing).
    fn close_turn(&self, st: &mut State, rank: usize) -> Result<()> {
        if let (Some(open), Some(close)) = (st.open.take(), self.event()?) {
            st.turns[rank].push((open, close));
        }
        Ok(())
    }

    /// The next host after `rank` that has not finished, if any.
    fn next_host(&self, st: &State, rank: usize) -> Option<usize> {
        (1..=self.world)
            .map(|k| (rank + k) % self.world)
            .find(|&r| !st.finished[r])
    }

    fn fail(&self, st: &mut State, why: String) {
        if st.failure.is_none() {
            st.failure = Some(why);
        }
        self.wake.notify_all();
    }

    fn failure_error(st: &State) -> Option<Error> {
        st.failure
            .as_ref()
            .map(|why| Error::Communicator(format!("{PEER_FAILED}: {why}")))
    }

    /// Waits until it is `rank`'s turn (or a host failed).
    fn wait_turn<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        rank: usize,
    ) -> Result<MutexGuard<'a, State>> {
        while st.turn != rank && st.failure.is_none() {
            st = self.wake.wait(st).expect("simulated host state lock");
        }
        match Self::failure_error(&st) {
            Some(e) => Err(e),
            None => Ok(st),
        }
    }

    /// Host `rank` arrives at a collective.
    fn collective(&self, rank: usize, op: Op) -> Result<()> {
        let mut st = self.lock();
        if let Some(e) = Self::failure_error(&st) {
            return Err(e);
        }
        self.close_turn(&mut st, rank)?;
        st.ops[rank] = Some(op);
        let last = (0..self.world).rev().find(|&r| !st.finished[r]);
        if last == Some(rank) {
            if let Err(e) = self.execute(&mut st) {
                self.fail(&mut st, format!("host {rank}: {e}"));
                return Err(e);
            }
            st.turn = self.next_host(&st, rank).unwrap_or(rank);
        } else {
            st.turn = self.next_host(&st, rank).unwrap_or(rank);
        }
        self.wake.notify_all();
        let mut st = self.wait_turn(st, rank)?;
        self.open_turn(&mut st)
    }

    /// Carries out the collective every host has arrived at.
    fn execute(&self, st: &mut State) -> Result<()> {
        let ops: Vec<Op> = st.ops.iter_mut().filter_map(Option::take).collect();
        if ops.len() != self.world {
            let missing: Vec<usize> = (0..self.world).filter(|&r| st.finished[r]).collect();
            return Err(Error::Communicator(format!(
                "hosts {missing:?} finished while the others wait in a {}",
                ops.first().map_or("collective", Op::name)
            )));
        }
        let kind = ops[0].name();
        if let Some((r, op)) = ops.iter().enumerate().find(|(_, o)| o.name() != kind) {
            return Err(Error::Communicator(format!(
                "host 0 called {kind} but host {r} called {}",
                op.name()
            )));
        }
        let start = self.event()?;
        self.stream
            .context()
            .bind_to_thread()
            .while_(|| "binding the simulated hosts' context".into())?;
        let copy = |dst: u64, src: u64, bytes: usize| -> Result<()> {
            if bytes == 0 || dst == src {
                return Ok(());
            }
            // SAFETY: every host vouched for its buffers (trait contract) and is blocked in
            // this collective, so they stay allocated until the stream has run the copy.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream())
            }
            .while_(|| "copying between simulated hosts".into())
        };
        match &ops[0] {
            Op::AllGather { bytes, .. } => {
                let bytes = *bytes;
                let mut sends = Vec::new();
                for (r, op) in ops.iter().enumerate() {
                    match op {
                        Op::AllGather {
                            send,
                            recv,
                            bytes: b,
                        } if *b == bytes => sends.push((*send, *recv)),
                        _ => {
                            return Err(Error::Communicator(format!(
                                "all_gather sizes differ between host 0 and host {r}"
                            )))
                        }
                    }
                }
                for &(_, recv) in &sends {
                    for (s, &(send, _)) in sends.iter().enumerate() {
                        copy(recv + (s * bytes) as u64, send, bytes)?;
                    }
                }
            }
            Op::Broadcast { bytes, root, .. } => {
                let (bytes, root) = (*bytes, *root);
                let mut bufs = Vec::new();
                for (r, op) in ops.iter().enumerate() {
                    match op {
                        Op::Broadcast {
                            buf,
                            bytes: b,
                            root: o,
                        } if *b == bytes && *o == root => bufs.push(*buf),
                        _ => {
                            return Err(Error::Communicator(format!(
                                "broadcast size or root differs between host 0 and host {r}"
                            )))
                        }
                    }
                }
                if root >= self.world {
                    return Err(Error::Communicator(format!(
                        "broadcast root {root} of {} hosts",
                        self.world
                    )));
                }
                for (r, &buf) in bufs.iter().enumerate() {
                    if r != root {
                        copy(buf, bufs[root], bytes)?;
                    }
                }
            }
            Op::Exchange { .. } => {
                let mut pending: Vec<Vec<RawMsg>> = ops
                    .iter()
                    .map(|op| match op {
                        Op::Exchange { sends, .. } => sends.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                for (dst, op) in ops.iter().enumerate() {
                    let Op::Exchange { recvs, .. } = op else {
                        continue;
                    };
                    for m in recvs {
                        let from = &mut pending[m.peer];
                        let Some(at) = from.iter().position(|s| s.peer == dst) else {
                            return Err(Error::Communicator(format!(
                                "host {dst} receives from host {} which sends it nothing",
                                m.peer
                            )));
                        };
                        let sent = from.remove(at);
                        if sent.bytes != m.bytes {
                            return Err(Error::Communicator(format!(
                                "host {} sends {} bytes to host {dst}, which receives {}",
                                m.peer, sent.bytes, m.bytes
                            )));
                        }
                        copy(m.ptr, sent.ptr, m.bytes)?;
                    }
                }
                if let Some((src, left)) = pending.iter().enumerate().find(|(_, l)| !l.is_empty()) {
                    return Err(Error::Communicator(format!(
                        "host {src} sends to host {} which does not receive it",
                        left[0].peer
                    )));
                }
            }
            Op::Barrier => {}
        }
        if let (Some(start), Some(end)) = (start, self.event()?) {
            st.comm.push((start, end));
        }
        Ok(())
    }
}

impl Communicator for SimComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.shared.stream
    }

    fn begin(&self) -> Result<()> {
        let sh = &*self.shared;
        let mut st = sh.wait_turn(sh.lock(), self.rank)?;
        sh.open_turn(&mut st)
    }

    fn end(&self, ok: bool) {
        let sh = &*self.shared;
        let mut st = sh.lock();
        let closed = sh.close_turn(&mut st, self.rank);
        st.finished[self.rank] = true;
        if !ok || closed.is_err() {
            sh.fail(&mut st, format!("host {} failed", self.rank));
        } else if st.ops.iter().any(Option::is_some) {
            let why = format!(
                "host {} finished while the others wait in a collective",
                self.rank
            );
            sh.fail(&mut st, why);
        }
        if let Some(next) = sh.next_host(&st, self.rank) {
            st.turn = next;
        }
        sh.wake.notify_all();
    }

    unsafe fn all_gather_raw(&self, send: u64, recv: u64, bytes: usize) -> Result<()> {
        self.shared
            .collective(self.rank, Op::AllGather { send, recv, bytes })
    }

    unsafe fn broadcast_raw(&self, buf: u64, bytes: usize, root: usize) -> Result<()> {
        self.shared
            .collective(self.rank, Op::Broadcast { buf, bytes, root })
    }

    unsafe fn exchange_raw(&self, sends: &[RawMsg], recvs: &[RawMsg]) -> Result<()> {
        self.shared.collective(
            self.rank,
            Op::Exchange {
                sends: sends.to_vec(),
                recvs: recvs.to_vec(),
            },
        )
    }

    fn barrier(&self) -> Result<()> {
        self.shared.collective(self.rank, Op::Barrier)?;
        self.shared
            .stream
            .synchronize()
            .while_(|| "waiting at a simulated barrier".into())
    }
}
