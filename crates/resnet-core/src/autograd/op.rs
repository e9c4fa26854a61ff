//! What an op remembers for its backward pass: its inputs and whatever it saved.

use crate::backend::{
    Activation, BatchStats, ChannelLayout, ConvGeometry, PoolGeometry, ShortcutGeometry, StatsSource, Storage,
};
use crate::distributed::SyncedBatch;
use crate::precision::Precision;
use crate::tensor::Tensor;

pub enum Op {
    Conv2d {
        x: Tensor,
        w: Tensor,
        bias: Option<Tensor>,
        geometry: ConvGeometry,
    },
    /// Training mode (batch statistics) or eval mode (frozen running statistics).
    BatchNorm {
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        stats: BatchStats,
        source: StatsSource,
        /// Set when the statistics are the global batch's (synchronised batch norm).
        synced: Option<SyncedBatch>,
    },
    /// Batch norm, an optional residual addition and an activation, fused (see `fused::batch_norm_act`).
    BatchNormAct {
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        stats: BatchStats,
        source: StatsSource,
        /// Set when the statistics are the global batch's (synchronised batch norm).
        synced: Option<SyncedBatch>,
        residual: Option<Tensor>,
        act: Activation,
    },
    Activation {
        x: Tensor,
        act: Activation,
    },
    Add {
        a: Tensor,
        b: Tensor,
    },
    AddActivation {
        a: Tensor,
        b: Tensor,
        act: Activation,
    },
    Scale {
        x: Tensor,
        alpha: f32,
    },
    MaxPool2d {
        x: Tensor,
        geometry: PoolGeometry,
    },
    GlobalAvgPool {
        x: Tensor,
        layout: ChannelLayout,
    },
    Linear {
        x: Tensor,
        w: Tensor,
        bias: Option<Tensor>,
        /// The forward GEMM's precision, which the backward GEMMs keep.
        precision: Precision,
    },
    Reshape {
        x: Tensor,
    },
    /// Mean softmax cross-entropy over the batch; `labels` as f32 class indices.
    CrossEntropy {
        logits: Tensor,
        labels: Storage,
        probs: Storage,
    },
    ShortcutA {
        x: Tensor,
        geometry: ShortcutGeometry,
    },
}

impl Op {
    pub fn inputs(&self) -> Vec<&Tensor> {
        match self {
            Op::Conv2d { x, w, bias, .. } | Op::Linear { x, w, bias, .. } => {
                let mut v = vec![x, w];
                v.extend(bias.iter());
                v
            }
            Op::BatchNorm { x, gamma, beta, .. } => vec![x, gamma, beta],
            Op::BatchNormAct {
                x,
                gamma,
                beta,
                residual,
                ..
            } => {
                let mut v = vec![x, gamma, beta];
                v.extend(residual.iter());
                v
            }
            Op::Add { a, b } | Op::AddActivation { a, b, .. } => vec![a, b],
            Op::Activation { x, .. }
            | Op::Scale { x, .. }
            | Op::MaxPool2d { x, .. }
            | Op::GlobalAvgPool { x, .. }
            | Op::Reshape { x }
            | Op::ShortcutA { x, .. } => vec![x],
            Op::CrossEntropy { logits, .. } => vec![logits],
        }
    }
}
