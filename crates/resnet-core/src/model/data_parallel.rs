//! A model trained data-parallel: every rank holds the same parameters, trains on its own part of
//! each global batch, and applies the same summed gradient (PyTorch DDP's semantics).
//!
//! Attaching checks that the ranks agree (spec, optimiser settings, options, world size) and
//! copies rank 0's whole state to the others. Each step then scales the rank's mean loss by its
//! share of the global batch, so the summed gradients are exactly those of one process training
//! on the union; batch-norm buffers are rank 0's after every step (evaluation and checkpoints
//! see one model everywhere).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::autograd::{backward_with, Graph};
use crate::backend::{Backend, Storage};
use crate::distributed::reducer::{plan_buckets, GradReducer};
use crate::distributed::{Communicator, WorldInfo};
use crate::error::{Error, Result};
use crate::nn::{BnMode, Entry};
use crate::ops;
use crate::tensor::Tensor;

use super::checkpoint::describe;
use super::context::ctx_synced;
use super::{Model, TrainStats};

#[derive(Clone, Debug, PartialEq)]
pub struct DataParallelOptions {
    /// Batch statistics over the global batch instead of each rank's own.
    pub sync_batch_norm: bool,
    /// Gradient bytes per all-reduce (DDP's default is 25 MB).
    pub bucket_cap_bytes: usize,
    /// All-reduce each bucket as soon as backward has finished it, rather than after backward.
    pub overlap: bool,
}

impl Default for DataParallelOptions {
    fn default() -> Self {
        DataParallelOptions {
            sync_batch_norm: false,
            bucket_cap_bytes: 25 << 20,
            overlap: true,
        }
    }
}

pub(crate) struct DataParallel {
    comm: Arc<Communicator>,
    options: DataParallelOptions,
    buckets: Vec<Vec<usize>>,
}

