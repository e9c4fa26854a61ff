//! Small conversions shared by the classes: device names, shapes, counts, paths.
//!
//! Sizes and indices arrive as JS numbers (`f64`) and are checked here before they become
//! `usize`: napi's own `u32` conversion truncates 4.5 to 4 and wraps -4 to 4294967292, so a bad
//! value would otherwise be trained on or reported as a huge number.

use napi::Result;
use resnet_core::Device;

use crate::errors::{invalid, js_error};

/// "cpu", "gpu" or "auto" (the default); core decides what each means and says why on failure.
pub fn parse_device(name: Option<&str>) -> Result<Device> {
    Device::parse(name.unwrap_or("auto")).map_err(js_error)
}

/// The largest size or index accepted (sizes crossed as u32 before; nothing real comes close).
const MAX_DIM: f64 = u32::MAX as f64;

/// A JS number that must be a non-negative integer (a size, an index, a stride), as usize.
/// `what` names the call, `name` the parameter, e.g. `("conv2d", "stride")`.
pub fn count(what: &str, name: &str, value: f64) -> Result<usize> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= MAX_DIM {
        Ok(value as usize)
    } else {
        Err(invalid(format!(
            "{what}: {name} must be a non-negative integer, got {}",
            show_number(value)
        )))
    }
}

/// A shape from JS numbers, every dimension a non-negative integer.
pub fn shape_dims(what: &str, shape: &[f64]) -> Result<Vec<usize>> {
    dims(what, shape, |i| format!("shape[{i}]"))
}

/// An NCHW shape from JS numbers: four non-negative integers.
pub fn shape4(what: &str, shape: &[f64]) -> Result<[usize; 4]> {
    if shape.len() != 4 {
        return Err(invalid(format!(
            "{what}: shape must be [N, C, H, W] (4 numbers), got {}",
            show_list(shape)
        )));
    }
    const NAMES: [&str; 4] = ["N, the batch size", "C", "H", "W"];
    let d = dims(what, shape, |i| format!("shape[{i}] ({})", NAMES[i]))?;
    Ok([d[0], d[1], d[2], d[3]])
}

/// Every dimension a count; `label(i)` names dimension i in the message.
fn dims(what: &str, shape: &[f64], label: impl Fn(usize) -> String) -> Result<Vec<usize>> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &d)| count(what, &label(i), d))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| invalid(format!("{} (shape {})", e.reason, show_list(shape))))
}

/// Indices into a collection of `len` items: integers in [0, len). `holds` says what the
/// collection holds, for the message: "the dataset has 2 samples".
pub fn indices(what: &str, values: &[f64], len: usize, holds: &str) -> Result<Vec<usize>> {
    values
        .iter()
        .enumerate()
        .map(|(at, &v)| {
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < len as f64 {
                Ok(v as usize)
            } else if v.is_finite() && v.fract() == 0.0 && v >= 0.0 {
                Err(invalid(format!(
                    "{what}: index {v} at position {at} is out of range ({holds})"
                )))
            } else {
                Err(invalid(format!(
                    "{what}: indices must be integers in [0, {len}), got {} at position {at}",
                    show_number(v)
                )))
            }
        })
        .collect()
}

pub fn shape_u32(shape: &[usize]) -> Vec<u32> {
    shape.iter().map(|&d| d as u32).collect()
}

/// A JS number as JS prints it (4.5, -4, NaN, Infinity), not Rust's `inf`.
pub fn show_number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v}")
    }
}

fn show_list(values: &[f64]) -> String {
    format!(
        "[{}]",
        values.iter().map(|&v| show_number(v)).collect::<Vec<_>>().join(", ")
    )
}

/// A seed from a JS number: a non-negative integer up to 2^53 (beyond it a JS number no longer
/// holds every integer, so two different seeds could silently be the same). `name` leads the
/// message: "seed", "loader seed".
pub fn parse_seed(name: &str, seed: Option<f64>) -> Result<u64> {
    let s = seed.unwrap_or(0.0);
    if !(s.is_finite() && s >= 0.0 && s.fract() == 0.0 && s <= 9_007_199_254_740_992.0) {
        return Err(invalid(format!(
            "{name} must be a non-negative integer, got {}",
            show_number(s)
        )));
    }
    Ok(s as u64)
}
