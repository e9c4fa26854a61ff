//! `NativeTensor`: a handle on a core tensor for the explicit-loop API (custom heads, custom
//! training loops). Every op is the core's; this file only converts arguments.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::backend::Activation;
use resnet_core::{ops, Device, Tensor};

use crate::convert::{count, shape_dims, shape_u32};
use crate::errors::{guard_core, invalid};

/// A handle on a core tensor; `dispose` lets go of it now instead of at garbage collection.
#[napi]
pub struct NativeTensor {
    inner: Option<Tensor>,
}

impl From<Tensor> for NativeTensor {
    fn from(inner: Tensor) -> Self {
        NativeTensor { inner: Some(inner) }
    }
}

impl NativeTensor {
    /// The tensor, or an Error once `dispose` has been called.
    pub(crate) fn tensor(&self) -> Result<&Tensor> {
        self.inner
            .as_ref()
            .ok_or_else(|| invalid("the Tensor has been disposed (its values were freed by dispose())"))
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
    pub fn shape(&self) -> Result<Vec<u32>> {
        Ok(shape_u32(self.tensor()?.shape()))
    }

    #[napi(getter)]
    pub fn requires_grad(&self) -> Result<bool> {
        Ok(self.tensor()?.requires_grad())
    }

    /// The values, copied to the host.
    #[napi]
    pub fn to_array(&self) -> Result<Float32Array> {
        let t = self.tensor()?;
        guard_core("Tensor.toArray", || t.to_vec()).map(Float32Array::new)
    }

    /// Back-propagates from this one-element tensor into the leaves' gradients.
    #[napi]
    pub fn backward(&self) -> Result<()> {
        let t = self.tensor()?;
        guard_core("Tensor.backward", || t.backward())
    }

    /// The accumulated gradient of a leaf, or null before backward reaches it.
    #[napi(getter)]
    pub fn grad(&self) -> Result<Option<NativeTensor>> {
        Ok(self.tensor()?.grad().map(NativeTensor::from))
    }

    #[napi]
    pub fn zero_grad(&self) -> Result<()> {
        self.tensor()?.zero_grad();
        Ok(())
    }

    /// The same values, cut off from the graph.
    #[napi]
    pub fn detach(&self) -> Result<NativeTensor> {
        Ok(self.tensor()?.detach().into())
    }

    /// Lets go of this handle's tensor now (the graph or a model may still hold the storage);
    /// later use throws naming the disposed Tensor.
    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        self.inner.is_none()
    }

    #[napi(js_name = "conv2d")]
    pub fn conv2d(
        x: &NativeTensor,
        weight: &NativeTensor,
        bias: Option<&NativeTensor>,
        stride: f64,
        padding: f64,
    ) -> Result<NativeTensor> {
        let x = x.tensor()?;
        let weight = weight.tensor()?;
        let bias = bias.map(NativeTensor::tensor).transpose()?;
        let (stride, padding) = (count("conv2d", "stride", stride)?, count("conv2d", "padding", padding)?);
        op("conv2d", || ops::conv2d(x, weight, bias, stride, padding))
    }

    #[napi]
    pub fn relu(x: &NativeTensor) -> Result<NativeTensor> {
        let x = x.tensor()?;
        op("relu", || ops::relu(x))
    }

    /// Elementwise activation by name: "relu", "tanh" or "sigmoid".
    #[napi]
    pub fn activation(x: &NativeTensor, kind: String) -> Result<NativeTensor> {
        let x = x.tensor()?;
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
        op("activation", || ops::activation(x, act))
    }

    #[napi]
    pub fn add(a: &NativeTensor, b: &NativeTensor) -> Result<NativeTensor> {
        let a = a.tensor()?;
        let b = b.tensor()?;
        op("add", || ops::add(a, b))
    }

    #[napi]
    pub fn scale(x: &NativeTensor, alpha: f64) -> Result<NativeTensor> {
        let x = x.tensor()?;
        op("scale", || ops::scale(x, alpha as f32))
    }

    #[napi(js_name = "maxPool2d")]
    pub fn max_pool2d(x: &NativeTensor, kernel: f64, stride: f64, padding: f64) -> Result<NativeTensor> {
        let x = x.tensor()?;
        let what = "maxPool2d";
        let (kernel, stride, padding) = (
            count(what, "kernel", kernel)?,
            count(what, "stride", stride)?,
            count(what, "padding", padding)?,
        );
        op(what, || ops::max_pool2d(x, kernel, stride, padding))
    }

    #[napi]
    pub fn global_avg_pool(x: &NativeTensor) -> Result<NativeTensor> {
        let x = x.tensor()?;
        op("globalAvgPool", || ops::global_avg_pool(x))
    }

    #[napi]
    pub fn linear(x: &NativeTensor, weight: &NativeTensor, bias: Option<&NativeTensor>) -> Result<NativeTensor> {
        let x = x.tensor()?;
        let weight = weight.tensor()?;
        let bias = bias.map(NativeTensor::tensor).transpose()?;
        op("linear", || ops::linear(x, weight, bias))
    }

    #[napi]
    pub fn flatten(x: &NativeTensor) -> Result<NativeTensor> {
        let x = x.tensor()?;
        op("flatten", || ops::flatten(x))
    }

    #[napi]
    pub fn reshape(x: &NativeTensor, shape: Vec<f64>) -> Result<NativeTensor> {
        let x = x.tensor()?;
        let shape = shape_dims("reshape", &shape)?;
        op("reshape", || ops::reshape(x, &shape))
    }

    /// Mean softmax cross-entropy of logits [N, classes] against integer labels [N].
    #[napi]
    pub fn cross_entropy(logits: &NativeTensor, labels: Int32Array) -> Result<NativeTensor> {
        let logits = logits.tensor()?;
        op("crossEntropy", || {
            let classes = logits.shape().get(1).copied().unwrap_or(0);
            let labels = ops::labels_tensor(&labels, classes, logits.device())?;
            ops::cross_entropy(logits, &labels)
        })
    }
}
