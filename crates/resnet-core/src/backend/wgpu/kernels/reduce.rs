//! Launchers of reduce.wgsl: sums in a fixed order (deterministic), used on their own (`sum_all`,
//! row and channel sums) and after split-K GEMMs; and mixed precision's overflow check.

use super::elementwise::{self, Epilogue};
use super::{output, read, read_write, to_u32, uniform, Family, CHUNK, ITEMS, WG};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::error::{Error, Result};

uniform! {
    pub struct ReduceParams {
        /// Values summed into each output (`sum_leading`), values in all (`sum_chunks`), or
        /// values per channel, N * HW (`channel_sums`).
        len: u32,
        /// Summands per output (`sum_leading`), or chunks (the others).
        count: u32,
        c: u32,
        hw: u32,
        /// `sum_leading_epilogue`'s activation: 0 none, else 1 + its code (`fused_act_code`).
        act: u32,
        /// Whether `sum_leading_epilogue` adds `residual`.
        residual: u32,
    }
}

pub(super) static REDUCE: Family<ReduceParams> = Family::new(
    "reduce",
    &[("WG", WG), ("ITEMS", ITEMS), ("CHUNK", CHUNK)],
    &[read("x"), read("residual"), read_write("out")],
    &[
        super::PRELUDE,
        super::GRID,
        super::ACTIVATION,
        include_str!("reduce.wgsl"),
    ],
);

/// Workgroups of CHUNK values that cover `len` values.
pub fn chunks(len: usize) -> usize {
    (len as u64).div_ceil(CHUNK as u64).max(1) as usize
}

/// `out[i] = sum over s < count of x[s * len + i]`.
pub fn sum_leading(ctx: &GpuContext, x: &GpuStorage, count: usize, len: usize) -> Result<GpuStorage> {
    let p = ReduceParams {
        len: to_u32(len)?,
        count: to_u32(count)?,
        ..ReduceParams::default()
    };
    REDUCE.launch_into(ctx, "sum_leading", &p, &[("x", x)], "out", len)
}

/// [`sum_leading`], then `epilogue` in the same pass: the same values as adding and activating
/// after it, without writing the sum out and reading it back.
pub fn sum_leading_then(
    ctx: &GpuContext,
    x: &GpuStorage,
    count: usize,
    len: usize,
    epilogue: Epilogue,
) -> Result<GpuStorage> {
    if epilogue.is_empty() {
        return sum_leading(ctx, x, count, len);
    }
    if let Some(r) = epilogue.residual.filter(|r| r.len() != len) {
        return Err(Error::Internal(format!(
            "a split-K epilogue's residual has {} values for {len} outputs",
            r.len()
        )));
    }
    let p = ReduceParams {
        len: to_u32(len)?,
        count: to_u32(count)?,
        act: elementwise::fused_act_code(epilogue.act),
        residual: epilogue.residual.is_some() as u32,
        ..ReduceParams::default()
    };
    // Without a residual, x stands in for it (unread): every declared binding must be bound.
    let inputs = [("x", x), ("residual", epilogue.residual.unwrap_or(x))];
    REDUCE.launch_into(ctx, "sum_leading_epilogue", &p, &inputs, "out", len)
}

/// Channel sums of an [n, c, hw] tensor: partial sums per chunk, then over chunks.
pub fn channel_sum(ctx: &GpuContext, x: &GpuStorage, n: usize, c: usize, hw: usize) -> Result<GpuStorage> {
    let count = n * hw;
    let chunks = chunks(count);
    let partial = output(ctx, chunks * c)?;
    let p = ReduceParams {
        len: to_u32(count)?,
        count: to_u32(chunks)?,
        c: to_u32(c)?,
        hw: to_u32(hw)?,
        ..ReduceParams::default()
    };
    REDUCE.launch(
        ctx,
        "channel_sums",
        &p,
        &[("x", x), ("out", &partial)],
        (chunks * c) as u64,
    )?;
    sum_leading(ctx, &partial, chunks, c)
}

/// The sum of every value, as one value: chunk sums, repeated until one is left.
pub fn sum_all(ctx: &GpuContext, x: &GpuStorage) -> Result<GpuStorage> {
    let mut cur = x.clone();
    let mut len = cur.len();
    if len == 0 {
        let zero = GpuStorage::alloc(1)?;
        elementwise::fill(ctx, &zero, 0.0)?;
        return Ok(zero);
    }
    loop {
        let groups = chunks(len);
        let out = output(ctx, groups)?;
        let p = ReduceParams {
            len: to_u32(len)?,
            count: to_u32(groups)?,
            ..ReduceParams::default()
        };
        REDUCE.launch(ctx, "sum_chunks", &p, &[("x", &cur), ("out", &out)], groups as u64)?;
        if groups == 1 {
            return Ok(out);
        }
        cur = out;
        len = groups;
    }
}

/// One value, finite exactly when every value of every tensor is: zeroed, then one dispatch a
/// tensor that stores any inf or NaN it meets into it. (Summing each tensor and adding the sums
/// took two or three dispatches a tensor, and a sum could overflow where no value did.)
pub fn nonfinite_check(ctx: &GpuContext, tensors: &[&GpuStorage]) -> Result<GpuStorage> {
    let check = output(ctx, 1)?;
    elementwise::fill(ctx, &check, 0.0)?;
    for x in tensors.iter().filter(|x| !x.is_empty()) {
        let groups = chunks(x.len());
        let p = ReduceParams {
            len: to_u32(x.len())?,
            count: to_u32(groups)?,
            ..ReduceParams::default()
        };
        REDUCE.launch(ctx, "flag_nonfinite", &p, &[("x", x), ("out", &check)], groups as u64)?;
    }
    Ok(check)
}
