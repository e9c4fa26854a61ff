//! `NativeTensor`: a handle on a core tensor for the explicit-loop API (custom heads, custom
//! training loops). Every op is the core's; this file only converts arguments.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::backend::Activation;
use resnet_core::{ops, Device, Tensor};

use crate::convert::{count, shape_dims, shape_u32};
use crate::errors::{guard_core, invalid};

#[napi]
pub struct NativeTensor {
    pub(crate) inner: Tensor,
}

impl From<Tensor> for NativeTensor {
    fn from(inner: Tensor) -> Self {
        NativeTensor { inner }
    }
}

fn op(name: &str, f: impl FnOnce() -> resnet_core::Result<Tensor>) -> Result<NativeTensor> {
    guard_core(name, f).map(NativeTensor::from)
}

#[napi]
impl NativeTensor {
    /// A tensor from host data (copied); `requiresGrad` makes it a trainable leaf.
    #[napi(factory)]
    pub fn from_array(data: Float32Array, shape: Vec<f64>, requires_grad: Option<bool>) -> Result<Self> {
        let shape = shape_dims("Tensor.fromArray", &shape)?;
        op("Tensor.fromArray", || {
            if requires_grad.unwrap_or(false) {
                Tensor::parameter(&data, &shape, Device::Cpu)
            } else {
                Tensor::from_vec(&data, &shape, Device::Cpu)
            }
        })
    }

    #[napi(getter)]
    pub fn shape(&self) -> Vec<u32> {
        shape_u32(self.inner.shape())
    }

    #[napi(getter)]
    pub fn requires_grad(&self) -> bool {
        self.inner.requires_grad()
    }

    /// The values, copied to the host.
    #[napi]
    pub fn to_array(&self) -> Result<Float32Array> {
        guard_core("Tensor.toArray", || self.inner.to_vec()).map(Float32Array::new)
    }

    /// Back-propagates from this one-element tensor into the leaves' gradients.
    #[napi]
    pub fn backward(&self) -> Result<()> {
        guard_core("Tensor.backward", || self.inner.backward())
    }

    /// The accumulated gradient of a leaf, or null before backward reaches it.
    #[napi(getter)]
    pub fn grad(&self) -> Option<NativeTensor> {
        self.inner.grad().map(NativeTensor::from)
    }

    #[napi]
    pub fn zero_grad(&self) {
        self.inner.zero_grad();
    }

    /// The same values, cut off from the graph.
    #[napi]
    pub fn detach(&self) -> NativeTensor {
        self.inner.detach().into()
    }

    #[napi(js_name = "conv2d")]
    pub fn conv2d(
        x: &NativeTensor,
        weight: &NativeTensor,
        bias: Option<&NativeTensor>,
        stride: f64,
        padding: f64,
    ) -> Result<NativeTensor> {
        let (stride, padding) = (count("conv2d", "stride", stride)?, count("conv2d", "padding", padding)?);
        op("conv2d", || {
            ops::conv2d(&x.inner, &weight.inner, bias.map(|b| &b.inner), stride, padding)
        })
    }

    #[napi]
    pub fn relu(x: &NativeTensor) -> Result<NativeTensor> {
        op("relu", || ops::relu(&x.inner))
    }

    /// Elementwise activation by name: "relu", "tanh" or "sigmoid".
    #[napi]
    pub fn activation(x: &NativeTensor, kind: String) -> Result<NativeTensor> {
        let act = match kind.as_str() {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            other => {
                return Err(invalid(format!(
                    "unknown activation '{other}' (expected relu, tanh or sigmoid)"
                )))
            }
        };
        op("activation", || ops::activation(&x.inner, act))
    }

    #[napi]
    pub fn add(a: &NativeTensor, b: &NativeTensor) -> Result<NativeTensor> {
        op("add", || ops::add(&a.inner, &b.inner))
    }

    #[napi]
    pub fn scale(x: &NativeTensor, alpha: f64) -> Result<NativeTensor> {
        op("scale", || ops::scale(&x.inner, alpha as f32))
    }

    #[napi(js_name = "maxPool2d")]
    pub fn max_pool2d(x: &NativeTensor, kernel: f64, stride: f64, padding: f64) -> Result<NativeTensor> {
        let what = "maxPool2d";
        let (kernel, stride, padding) = (
            count(what, "kernel", kernel)?,
            count(what, "stride", stride)?,
            count(what, "padding", padding)?,
        );
        op(what, || ops::max_pool2d(&x.inner, kernel, stride, padding))
    }

    #[napi]
    pub fn global_avg_pool(x: &NativeTensor) -> Result<NativeTensor> {
        op("globalAvgPool", || ops::global_avg_pool(&x.inner))
    }

    #[napi]
    pub fn linear(x: &NativeTensor, weight: &NativeTensor, bias: Option<&NativeTensor>) -> Result<NativeTensor> {
        op("linear", || {
            ops::linear(&x.inner, &weight.inner, bias.map(|b| &b.inner))
        })
    }

    #[napi]
    pub fn flatten(x: &NativeTensor) -> Result<NativeTensor> {
        op("flatten", || ops::flatten(&x.inner))
    }

    #[napi]
    pub fn reshape(x: &NativeTensor, shape: Vec<f64>) -> Result<NativeTensor> {
        let shape = shape_dims("reshape", &shape)?;
        op("reshape", || ops::reshape(&x.inner, &shape))
    }

    /// Mean softmax cross-entropy of logits [N, classes] against integer labels [N].
    #[napi]
    pub fn cross_entropy(logits: &NativeTensor, labels: Int32Array) -> Result<NativeTensor> {
        op("crossEntropy", || {
            let classes = logits.inner.shape().get(1).copied().unwrap_or(0);
            let labels = ops::labels_tensor(&labels, classes, logits.inner.device())?;
            ops::cross_entropy(&logits.inner, &labels)
        })
    }
}
