//! The MPI plugin of resnet-wgpu: a small, versioned C ABI over the system MPI. resnet-core loads
//! this library at run time (`distributed::mpi::MpiPlugin`), so neither it nor the Node addon links
//! an MPI, and the package installs and runs where there is none.
//!
//! # ABI (version `ABI_VERSION`)
//!
//! Every function is `extern "C"` and never unwinds: a panic becomes an error code. Functions
//! returning `i32` return 0 on success; otherwise they write a NUL-terminated message (truncated to
//! fit) to `err[..err_len]` when `err` is not null and return 1 (an MPI or usage error) or 2 (a bug
//! in the plugin: it panicked).
//!
//! ```c
//! typedef struct { uint32_t rank, size, local_rank, local_size; int32_t thread_level; } WorldInfoC;
//! uint32_t resnet_mpi_abi_version(void);
//! int32_t resnet_mpi_init(WorldInfoC *out, char *err, size_t err_len);
//! int32_t resnet_mpi_allreduce_sum_f32(float *buf, size_t len, char *err, size_t err_len);
//! int32_t resnet_mpi_allreduce_sum_f64(double *buf, size_t len, char *err, size_t err_len);
//! int32_t resnet_mpi_broadcast(uint8_t *buf, size_t len, uint32_t root, char *err, size_t err_len);
//! int32_t resnet_mpi_allgather(const uint8_t *send, size_t len, uint8_t *recv /* len * size */,
//!                              char *err, size_t err_len);
//! int32_t resnet_mpi_barrier(char *err, size_t err_len);
//! int32_t resnet_mpi_finalize(char *err, size_t err_len);
//! int32_t resnet_mpi_abort(int32_t code);        /* returns (1) only when MPI is not running */
//! int32_t resnet_mpi_library_version(char *buf, size_t len);
//! ```
//!
//! `thread_level` is what MPI_Init_thread provided: 0 single, 1 funneled, 2 serialized,
//! 3 multiple (`init` fails below funneled).
//!
//! Threads: `init`, the collectives and `finalize` must come from one thread (the one that called
//! `init`; a call from another is refused); `abort` and `library_version` may come from any thread
//! at any time. All ranks must call the same collectives in the same order with the same lengths.
//!
//! Why the raw bindings (`mpi::ffi`) rather than rsmpi's safe API: the safe API has no in-place
//! all-reduce, ignores return codes (it relies on the fatal error handler, so a failure would end
//! the process with no word to the caller), and its `Universe` calls MPI_Finalize when dropped,
//! which from a thread-local would happen at thread exit, behind the caller's back.

use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::ThreadId;

use mpi::ffi;

/// Bumped on any change to the functions above or to `WorldInfoC`.
pub const ABI_VERSION: u32 = 1;

/// The most bytes one MPI call moves (per rank): MPI counts are `int`, and some implementations
/// compute byte sizes in `int` too. Longer buffers go in pieces of this size.
const CHUNK_BYTES: usize = 1 << 28;

/// Makes the pieces smaller (bytes, at least 8), so the tests cover the piecewise paths with small
/// buffers; read by `init`.
const CHUNK_ENV: &str = "RESNET_MPI_CHUNK_BYTES";

static CHUNK: AtomicUsize = AtomicUsize::new(CHUNK_BYTES);

fn chunk_bytes() -> usize {
    CHUNK.load(Ordering::Relaxed)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WorldInfoC {
    pub rank: u32,
    pub size: u32,
    pub local_rank: u32,
    pub local_size: u32,
    pub thread_level: i32,
}

enum Phase {
    Uninit,
    Ready { info: WorldInfoC, thread: ThreadId },
    Finalized,
}

/// Never held while MPI runs a collective (so a stuck collective cannot block anything else).
static PHASE: Mutex<Phase> = Mutex::new(Phase::Uninit);

type Res<T> = std::result::Result<T, String>;

fn phase() -> std::sync::MutexGuard<'static, Phase> {
    PHASE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The world, when `init` has run on this thread and `finalize` has not.
fn ready(what: &str) -> Res<WorldInfoC> {
    match &*phase() {
        Phase::Uninit => Err(format!("{what}: MPI is not initialised (call resnet_mpi_init first)")),
        Phase::Finalized => Err(format!("{what}: MPI has been finalised")),
        Phase::Ready { info, thread } => {
            if *thread == std::thread::current().id() {
                Ok(*info)
            } else {
                Err(format!(
                    "{what}: called from a thread other than the one that initialised MPI"
                ))
            }
        }
    }
}

fn error_string(code: c_int) -> String {
    // Larger than MPI_MAX_ERROR_STRING in MPICH (1024) and Open MPI (256).
    let mut buf = vec![0u8; 4096];
    let mut len: c_int = 0;
    // SAFETY: `buf` has room for MPI_MAX_ERROR_STRING characters; MPI writes at most that many
    // and their count to `len`. MPI_Error_string may be called before init and after finalize.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return format!("MPI error code {code}");
    }
    buf.truncate(len.clamp(0, 4096) as usize);
    String::from_utf8_lossy(&buf).trim().to_string()
}

