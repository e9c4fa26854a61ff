//! Modules: layers, residual blocks and the ResNet built from a spec, with torchvision's names.

mod blocks;
mod fold;
mod footprint;
mod init;
mod layers;
mod resnet;
pub mod spec;

pub use crate::ops::BnMode;
pub use blocks::{Block, ConvBn, Shortcut, BOTTLENECK_EXPANSION};
pub use footprint::{Activations, Footprint};
pub use init::Init;
pub use layers::{BatchNorm2d, Conv2d, Linear, BN_EPS, BN_MOMENTUM};
pub use resnet::{LayerSummary, ResNet};
pub use spec::{ActivationKind, BlockKind, BottleneckStride, ResNetSpec, ShortcutOption, StageSpec, Stem};

use crate::distributed::Communicator;
use crate::fused::PreActivationTap;
use crate::tensor::Tensor;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Called with each convolution's response (see [`Ctx::response_hook`]): the layer's
/// torchvision-style name (`conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`), its kernel size,
/// and the response tensor.
pub type ResponseHook<'a> = &'a dyn Fn(&str, usize, &Tensor);

/// How a forward pass runs.
#[derive(Default)]
pub struct Ctx<'a> {
    /// How every batch norm normalises, and whether it updates its running statistics.
    pub bn_mode: BnMode,
    /// Sees the response of every convolution layer, in layer order (each block's branch first,
    /// then its projection shortcut). For the original (post-activation) nets it is the layer's
    /// batch-norm output, before the activation or the addition: the quantity of the paper's
    /// Figure 7. For pre-activation nets, where batch norm comes before the convolution, and for
    /// nets without batch norm, it is the convolution's output. The hook reads the batch-norm
    /// output from the fused batch norm + activation (a tap), so a hooked forward runs the same
    /// kernels as training.
    pub response_hook: Option<ResponseHook<'a>>,
    /// Batch statistics over every rank's batch (data-parallel training with synchronised batch
    /// norm); `None` normalises with this process's batch alone.
    pub batch_norm_sync: Option<&'a Arc<Communicator>>,
}

impl Ctx<'_> {
    pub fn train() -> Self {
        Ctx {
            bn_mode: BnMode::Train,
            ..Ctx::default()
        }
    }

    pub fn eval() -> Self {
        Ctx::default()
    }

    /// Whether the pass may take the inference path (`nn::fold`: batch norm folded into the
    /// convolutions, one call per conv-BN-act-add): running statistics, nothing recorded for
    /// autograd, and no hook (it wants the batch-norm outputs, which that path never makes).
    pub(crate) fn inference(&self) -> bool {
        self.bn_mode == BnMode::Eval && self.response_hook.is_none() && !crate::autograd::is_grad_enabled()
    }

    /// Reports a response to the hook, if there is one.
    pub(crate) fn report(&self, name: impl FnOnce() -> String, kernel: usize, t: &Tensor) {
        if let Some(hook) = self.response_hook {
            hook(&name(), kernel, t);
        }
    }

    /// `report` as a fused op's tap, or None without a hook, so the fused op then hands out no
    /// response tensor at all.
    pub(crate) fn tap<'f>(&self, report: &'f dyn Fn(&Tensor)) -> Option<PreActivationTap<'f>> {
        self.response_hook.map(|_| report)
    }
}

/// One named piece of a module's state.
pub enum Entry<'a> {
    Param(&'a Tensor),
    Buffer(&'a Tensor),
    /// torchvision's int64 `num_batches_tracked`.
    Counter(&'a AtomicU64),
}

pub type Visitor<'v> = dyn FnMut(String, Entry) + 'v;
