//! The training and evaluation calls: one SGD step on a labelled batch, logits, and the loss and
//! top-1/top-5 sums of a batch (the one place these metrics are computed).

use serde::Serialize;

use crate::autograd::{backward_freeing, backward_freeing_from, no_grad};
use crate::error::{Error, Result};
use crate::memory::Pass;
use crate::ops;
use crate::tensor::Tensor;

use super::context::ctx;
use super::readback::{read_scalar_list, read_scalars};
use super::Model;
use crate::backend::{LogitsLayout, Storage};
use crate::nn::BnMode;
use crate::optim::{DeviceScaler, ScaledStep};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TrainStats {
    pub loss: f32,
    /// Top-1 hits in this batch (training mode, before the update).
    pub correct: usize,
    pub batch: usize,
    /// The rate this step used.
    pub lr: f32,
    /// Optimiser steps taken so far, this one included (a skipped step is not counted).
    pub step: u64,
    /// Mixed precision: the loss scale this step used (None in fp32).
    pub loss_scale: Option<f32>,
    /// Mixed precision: the gradients overflowed, so the weights were left alone and the scale
    /// halved (as `GradScaler` skips `optimizer.step()`).
    pub skipped: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct EvalStats {
    pub loss_sum: f64,
    pub top1: usize,
    pub top5: usize,
    pub count: usize,
}

/// A step taken but not yet reported: its figures are still on the device, or already on the
/// host where the step had to read them anyway (the ranks' all-reduce).
pub(super) struct QueuedStep {
    figures: Figures,
    batch: usize,
    lr: f32,
    step: u64,
    loss_scale: Option<f32>,
    skipped: bool,
    /// A mixed-precision step the device decided: its rate for each count of the unsettled steps
    /// before it that were applied. Its `lr`, `step`, `loss_scale` and `skipped` are known once
    /// its check is read (`Model::settle_mixed`).
    rates: Option<Vec<f32>>,
}

enum Figures {
    OnDevice {
        loss: Storage,
        hits: Storage,
        /// Mixed precision: the overflow check of the step's gradients, finite when the step was applied.
        check: Option<Storage>,
    },
    Read {
        loss: f32,
        hits: f32,
    },
}

/// Mixed-precision steps queued without reading their overflow checks: each holds a rate for every
/// count of the unsettled steps before it, so the queue is read (settled) at this length.
const MAX_UNSETTLED: usize = 64;

impl QueuedStep {
    fn read(s: TrainStats) -> Self {
        QueuedStep {
            figures: Figures::Read {
                loss: s.loss,
                hits: s.correct as f32,
            },
            batch: s.batch,
            lr: s.lr,
            step: s.step,
            loss_scale: s.loss_scale,
            skipped: s.skipped,
            rates: None,
        }
    }

    /// Its figures, once read.
    fn stats(&self) -> Result<TrainStats> {
        let Figures::Read { loss, hits } = self.figures else {
            return Err(Error::Internal("a queued step's figures were not read back".into()));
        };
        Ok(TrainStats {
            loss,
            correct: hits.round() as usize,
            batch: self.batch,
            lr: self.lr,
            step: self.step,
            loss_scale: self.loss_scale,
            skipped: self.skipped,
        })
    }
}

impl Model {
    /// Forward, mean cross-entropy, backward and one SGD update, and the step's figures (one wait
    /// for the GPU). Steps queued before it by `queue_train_step` stay queued, their figures read
    /// in the same download.
    ///
    /// A batch that cannot fit is refused before the forward pass (`memory::check_batch_fits`).
    /// When memory runs out during the step anyway (an `Error::OutOfMemory`), the model stays
    /// usable: the step's graph and gradients are dropped, and no parameter or momentum buffer has
    /// changed unless the update itself failed; only the batch-norm running statistics of layers
    /// the forward pass got through have seen the batch.
    pub fn train_step(&mut self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<TrainStats> {
        self.queue_train_step(images, shape, labels)?;
        self.read_queued()?;
        let last = self
            .queued
            .pop()
            .ok_or_else(|| Error::Internal("a training step queued nothing".into()))?;
        let stats = last.stats()?;
        self.check_converging(stats.loss, stats.step, "")?;
        Ok(stats)
    }

    /// `train_step` without waiting for the step's figures: on a GPU the host records the next
    /// step while the device runs this one (at most one step ahead, so uploads in flight stay
    /// bounded). `take_step_stats` reads the figures of every queued step in one wait. In mixed
    /// precision the device itself skips an overflowing step and moves the loss scale, so the
    /// step count and scale are known once the figures are read. Data-parallel steps are read at
    /// once (the ranks sum the figures).
    pub fn queue_train_step(&mut self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<()> {
        self.check_labelled(images, shape, labels, self.training_pass(true))?;
        let result = if self.data_parallel.is_some() {
            self.train_step_data_parallel(images, shape, labels)
                .map(QueuedStep::read)
        } else {
            self.record_step(images, shape, labels)
        };
        match result {
            Ok(step) => {
                self.queued.push(step);
                Ok(())
            }
            Err(e) => {
                self.optimizer.zero_grad();
                Err(e)
            }
        }
    }

    /// The figures of every step queued since the last call, oldest first, read in one download.
    /// A non-finite loss among them is the "training diverged" error naming its step (the steps
    /// after it were taken too, and their figures are dropped with it).
    pub fn take_step_stats(&mut self) -> Result<Vec<TrainStats>> {
        self.read_queued()?;
        let queued = std::mem::take(&mut self.queued);
        let mut stats = Vec::with_capacity(queued.len());
        for q in &queued {
            let s = q.stats()?;
            self.check_converging(s.loss, s.step, "")?;
            stats.push(s);
        }
        Ok(stats)
    }

    /// Steps queued and not yet taken by `take_step_stats`.
    pub fn queued_steps(&self) -> usize {
        self.queued.len()
    }

    /// Reads the figures of every queued step, so the step count and loss scaler include them
    /// (mixed precision's queued steps are counted once their overflow checks are read).
    pub fn settle(&mut self) -> Result<()> {
        self.read_queued()
    }

    /// Reads the figures still on the device, all in one download.
    fn read_queued(&mut self) -> Result<()> {
        let on_device: Vec<&Storage> = self
            .queued
            .iter()
            .filter_map(|q| match &q.figures {
                Figures::OnDevice { loss, hits, check } => Some([Some(loss), Some(hits), check.as_ref()]),
                Figures::Read { .. } => None,
            })
            .flatten()
            .flatten()
            .collect();
        if on_device.is_empty() {
            return Ok(());
        }
        let values = match read_scalar_list(&on_device, self.device) {
            Ok(v) => v,
            Err(e) => {
                // The device failed: what these steps did is unknown, so they are not reported.
                self.queued.clear();
                self.unsettled = 0;
                self.on_device = None;
                return Err(e);
            }
        };
        let mut values = values.into_iter();
        let mut checks = Vec::new();
        for (i, q) in self.queued.iter_mut().enumerate() {
            if let Figures::OnDevice { check, .. } = &q.figures {
                let has_check = check.is_some();
                let (Some(loss), Some(hits)) = (values.next(), values.next()) else {
                    return Err(Error::Internal("a step's scalar has no value".into()));
                };
                if has_check {
                    let c = values
                        .next()
                        .ok_or_else(|| Error::Internal("a step's check has no value".into()))?;
                    checks.push((i, c));
                }
                q.figures = Figures::Read { loss, hits };
            }
        }
        self.settle_mixed(&checks)
    }

    /// The host's loss scaler and step count catch up with what the device decided for each
    /// unsettled mixed-precision step (`(queue index, check)`, in order), by the same rule.
    fn settle_mixed(&mut self, checks: &[(usize, f32)]) -> Result<()> {
        if checks.is_empty() {
            return Ok(());
        }
        let scaler = self
            .scaler
            .as_mut()
            .ok_or_else(|| Error::Internal("a mixed-precision step without a loss scaler".into()))?;
        let mut applied = 0;
        for &(i, check) in checks {
            let q = &mut self.queued[i];
            let rates = q.rates.take().unwrap_or_default();
            q.lr = *rates
                .get(applied)
                .ok_or_else(|| Error::Internal(format!("a queued step has no rate after {applied} applied steps")))?;
            q.loss_scale = Some(scaler.scale());
            q.skipped = scaler.update(check.is_finite()) == ScaledStep::Skip;
            if !q.skipped {
                self.optimizer.count_applied_step();
                applied += 1;
            }
            q.step = self.optimizer.step_count();
        }
        // The device's copy counted its applied steps from the last copy: a fresh one from here.
        self.unsettled = 0;
        self.on_device = None;
        Ok(())
    }

    /// In mixed precision the backward pass starts from the loss times the scale, and the update
    /// divides the gradients by it, unless any gradient is inf or NaN (then no update and a lower
    /// scale), as `GradScaler` does; both the scale and the decision stay on the device
    /// (`DeviceScaler`), so no step waits for the GPU. In fp32 as in mixed, the loss and hits stay
    /// on the device until `read_queued`.
    fn record_step(&mut self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<QueuedStep> {
        if self.scaler.is_some() && self.unsettled >= MAX_UNSETTLED {
            self.read_queued()?;
        }
        // Every upload before the first kernel: an upload submits the work recorded before it.
        let y = ops::labels_tensor(labels, self.net.spec.num_classes, self.device)?;
        let x = Tensor::from_vec(images, &shape, self.device)?;
        let mixed = match &self.scaler {
            Some(scaler) => {
                if self.on_device.is_none() {
                    self.on_device = Some(DeviceScaler::upload(scaler, self.device)?);
                }
                let rates = self.optimizer.pending_rates(self.unsettled);
                let on_device = self.device.backend().upload(&rates)?;
                Some((rates, on_device))
            }
            None => None,
        };
        self.optimizer.zero_grad();
        self.net.drop_folds();
        let logits = self.net.forward(&x, &ctx(BnMode::Train, None))?;
        let loss = ops::cross_entropy(&logits, &y)?;
        let Some((rates, rates_on_device)) = mixed else {
            // Freeing the graph as it goes: each activation is released once its last gradient
            // is computed, not at the end of the step.
            backward_freeing(&loss)?;
            let (lr, hits) = (self.optimizer.lr(), self.hits(&logits, &y)?);
            self.optimizer.step()?;
            self.optimizer.zero_grad();
            self.device.end_step()?;
            return Ok(QueuedStep {
                figures: Figures::OnDevice {
                    loss: loss.storage(),
                    hits,
                    check: None,
                },
                batch: shape[0],
                lr,
                step: self.step(),
                loss_scale: None,
                skipped: false,
                rates: None,
            });
        };
        let seed = self.on_device.as_ref().map(DeviceScaler::scale);
        backward_freeing_from(
            &loss,
            seed.ok_or_else(|| Error::Internal("no loss scale on the device".into()))?,
        )?;
        let hits = self.hits(&logits, &y)?;
        let check = self.overflow_check()?;
        let on_device = self
            .on_device
            .as_mut()
            .ok_or_else(|| Error::Internal("no loss scaler on the device".into()))?;
        self.optimizer.step_gated(&on_device.gate(&check, &rates_on_device))?;
        on_device.update(&check)?;
        self.unsettled += 1;
        self.optimizer.zero_grad();
        self.device.end_step()?;
        Ok(QueuedStep {
            figures: Figures::OnDevice {
                loss: loss.storage(),
                hits,
                check: Some(check),
            },
            batch: shape[0],
            lr: 0.0,
            step: self.step(),
            loss_scale: None,
            skipped: false,
            rates: Some(rates),
        })
    }

    /// The step's overflow check: finite exactly when no gradient holds an inf or a NaN.
    fn overflow_check(&self) -> Result<Storage> {
        let grads: Vec<Storage> = self
            .net
            .parameters()
            .into_iter()
            .filter_map(|(_, p)| p.grad_storage())
            .collect();
        if grads.is_empty() {
            return Err(Error::Internal("a training step left no gradient".into()));
        }
        self.device.backend().nonfinite_check(&grads)
    }

    /// The top-1 hits of a batch's logits, as a one-value storage (read back with the loss).
    pub(super) fn hits(&self, logits: &Tensor, labels: &Tensor) -> Result<Storage> {
        let be = self.device.backend();
        let layout = LogitsLayout {
            n: logits.shape()[0],
            classes: self.net.spec.num_classes,
        };
        be.sum_all(&be.topk_correct(&logits.storage(), &labels.storage(), &layout, 1)?)
    }

    /// A training step's mean loss and top-1 hits, in one download.
    pub(super) fn loss_and_hits(&self, logits: &Tensor, labels: &Tensor, loss: &Tensor) -> Result<(f32, f32)> {
        let hits = self.hits(logits, labels)?;
        let [loss_value, hits] = read_scalars([&loss.storage(), &hits], self.device)?;
        Ok((loss_value, hits))
    }

    /// Refuses a non-finite loss of step `step` (`scope` says whose: "" or " over all ranks").
    pub(super) fn check_converging(&self, loss: f32, step: u64, scope: &str) -> Result<()> {
        if loss.is_finite() {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "training diverged: the loss{scope} is {loss} at step {step} (lower the learning rate)"
        )))
    }

    /// Logits [N, classes] in eval mode.
    pub fn predict(&self, images: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        self.check_batch(images, shape, Pass::Eval)?;
        no_grad(|| {
            let x = Tensor::from_vec(images, &shape, self.device)?;
            self.net.forward(&x, &ctx(BnMode::Eval, None))?.to_vec()
        })
    }

    /// Summed loss and top-1/top-5 hits of one batch in eval mode.
    pub fn evaluate_batch(&self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<EvalStats> {
        self.check_labelled(images, shape, labels, Pass::Eval)?;
        let sums = no_grad(|| self.eval_sums(images, shape, labels))?;
        let [loss_sum, top1, top5] = read_scalars([&sums[0], &sums[1], &sums[2]], self.device)?;
        Ok(eval_stats([loss_sum, top1, top5], shape[0]))
    }

    /// `evaluate_batch` without waiting for its sums: they stay on the device until
    /// `take_eval_stats`, and a GPU evaluates this batch while the host prepares the next (at most
    /// one batch ahead, as queued training steps).
    pub fn queue_evaluate_batch(&mut self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<()> {
        self.check_labelled(images, shape, labels, Pass::Eval)?;
        let sums = no_grad(|| self.eval_sums(images, shape, labels))?;
        self.queued_evals.push((sums, shape[0]));
        self.device.end_step()
    }

    /// The sums of every batch queued by `queue_evaluate_batch` since the last call, in order,
    /// read in one download: each exactly what `evaluate_batch` gives for that batch.
    pub fn take_eval_stats(&mut self) -> Result<Vec<EvalStats>> {
        let queued = std::mem::take(&mut self.queued_evals);
        let storages: Vec<&Storage> = queued.iter().flat_map(|(sums, _)| sums.iter()).collect();
        let values = read_scalar_list(&storages, self.device)?;
        Ok(queued
            .iter()
            .zip(values.chunks_exact(3))
            .map(|(&(_, count), v)| eval_stats([v[0], v[1], v[2]], count))
            .collect())
    }

    /// The loss sum and top-1/top-5 hit counts of one batch, on the device.
    fn eval_sums(&self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<[Storage; 3]> {
        let classes = self.net.spec.num_classes;
        let y = ops::labels_tensor(labels, classes, self.device)?;
        let x = Tensor::from_vec(images, &shape, self.device)?;
        let logits = self.net.forward(&x, &ctx(BnMode::Eval, None))?;
        let be = self.device.backend();
        let layout = LogitsLayout { n: shape[0], classes };
        let (losses, _) = be.cross_entropy(&logits.storage(), &y.storage(), &layout)?;
        let hits = |k| be.sum_all(&be.topk_correct(&logits.storage(), &y.storage(), &layout, k)?);
        Ok([be.sum_all(&losses)?, hits(1)?, hits(5.min(classes))?])
    }
}

fn eval_stats([loss_sum, top1, top5]: [f32; 3], count: usize) -> EvalStats {
    EvalStats {
        loss_sum: loss_sum as f64,
        top1: top1.round() as usize,
        top5: top5.round() as usize,
        count,
    }
}
