//! Max pooling and global average pooling on the CPU, one (image, channel) plane per task.

use super::buffers::CpuBuffer;
use crate::backend::PoolGeometry;
use crate::error::Result;
use rayon::prelude::*;

/// Index in the plane of each window's maximum (the first one on ties, as PyTorch), or None for a
/// window that lies entirely in the padding.
fn window_argmax(plane: &[f32], g: &PoolGeometry, oy: usize, ox: usize) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for i in 0..g.kernel {
        let iy = (oy * g.stride + i) as isize - g.padding as isize;
        if iy < 0 || iy >= g.h as isize {
            continue;
        }
        for j in 0..g.kernel {
            let ix = (ox * g.stride + j) as isize - g.padding as isize;
            if ix < 0 || ix >= g.w as isize {
                continue;
            }
            let idx = iy as usize * g.w + ix as usize;
            let v = plane[idx];
            match best {
                Some((_, b)) if !(v > b || v.is_nan()) => {}
                _ => best = Some((idx, v)),
            }
        }
    }
    best.map(|(i, _)| i)
}

pub fn max_pool2d(x: &[f32], g: &PoolGeometry) -> Result<CpuBuffer> {
    let (in_hw, out_hw) = (g.h * g.w, g.oh * g.ow);
    let mut y = CpuBuffer::try_uninit(g.n * g.c * out_hw)?;
    y.par_chunks_mut(out_hw).enumerate().for_each(|(p, yp)| {
        let plane = &x[p * in_hw..(p + 1) * in_hw];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                yp[oy * g.ow + ox] = window_argmax(plane, g, oy, ox).map_or(f32::NEG_INFINITY, |i| plane[i]);
            }
        }
    });
    Ok(y)
}

pub fn max_pool2d_backward(x: &[f32], gy: &[f32], g: &PoolGeometry) -> Result<CpuBuffer> {
    let (in_hw, out_hw) = (g.h * g.w, g.oh * g.ow);
    let mut gx = CpuBuffer::try_zeroed(x.len())?;
    gx.par_chunks_mut(in_hw).enumerate().for_each(|(p, gp)| {
        let plane = &x[p * in_hw..(p + 1) * in_hw];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                if let Some(i) = window_argmax(plane, g, oy, ox) {
                    gp[i] += gy[p * out_hw + oy * g.ow + ox];
                }
            }
        }
    });
    Ok(gx)
}

pub fn global_avg_pool(x: &[f32], hw: usize) -> Result<CpuBuffer> {
    let mut y = CpuBuffer::try_uninit(x.len() / hw.max(1))?;
    y.par_iter_mut()
        .zip(x.par_chunks(hw.max(1)))
        .for_each(|(o, p)| *o = (p.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32);
    Ok(y)
}

pub fn global_avg_pool_backward(gy: &[f32], hw: usize) -> Result<CpuBuffer> {
    let mut gx = CpuBuffer::try_uninit(gy.len() * hw)?;
    gx.par_chunks_mut(hw.max(1))
        .zip(gy.par_iter())
        .for_each(|(p, &g)| p.fill(g / hw as f32));
    Ok(gx)
}
