//! Data-parallel training across processes: each rank holds a full model, trains on its shard of
//! every global batch, and the ranks agree on gradients (and, with synchronised batch norm, on
//! batch statistics) through collectives.
//!
//! - `Transport`: the blocking collectives a message-passing library provides. MPI comes as a
//!   plugin loaded at run time (`mpi`), so this crate and the Node addon never link an MPI; the
//!   tests use an in-process group of threads (`local`).
//! - `comm`: the one thread that calls the transport, so collectives run in the same order on
//!   every rank and can proceed while backward computes (MPI wants one calling thread).

pub mod comm;
pub mod local;
pub mod mpi;
pub mod reducer;
pub(crate) mod sync_bn;

pub use comm::{Communicator, Pending};
pub use sync_bn::SyncedBatch;

use crate::error::Result;

/// Where this process sits among the ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorldInfo {
    pub rank: usize,
    pub size: usize,
    /// Rank among the processes on this machine (picks the GPU), and how many there are (splits
    /// the CPU cores).
    pub local_rank: usize,
    pub local_size: usize,
}

/// Blocking collectives over all ranks. Every rank must call the same collectives in the same
/// order with the same lengths; `Communicator` guarantees it by calling from one thread in the
/// order requests arrive. Implementations may assume they are only ever called from the thread
/// that created them.
pub trait Transport {
    fn info(&self) -> WorldInfo;
    /// What is underneath, for `info` and error messages (e.g. "MPICH 4.0.2").
    fn describe(&self) -> String;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()>;
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()>;
    /// `buf` (the same length on every rank) becomes rank `root`'s.
    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<()>;
    /// Every rank's `send` (the same length on every rank) side by side in rank order.
    fn all_gather(&mut self, send: &[u8]) -> Result<Vec<u8>>;
    fn barrier(&mut self) -> Result<()>;
    /// Orderly shutdown (MPI_Finalize); the transport is not used again.
    fn finalize(&mut self) -> Result<()>;
}