fn check(code: c_int, what: &str) -> Res<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", error_string(code)))
    }
}

/// Writes `msg` NUL-terminated to `err[..err_len]`, truncated on a character boundary.
fn write_message(msg: &str, err: *mut c_char, err_len: usize) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let mut n = msg.len().min(err_len - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: the caller passes `err` valid for `err_len` bytes; `n + 1 <= err_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f` without letting a panic cross the C boundary; returns the ABI's status code.
fn guarded(err: *mut c_char, err_len: usize, f: impl FnOnce() -> Res<()>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            write_message(&msg, err, err_len);
            1
        }
        Err(p) => {
            write_message(
                &format!("the MPI plugin panicked (a bug): {}", panic_text(&*p)),
                err,
                err_len,
            );
            2
        }
    }
}

/// A slice from the caller's pointer; any pointer for an empty one (Rust's empty slices are
/// dangling, and no MPI call is made for them).
///
/// # Safety
/// `ptr` must be valid for reads and writes of `len` elements when `len > 0`, and not aliased.
unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> Res<&'a mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err("null buffer".into());
    }
    // SAFETY: as the function's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

fn mpi_flag(f: unsafe extern "C" fn(*mut c_int) -> c_int) -> bool {
    let mut flag: c_int = 0;
    // SAFETY: MPI_Initialized / MPI_Finalized write one int; both are callable at any time from
    // any thread.
    let rc = unsafe { f(&mut flag) };
    rc == 0 && flag != 0
}

#[no_mangle]
pub extern "C" fn resnet_mpi_abi_version() -> u32 {
    ABI_VERSION
}

