//! What a network needs in memory, computed from its spec alone: no tensor is built and the work
//! is one step per stage, not per block (the blocks after the first of a stage all have the same
//! shapes), so a ResNet-999998 is sized as fast as a ResNet-20. The model checks these figures
//! against what the device has before it allocates ([`crate::model::Model::new`] and every batch).
//!
//! Parameters are counted exactly (`Model::num_parameters` equals [`Footprint::parameters`]; a
//! test holds them together for every family). Activations are an estimate of the peak of one
//! pass, per image, from the layer shapes and how the forward pass records its ops:
//!
//! - training: every op's output is kept on the tape until backward reaches it (two tensors a
//!   convolution: its output, which batch norm saves, and the fused batch norm + activation's
//!   output, which the next layer saves; the shortcut's tensors; the input), plus four tensors of
//!   the largest layer for the gradients in flight during backward. The training step's backward
//!   frees each activation once its last gradient is computed, so the real peak is lower (the
//!   largest layers' gradients come last, when most of the tape is gone): an upper bound;
//! - evaluation (no tape): five tensors of the largest layer alive at once, plus the input.
//!
//! Measured against the GPU pool's peak (tests/memory.rs) the training estimate is within a few
//! tens of percent; it is meant to refuse what clearly cannot fit, and allocation failures
//! below it are errors too (see [`crate::memory`]).

use super::spec::{BlockKind, BottleneckStride, ResNetSpec, ShortcutOption, Stem};
use super::BOTTLENECK_EXPANSION;
use serde::Serialize;

/// Sizes from a spec, in values (f32: four bytes each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Footprint {
    /// Trainable values: weights and biases (`Model::num_parameters`).
    pub parameters: u64,
    /// Batch-norm running statistics.
    pub buffers: u64,
    /// The largest single parameter tensor.
    pub largest_parameter: u64,
}

/// Activation sizes for one image of a given size, in values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activations {
    /// Held at the peak of a training step (forward, loss, backward).
    pub training: u64,
    /// Held at the peak of an evaluation pass (predict, evaluate).
    pub eval: u64,
    /// The largest single activation tensor (the largest tensor a batch makes is this times N).
    pub largest: u64,
    /// The largest convolution patch matrix (im2col): the CPU's per-thread scratch.
    pub largest_patches: u64,
}

/// Bytes per value.
pub const F32: u64 = 4;

impl Footprint {
    /// Counts the parameters and buffers of `spec` without building it.
    pub fn of(spec: &ResNetSpec) -> Footprint {
        let w = walk(spec, 1, 1);
        Footprint {
            parameters: w.params,
            buffers: w.buffers,
            largest_parameter: w.largest_param,
        }
    }

    /// Bytes a trained model holds: weights, their gradients and momentum buffers, and the
    /// running statistics.
    pub fn training_state_bytes(&self) -> u64 {
        F32.saturating_mul(self.parameters.saturating_mul(3).saturating_add(self.buffers))
    }
}

impl Activations {
    /// Activation sizes of `spec` for one `h` x `w` image.
    pub fn of(spec: &ResNetSpec, h: usize, w: usize) -> Activations {
        let walk = walk(spec, h as u64, w as u64);
        let input = (spec.in_channels as u64)
            .saturating_mul(h as u64)
            .saturating_mul(w as u64);
        Activations {
            training: walk.retained.saturating_add(walk.largest_act.saturating_mul(4)),
            eval: input.saturating_add(walk.largest_act.saturating_mul(5)),
            largest: walk.largest_act,
            largest_patches: walk.largest_patches,
        }
    }
}

/// Running totals of one walk through the architecture (saturating: absurd specs stay finite).
#[derive(Default)]
struct Walk {
    params: u64,
    buffers: u64,
    largest_param: u64,
    /// Values the training tape keeps for one image.
    retained: u64,
    largest_act: u64,
    largest_patches: u64,
}

/// A feature map: channels, height, width.
#[derive(Clone, Copy)]
struct Map {
    c: u64,
    h: u64,
    w: u64,
}

