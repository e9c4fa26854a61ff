//! Gradient all-reduce in buckets, as PyTorch DDP does it: parameters are grouped in the reverse
//! of their definition order (roughly the order backward finishes them) into buckets of a few
//! megabytes; a bucket is all-reduced as soon as every gradient in it is final, while backward
//! goes on computing the next ones. Buckets are launched strictly in index order, so every rank
//! issues the same collectives in the same order.
//!
//! The gradients handed in are those of the global loss (each rank's mean loss scaled by its
//! share of the global batch), so the reduction is a plain sum.

use std::collections::HashMap;

use super::comm::Pending;
use super::Communicator;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The first bucket is small so communication starts early (DDP uses 1 MB too).
const FIRST_BUCKET_BYTES: usize = 1 << 20;

/// Which parameters go together: indices into the parameter list, in launch order.
pub fn plan_buckets(params: &[Tensor], cap_bytes: usize) -> Vec<Vec<usize>> {
    let mut buckets = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0usize;
    for i in (0..params.len()).rev() {
        let cap = if buckets.is_empty() {
            FIRST_BUCKET_BYTES.min(cap_bytes)
        } else {
            cap_bytes
        };
        if !current.is_empty() && bytes + 4 * params[i].numel() > cap {
            buckets.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += 4 * params[i].numel();
        current.push(i);
    }
    if !current.is_empty() {
        buckets.push(current);
    }
    buckets
}

/// One step's reduction. `ready` is called by backward for each leaf whose gradient is final;
/// `finish` launches what is left, waits for every bucket and installs the summed gradients.
pub struct GradReducer<'a> {
    comm: &'a Communicator,
    params: &'a [Tensor],
    buckets: &'a [Vec<usize>],
    bucket_of: HashMap<usize, usize>,
    missing: Vec<usize>,
    launched: Vec<Option<Pending<Vec<f32>>>>,
    next: usize,
    overlap: bool,
}

impl<'a> GradReducer<'a> {
    pub fn new(comm: &'a Communicator, params: &'a [Tensor], buckets: &'a [Vec<usize>], overlap: bool) -> Self {
        let mut bucket_of = HashMap::new();
        for (b, members) in buckets.iter().enumerate() {
            for &i in members {
                bucket_of.insert(params[i].id(), b);
            }
        }
        GradReducer {
            comm,
            params,
            buckets,
            bucket_of,
            missing: buckets.iter().map(Vec::len).collect(),
            launched: buckets.iter().map(|_| None).collect(),
            next: 0,
            overlap,
        }
    }

    /// A leaf's gradient is final: launch every bucket, in order, whose gradients all are.
    pub fn ready(&mut self, leaf: &Tensor) -> Result<()> {
        let Some(&b) = self.bucket_of.get(&leaf.id()) else {
            return Ok(());
        };
        self.missing[b] = self.missing[b].saturating_sub(1);
        if self.overlap {
            let from = self.next;
            while self.next < self.buckets.len() && self.missing[self.next] == 0 {
                self.next += 1;
            }
            self.launch(from, self.next)?;
        }
        Ok(())
    }

    /// Downloads the gradients of buckets `from..to` (one round trip: on a GPU each download
    /// waits for the queue) and starts their all-reduces in order.
    fn launch(&mut self, from: usize, to: usize) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let be = self.params[self.buckets[from][0]].device().backend();
        // A parameter backward never reached (unused in this forward) contributes zeros.
        let mut grads = Vec::new();
        for b in from..to {
            for &i in &self.buckets[b] {
                let p = &self.params[i];
                grads.push(match p.grad_storage() {
                    Some(g) => g,
                    None => be.zeros(p.numel())?,
                });
            }
        }
        let mut host = be.download_many(&grads.iter().collect::<Vec<_>>())?.into_iter();
        for b in from..to {
            let values: Vec<f32> = host.by_ref().take(self.buckets[b].len()).flatten().collect();
            self.launched[b] = Some(self.comm.all_reduce_sum_f32(values));
        }
        Ok(())
    }

    /// Launches the remaining buckets, waits for all of them and replaces each gradient by its
    /// sum over ranks.
    pub fn finish(mut self) -> Result<()> {
        self.launch(self.next, self.buckets.len())?;
        self.next = self.buckets.len();
        for (b, pending) in self.launched.iter_mut().enumerate() {
            let summed = pending
                .take()
                .ok_or_else(|| Error::Internal("a gradient bucket was never launched".into()))?
                .wait()?;
            let mut at = 0;
            for &i in &self.buckets[b] {
                let p = &self.params[i];
                let n = p.numel();
                let g = p.device().backend().upload(&summed[at..at + n])?;
                p.set_grad(Some(g));
                at += n;
            }
        }
        Ok(())
    }
}
