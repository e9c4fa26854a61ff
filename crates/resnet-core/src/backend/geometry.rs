//! Shape arithmetic of convolution and pooling, shared by every backend and by the FLOP counter.

use crate::error::{Error, Result};

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
        })
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