impl Map {
    fn numel(self) -> u64 {
        self.c.saturating_mul(self.h).saturating_mul(self.w)
    }
}

fn out_dim(x: u64, k: u64, s: u64, p: u64) -> u64 {
    let padded = x.saturating_add(p.saturating_mul(2));
    if padded < k {
        0
    } else {
        (padded - k) / s.max(1) + 1
    }
}

impl Walk {
    /// One bias-free convolution: its weight, and its output map (counted as the largest
    /// activation where it is, but not retained: the caller says what the tape keeps).
    fn conv(&mut self, x: Map, c_out: u64, k: u64, s: u64, p: u64) -> Map {
        let weight = c_out.saturating_mul(x.c).saturating_mul(k * k);
        self.params = self.params.saturating_add(weight);
        self.largest_param = self.largest_param.max(weight);
        let y = Map {
            c: c_out,
            h: out_dim(x.h, k, s, p),
            w: out_dim(x.w, k, s, p),
        };
        self.seen(y.numel());
        let patches = x.c.saturating_mul(k * k).saturating_mul(y.h).saturating_mul(y.w);
        self.largest_patches = self.largest_patches.max(patches);
        y
    }

    fn bn(&mut self, c: u64) {
        self.params = self.params.saturating_add(2 * c);
        self.buffers = self.buffers.saturating_add(2 * c);
    }

    fn seen(&mut self, values: u64) {
        self.largest_act = self.largest_act.max(values);
    }

    fn keep(&mut self, values: u64) {
        self.retained = self.retained.saturating_add(values);
    }

    /// The totals of `f` run on a scratch walk, so a block can be counted once and multiplied.
    fn measure(&mut self, f: impl FnOnce(&mut Walk) -> Map) -> (Walk, Map) {
        let mut w = Walk::default();
        let out = f(&mut w);
        (w, out)
    }

    fn add_times(&mut self, w: &Walk, times: u64) {
        self.params = self.params.saturating_add(w.params.saturating_mul(times));
        self.buffers = self.buffers.saturating_add(w.buffers.saturating_mul(times));
        self.retained = self.retained.saturating_add(w.retained.saturating_mul(times));
        if times > 0 {
            self.largest_param = self.largest_param.max(w.largest_param);
            self.largest_act = self.largest_act.max(w.largest_act);
            self.largest_patches = self.largest_patches.max(w.largest_patches);
        }
    }
}

struct BlockShape {
    kind: BlockKind,
    width: u64,
    stride: u64,
    /// Pre-activation, first block after an ImageNet stem: no bn1/activation before conv1.
    skip_first_bn: bool,
}

/// One residual block (as `nn::blocks::Block::new` builds it and `forward` records it).
fn block(wk: &mut Walk, spec: &ResNetSpec, x: Map, b: &BlockShape) -> Map {
    let w = b.width;
    // (c_out, kernel, stride, padding) of each convolution.
    let layout: Vec<(u64, u64, u64, u64)> = match b.kind {
        BlockKind::Basic => vec![(w, 3, b.stride, 1), (w, 3, 1, 1)],
        BlockKind::Bottleneck => {
            let (s1, s3) = match spec.bottleneck_stride {
                BottleneckStride::Conv1x1 => (b.stride, 1),
                BottleneckStride::Conv3x3 => (1, b.stride),
            };
            vec![
                (w, 1, s1, 0),
                (w, 3, s3, 1),
                (w.saturating_mul(BOTTLENECK_EXPANSION as u64), 1, 1, 0),
            ]
        }
    };
    let mut y = x;
    for (i, &(c_out, k, s, p)) in layout.iter().enumerate() {
        if spec.pre_activation {
            // [bn +] act before the convolution: its output is kept (the convolution's input).
            if !(i == 0 && b.skip_first_bn) {
                if spec.batch_norm {
                    wk.bn(y.c);
                }
                wk.keep(y.numel());
            }
            y = wk.conv(y, c_out, k, s, p);
            wk.keep(y.numel());
        } else {
            // conv, then [bn +] act (or the join): the convolution's output and the result.
            y = wk.conv(y, c_out, k, s, p);
            if spec.batch_norm {
                wk.bn(c_out);
            }
            wk.keep(y.numel().saturating_mul(2));
        }
    }
    let changes = b.stride != 1 || x.c != y.c;
    let shortcut = match (spec.plain, spec.shortcut, changes) {
        (true, _, _) => None,
        (false, ShortcutOption::A, true) => {
            wk.keep(y.numel()); // the subsampled, zero-padded copy
            Some(())
        }
        (false, ShortcutOption::C, _) | (false, ShortcutOption::B, true) => {
            let z = wk.conv(x, y.c, 1, b.stride, 0);
            wk.keep(z.numel());
            if !spec.pre_activation && spec.batch_norm {
                wk.bn(y.c);
                wk.keep(z.numel()); // the projection's (unfused) batch-norm output
            }
            Some(())
        }
        (false, _, false) => Some(()),
    };
    if spec.pre_activation && shortcut.is_some() {
        wk.keep(y.numel()); // the addition
    }
    y
}

