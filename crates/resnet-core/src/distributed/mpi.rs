//! MPI through a plugin loaded at run time: `crates/resnet-mpi`, a small library built against the
//! system MPI (`npm run build:mpi`), so neither this crate nor the Node addon links an MPI and both
//! install and run where there is none. This module loads it (`MpiPlugin::load`), checks its ABI
//! version, and wraps its C functions as a `Transport`.
//!
//! The ABI (version `ABI_VERSION`, documented in `crates/resnet-mpi/src/lib.rs`): every function
//! returns 0 on success, or non-zero with a NUL-terminated message in the caller's buffer.
//! `init`, the collectives and `finalize` come from one thread (the `Communicator`'s: call
//! `transport` inside its `make` closure); `abort` and `library_version` from any.

use std::ffi::{c_char, CStr};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libloading::Library;

use super::{Transport, WorldInfo};
use crate::error::{Error, Result};

/// The plugin ABI this build speaks (`resnet_mpi_abi_version`).
pub const ABI_VERSION: u32 = 1;

/// Names the plugin file, overriding the default place (`native/` beside the addon).
pub const PLUGIN_ENV: &str = "RESNET_WGPU_MPI_PLUGIN";

/// How to get a plugin, for the error when there is none.
const INSTALL_HINT: &str = "install an MPI (Debian: apt-get install mpich libmpich-dev libclang-dev) and build the \
plugin with `npm run build:mpi`, or set RESNET_WGPU_MPI_PLUGIN=/path/to/libresnet_mpi.so";

/// The plugin's file name on this platform (what `npm run build:mpi` puts in `native/`).
pub fn default_plugin_file_name() -> &'static str {
    if cfg!(windows) {
        "resnet_mpi.dll"
    } else if cfg!(target_os = "macos") {
        "libresnet_mpi.dylib"
    } else {
        "libresnet_mpi.so"
    }
}