fn init() -> Res<WorldInfoC> {
    let mut phase = phase();
    match &*phase {
        Phase::Ready { info, thread } if *thread == std::thread::current().id() => return Ok(*info),
        Phase::Ready { .. } => return Err("MPI is already initialised by another thread".into()),
        Phase::Finalized => return Err("MPI has been finalised and cannot be initialised again".into()),
        Phase::Uninit => {}
    }
    if let Some(n) = std::env::var(CHUNK_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        CHUNK.store(n.clamp(8, CHUNK_BYTES), Ordering::Relaxed);
    }
    if mpi_flag(ffi::MPI_Initialized) {
        return Err("MPI was initialised by someone other than the plugin".into());
    }
    // SAFETY: the level constants are plain ints the C side defines.
    let (single, funneled, serialized, multiple) = unsafe {
        (
            ffi::RSMPI_THREAD_SINGLE,
            ffi::RSMPI_THREAD_FUNNELED,
            ffi::RSMPI_THREAD_SERIALIZED,
            ffi::RSMPI_THREAD_MULTIPLE,
        )
    };
    let mut provided: c_int = single;
    // FUNNELED, the level the communication thread needs, not MULTIPLE: asking for more than we
    // use puts MPICH and UCX on their multi-threaded paths (locks, a multi-threaded UCX worker)
    // for nothing. `abort` from another thread stays outside that level (see there).
    // SAFETY: null argc/argv are allowed (MPI 2+); `provided` is a valid int to write.
    let rc = unsafe { ffi::MPI_Init_thread(std::ptr::null_mut(), std::ptr::null_mut(), funneled, &mut provided) };
    check(rc, "MPI_Init_thread")?;
    // MPI guarantees single < funneled < serialized < multiple.
    let level = match provided {
        p if p == multiple => 3,
        p if p == serialized => 2,
        p if p == funneled => 1,
        _ => 0,
    };
    // SAFETY: extern statics of the C shim, set before main.
    let (world, shared, info_null, errors_return) = unsafe {
        (
            ffi::RSMPI_COMM_WORLD,
            ffi::RSMPI_COMM_TYPE_SHARED,
            ffi::RSMPI_INFO_NULL,
            ffi::RSMPI_ERRORS_RETURN,
        )
    };
    // From here on MPI is up: a failure leaves it so (the caller aborts or exits).
    if level == 0 {
        return Err("MPI provides only MPI_THREAD_SINGLE; the plugin needs MPI_THREAD_FUNNELED or better".into());
    }
    // Errors come back as codes with a message instead of ending the process unexplained.
    // SAFETY: MPI is initialised; COMM_WORLD and ERRORS_RETURN are valid handles.
    check(
        unsafe { ffi::MPI_Comm_set_errhandler(world, errors_return) },
        "MPI_Comm_set_errhandler",
    )?;
    let (mut rank, mut size): (c_int, c_int) = (0, 0);
    // SAFETY: valid communicator, ints to write.
    check(unsafe { ffi::MPI_Comm_rank(world, &mut rank) }, "MPI_Comm_rank")?;
    // SAFETY: as above.
    check(unsafe { ffi::MPI_Comm_size(world, &mut size) }, "MPI_Comm_size")?;
    // The ranks on this machine: MPI_Comm_split_type(SHARED), ordered by world rank.
    // SAFETY: an MPI_Comm is a plain handle (int or pointer), valid once written by the split.
    let mut local: ffi::MPI_Comm = unsafe { std::mem::zeroed() };
    // SAFETY: collective over COMM_WORLD, which every rank's init calls; `local` is written.
    check(
        unsafe { ffi::MPI_Comm_split_type(world, shared, rank, info_null, &mut local) },
        "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)",
    )?;
    let (mut local_rank, mut local_size): (c_int, c_int) = (0, 0);
    // SAFETY: `local` is the communicator the split created.
    check(
        unsafe { ffi::MPI_Comm_rank(local, &mut local_rank) },
        "MPI_Comm_rank(local)",
    )?;
    // SAFETY: as above.
    check(
        unsafe { ffi::MPI_Comm_size(local, &mut local_size) },
        "MPI_Comm_size(local)",
    )?;
    // SAFETY: frees the communicator the split created; nothing uses it again.
    check(unsafe { ffi::MPI_Comm_free(&mut local) }, "MPI_Comm_free")?;
    let info = WorldInfoC {
        rank: rank as u32,
        size: size as u32,
        local_rank: local_rank as u32,
        local_size: local_size as u32,
        thread_level: level,
    };
    *phase = Phase::Ready {
        info,
        thread: std::thread::current().id(),
    };
    Ok(info)
}

/// Initialises MPI (MPI_Init_thread asking for MPI_THREAD_FUNNELED, accepting FUNNELED or better)
/// and writes where this process sits. Calling it again on the same thread returns the same.
///
/// # Safety
/// `out` must be null or valid for a write of `WorldInfoC`; `err` valid for `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resnet_mpi_init(out: *mut WorldInfoC, err: *mut c_char, err_len: usize) -> i32 {
    guarded(err, err_len, || {
        let info = init()?;
        if !out.is_null() {
            // SAFETY: the caller passes `out` valid for one write.
            unsafe { out.write(info) };
        }
        Ok(())
    })
}

fn allreduce_sum<T: Copy>(buf: &mut [T], datatype: ffi::MPI_Datatype, what: &str) -> Res<()> {
    ready(what)?;
    let per_call = chunk_bytes() / std::mem::size_of::<T>();
    // Not in place: rsmpi's bindings do not export MPI_IN_PLACE (a different macro in each MPI),
    // so each piece is copied out first.
    let mut send: Vec<T> = Vec::with_capacity(buf.len().min(per_call));
    for piece in buf.chunks_mut(per_call) {
        send.clear();
        send.extend_from_slice(piece);
        // SAFETY: `send` and `piece` hold `piece.len()` (< 2^31) elements of `datatype`, and do
        // not overlap; SUM and COMM_WORLD are valid handles while MPI is initialised.
        let rc = unsafe {
            ffi::MPI_Allreduce(
                send.as_ptr().cast::<c_void>(),
                piece.as_mut_ptr().cast::<c_void>(),
                piece.len() as c_int,
                datatype,
                ffi::RSMPI_SUM,
                ffi::RSMPI_COMM_WORLD,
            )
        };
        check(rc, what)?;
    }
    Ok(())
}