fn walk(spec: &ResNetSpec, h: u64, w: u64) -> Walk {
    let mut wk = Walk::default();
    let input = Map {
        c: spec.in_channels as u64,
        h,
        w,
    };
    wk.keep(input.numel());
    let (k, s, p) = match spec.stem {
        Stem::Cifar => (3, 1, 1),
        Stem::Imagenet => (7, 2, 3),
    };
    let mut x = wk.conv(input, spec.stem_width as u64, k, s, p);
    wk.keep(x.numel());
    let bare_stem = spec.pre_activation && spec.stem == Stem::Cifar;
    if spec.batch_norm && !bare_stem {
        wk.bn(x.c);
    }
    if !bare_stem {
        wk.keep(x.numel()); // [bn +] act
    }
    if spec.stem == Stem::Imagenet {
        x = Map {
            c: x.c,
            h: out_dim(x.h, 3, 2, 1),
            w: out_dim(x.w, 3, 2, 1),
        };
        wk.seen(x.numel());
        wk.keep(x.numel());
    }
    for (i, st) in spec.stages.iter().enumerate() {
        if st.count == 0 {
            continue;
        }
        let first = BlockShape {
            kind: st.block,
            width: st.width as u64,
            stride: st.stride as u64,
            skip_first_bn: spec.pre_activation && spec.stem == Stem::Imagenet && i == 0,
        };
        x = block(&mut wk, spec, x, &first);
        if st.count > 1 {
            let rest = BlockShape {
                stride: 1,
                skip_first_bn: false,
                ..first
            };
            let (one, out) = wk.measure(|w| block(w, spec, x, &rest));
            wk.add_times(&one, st.count as u64 - 1);
            x = out;
        }
    }
    if spec.pre_activation {
        if spec.batch_norm {
            wk.bn(x.c);
        }
        wk.keep(x.numel()); // the final [bn +] act
    }
    let classes = spec.num_classes as u64;
    let fc = classes.saturating_mul(x.c);
    wk.params = wk.params.saturating_add(fc).saturating_add(classes);
    wk.largest_param = wk.largest_param.max(fc);
    wk.keep(x.c.saturating_add(classes.saturating_mul(3))); // pooled features, logits, softmax
    wk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_layers_are_counted_without_building_them() {
        let spec = ResNetSpec::cifar(999_998, ShortcutOption::A, false, 3, 10).unwrap();
        let t = std::time::Instant::now();
        let f = Footprint::of(&spec);
        let a = Activations::of(&spec, 32, 32);
        assert!(t.elapsed().as_millis() < 100, "{:?}", t.elapsed());
        // 166,666 blocks a stage: 2 x 9 x (16^2 + 32^2 + 64^2) weights a block and change.
        assert!(f.parameters > 16_100_000_000 && f.parameters < 16_300_000_000, "{f:?}");
        assert!(f.training_state_bytes() > 180 << 30, "{f:?}");
        assert!(a.training > a.eval && a.largest == 16 * 32 * 32, "{a:?}");
    }
}
