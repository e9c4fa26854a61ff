//! Shape arithmetic and operand layouts of the kernels, shared by every backend and by the FLOP
//! counter. Named fields instead of loose integers, so two dimensions cannot be swapped silently.

use crate::error::{Error, Result};
use crate::precision::Precision;

/// Everything a convolution kernel needs to know about its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
    /// The GEMM's operand precision (`Mixed`: f16 operands, f32 sums).
    pub precision: Precision,
}

impl ConvGeometry {
    /// From an NCHW input shape and an OIHW weight shape; fails with both shapes named.
    pub fn new(x: &[usize], w: &[usize], stride: usize, padding: usize) -> Result<Self> {
        if x.len() != 4 || w.len() != 4 {
            return Err(Error::shape(
                "conv2d",
                format!("expected a 4-d NCHW input and a 4-d OIHW weight, got input {x:?} and weight {w:?}"),
            ));
        }
        if stride == 0 {
            return Err(Error::invalid("conv2d: stride must be at least 1"));
        }
        if x[1] != w[1] {
            return Err(Error::shape(
                "conv2d",
                format!("input {x:?} has {} channels but weight {w:?} expects {}", x[1], w[1]),
            ));
        }
        let (h, wd, kh, kw) = (x[2], x[3], w[2], w[3]);
        if h + 2 * padding < kh || wd + 2 * padding < kw {
            return Err(Error::shape(
                "conv2d",
                format!("kernel {kh}x{kw} is larger than the padded input {x:?} (padding {padding})"),
            ));
        }
        Ok(ConvGeometry {
            n: x[0],
            c_in: x[1],
            h,
            w: wd,
            c_out: w[0],
            kh,
            kw,
            stride,
            padding,
            oh: (h + 2 * padding - kh) / stride + 1,
            ow: (wd + 2 * padding - kw) / stride + 1,
            precision: Precision::Fp32,
        })
    }

    /// Checks the lengths of an epilogue's bias ([c_out]) and residual (the output's shape): the
    /// kernels index both by the geometry, so a mismatch must be an error, not a stray access.
    pub fn check_epilogue(&self, bias: Option<usize>, residual: Option<usize>) -> Result<()> {
        let out_len = self.n * self.c_out * self.oh * self.ow;
        if bias.is_some_and(|b| b != self.c_out) || residual.is_some_and(|r| r != out_len) {
            return Err(Error::Internal(format!(
                "conv2d: bias of {bias:?} values (want {}), residual of {residual:?} (want {out_len})",
                self.c_out
            )));
        }
        Ok(())
    }

    /// The same convolution computed in `precision`.
    pub fn with_precision(self, precision: Precision) -> Self {
        ConvGeometry { precision, ..self }
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.oh, self.ow]
    }

    /// Multiply-adds of the forward pass (the paper's FLOPs).
    pub fn macs(&self) -> u64 {
        (self.n * self.c_out * self.oh * self.ow * self.c_in * self.kh * self.kw) as u64
    }

    /// A 1x1, stride-1, unpadded convolution is a plain GEMM over the input as it lies.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// The output seen per channel (the bias gradient sums over it).
    pub fn out_layout(&self) -> ChannelLayout {
        ChannelLayout {
            n: self.n,
            c: self.c_out,
            hw: self.oh * self.ow,
        }
    }
}

/// Max pooling with a square window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeometry {
    pub fn new(x: &[usize], kernel: usize, stride: usize, padding: usize) -> Result<Self> {
        if x.len() != 4 {
            return Err(Error::shape(
                "max_pool2d",
                format!("expected a 4-d NCHW input, got {x:?}"),
            ));
        }
        if kernel == 0 || stride == 0 {
            return Err(Error::invalid("max_pool2d: kernel and stride must be at least 1"));
        }
        if 2 * padding > kernel {
            return Err(Error::invalid(format!(
                "max_pool2d: padding {padding} must be at most half the kernel size {kernel}"
            )));
        }
        if x[2] + 2 * padding < kernel || x[3] + 2 * padding < kernel {
            return Err(Error::shape(
                "max_pool2d",
                format!("window {kernel} is larger than the padded input {x:?}"),
            ));
        }
        Ok(PoolGeometry {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            kernel,
            stride,
            padding,
            oh: (x[2] + 2 * padding - kernel) / stride + 1,
            ow: (x[3] + 2 * padding - kernel) / stride + 1,
        })
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.oh, self.ow]
    }
}

/// An NCHW tensor seen per channel: batch norm, the bias gradient and global average pooling
/// reduce over `n` and `hw` for each of the `c` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLayout {
    pub n: usize,
    pub c: usize,
    /// Height times width: the per-channel plane.
    pub hw: usize,
}

