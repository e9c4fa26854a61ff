//! The MPI plugin for real: `mpiexec -n 2` runs this binary as two ranks, which load the plugin,
//! start a `Communicator` on it and check every collective against sums they compute themselves.
//!
//! The parent (an ordinary test run) spawns mpiexec; a rank is this binary with
//! `RESNET_MPI_TEST_CHILD` set. Without mpiexec or the plugin (`npm run build:mpi`) the case is
//! reported as ignored, or fails where `CI` or `RESNET_WGPU_REQUIRE_MPI` is set.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resnet_core::distributed::mpi::{default_plugin_file_name, plugin_path_from_env, MpiPlugin, PLUGIN_ENV};
use resnet_core::distributed::Communicator;

const CHILD_ENV: &str = "RESNET_MPI_TEST_CHILD";
const RANKS: usize = 2;

fn plugin_path() -> PathBuf {
    plugin_path_from_env().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../native")
            .join(default_plugin_file_name())
    })
}

fn mpi_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("RESNET_WGPU_REQUIRE_MPI").is_some()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// mpiexec and the plugin, or what is missing.
fn mpi_available() -> Result<(), String> {
    let mut missing = Vec::new();
    if find_on_path("mpiexec").is_none() {
        missing.push("no mpiexec on PATH (Debian: apt-get install mpich libmpich-dev libclang-dev)".to_string());
    }
    let plugin = plugin_path();
    if !plugin.is_file() {
        missing.push(format!(
            "no MPI plugin at {} (build it with `npm run build:mpi`, or set {PLUGIN_ENV})",
            plugin.display()
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

// ---- the ranks ----

/// Rank-dependent values whose sums over ranks are exact in f32 (multiples of 1/4 below 2^10).
fn f32_values(rank: usize, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 31 + rank * 17 + i * i * 7) % 101) as f32 * 0.25 - rank as f32)
        .collect()
}

fn f64_values(rank: usize, len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| ((i * 7919 + rank * 104_729) % 1009) as f64 / 8.0 + rank as f64 * 1e6)
        .collect()
}

