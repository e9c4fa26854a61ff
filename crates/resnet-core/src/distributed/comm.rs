//! The communication thread. Every collective of a rank goes through one thread, in the order it
//! was asked for: MPI wants a single calling thread (MPI_THREAD_FUNNELED), and all ranks must issue
//! the same collectives in the same order, which one FIFO per rank guarantees. A caller gets a
//! `Pending` back, so a gradient bucket can be all-reduced while backward computes the next one.
//!
//! A wait that outlasts the timeout is an `Error::Distributed` (a rank died or hung): the caller
//! unwinds and the process stops, rather than every rank waiting forever.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Transport, WorldInfo};
use crate::error::{Error, Result};

type Job = Box<dyn FnOnce(&mut dyn Transport) + Send>;

pub struct Communicator {
    info: WorldInfo,
    describe: String,
    timeout: Duration,
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The result of a collective still in flight.
pub struct Pending<T> {
    rx: Receiver<Result<T>>,
    what: &'static str,
    timeout: Duration,
}

impl<T> Pending<T> {
    pub fn wait(self) -> Result<T> {
        match self.rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(Error::Distributed(format!(
                "{} waited {} s for the other ranks: a rank has failed or hung",
                self.what,
                self.timeout.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Distributed(format!(
                "{}: the communication thread has stopped (finalized, or it panicked)",
                self.what
            ))),
        }
    }
}

impl Communicator {
    /// Starts the communication thread and creates the transport on it (`make` runs there: MPI
    /// must be initialised by the thread that will call it).
    pub fn start<F>(make: F, timeout: Duration) -> Result<Communicator>
    where
        F: FnOnce() -> Result<Box<dyn Transport>> + Send + 'static,
    {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (ready_tx, ready_rx) = channel::<Result<(WorldInfo, String)>>();
        let thread = std::thread::Builder::new()
            .name("resnet-comm".into())
            .spawn(move || {
                let mut transport = match make() {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((transport.info(), transport.describe())));
                for job in jobs_rx {
                    job(transport.as_mut());
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the communication thread: {e}")))?;
        let (info, describe) = ready_rx
            .recv()
            .map_err(|_| Error::Internal("the communication thread stopped while starting".into()))??;
        Ok(Communicator {
            info,
            describe,
            timeout,
            jobs: Mutex::new(Some(jobs_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn info(&self) -> WorldInfo {
        self.info
    }

    pub fn rank(&self) -> usize {
        self.info.rank
    }

    pub fn size(&self) -> usize {
        self.info.size
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Queues `f` behind every collective asked for before it.
    pub fn submit<T, F>(&self, what: &'static str, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Transport) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = channel();
        let job: Job = Box::new(move |t| {
            let _ = tx.send(f(t));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|jobs| jobs.send(job).is_ok())
            .unwrap_or(false);
        if !sent {
            // The receiver sees a disconnected channel and says the thread has stopped.
            let (_, dead) = channel();
            return Pending {
                rx: dead,
                what,
                timeout: self.timeout,
            };
        }
        Pending {
            rx,
            what,
            timeout: self.timeout,
        }
    }

    /// Starts an element-wise sum of `values` over ranks.
    pub fn all_reduce_sum_f32(&self, mut values: Vec<f32>) -> Pending<Vec<f32>> {
        self.submit("all-reduce", move |t| {
            t.all_reduce_sum_f32(&mut values)?;
            Ok(values)
        })
    }

    pub fn all_reduce_sum_f64(&self, mut values: Vec<f64>) -> Result<Vec<f64>> {
        self.submit("all-reduce", move |t| {
            t.all_reduce_sum_f64(&mut values)?;
            Ok(values)
        })
        .wait()
    }

    /// Rank `root`'s bytes on every rank; the other ranks' `bytes` are ignored and may differ
    /// in length (the length is broadcast first).
    pub fn broadcast_bytes(&self, bytes: Vec<u8>, root: usize) -> Result<Vec<u8>> {
        let me = self.rank();
        self.submit("broadcast", move |t| {
            let mut len = (bytes.len() as u64).to_le_bytes();
            t.broadcast(&mut len, root)?;
            let len = u64::from_le_bytes(len) as usize;
            let mut buf = if me == root { bytes } else { vec![0u8; len] };
            t.broadcast(&mut buf, root)?;
            Ok(buf)
        })
        .wait()
    }

    /// Every rank's `bytes` (the same length on every rank), in rank order.
    pub fn all_gather(&self, bytes: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        let size = self.size();
        self.submit("all-gather", move |t| {
            let len = bytes.len();
            let all = t.all_gather(&bytes)?;
            if all.len() != len * size {
                return Err(Error::Distributed(format!(
                    "all-gather returned {} bytes for {size} ranks of {len}",
                    all.len()
                )));
            }
            Ok((0..size).map(|r| all[r * len..(r + 1) * len].to_vec()).collect())
        })
        .wait()
    }

    pub fn barrier(&self) -> Result<()> {
        self.submit("barrier", |t| t.barrier()).wait()
    }

    /// Finalises the transport and stops the thread; later collectives fail. Idempotent.
    pub fn finalize(&self) -> Result<()> {
        let result = if self.jobs.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            self.submit("finalize", |t| t.finalize()).wait()
        } else {
            Ok(())
        };
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
        result
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        // Closing the queue ends the thread; it is not joined here (a rank stuck in a collective
        // must not hang the process's exit). `finalize` is the orderly path.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
