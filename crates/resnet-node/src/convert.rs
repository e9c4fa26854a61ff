//! Small conversions shared by the classes: device names, shapes, paths.

use napi::Result;
use resnet_core::Device;

use crate::errors::{invalid, js_error};

/// "cpu", "gpu" or "auto" (the default); core decides what each means and says why on failure.
pub fn parse_device(name: Option<&str>) -> Result<Device> {
    Device::parse(name.unwrap_or("auto")).map_err(js_error)
}

/// An NCHW shape from JS numbers, checked to have four dimensions.
pub fn shape4(what: &str, shape: &[u32]) -> Result<[usize; 4]> {
    match shape {
        [n, c, h, w] => Ok([*n as usize, *c as usize, *h as usize, *w as usize]),
        _ => Err(invalid(format!(
            "{what}: shape must be [N, C, H, W] (4 numbers), got {shape:?}"
        ))),
    }
}

pub fn shape_usize(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

pub fn shape_u32(shape: &[usize]) -> Vec<u32> {
    shape.iter().map(|&d| d as u32).collect()
}
