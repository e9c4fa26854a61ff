//! Probes that look inside the net without changing it: each convolution layer's response (the
//! paper's Figure 7) and each layer's loss gradient (vanishing-gradient plots).

use std::cell::RefCell;

use serde::Serialize;

use crate::autograd::no_grad;
use crate::backend::Storage;
use crate::error::Result;
use crate::memory::Pass;
use crate::ops;
use crate::precision::Precision;
use crate::tensor::Tensor;

use super::context::{ctx, frozen};
use super::Model;
use crate::nn::BnMode;

/// One convolution layer's response (see [`Model::layer_responses`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerResponse {
    /// torchvision-style layer name: `conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`.
    pub name: String,
    /// Kernel size (3 for the paper's 3x3 layers, 1, 7).
    pub kernel: usize,
    /// Standard deviation over every element of the batch's response (population, divide by n).
    pub std: f64,
    pub mean: f64,
}

/// The gradient of the loss with respect to one layer's weight (see [`Model::gradient_norms`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GradNorm {
    /// `conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`, ..., `fc`.
    pub name: String,
    /// Kernel size of a convolution; 0 for the fully connected classifier.
    pub kernel: usize,
    /// L2 norm of dL/dW (the loss alone: no weight decay).
    pub norm: f64,
    /// Elements of the weight (norm / sqrt(numel) is the root mean square).
    pub numel: usize,
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

impl Model {
    /// The response of every convolution layer to a batch, in layer order (each block's
    /// convolutions, then its projection shortcut): for the original nets the layer's batch-norm
    /// output before the activation or the addition (the paper's Figure 7); for pre-activation
    /// nets and nets without batch norm (`spec.batch_norm` false) the convolution's output. A
    /// forward pass only: nothing is recorded for autograd. With `training` batch norm uses the
    /// batch's statistics (as during training) but no running statistic or counter is updated;
    /// without it, the running statistics. The model is left exactly as it was. Measured in fp32
    /// whatever the model's precision: a probe reads the network, not the arithmetic.
    pub fn layer_responses(&self, images: &[f32], shape: [usize; 4], training: bool) -> Result<Vec<LayerResponse>> {
        self.check_batch(images, shape, Pass::Eval)?;
        let out = RefCell::new(Vec::new());
        let failed = RefCell::new(None);
        let hook = |name: &str, kernel: usize, t: &Tensor| {
            if failed.borrow().is_some() {
                return;
            }
            match t.to_vec() {
                Ok(v) => {
                    let (mean, std) = mean_std(&v);
                    out.borrow_mut().push(LayerResponse {
                        name: name.to_string(),
                        kernel,
                        std,
                        mean,
                    });
                }
                Err(e) => *failed.borrow_mut() = Some(e),
            }
        };
        let ctx = ctx(frozen(training), Some(&hook));
        no_grad(|| {
            let x = Tensor::from_vec(images, &shape, self.device)?;
            self.net.forward_at(Precision::Fp32, &x, &ctx).map(drop)
        })?;
        if let Some(e) = failed.into_inner() {
            return Err(e);
        }
        Ok(out.into_inner())
    }

    /// The L2 norm of d(mean cross-entropy)/dW for every convolution weight and the classifier's
    /// weight, in layer order (the stem, each block's convolutions then its projection, `fc`),
    /// for one labelled batch in training mode (batch statistics). The model is left exactly as
    /// it was: parameters, running statistics and counters, optimiser state and step, and any
    /// gradients the parameters already held. In fp32 whatever the model's precision (in f16
    /// operands, without loss scaling, small gradients would vanish).
    pub fn gradient_norms(&self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<Vec<GradNorm>> {
        self.check_labelled(images, shape, labels, self.training_pass(false))?;
        let y = ops::labels_tensor(labels, self.net.spec.num_classes, self.device)?;
        let x = Tensor::from_vec(images, &shape, self.device)?;
        let params = self.parameters();
        // Gradients a custom loop left on the parameters are put back afterwards.
        let held: Vec<Option<Storage>> = params.iter().map(|(_, p)| p.grad_storage()).collect();
        params.iter().for_each(|(_, p)| p.zero_grad());
        let run = || -> Result<Vec<GradNorm>> {
            let logits = self
                .net
                .forward_at(Precision::Fp32, &x, &ctx(BnMode::TrainFrozenStats, None))?;
            ops::cross_entropy(&logits, &y)?.backward()?;
            let mut norms = Vec::new();
            for (name, p) in &params {
                let Some(module) = name.strip_suffix(".weight") else {
                    continue;
                };
                let kernel = match p.shape() {
                    [_, _, k, _] => *k,
                    _ if module == "fc" => 0,
                    _ => continue,
                };
                let g = p.grad().map(|g| g.to_vec()).transpose()?.unwrap_or_default();
                let norm = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                norms.push(GradNorm {
                    name: module.to_string(),
                    kernel,
                    norm,
                    numel: p.numel(),
                });
            }
            Ok(norms)
        };
        let result = run();
        for ((_, p), g) in params.iter().zip(held) {
            p.zero_grad();
            if let Some(g) = g {
                p.accumulate_grad(g)?;
            }
        }
        result
    }
}