/// The plugin path `RESNET_WGPU_MPI_PLUGIN` names, if set and not empty.
pub fn plugin_path_from_env() -> Option<PathBuf> {
    std::env::var_os(PLUGIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Whether this process was started by an MPI launcher (mpiexec / mpirun / srun): the variables
/// MPICH's Hydra (PMI_RANK, PMI_SIZE), Open MPI (OMPI_COMM_WORLD_SIZE) and PMIx launchers set.
pub fn launched_by_mpi() -> bool {
    ["PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// `WorldInfoC` of the ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct WorldInfoC {
    rank: u32,
    size: u32,
    local_rank: u32,
    local_size: u32,
    /// 0 single, 1 funneled, 2 serialized, 3 multiple.
    thread_level: i32,
}

type ErrBuf = (*mut c_char, usize);

/// The plugin's functions, copied out of the library (which is never unloaded).
struct Fns {
    init: unsafe extern "C" fn(*mut WorldInfoC, *mut c_char, usize) -> i32,
    allreduce_sum_f32: unsafe extern "C" fn(*mut f32, usize, *mut c_char, usize) -> i32,
    allreduce_sum_f64: unsafe extern "C" fn(*mut f64, usize, *mut c_char, usize) -> i32,
    broadcast: unsafe extern "C" fn(*mut u8, usize, u32, *mut c_char, usize) -> i32,
    allgather: unsafe extern "C" fn(*const u8, usize, *mut u8, *mut c_char, usize) -> i32,
    barrier: unsafe extern "C" fn(*mut c_char, usize) -> i32,
    finalize: unsafe extern "C" fn(*mut c_char, usize) -> i32,
    abort: unsafe extern "C" fn(i32) -> i32,
    library_version: unsafe extern "C" fn(*mut c_char, usize) -> i32,
}

/// A loaded MPI plugin. Load it once per process: MPI can be initialised only once.
pub struct MpiPlugin {
    path: PathBuf,
    fns: Fns,
    version: String,
    /// Never unloaded: an initialised MPI keeps threads and exit handlers in its code.
    _lib: ManuallyDrop<Library>,
}

impl std::fmt::Debug for MpiPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiPlugin")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish()
    }
}

fn open(path: &Path) -> std::result::Result<Library, libloading::Error> {
    #[cfg(unix)]
    {
        use libloading::os::unix::{Library as UnixLibrary, RTLD_GLOBAL, RTLD_NOW};
        // RTLD_GLOBAL: Open MPI dlopens its components (mca_*.so), which expect libmpi's symbols
        // in the global namespace; with the default RTLD_LOCAL they fail to load.
        // SAFETY: loading runs the library's initialisers; the plugin's (and its MPI's) are sound.
        unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map(Library::from)
    }
    #[cfg(not(unix))]
    {
        // SAFETY: as above.
        unsafe { Library::new(path) }
    }
}

/// Copies function `name` out of `lib`.
///
/// # Safety
/// `T` must be the function's true signature.
unsafe fn symbol<T: Copy>(lib: &Library, path: &Path, name: &str) -> Result<T> {
    // SAFETY: the caller vouches for `T`.
    let sym = unsafe { lib.get::<T>(name.as_bytes()) }.map_err(|e| {
        Error::Distributed(format!(
            "the MPI plugin {} lacks {name} (not a resnet-wgpu MPI plugin, or a broken one): {e}",
            path.display()
        ))
    })?;
    Ok(*sym)
}

/// The first line of MPI_Get_library_version with its whitespace collapsed (MPICH: "MPICH
/// Version: 4.0.2"; Open MPI: "Open MPI v4.1.4").
fn short_version(raw: &str) -> String {
    let first = raw.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let first = first.split(", package:").next().unwrap_or(first);
    first.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs a plugin call with an error buffer; a non-zero status becomes `Error::Distributed` naming
/// `what` and the plugin's message.
fn call(what: &str, f: impl FnOnce(ErrBuf) -> i32) -> Result<()> {
    let mut err = vec![0u8; 2048];
    let rc = f((err.as_mut_ptr().cast(), err.len()));
    if rc == 0 {
        return Ok(());
    }
    let msg = CStr::from_bytes_until_nul(&err)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let msg = if msg.is_empty() { format!("status {rc}") } else { msg };
    Err(Error::Distributed(format!("{what} over MPI failed: {msg}")))
}

impl MpiPlugin {
    /// Loads the plugin at `path` and checks that it speaks `ABI_VERSION`. Initialises nothing.
    ///
    /// A process whose other threads allocate while MPI initialises must start with
    /// `UCX_MEM_EVENTS=no` when its MPI runs over UCX (MPICH's ch4:ucx, Open MPI's pml/ucx): UCX
    /// otherwise patches glibc's memory calls during MPI_Init and tests them by moving the program
    /// break up a page and back from the initialising thread, which can unmap a page another
    /// thread's malloc just took. It is read when UCX loads, so it cannot be set from here safely
    /// (setenv races the other threads); Node's `distributed.init` sets it on its main thread.
    pub fn load(path: &Path) -> Result<Arc<MpiPlugin>> {
        if !path.is_file() {
            return Err(Error::Distributed(format!(
                "MPI support is not installed (no plugin at {}): {INSTALL_HINT}",
                path.display()
            )));
        }
        let lib = open(path).map_err(|e| {
            Error::Distributed(format!(
                "cannot load the MPI plugin {}: {e} (was the MPI it was built against removed? \
                 rebuild it with `npm run build:mpi`)",
                path.display()
            ))
        })?;
        // SAFETY: the ABI's signature.
        let abi: unsafe extern "C" fn() -> u32 = unsafe { symbol(&lib, path, "resnet_mpi_abi_version") }?;
        // SAFETY: takes nothing, returns a constant.
        let version = unsafe { abi() };
        if version != ABI_VERSION {
            return Err(Error::Distributed(format!(
                "the MPI plugin {} speaks ABI version {version}, this build needs {ABI_VERSION}: rebuild it \
                 with `npm run build:mpi`",
                path.display()
            )));
        }
        // SAFETY (each): the signatures of ABI version 1, which the plugin just confirmed.
        let fns = unsafe {
            Fns {
                init: symbol(&lib, path, "resnet_mpi_init")?,
                allreduce_sum_f32: symbol(&lib, path, "resnet_mpi_allreduce_sum_f32")?,
                allreduce_sum_f64: symbol(&lib, path, "resnet_mpi_allreduce_sum_f64")?,
                broadcast: symbol(&lib, path, "resnet_mpi_broadcast")?,
                allgather: symbol(&lib, path, "resnet_mpi_allgather")?,
                barrier: symbol(&lib, path, "resnet_mpi_barrier")?,
                finalize: symbol(&lib, path, "resnet_mpi_finalize")?,
                abort: symbol(&lib, path, "resnet_mpi_abort")?,
                library_version: symbol(&lib, path, "resnet_mpi_library_version")?,
            }
        };
        let mut buf = vec![0u8; 16 * 1024];
        // SAFETY: `buf` is writable for its length; callable before MPI_Init, from any thread.
        let rc = unsafe { (fns.library_version)(buf.as_mut_ptr().cast(), buf.len()) };
        let version = if rc == 0 {
            short_version(
                &CStr::from_bytes_until_nul(&buf)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        } else {
            String::new()
        };
        let version = if version.is_empty() {
            "MPI (unknown version)".to_string()
        } else {
            version
        };
        Ok(Arc::new(MpiPlugin {
            path: path.to_path_buf(),
            fns,
            version,
            _lib: ManuallyDrop::new(lib),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The MPI library underneath, e.g. "MPICH Version: 4.0.2".
    pub fn version(&self) -> String {
        self.version.clone()
    }

    /// Initialises MPI and returns it as a transport. Call it where the transport will be used:
    /// inside `Communicator::start`'s `make`, on the communication thread.
    pub fn transport(self: &Arc<Self>) -> Result<Box<dyn Transport>> {
        let mut c = WorldInfoC::default();
        // SAFETY: `c` is a valid WorldInfoC to write; `e` is call's error buffer.
        call("MPI_Init", |e| unsafe { (self.fns.init)(&mut c, e.0, e.1) })?;
        let level = match c.thread_level {
            3 => "MPI_THREAD_MULTIPLE",
            2 => "MPI_THREAD_SERIALIZED",
            1 => "MPI_THREAD_FUNNELED",
            _ => "MPI_THREAD_SINGLE",
        };
        Ok(Box::new(MpiTransport {
            plugin: self.clone(),
            info: WorldInfo {
                rank: c.rank as usize,
                size: c.size as usize,
                local_rank: c.local_rank as usize,
                local_size: c.local_size as usize,
            },
            describe: format!("{} ({level})", self.version),
        }))
    }

    /// Prints `message` to stderr, then ends every rank as [`MpiPlugin::abort`] does, after a
    /// pause that lets the launcher pass the message on. MPI_Abort makes Hydra (MPICH's
    /// `mpiexec`) kill the job at once, and it can drop what the ranks wrote just before:
    /// without the pause, 2 of 60 jobs whose ranks refused mismatched datasets ended with code 1
    /// and no output at all, neither ours nor MPICH's own "Abort(1)" line.
    pub fn abort_with_message(&self, code: i32, message: &str) -> ! {
        use std::io::Write;
        const LAUNCHER_FORWARDS_OUTPUT: std::time::Duration = std::time::Duration::from_millis(300);
        let mut stderr = std::io::stderr().lock();
        // Nothing to do if stderr is gone: the abort must happen regardless.
        let _ = writeln!(stderr, "{message}").and_then(|_| stderr.flush());
        drop(stderr);
        std::thread::sleep(LAUNCHER_FORWARDS_OUTPUT);
        self.abort(code)
    }

    /// Ends every rank with `code` (MPI_Abort on COMM_WORLD); from any thread. Where MPI is not
    /// running (never initialised, or finalised) only this process exits.
    pub fn abort(&self, code: i32) -> ! {
        // SAFETY: any thread, any time; returns only when MPI is not running.
        unsafe { (self.fns.abort)(code) };
        std::process::exit(code)
    }
}

/// The plugin as a `Transport`; lives on the thread that initialised MPI.
struct MpiTransport {
    plugin: Arc<MpiPlugin>,
    info: WorldInfo,
    describe: String,
}

impl Transport for MpiTransport {
    fn info(&self) -> WorldInfo {
        self.info
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        let f = self.plugin.fns.allreduce_sum_f32;
        // SAFETY: `buf` is valid for reads and writes of its length.
        call("all-reduce (f32)", |e| unsafe {
            f(buf.as_mut_ptr(), buf.len(), e.0, e.1)
        })
    }

    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        let f = self.plugin.fns.allreduce_sum_f64;
        // SAFETY: `buf` is valid for reads and writes of its length.
        call("all-reduce (f64)", |e| unsafe {
            f(buf.as_mut_ptr(), buf.len(), e.0, e.1)
        })
    }

    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<()> {
        if root >= self.info.size {
            return Err(Error::Distributed(format!(
                "broadcast: root {root} is not a rank (the world has {})",
                self.info.size
            )));
        }
        let f = self.plugin.fns.broadcast;
        // SAFETY: `buf` is valid for reads and writes of its length.
        call("broadcast", |e| unsafe {
            f(buf.as_mut_ptr(), buf.len(), root as u32, e.0, e.1)
        })
    }

    fn all_gather(&mut self, send: &[u8]) -> Result<Vec<u8>> {
        let total = send
            .len()
            .checked_mul(self.info.size)
            .ok_or_else(|| Error::Distributed("all-gather: the result would not fit in memory".into()))?;
        let mut recv = vec![0u8; total];
        let f = self.plugin.fns.allgather;
        // SAFETY: `send` is readable for its length, `recv` writable for len * size; distinct.
        call("all-gather", |e| unsafe {
            f(send.as_ptr(), send.len(), recv.as_mut_ptr(), e.0, e.1)
        })?;
        Ok(recv)
    }

    fn barrier(&mut self) -> Result<()> {
        let f = self.plugin.fns.barrier;
        // SAFETY: only the error buffer.
        call("barrier", |e| unsafe { f(e.0, e.1) })
    }

    fn finalize(&mut self) -> Result<()> {
        let f = self.plugin.fns.finalize;
        // SAFETY: only the error buffer.
        call("finalize", |e| unsafe { f(e.0, e.1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_version_keeps_the_first_line() {
        let mpich = "MPICH Version:\t4.0.2\nMPICH Release date:\tThu Apr  7 12:34:45 CDT 2022\nMPICH ABI:\t14:2:2\n";
        assert_eq!(short_version(mpich), "MPICH Version: 4.0.2");
        let ompi = "Open MPI v4.1.4, package: Open MPI Debian, ident: 4.1.4, repo rev: v4.1.4, May 26, 2022\0";
        assert_eq!(short_version(ompi), "Open MPI v4.1.4");
        assert_eq!(short_version(""), "");
    }

    #[test]
    fn a_missing_plugin_says_how_to_get_one() {
        let err = MpiPlugin::load(Path::new("/nonexistent/libresnet_mpi.so")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("MPI support is not installed"), "{msg}");
        assert!(msg.contains("npm run build:mpi"), "{msg}");
        assert!(msg.contains("RESNET_WGPU_MPI_PLUGIN"), "{msg}");
    }

    #[test]
    fn a_file_that_is_not_a_library_names_the_path() {
        let dir = std::env::temp_dir().join(format!("resnet-mpi-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(default_plugin_file_name());
        std::fs::write(&path, b"not a shared library").unwrap();
        let msg = MpiPlugin::load(&path).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(msg.contains("cannot load the MPI plugin"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}