fn summed<T: Copy + std::ops::Add<Output = T>>(f: impl Fn(usize, usize) -> Vec<T>, len: usize) -> Vec<T> {
    let mut acc = f(0, len);
    for r in 1..RANKS {
        for (a, b) in acc.iter_mut().zip(f(r, len)) {
            *a = *a + b;
        }
    }
    acc
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn rank_main(plugin: &Arc<MpiPlugin>) -> Result<String, String> {
    let p = plugin.clone();
    let comm = Communicator::start(move || p.transport(), Duration::from_secs(60)).map_err(|e| e.to_string())?;
    let info = comm.info();
    let rank = info.rank;
    ensure(info.size == RANKS, || format!("size {} (want {RANKS})", info.size))?;
    if let Some(r) = std::env::var("PMI_RANK").ok().and_then(|v| v.parse::<usize>().ok()) {
        ensure(r == rank, || format!("rank {rank} but PMI_RANK={r}"))?;
    }
    // mpiexec runs both ranks on this machine.
    ensure(info.local_size == RANKS && info.local_rank == rank, || {
        format!(
            "local rank {}/{} (want {rank}/{RANKS})",
            info.local_rank, info.local_size
        )
    })?;
    ensure(comm.describe().contains(&plugin.version()), || {
        format!(
            "describe {:?} lacks the version {:?}",
            comm.describe(),
            plugin.version()
        )
    })?;

    // Several all-reduces in flight at once, waited for in order; lengths that are not a multiple
    // of anything, 0, and (with RESNET_MPI_CHUNK_BYTES=1000) longer than one piece.
    let lens = [0usize, 1, 7, 249, 250, 251, 1000, 100_003];
    let pending: Vec<_> = lens
        .iter()
        .map(|&len| comm.all_reduce_sum_f32(f32_values(rank, len)))
        .collect();
    for (p, &len) in pending.into_iter().zip(&lens) {
        let got = p.wait().map_err(|e| e.to_string())?;
        let want = summed(f32_values, len);
        ensure(got == want, || format!("all-reduce f32 of {len}: wrong sums"))?;
    }
    for &len in &lens {
        let got = comm
            .all_reduce_sum_f64(f64_values(rank, len))
            .map_err(|e| e.to_string())?;
        let want = summed(f64_values, len);
        ensure(got == want, || format!("all-reduce f64 of {len}: wrong sums"))?;
    }

    // From rank 1; the others' bytes differ in length (broadcast_bytes sends the length first).
    for len in [0usize, 5, 12_345] {
        let from_one: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
        let mine = if rank == 1 { from_one.clone() } else { vec![0xAA; 3] };
        let got = comm.broadcast_bytes(mine, 1).map_err(|e| e.to_string())?;
        ensure(got == from_one, || {
            format!("broadcast of {len} from rank 1: wrong bytes")
        })?;
    }

    for len in [1usize, 6, 3001] {
        let mine: Vec<u8> = (0..len).map(|i| (i * 3 + rank * 101) as u8).collect();
        let got = comm.all_gather(mine).map_err(|e| e.to_string())?;
        let want: Vec<Vec<u8>> = (0..RANKS)
            .map(|r| (0..len).map(|i| (i * 3 + r * 101) as u8).collect())
            .collect();
        ensure(got == want, || format!("all-gather of {len}: wrong bytes"))?;
    }

    comm.barrier().map_err(|e| e.to_string())?;
    comm.finalize().map_err(|e| e.to_string())?;
    ensure(comm.barrier().is_err(), || "a barrier after finalize succeeded".into())?;
    Ok(format!("rank {rank}/{} ok on {}", info.size, comm.describe()))
}

/// Rank 1 aborts from a thread of its own while rank 0 waits in a barrier that can never
/// complete: MPI_Abort must end both.
fn abort_main(plugin: &Arc<MpiPlugin>) -> Result<String, String> {
    let p = plugin.clone();
    let comm = Communicator::start(move || p.transport(), Duration::from_secs(60)).map_err(|e| e.to_string())?;
    if comm.rank() == 1 {
        let p = plugin.clone();
        std::thread::spawn(move || p.abort(ABORT_CODE)).join().ok();
        return Err("abort returned".into());
    }
    let _ = comm.barrier();
    Err("the barrier returned although rank 1 never entered it".into())
}

const ABORT_CODE: i32 = 3;

// ---- the parent ----

/// Runs `mpiexec -n RANKS` with this binary as the ranks in `mode`; its status (None: killed
/// after `limit`) and its stdout and stderr.
fn mpiexec(mode: &str, limit: Duration) -> (Option<std::process::ExitStatus>, String, String) {
    if let Err(why) = mpi_available() {
        panic!("MPI is required here (CI / RESNET_WGPU_REQUIRE_MPI) but missing: {why}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("mpiexec")
        .arg("-n")
        .arg(RANKS.to_string())
        .arg(&exe)
        .env(CHILD_ENV, mode)
        .env(PLUGIN_ENV, plugin_path())
        .env("RESNET_MPI_CHUNK_BYTES", "1000")
        // As distributed.init does for Node: UCX's memory hooks move the program break from the
        // thread that initialises MPI while other threads allocate (see MpiPlugin::load).
        .env("UCX_MEM_EVENTS", "no")
        // Open MPI refuses root without these (MPICH ignores them); CI runs as root.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("cannot start mpiexec");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    eprint!("{out}{err}");
    (status, out, err)
}

fn two_ranks_under_mpiexec() {
    let (status, out, err) = mpiexec("collectives", Duration::from_secs(180));
    match status {
        None => panic!("mpiexec -n {RANKS} did not finish in 180 s"),
        Some(s) => assert!(s.success(), "mpiexec -n {RANKS} failed ({s}):\n{out}\n{err}"),
    }
    for r in 0..RANKS {
        assert!(
            out.contains(&format!("rank {r}/{RANKS} ok")),
            "rank {r} did not report success:\n{out}\n{err}"
        );
    }
}

fn abort_from_another_thread_ends_every_rank() {
    let started = Instant::now();
    let (status, out, err) = mpiexec("abort", Duration::from_secs(60));
    let status = status.unwrap_or_else(|| panic!("MPI_Abort did not end the job in 60 s:\n{out}\n{err}"));
    assert!(!status.success(), "the aborted job succeeded:\n{out}\n{err}");
    assert!(
        !out.contains("abort returned") && !err.contains("abort returned"),
        "{out}\n{err}"
    );
    eprintln!(
        "aborted job ended with {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn plugin_loads_and_names_its_mpi() {
    if let Err(why) = mpi_available() {
        panic!("MPI is required here (CI / RESNET_WGPU_REQUIRE_MPI) but missing: {why}");
    }
    let plugin = MpiPlugin::load(&plugin_path()).unwrap();
    let version = plugin.version();
    assert!(version.contains("MPI"), "{version:?}");
    assert!(!version.contains('\n'), "{version:?}");
}

fn a_missing_plugin_says_how_to_install_one() {
    let path = Path::new("/nonexistent/dir").join(default_plugin_file_name());
    let msg = MpiPlugin::load(&path).unwrap_err().to_string();
    for want in [
        "MPI support is not installed",
        "apt-get install mpich libmpich-dev libclang-dev",
        "npm run build:mpi",
        "RESNET_WGPU_MPI_PLUGIN=",
        "/nonexistent/dir",
    ] {
        assert!(msg.contains(want), "{want:?} not in: {msg}");
    }
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        let plugin = match MpiPlugin::load(&plugin_path()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("MPI test rank: {e}");
                std::process::exit(1)
            }
        };
        let result = if mode == "abort" {
            abort_main(&plugin)
        } else {
            rank_main(&plugin)
        };
        match result {
            Ok(report) => {
                println!("{report}");
                std::process::exit(0)
            }
            Err(why) => {
                eprintln!("MPI test rank failed: {why}");
                // Ends the other ranks too, wherever they wait.
                plugin.abort(1)
            }
        }
    }
    // Where MPI is required the cases run and fail saying what is missing; elsewhere they are
    // reported as ignored with the reason (not `needs`: that fails with RESNET_WGPU_REQUIRE_GPU).
    let missing = if mpi_required() { None } else { mpi_available().err() };
    let mpi_case = |name: &str, test: fn()| {
        let case = harness::cpu(name, test);
        match &missing {
            Some(why) => {
                eprintln!("{name}: ignored: {why}");
                case.ignored()
            }
            None => case,
        }
    };
    harness::run([
        harness::cpu(
            "a_missing_plugin_says_how_to_install_one",
            a_missing_plugin_says_how_to_install_one,
        ),
        mpi_case("plugin_loads_and_names_its_mpi", plugin_loads_and_names_its_mpi),
        mpi_case("two_ranks_under_mpiexec", two_ranks_under_mpiexec),
        mpi_case(
            "abort_from_another_thread_ends_every_rank",
            abort_from_another_thread_ends_every_rank,
        ),
    ])
}