/// Element-wise sum over all ranks of `buf[..len]`, in place.
///
/// # Safety
/// `buf` must be valid for reads and writes of `len` floats; `err` valid for `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resnet_mpi_allreduce_sum_f32(
    buf: *mut f32,
    len: usize,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        // SAFETY: the caller's contract.
        let buf = unsafe { slice_mut(buf, len) }?;
        // SAFETY: an extern static of the C shim.
        allreduce_sum(buf, unsafe { ffi::RSMPI_FLOAT }, "MPI_Allreduce(f32)")
    })
}

/// # Safety
/// `buf` must be valid for reads and writes of `len` doubles; `err` valid for `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resnet_mpi_allreduce_sum_f64(
    buf: *mut f64,
    len: usize,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        // SAFETY: the caller's contract.
        let buf = unsafe { slice_mut(buf, len) }?;
        // SAFETY: an extern static of the C shim.
        allreduce_sum(buf, unsafe { ffi::RSMPI_DOUBLE }, "MPI_Allreduce(f64)")
    })
}

/// `buf[..len]` (the same `len` on every rank) becomes rank `root`'s.
///
/// # Safety
/// `buf` must be valid for reads and writes of `len` bytes; `err` valid for `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resnet_mpi_broadcast(
    buf: *mut u8,
    len: usize,
    root: u32,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        let info = ready("MPI_Bcast")?;
        if root >= info.size {
            return Err(format!(
                "MPI_Bcast: root {root} is not a rank (the world has {})",
                info.size
            ));
        }
        // SAFETY: the caller's contract.
        let buf = unsafe { slice_mut(buf, len) }?;
        for piece in buf.chunks_mut(chunk_bytes()) {
            // SAFETY: `piece` holds `piece.len()` (< 2^31) bytes; valid handles while MPI is up.
            let rc = unsafe {
                ffi::MPI_Bcast(
                    piece.as_mut_ptr().cast::<c_void>(),
                    piece.len() as c_int,
                    ffi::RSMPI_UINT8_T,
                    root as c_int,
                    ffi::RSMPI_COMM_WORLD,
                )
            };
            check(rc, "MPI_Bcast")?;
        }
        Ok(())
    })
}

/// Every rank's `send[..len]` (the same `len` on every rank) into `recv[..len * size]`, in rank
/// order.
///
/// # Safety
/// `send` valid for reads of `len` bytes, `recv` for writes of `len * size` bytes (not
/// overlapping); `err` valid for `err_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn resnet_mpi_allgather(
    send: *const u8,
    len: usize,
    recv: *mut u8,
    err: *mut c_char,
    err_len: usize,
) -> i32 {
    guarded(err, err_len, || {
        let info = ready("MPI_Allgather")?;
        let size = info.size as usize;
        let total = len
            .checked_mul(size)
            .ok_or_else(|| format!("MPI_Allgather: {len} bytes from {size} ranks overflow"))?;
        if len == 0 {
            return Ok(());
        }
        if send.is_null() {
            return Err("MPI_Allgather: null send buffer".into());
        }
        // SAFETY: the caller's contract (`send` is read only).
        let send = unsafe { std::slice::from_raw_parts(send, len) };
        // SAFETY: the caller's contract.
        let recv = unsafe { slice_mut(recv, total) }?;
        let mut gathered: Vec<u8> = Vec::new();
        let mut offset = 0;
        for piece in send.chunks(chunk_bytes()) {
            let n = piece.len();
            // One piece lands directly when it is the whole buffer; otherwise through `gathered`.
            let whole = n == len;
            if !whole {
                gathered.resize(n * size, 0);
            }
            let out: *mut u8 = if whole {
                recv.as_mut_ptr()
            } else {
                gathered.as_mut_ptr()
            };
            // SAFETY: `piece` holds n (< 2^31) bytes; `out` has room for n * size bytes (`recv`
            // when n == len, else `gathered`, just resized); valid handles while MPI is up.
            let rc = unsafe {
                ffi::MPI_Allgather(
                    piece.as_ptr().cast::<c_void>(),
                    n as c_int,
                    ffi::RSMPI_UINT8_T,
                    out.cast::<c_void>(),
                    n as c_int,
                    ffi::RSMPI_UINT8_T,
                    ffi::RSMPI_COMM_WORLD,
                )
            };
            check(rc, "MPI_Allgather")?;
            if !whole {
                for r in 0..size {
                    recv[r * len + offset..r * len + offset + n].copy_from_slice(&gathered[r * n..(r + 1) * n]);
                }
            }
            offset += n;
        }
        Ok(())
    })
}

