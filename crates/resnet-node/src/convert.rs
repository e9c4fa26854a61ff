//! Small conversions shared by the classes: device names, shapes, paths.

use napi::Result;
use resnet_core::Device;

use crate::errors::{invalid, js_error};

/// "cpu" and "auto" run on the CPU (the only backend in this build); "gpu" is an error saying so.
pub fn parse_device(name: Option<&str>) -> Result<Device> {
    match name.unwrap_or("auto") {
        "cpu" | "auto" => Ok(Device::Cpu),
        "gpu" => Err(js_error(resnet_core::Error::Device(
            "no GPU backend in this build; use device 'cpu' or 'auto'".into(),
        ))),
        other => Err(invalid(format!("unknown device '{other}' (expected 'cpu', 'gpu' or 'auto')"))),
    }
}

/// An NCHW shape from JS numbers, checked to have four dimensions.
pub fn shape4(what: &str, shape: &[u32]) -> Result<[usize; 4]> {
    match shape {
        [n, c, h, w] => Ok([*n as usize, *c as usize, *h as usize, *w as usize]),
        _ => Err(invalid(format!("{what}: shape must be [N, C, H, W] (4 numbers), got {shape:?}"))),
    }
}

pub fn shape_usize(shape: &[u32]) -> Vec<usize> {
    shape.iter().map(|&d| d as usize).collect()
}

pub fn shape_u32(shape: &[usize]) -> Vec<u32> {
    shape.iter().map(|&d| d as u32).collect()
}
