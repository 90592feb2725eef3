//! The NCCL communicator: one rank per GPU, ops enqueued on the rank's runtime stream.
//!
//! libnccl is opened at run time. cudarc's own loader looks for `libnccl.so` and
//! `libnccl.so.{13,12,11,10,9,1}` but not NCCL's soname `libnccl.so.2` (all that the pip wheels
//! and most system packages ship), and it panics when it finds none; so the library is opened
//! here (`libnccl.so.2`, then `libnccl.so`) with libloading, and cudarc's `nccl` bindings give the
//! ABI types. An absent library is [`Error::LibraryMissing`].
//!
//! The NCCL unique id is made by rank 0 and handed to the other ranks through an
//! [`IdExchange`]; [`InProcessIds`] does that between threads of one process. Running across
//! nodes only needs another `IdExchange` (over TCP, a shared file, MPI ...).

use super::{on_rank_threads, Communicator, RawMsg};
use crate::error::{invalid, DriverContext, Error, Result};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};
use cudarc::nccl::sys::{cudaStream_t, ncclComm_t, ncclDataType_t, ncclUniqueId};
use flashgen_runtime::Runtime;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// The library names tried, in order.
pub const NCCL_LIBS: &[&str] = &["libnccl.so.2", "libnccl.so"];

/// How to get libnccl when it cannot be loaded.
pub const NCCL_HINT: &str = "no libnccl.so.2 on the loader path: install NCCL (e.g. \
     `python3 -m pip install nvidia-nccl-cu13` and add its nvidia/nccl/lib folder to \
     LD_LIBRARY_PATH, or the folder of PyTorch's or the system's libnccl.so.2)";

type Res = c_int;
const SUCCESS: Res = 0;

/// The NCCL entry points used here.
struct Api {
    _lib: libloading::Library,
    get_version: unsafe extern "C" fn(*mut c_int) -> Res,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> Res,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> Res,
    comm_destroy: unsafe extern "C" fn(ncclComm_t) -> Res,
    error_string: unsafe extern "C" fn(Res) -> *const c_char,
    all_gather: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclComm_t,
        cudaStream_t,
    ) -> Res,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> Res,
    send: unsafe extern "C" fn(
        *const c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> Res,
    recv: unsafe extern "C" fn(
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> Res,
    group_start: unsafe extern "C" fn() -> Res,
    group_end: unsafe extern "C" fn() -> Res,
}

/// Opens the first of `names` that loads and resolves the entry points.
fn load_from(names: &[&str]) -> Result<Api> {
    let missing = || Error::LibraryMissing {
        lib: "libnccl",
        hint: NCCL_HINT,
    };
    let lib = names
        .iter()
        // SAFETY: loading NCCL runs only its (side-effect free) initialisers.
        .find_map(|&name| unsafe { libloading::Library::new(name) }.ok())
        .ok_or_else(missing)?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the signature is NCCL's (nccl.h, stable since 2.7).
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|_| {
                Error::LibraryMissing {
                    lib: "libnccl",
                    hint: concat!(
                        "the libnccl found lacks ",
                        $name,
                        "; NCCL 2.7 or newer is needed"
                    ),
                }
            })?
        };
    }
    Ok(Api {
        get_version: sym!("ncclGetVersion"),
        get_unique_id: sym!("ncclGetUniqueId"),
        comm_init_rank: sym!("ncclCommInitRank"),
        comm_destroy: sym!("ncclCommDestroy"),
        error_string: sym!("ncclGetErrorString"),
        all_gather: sym!("ncclAllGather"),
        broadcast: sym!("ncclBroadcast"),
        send: sym!("ncclSend"),
        recv: sym!("ncclRecv"),
        group_start: sym!("ncclGroupStart"),
        group_end: sym!("ncclGroupEnd"),
        _lib: lib,
    })
}