/// # Safety
/// `err` valid for `err_len` bytes (or null).
#[no_mangle]
pub unsafe extern "C" fn resnet_mpi_barrier(err: *mut c_char, err_len: usize) -> i32 {
    guarded(err, err_len, || {
        ready("MPI_Barrier")?;
        // SAFETY: COMM_WORLD is valid while MPI is up.
        check(unsafe { ffi::MPI_Barrier(ffi::RSMPI_COMM_WORLD) }, "MPI_Barrier")
    })
}

/// MPI_Finalize; later calls (other than `abort` and `library_version`) fail. Finalising twice is
/// not an error.
///
/// # Safety
/// `err` valid for `err_len` bytes (or null).
#[no_mangle]
pub unsafe extern "C" fn resnet_mpi_finalize(err: *mut c_char, err_len: usize) -> i32 {
    guarded(err, err_len, || {
        if matches!(*phase(), Phase::Finalized) {
            return Ok(());
        }
        ready("MPI_Finalize")?;
        *phase() = Phase::Finalized;
        // SAFETY: MPI is initialised and this is the thread that initialised it.
        check(unsafe { ffi::MPI_Finalize() }, "MPI_Finalize")
    })
}

/// MPI_Abort on COMM_WORLD (every rank ends, with `code`). Any thread, at any time; returns 1 only
/// when MPI is not running (not initialised, or finalised), for the caller to exit by itself.
#[no_mangle]
pub extern "C" fn resnet_mpi_abort(code: i32) -> i32 {
    // Takes no lock: the calling thread of the collectives may be stuck holding nothing but MPI.
    let _ = catch_unwind(|| {
        if mpi_flag(ffi::MPI_Initialized) && !mpi_flag(ffi::MPI_Finalized) {
            // SAFETY: MPI is running; COMM_WORLD is a valid handle. With MPI_THREAD_FUNNELED a
            // call from another thread is outside the standard, but MPICH and Open MPI abort.
            unsafe { ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code) };
        }
    });
    1
}

/// MPI_Get_library_version, NUL-terminated and truncated to `len` bytes (its first line is e.g.
/// "MPICH Version:\t4.0.2"). Any thread, before init too.
///
/// # Safety
/// `buf` valid for writes of `len` bytes (or null).
#[no_mangle]
pub unsafe extern "C" fn resnet_mpi_library_version(buf: *mut c_char, len: usize) -> i32 {
    let mut text = String::new();
    let rc = guarded(std::ptr::null_mut(), 0, || {
        // SAFETY: an extern static of the C shim.
        let max = unsafe { ffi::RSMPI_MAX_LIBRARY_VERSION_STRING }.max(1) as usize;
        let mut raw = vec![0u8; max + 1];
        let mut n: c_int = 0;
        // SAFETY: `raw` has room for MPI_MAX_LIBRARY_VERSION_STRING characters.
        let rc = unsafe { ffi::MPI_Get_library_version(raw.as_mut_ptr().cast(), &mut n) };
        check(rc, "MPI_Get_library_version")?;
        raw.truncate((n.max(0) as usize).min(max));
        text = String::from_utf8_lossy(&raw).trim_end_matches('\0').to_string();
        Ok(())
    });
    if rc == 0 {
        write_message(&text, buf, len);
    }
    rc
}