impl ChannelLayout {
    /// From an NCHW shape; `op` names the caller in the error.
    pub fn of_nchw(op: &'static str, shape: &[usize]) -> Result<Self> {
        match *shape {
            [n, c, h, w] => Ok(ChannelLayout { n, c, hw: h * w }),
            _ => Err(Error::shape(
                op,
                format!("expected an NCHW input of rank 4, got shape {shape:?}"),
            )),
        }
    }

    /// Values per channel: what batch statistics average over.
    pub fn per_channel(&self) -> usize {
        self.n * self.hw
    }

    pub fn len(&self) -> usize {
        self.n * self.c * self.hw
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The option-A shortcut: `x[:, :, ::stride, ::stride]` zero-padded from `c_in` to `c_out`
/// channels, `pad_before` zero channels first and the rest after. Built only by [`Self::new`], so
/// the derived fields always agree with the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortcutGeometry {
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub pad_before: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ShortcutGeometry {
    /// From the NCHW input shape; the channel padding is split evenly before and after, as the
    /// common CIFAR implementations do.
    pub fn new(x: &[usize], c_out: usize, stride: usize) -> Result<Self> {
        let [n, c_in, h, w] = *x else {
            return Err(Error::shape(
                "shortcut_a",
                format!("expected an NCHW input of rank 4, got shape {x:?}"),
            ));
        };
        if c_out < c_in || stride == 0 {
            return Err(Error::shape(
                "shortcut_a",
                format!("cannot map input {x:?} to {c_out} channels with stride {stride}"),
            ));
        }
        Ok(ShortcutGeometry {
            n,
            c_in,
            c_out,
            h,
            w,
            stride,
            pad_before: (c_out - c_in) / 2,
            oh: h.div_ceil(stride),
            ow: w.div_ceil(stride),
        })
    }

    pub fn in_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }

    pub fn out_len(&self) -> usize {
        self.n * self.c_out * self.oh * self.ow
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.oh, self.ow]
    }
}

/// Row-major `C[m, n] = op(A) op(B)`, `op(A)` being [m, k] and `op(B)` [k, n]; a transposed
/// operand is stored as its transpose ([k, m] for A, [n, k] for B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulGeometry {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub transpose_a: bool,
    pub transpose_b: bool,
    /// The GEMM's operand precision (`Mixed`: f16 operands, f32 sums).
    pub precision: Precision,
}

/// A row-major matrix of `rows` x `cols` (dense layers' activations and their gradients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    pub rows: usize,
    pub cols: usize,
}

/// Logits of a classifier, [n, classes] row-major, with one label per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogitsLayout {
    pub n: usize,
    pub classes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcut_geometry_derives_padding_and_output_size() {
        let g = ShortcutGeometry::new(&[2, 16, 7, 9], 32, 2).unwrap();
        assert_eq!((g.c_in, g.c_out, g.pad_before), (16, 32, 8));
        assert_eq!(g.out_shape(), [2, 32, 4, 5]);
        assert_eq!((g.in_len(), g.out_len()), (2 * 16 * 63, 2 * 32 * 20));
        // An odd channel difference puts the extra zero channel after the input's.
        assert_eq!(ShortcutGeometry::new(&[1, 3, 4, 4], 8, 1).unwrap().pad_before, 2);
    }

    #[test]
    fn shortcut_geometry_rejects_what_it_cannot_map() {
        // Fewer output than input channels: what c_in and c_out swapped would ask for.
        let err = ShortcutGeometry::new(&[2, 32, 8, 8], 16, 2).unwrap_err().to_string();
        assert!(err.contains("shortcut_a") && err.contains("16 channels"), "{err}");
        assert!(ShortcutGeometry::new(&[2, 16, 8, 8], 32, 0).is_err());
        assert!(ShortcutGeometry::new(&[16, 8, 8], 32, 2).is_err());
    }

    #[test]
    fn channel_layout_reads_an_nchw_shape() {
        let l = ChannelLayout::of_nchw("op", &[4, 3, 5, 6]).unwrap();
        assert_eq!(l, ChannelLayout { n: 4, c: 3, hw: 30 });
        assert_eq!((l.per_channel(), l.len()), (120, 360));
        let err = ChannelLayout::of_nchw("batch_norm2d", &[4, 3]).unwrap_err().to_string();
        assert!(err.contains("batch_norm2d") && err.contains("[4, 3]"), "{err}");
    }

    #[test]
    fn conv_output_layout_is_per_output_channel() {
        let g = ConvGeometry::new(&[2, 3, 8, 8], &[5, 3, 3, 3], 2, 1).unwrap();
        assert_eq!(g.out_layout(), ChannelLayout { n: 2, c: 5, hw: 16 });
    }
}
