//! Modules: layers, residual blocks and the ResNet built from a spec, with torchvision's names.

mod blocks;
mod init;
mod layers;
mod resnet;
pub mod spec;

pub use blocks::{Block, Shortcut, BOTTLENECK_EXPANSION};
pub use init::Init;
pub use layers::{BatchNorm2d, Conv2d, Linear, BN_EPS, BN_MOMENTUM};
pub use resnet::{LayerSummary, ResNet};
pub use spec::{ActivationKind, BlockKind, BottleneckStride, ResNetSpec, ShortcutOption, StageSpec, Stem};

use crate::tensor::Tensor;
use std::sync::atomic::AtomicU64;

/// How a forward pass runs.
#[derive(Default)]
pub struct Ctx<'a> {
    /// Batch statistics and running-stat updates (training) or running statistics (eval).
    pub training: bool,
    /// Sees each block's residual branch after its last batch norm, before the addition (the
    /// paper's Figure 7 measures these responses).
    pub residual_hook: Option<&'a dyn Fn(&Tensor)>,
}

impl Ctx<'_> {
    pub fn train() -> Self {
        Ctx {
            training: true,
            residual_hook: None,
        }
    }

    pub fn eval() -> Self {
        Ctx {
            training: false,
            residual_hook: None,
        }
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