/// FNV-1a: a stable fingerprint of what the ranks must agree on (not a defence against anyone).
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Model {
    /// Joins the ranks of `comm`: refuses when any rank differs from rank 0 in what it trains
    /// (naming the ranks), then gives every rank rank 0's parameters, buffers, momentum and step.
    pub fn attach_data_parallel(&mut self, comm: Arc<Communicator>, options: DataParallelOptions) -> Result<()> {
        if options.bucket_cap_bytes < 4 {
            return Err(Error::invalid(
                "data parallel: the bucket size must be at least 4 bytes",
            ));
        }
        if self.precision() != crate::precision::Precision::Fp32 {
            return Err(Error::invalid(
                "data parallel: precision 'mixed' is not available in data-parallel training yet; use precision 'fp32'",
            ));
        }
        self.check_ranks_agree(&comm, &options)?;
        let params: Vec<Tensor> = self.parameters().into_iter().map(|(_, t)| t).collect();
        let buckets = plan_buckets(&params, options.bucket_cap_bytes);
        self.broadcast_state(&comm)?;
        self.data_parallel = Some(DataParallel { comm, options, buckets });
        Ok(())
    }

    /// Back to training alone (the parameters stay as they are).
    pub fn detach_data_parallel(&mut self) {
        self.data_parallel = None;
    }

    pub fn data_parallel_world(&self) -> Option<WorldInfo> {
        self.data_parallel.as_ref().map(|dp| dp.comm.info())
    }

    fn check_ranks_agree(&self, comm: &Communicator, options: &DataParallelOptions) -> Result<()> {
        let what = format!(
            "{}|{}|{options:?}|ranks={}",
            self.net.spec.to_json(),
            serde_json::to_string(&self.optimizer.config).unwrap_or_default(),
            comm.size()
        );
        let all = comm.all_gather(fingerprint(&what).to_le_bytes().to_vec())?;
        let differ: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(_, h)| *h != &all[0])
            .map(|(r, _)| r.to_string())
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(Error::Distributed(format!(
            "rank(s) {} differ from rank 0 in the model spec, the optimizer settings, the data-parallel \
             options (syncBatchNorm, bucket size, overlap) or the world size; every rank must build the \
             same model (rank {} has {} with {:?})",
            differ.join(", "),
            comm.rank(),
            describe(&self.net.spec),
            options
        )))
    }

    /// Rank 0's parameters, buffers, batch counters, momentum buffers and step count, everywhere.
    fn broadcast_state(&mut self, comm: &Communicator) -> Result<()> {
        let be = self.device.backend();
        let mut tensors = Vec::new();
        let mut counters = Vec::new();
        self.net.visit(&mut |_, e| match e {
            Entry::Param(t) | Entry::Buffer(t) => tensors.push(t.clone()),
            Entry::Counter(c) => counters.push(c.load(Ordering::Relaxed)),
        });
        let momentum = self.optimizer.momentum_buffers().to_vec();
        let mut bytes = Vec::new();
        if comm.rank() == 0 {
            bytes.extend(self.step().to_le_bytes());
            for c in &counters {
                bytes.extend(c.to_le_bytes());
            }
            bytes.extend(momentum.iter().map(|m| m.is_some() as u8));
            let mut storages: Vec<_> = tensors.iter().map(Tensor::storage).collect();
            storages.extend(momentum.iter().flatten().cloned());
            bytes.extend(host_bytes(be, &storages)?);
        }
        let bytes = comm.broadcast_bytes(bytes, 0)?;
        if comm.rank() == 0 {
            return Ok(());
        }
        let mut r = Reader { bytes: &bytes, at: 0 };
        let step = r.u64()?;
        for c in counters.iter_mut() {
            *c = r.u64()?;
        }
        let mut rank0_counters = counters.into_iter();
        self.net.visit(&mut |_, e| {
            if let Entry::Counter(c) = e {
                if let Some(v) = rank0_counters.next() {
                    c.store(v, Ordering::Relaxed);
                }
            }
        });
        let has: Vec<bool> = (0..momentum.len())
            .map(|_| r.u8().map(|b| b != 0))
            .collect::<Result<_>>()?;
        for t in &tensors {
            t.set_storage(be.upload(&r.f32s(t.numel())?)?)?;
        }
        let params: Vec<Tensor> = self.parameters().into_iter().map(|(_, t)| t).collect();
        let mut buffers = Vec::with_capacity(params.len());
        for (p, has) in params.iter().zip(has) {
            buffers.push(if has {
                Some(be.upload(&r.f32s(p.numel())?)?)
            } else {
                None
            });
        }
        if r.at != bytes.len() {
            return Err(Error::Distributed(format!(
                "rank 0's state has {} bytes, this rank's model expects {}",
                bytes.len(),
                r.at
            )));
        }
        self.optimizer.restore(step, buffers)
    }

    /// Rank 0's batch-norm buffers and counters, everywhere: with per-rank statistics each rank's
    /// running estimates drift apart, and one model must be evaluated and saved.
    fn sync_buffers(&self, comm: &Communicator) -> Result<()> {
        let be = self.device.backend();
        let mut buffers = Vec::new();
        self.net.visit(&mut |_, e| {
            if let Entry::Buffer(t) = e {
                buffers.push(t.clone())
            }
        });
        if buffers.is_empty() {
            return Ok(());
        }
        let bytes = if comm.rank() == 0 {
            host_bytes(be, &buffers.iter().map(Tensor::storage).collect::<Vec<_>>())?
        } else {
            Vec::new()
        };
        let bytes = comm.broadcast_bytes(bytes, 0)?;
        if comm.rank() != 0 {
            let mut r = Reader { bytes: &bytes, at: 0 };
            for t in &buffers {
                t.set_storage(be.upload(&r.f32s(t.numel())?)?)?;
            }
        }
        Ok(())
    }

    /// One data-parallel SGD step; the figures returned are the global batch's.
    pub(super) fn train_step_data_parallel(
        &mut self,
        images: &[f32],
        shape: [usize; 4],
        labels: &[i32],
    ) -> Result<TrainStats> {
        let Some(dp) = self.data_parallel.as_ref() else {
            return Err(Error::Internal("data-parallel step without data parallelism".into()));
        };
        let comm = dp.comm.clone();
        let options = dp.options.clone();
        let buckets = dp.buckets.clone();
        let n_local = shape[0];
        let total = comm.all_reduce_sum_f64(vec![n_local as f64])?[0];
        let y = ops::labels_tensor(labels, self.net.spec.num_classes, self.device)?;
        let x = Tensor::from_vec(images, &shape, self.device)?;
        self.optimizer.zero_grad();
        self.net.drop_folds();
        let sync = options.sync_batch_norm.then_some(&comm);
        let logits = self.net.forward(&x, &ctx_synced(BnMode::Train, sync))?;
        let loss = ops::cross_entropy(&logits, &y)?;
        // The gradient of the global mean loss: this rank's mean weighted by its share.
        let share = ops::scale(&loss, (n_local as f64 / total) as f32)?;
        let params: Vec<Tensor> = self.parameters().into_iter().map(|(_, t)| t).collect();
        let mut reducer = GradReducer::new(&comm, &params, &buckets, options.overlap);
        backward_with(&share, Graph::Free, &mut |leaf| reducer.ready(leaf))?;
        reducer.finish()?;
        let lr = self.optimizer.lr();
        self.optimizer.step()?;
        self.optimizer.zero_grad();
        if !options.sync_batch_norm {
            self.sync_buffers(&comm)?;
        }
        let (loss_value, hits) = self.loss_and_hits(&logits, &y, &loss)?;
        let global = comm.all_reduce_sum_f64(vec![loss_value as f64 * n_local as f64, hits as f64])?;
        let mean_loss = (global[0] / total) as f32;
        self.check_converging(mean_loss, self.step(), " over all ranks")?;
        Ok(TrainStats {
            loss: mean_loss,
            correct: global[1].round() as usize,
            batch: total.round() as usize,
            lr,
            step: self.step(),
            loss_scale: None,
            skipped: false,
        })
    }
}

/// The values of `storages`, side by side as little-endian bytes, in one download.
fn host_bytes(be: &dyn Backend, storages: &[Storage]) -> Result<Vec<u8>> {
    Ok(be
        .download_many(&storages.iter().collect::<Vec<_>>())?
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect())
}

/// Reads back what `broadcast_state` wrote, refusing a short buffer.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let s = self.bytes.get(self.at..self.at + n).ok_or_else(|| {
            Error::Distributed(format!(
                "rank 0's state ends after {} bytes: its model differs from this rank's",
                self.bytes.len()
            ))
        })?;
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        Ok(self
            .take(4 * n)?
            .chunks_exact(4)
            .map(|w| f32::from_le_bytes(w.try_into().unwrap_or([0; 4])))
            .collect())
    }
}