/// The process's NCCL, loaded once. NVLink SHARP (multicast) stays off unless the user asked
/// for it: `NCCL_NVLS_ENABLE=0` is set before NCCL first reads its environment. (Setting the
/// environment races with other threads reading it, so [`nccl_group`] loads NCCL before it
/// starts its threads.)
fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, (&'static str, &'static str)>> = OnceLock::new();
    let loaded = API.get_or_init(|| {
        if std::env::var_os("NCCL_NVLS_ENABLE").is_none() {
            std::env::set_var("NCCL_NVLS_ENABLE", "0");
        }
        load_from(NCCL_LIBS).map_err(|e| match e {
            Error::LibraryMissing { lib, hint } => (lib, hint),
            _ => ("libnccl", NCCL_HINT),
        })
    });
    loaded
        .as_ref()
        .map_err(|&(lib, hint)| Error::LibraryMissing { lib, hint })
}

/// Whether libnccl can be loaded.
pub fn nccl_present() -> bool {
    api().is_ok()
}

/// The loaded NCCL's version code, e.g. 22703 for 2.27.3.
pub fn nccl_version() -> Result<i32> {
    let api = api()?;
    let mut v = 0;
    // SAFETY: plain out-parameter.
    check(
        api,
        unsafe { (api.get_version)(&mut v) },
        "reading the NCCL version",
    )?;
    Ok(v)
}

