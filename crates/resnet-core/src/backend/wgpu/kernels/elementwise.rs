//! Launchers of elementwise.wgsl: one element a thread (fill, copy, add, scale, activations and
//! their gradients, a row bias).

use super::{read, read_write, to_u32, uniform, Family, WG};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::backend::Activation;
use crate::error::{Error, Result};

uniform! {
    pub struct ElementwiseParams {
        len: u32,
        /// The activation: 0 relu, 1 tanh, 2 sigmoid.
        op: u32,
        /// The scale factor, or the fill value.
        alpha: f32,
        /// Columns of `add_row_bias` (1 elsewhere, so no kernel can divide by zero).
        cols: u32,
    }
}

pub(super) static ELEMENTWISE: Family<ElementwiseParams> = Family::new(
    "elementwise",
    &[("WG", WG)],
    &[read("a"), read("b"), read_write("y")],
    &[super::PRELUDE, super::ACTIVATION, include_str!("elementwise.wgsl")],
);

pub(super) fn activation_code(act: Activation) -> u32 {
    match act {
        Activation::Relu => 0,
        Activation::Tanh => 1,
        Activation::Sigmoid => 2,
    }
}

/// What a fused kernel does to its value before storing it: add a residual (of the output's
/// length), then apply an activation. Batch norm's apply and the split-K sum take it.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub residual: Option<&'a GpuStorage>,
    pub act: Option<Activation>,
}

impl Epilogue<'_> {
    pub fn is_empty(&self) -> bool {
        self.residual.is_none() && self.act.is_none()
    }
}

/// An optional activation as a fused kernel's parameter: 0 none, else 1 + its code.
pub(super) fn fused_act_code(act: Option<Activation>) -> u32 {
    act.map_or(0, |a| 1 + activation_code(a))
}

fn params(len: usize, op: u32, alpha: f32) -> Result<ElementwiseParams> {
    Ok(ElementwiseParams {
        len: to_u32(len)?,
        op,
        alpha,
        cols: 1,
    })
}

/// `y = value` everywhere.
pub fn fill(ctx: &GpuContext, y: &GpuStorage, value: f32) -> Result<()> {
    let len = y.len();
    ELEMENTWISE.launch_each(ctx, "fill", &params(len, 0, value)?, &[("y", y)], len)
}

/// A fresh copy of `a` (copy-on-write before an in-place update).
pub fn copy(ctx: &GpuContext, a: &GpuStorage) -> Result<GpuStorage> {
    let len = a.len();
    ELEMENTWISE.launch_into(ctx, "copy", &params(len, 0, 0.0)?, &[("a", a)], "y", len)
}

/// `entry` over `a` (and `b`, of the same length), into a fresh output.
fn map(
    ctx: &GpuContext,
    entry: &'static str,
    p: ElementwiseParams,
    a: &GpuStorage,
    b: Option<&GpuStorage>,
) -> Result<GpuStorage> {
    let len = a.len();
    if let Some(b) = b.filter(|b| b.len() != len) {
        return Err(Error::Internal(format!(
            "elementwise op on {len} and {} values",
            b.len()
        )));
    }
    let mut inputs = vec![("a", a)];
    inputs.extend(b.map(|b| ("b", b)));
    ELEMENTWISE.launch_into(ctx, entry, &p, &inputs, "y", len)
}

pub fn add(ctx: &GpuContext, a: &GpuStorage, b: &GpuStorage) -> Result<GpuStorage> {
    map(ctx, "add", params(a.len(), 0, 0.0)?, a, Some(b))
}

/// `act(a + b)` in one pass.
pub fn add_activation(ctx: &GpuContext, a: &GpuStorage, b: &GpuStorage, act: Activation) -> Result<GpuStorage> {
    map(
        ctx,
        "add_activation",
        params(a.len(), activation_code(act), 0.0)?,
        a,
        Some(b),
    )
}

pub fn scale(ctx: &GpuContext, a: &GpuStorage, alpha: f32) -> Result<GpuStorage> {
    map(ctx, "scale", params(a.len(), 0, alpha)?, a, None)
}

pub fn activation(ctx: &GpuContext, x: &GpuStorage, act: Activation) -> Result<GpuStorage> {
    map(ctx, "activation", params(x.len(), activation_code(act), 0.0)?, x, None)
}

/// The input gradient of `act` from its output `y` and the output's gradient `gy`.
pub fn activation_backward(ctx: &GpuContext, y: &GpuStorage, gy: &GpuStorage, act: Activation) -> Result<GpuStorage> {
    map(
        ctx,
        "activation_backward",
        params(y.len(), activation_code(act), 0.0)?,
        y,
        Some(gy),
    )
}

/// `y[r, c] = x[r, c] + bias[c]`, `cols` columns.
pub fn add_row_bias(ctx: &GpuContext, x: &GpuStorage, bias: &GpuStorage, cols: usize) -> Result<GpuStorage> {
    let len = x.len();
    let p = ElementwiseParams {
        cols: to_u32(cols.max(1))?,
        ..params(len, 0, 0.0)?
    };
    ELEMENTWISE.launch_into(ctx, "add_row_bias", &p, &[("a", x), ("b", bias)], "y", len)
}
