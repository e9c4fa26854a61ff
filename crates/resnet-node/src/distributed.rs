//! `NativeWorld`: this process as one rank of an MPI job, through the MPI plugin the core loads
//! at run time (the addon itself never links an MPI). Collectives run on the core's
//! communication thread; the calls here only translate and schedule them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::distributed::mpi::MpiPlugin;
use resnet_core::distributed::Communicator;

use crate::errors::{guard, invalid, js_error};
use crate::job::{job, job_with, Pending};

#[napi]
pub struct NativeWorld {
    comm: Arc<Communicator>,
    plugin: Arc<MpiPlugin>,
}

impl NativeWorld {
    pub(crate) fn communicator(&self) -> Arc<Communicator> {
        self.comm.clone()
    }
}

fn to_f64_array(v: Vec<f64>) -> Result<Float64Array> {
    Ok(Float64Array::new(v))
}

#[napi]
impl NativeWorld {
    /// Loads the MPI plugin at `pluginPath` and initialises MPI on a communication thread;
    /// a collective that waits longer than `timeoutSeconds` fails instead of hanging.
    #[napi(ts_return_type = "Promise<NativeWorld>")]
    pub fn init(plugin_path: String, timeout_seconds: f64) -> Result<Pending<NativeWorld>> {
        if !(timeout_seconds.is_finite() && timeout_seconds > 0.0) {
            return Err(invalid(format!(
                "distributed: timeoutSeconds must be a positive number of seconds, got {timeout_seconds}"
            )));
        }
        let timeout = Duration::from_secs_f64(timeout_seconds);
        Ok(job("distributed.init", move || {
            let plugin = MpiPlugin::load(&PathBuf::from(&plugin_path)).map_err(js_error)?;
            let for_thread = plugin.clone();
            let comm = Communicator::start(move || for_thread.transport(), timeout).map_err(js_error)?;
            Ok(NativeWorld {
                comm: Arc::new(comm),
                plugin,
            })
        }))
    }

    #[napi(getter)]
    pub fn rank(&self) -> u32 {
        self.comm.info().rank as u32
    }

    #[napi(getter)]
    pub fn size(&self) -> u32 {
        self.comm.info().size as u32
    }

    /// Rank among the processes on this machine (picks the GPU).
    #[napi(getter)]
    pub fn local_rank(&self) -> u32 {
        self.comm.info().local_rank as u32
    }

    /// Processes on this machine (they split its CPU cores).
    #[napi(getter)]
    pub fn local_size(&self) -> u32 {
        self.comm.info().local_size as u32
    }

    /// The MPI library and thread level underneath.
    #[napi(getter)]
    pub fn library(&self) -> String {
        self.comm.describe().to_string()
    }

    /// Element-wise sum over ranks (evaluation sums, counts).
    #[napi(ts_return_type = "Promise<Float64Array>")]
    pub fn all_reduce_sum(&self, values: Float64Array) -> Pending<Vec<f64>, Float64Array> {
        let comm = self.comm.clone();
        let values = values.to_vec();
        job_with(
            "allReduceSum",
            move || comm.all_reduce_sum_f64(values).map_err(js_error),
            to_f64_array,
        )
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn barrier(&self) -> Pending<()> {
        let comm = self.comm.clone();
        job("barrier", move || comm.barrier().map_err(js_error))
    }

    /// Mean seconds of one all-reduce of `floats` f32 values over `iterations` (after one
    /// warm-up), for the bench: what a step's gradient exchange costs.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn bench_all_reduce(&self, floats: u32, iterations: u32) -> Pending<f64> {
        let comm = self.comm.clone();
        job("benchAllReduce", move || {
            let values: Vec<f32> = (0..floats).map(|i| (i % 97) as f32 * 0.01).collect();
            comm.all_reduce_sum_f32(values.clone()).wait().map_err(js_error)?;
            let start = Instant::now();
            for _ in 0..iterations.max(1) {
                comm.all_reduce_sum_f32(values.clone()).wait().map_err(js_error)?;
            }
            Ok(start.elapsed().as_secs_f64() / iterations.max(1) as f64)
        })
    }

    /// Prints `message` to stderr and stops every rank (MPI_Abort with `code`). Never returns.
    #[napi]
    pub fn abort(&self, code: i32, message: String) {
        self.plugin.abort_with_message(code, &message)
    }

    /// Orderly MPI_Finalize on the communication thread; later collectives fail. Idempotent.
    #[napi]
    pub fn finalize(&self) -> Result<()> {
        guard("finalize", || self.comm.finalize().map_err(js_error))
    }
}

/// Takes GPU adapter `index` for device 'gpu' (by default local rank k takes adapter k). Must
/// come before the first GPU use.
#[napi]
pub fn select_gpu_adapter(index: u32) -> Result<()> {
    resnet_core::backend::prefer_gpu_adapter(index as usize).map_err(js_error)
}

/// How many threads the CPU backend computes with. Must come before the first CPU work.
#[napi]
pub fn set_cpu_threads(threads: u32) -> Result<()> {
    resnet_core::backend::set_cpu_threads(threads as usize).map_err(js_error)
}