fn check(api: &Api, code: Res, context: &str) -> Result<()> {
    if code == SUCCESS {
        return Ok(());
    }
    // SAFETY: NCCL returns a static string for any code.
    let text = unsafe { (api.error_string)(code) };
    let text = if text.is_null() {
        String::new()
    } else {
        // SAFETY: non-null, NUL-terminated static string.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    };
    Err(Error::Nccl {
        context: context.to_string(),
        code,
        message: text,
    })
}

/// An NCCL unique id: made by rank 0, needed by every rank to join.
#[derive(Clone, Copy)]
pub struct NcclId(pub [u8; 128]);

impl NcclId {
    /// A fresh id (rank 0 only).
    pub fn new() -> Result<Self> {
        let api = api()?;
        let mut id = ncclUniqueId { internal: [0; 128] };
        // SAFETY: plain out-parameter.
        check(
            api,
            unsafe { (api.get_unique_id)(&mut id) },
            "creating the NCCL id",
        )?;
        Ok(NcclId(id.internal.map(|c| c as u8)))
    }
}

/// Hands rank 0's NCCL id to the other ranks: the only part that differs between threads of
/// one process and processes on several nodes.
pub trait IdExchange: Send + Sync {
    /// Rank 0 passes `Some(id)` and gets it back; the other ranks pass `None` and receive it.
    fn share(&self, rank: usize, id: Option<NcclId>) -> Result<NcclId>;
}

/// [`IdExchange`] between threads of one process.
#[derive(Default)]
pub struct InProcessIds {
    id: Mutex<Option<std::result::Result<NcclId, String>>>,
    ready: Condvar,
}

impl InProcessIds {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rank 0 could not make an id: the waiting ranks get this error instead of hanging.
    pub fn fail(&self, why: String) {
        *self.id.lock().expect("id lock") = Some(Err(why));
        self.ready.notify_all();
    }
}

impl IdExchange for InProcessIds {
    fn share(&self, rank: usize, id: Option<NcclId>) -> Result<NcclId> {
        let mut slot = self.id.lock().expect("id lock");
        if rank == 0 {
            let id = id.ok_or_else(|| invalid("id", "rank 0 must supply the NCCL id"))?;
            *slot = Some(Ok(id));
            self.ready.notify_all();
            return Ok(id);
        }
        while slot.is_none() {
            slot = self.ready.wait(slot).expect("id lock");
        }
        match slot.as_ref().expect("checked above") {
            Ok(id) => Ok(*id),
            Err(why) => Err(invalid("id", format!("rank 0 has no NCCL id: {why}"))),
        }
    }
}

/// One rank of an NCCL communicator, on its runtime's GPU and stream.
pub struct NcclComm {
    api: &'static Api,
    comm: ncclComm_t,
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
    /// A byte per rank for [`Communicator::barrier`].
    scratch: Mutex<CudaSlice<u8>>,
    /// Held across every NCCL call on `comm`.
    calls: Mutex<()>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent, and every call on `comm` holds the `calls` lock.
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

impl NcclComm {
    /// Joins rank `rank` of `world` on `rt`'s GPU. Every rank must call this at the same time
    /// (it blocks until all have joined); rank 0 makes the id and shares it through `ids`.
    pub fn join(rt: &Runtime, rank: usize, world: usize, ids: &dyn IdExchange) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(invalid(
                "rank",
                format!("rank {rank} is not within a world of {world}"),
            ));
        }
        let api = api()?;
        let id = if rank == 0 {
            ids.share(0, Some(NcclId::new()?))?
        } else {
            ids.share(rank, None)?
        };
        let raw = ncclUniqueId {
            internal: id.0.map(|b| b as c_char),
        };
        rt.context()
            .bind_to_thread()
            .while_(|| "binding the CUDA context for NCCL".into())?;
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: out-parameter; the id came from ncclGetUniqueId on rank 0.
        check(
            api,
            unsafe { (api.comm_init_rank)(&mut comm, world as c_int, raw, rank as c_int) },
            "joining the NCCL communicator",
        )?;
        let scratch = rt
            .stream()
            .alloc_zeros::<u8>(world)
            .while_(|| "allocating the barrier buffer".into())?;
        Ok(NcclComm {
            api,
            comm,
            stream: rt.stream().clone(),
            rank,
            world,
            scratch: Mutex::new(scratch),
            calls: Mutex::new(()),
        })
    }

    fn stream_handle(&self) -> cudaStream_t {
        self.stream.cu_stream() as cudaStream_t
    }

    /// Binds the rank's context to this thread and takes the call lock.
    fn enter(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.stream
            .context()
            .bind_to_thread()
            .while_(|| "binding the CUDA context for NCCL".into())?;
        Ok(self.calls.lock().expect("NCCL call lock"))
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // Work still queued on the stream may use the communicator.
        let _ = self.stream.synchronize();
        // SAFETY: created by ncclCommInitRank, destroyed once; errors cannot be reported here.
        let _ = unsafe { (self.api.comm_destroy)(self.comm) };
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    unsafe fn all_gather_raw(&self, send: u64, recv: u64, bytes: usize) -> Result<()> {
        let _calls = self.enter()?;
        // SAFETY: the caller vouches for the buffers (trait contract).
        let code = unsafe {
            (self.api.all_gather)(
                send as *const c_void,
                recv as *mut c_void,
                bytes,
                ncclDataType_t::ncclUint8,
                self.comm,
                self.stream_handle(),
            )
        };
        check(self.api, code, "all-gathering over NCCL")
    }

    unsafe fn broadcast_raw(&self, buf: u64, bytes: usize, root: usize) -> Result<()> {
        let _calls = self.enter()?;
        // SAFETY: the caller vouches for the buffer (trait contract); in place.
        let code = unsafe {
            (self.api.broadcast)(
                buf as *const c_void,
                buf as *mut c_void,
                bytes,
                ncclDataType_t::ncclUint8,
                root as c_int,
                self.comm,
                self.stream_handle(),
            )
        };
        check(self.api, code, "broadcasting over NCCL")
    }

    unsafe fn exchange_raw(&self, sends: &[RawMsg], recvs: &[RawMsg]) -> Result<()> {
        let _calls = self.enter()?;
        let api = self.api;
        // SAFETY: group calls only batch the point-to-point calls between them.
        check(
            api,
            unsafe { (api.group_start)() },
            "starting an NCCL group",
        )?;
        let mut result = Ok(());
        for m in sends {
            // SAFETY: the caller vouches for the buffers (trait contract).
            let code = unsafe {
                (api.send)(
                    m.ptr as *const c_void,
                    m.bytes,
                    ncclDataType_t::ncclUint8,
                    m.peer as c_int,
                    self.comm,
                    self.stream_handle(),
                )
            };
            result = result.and(check(api, code, "sending over NCCL"));
        }
        for m in recvs {
            // SAFETY: as above.
            let code = unsafe {
                (api.recv)(
                    m.ptr as *mut c_void,
                    m.bytes,
                    ncclDataType_t::ncclUint8,
                    m.peer as c_int,
                    self.comm,
                    self.stream_handle(),
                )
            };
            result = result.and(check(api, code, "receiving over NCCL"));
        }
        // The group is always closed, even after a failed call inside it.
        // SAFETY: closes the group opened above.
        let end = check(api, unsafe { (api.group_end)() }, "ending an NCCL group");
        result.and(end)
    }

    fn barrier(&self) -> Result<()> {
        let mut scratch = self.scratch.lock().expect("barrier lock");
        let (ptr, guard) = scratch.device_ptr_mut(&self.stream);
        // In place: each rank's byte is its own slot of the receive buffer.
        // SAFETY: the scratch buffer holds `world` bytes and lives across the call.
        unsafe { self.all_gather_raw(ptr + self.rank as u64, ptr, 1) }?;
        drop(guard);
        self.stream
            .synchronize()
            .while_(|| "waiting for the NCCL barrier".into())
    }
}

/// One NCCL rank per runtime (rank `r` on `runtimes[r]`), joined from threads of this process.
pub fn nccl_group(runtimes: &[&Runtime]) -> Result<Vec<NcclComm>> {
    let world = runtimes.len();
    if world == 0 {
        return Err(invalid("runtimes", "an NCCL group needs at least one GPU"));
    }
    api()?;
    let ids = InProcessIds::new();
    let joined = on_rank_threads(runtimes, |rank, rt| {
        let joined = NcclComm::join(rt, rank, world, &ids);
        if rank == 0 {
            if let Err(e) = &joined {
                ids.fail(e.to_string());
            }
        }
        joined
    });
    joined.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_libnccl_is_a_typed_error_with_a_hint() {
        match load_from(&["libnccl-flashgen-absent.so.2"]) {
            Err(Error::LibraryMissing { lib, hint }) => {
                assert_eq!(lib, "libnccl");
                assert!(hint.contains("libnccl.so.2"), "{hint}");
                assert!(hint.contains("LD_LIBRARY_PATH"), "{hint}");
            }
            Err(e) => panic!("expected LibraryMissing, got {e}"),
            Ok(_) => panic!("a library that does not exist loaded"),
        }
    }

    #[test]
    fn presence_and_version_agree() {
        assert_eq!(nccl_version().is_ok(), nccl_present());
        if !nccl_present() {
            assert!(matches!(
                NcclId::new(),
                Err(Error::LibraryMissing { lib: "libnccl", .. })
            ));
        }
    }

    #[test]
    fn nvls_stays_off_unless_set() {
        let _ = api();
        assert!(std::env::var_os("NCCL_NVLS_ENABLE").is_some());
    }

    #[test]
    fn in_process_ids_reach_every_rank() {
        let ids = &InProcessIds::new();
        let id = NcclId([7; 128]);
        std::thread::scope(|s| {
            let waiters: Vec<_> = (1..4).map(|r| s.spawn(move || ids_share(ids, r))).collect();
            assert_eq!(ids.share(0, Some(id)).unwrap().0, [7; 128]);
            for w in waiters {
                assert_eq!(w.join().unwrap().unwrap().0, [7; 128]);
            }
        });
        let failed = InProcessIds::new();
        failed.fail("no NCCL".into());
        assert!(failed.share(1, None).is_err());
        assert!(InProcessIds::new().share(0, None).is_err());
    }

    fn ids_share(ids: &InProcessIds, rank: usize) -> Result<NcclId> {
        ids.share(rank, None)
    }
}
