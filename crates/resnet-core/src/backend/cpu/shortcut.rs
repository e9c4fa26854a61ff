//! The paper's option-A shortcut on the CPU (stride, zero-padded channels) and its adjoint, one
//! (image, channel) plane per task. Both directions walk the same plane and pixel correspondence.

use super::buffers::CpuBuffer;
use crate::backend::ShortcutGeometry;
use crate::error::Result;
use rayon::prelude::*;

/// Within a plane, each (input pixel, output pixel) pair: the output samples every `stride`-th
/// input row and column.
fn strided_pixels(g: &ShortcutGeometry) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..g.oh).flat_map(move |oy| (0..g.ow).map(move |ox| (oy * g.stride * g.w + ox * g.stride, oy * g.ow + ox)))
}

/// [n, c_in, h, w] -> [n, c_out, oh, ow]; the padded channels stay zero.
pub fn forward(x: &[f32], g: &ShortcutGeometry) -> Result<CpuBuffer> {
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let mut y = CpuBuffer::try_zeroed(g.out_len())?;
    y.par_chunks_mut(out_plane).enumerate().for_each(|(p, yp)| {
        let (i, co) = (p / g.c_out, p % g.c_out);
        if co < g.pad_before || co >= g.pad_before + g.c_in {
            return;
        }
        let src = &x[(i * g.c_in + co - g.pad_before) * in_plane..][..in_plane];
        for (from, to) in strided_pixels(g) {
            yp[to] = src[from];
        }
    });
    Ok(y)
}

/// The adjoint: each input pixel the forward sampled gets its output's gradient, the rest zero.
pub fn backward(gy: &[f32], g: &ShortcutGeometry) -> Result<CpuBuffer> {
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    let mut gx = CpuBuffer::try_zeroed(g.in_len())?;
    gx.par_chunks_mut(in_plane).enumerate().for_each(|(p, gp)| {
        let (i, ci) = (p / g.c_in, p % g.c_in);
        let src = &gy[(i * g.c_out + ci + g.pad_before) * out_plane..][..out_plane];
        for (to, from) in strided_pixels(g) {
            gp[to] = src[from];
        }
    });
    Ok(gx)
}
