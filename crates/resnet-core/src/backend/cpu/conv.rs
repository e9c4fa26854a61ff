//! Convolution on the CPU: im2col + tuned GEMM for forward, data gradient and weight gradient,
//! with a 1x1 fast path that skips im2col. Images run in parallel (one single-threaded GEMM each)
//! when the batch can fill the cores; otherwise one multi-threaded GEMM per image. The forward
//! pass finishes each GEMM's output with an [`Epilogue`] (bias, residual, activation) while that
//! block is still in cache, instead of further passes over the whole output.

use super::activate;
use super::buffers::CpuBuffer;
use super::gemm::{gemm, MatView, Threads};
use crate::backend::{Activation, ConvGeometry};
use crate::error::{Error, Result};
use crate::memory::{self, try_vec};
use rayon::prelude::*;
use std::ops::Range;

mod direct;
mod phases;

/// The error for per-thread scratch that could not be allocated inside a parallel loop (where the
/// allocation's own error cannot travel): names the bytes one buffer needed.
fn scratch_oom(floats: usize) -> Error {
    memory::host_oom(floats as u64 * 4, "convolution scratch (im2col)")
}

/// Output columns `first..last` whose input column `ox*stride + j - padding` lies inside the image.
fn valid_columns(g: &ConvGeometry, j: usize) -> (usize, usize) {
    super::taps_inside(j, g.stride, g.padding, g.w, g.ow)
}

/// The patch rows of input channels `channels` only, the first of them written to `col`'s row 0.
fn im2col_channels(x: &[f32], g: &ConvGeometry, channels: Range<usize>, col: &mut [f32], ld: usize, offset: usize) {
    if keeps_size(g) {
        return im2col_same_size(x, g, channels, col, ld, offset);
    }
    if phases::suits(g) {
        return phases::im2col(x, g, channels, col, ld, offset);
    }
    im2col_general(x, g, channels, col, ld, offset);
}

/// The patch matrix [c_in*kh*kw, images.len()*oh*ow] of several images side by side (columns
/// `slot*oh*ow..` for `images[slot]`), filled by all cores in blocks of input channels when
/// `threads` is `All`: with one multi-threaded GEMM after it, a serial fill would leave the other
/// cores idle (13% of a ResNet-18 weight gradient on the 4x4 plane).
fn im2col_images(x: &[f32], g: &ConvGeometry, images: Range<usize>, patches: &mut [f32], threads: Threads) {
    let (in_len, hw, taps) = (g.c_in * g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let cols = images.len() * hw;
    let table = gather_table(g);
    let fill = |c0: usize, rows: &mut [f32]| {
        let channels = c0..(c0 + rows.len() / (taps * cols)).min(g.c_in);
        for (slot, i) in images.clone().enumerate() {
            let image = &x[i * in_len..(i + 1) * in_len];
            match &table {
                Some(t) => im2col_gather(image, g, t, channels.clone(), rows, cols, slot * hw),
                None => im2col_channels(image, g, channels.clone(), rows, cols, slot * hw),
            }
        }
    };
    let patches = &mut patches[..patch_len(g) * cols];
    if threads == Threads::Single || rayon::current_num_threads() == 1 || g.c_in < 2 {
        return fill(0, patches);
    }
    let per_task = g.c_in.div_ceil(4 * rayon::current_num_threads()).max(1);
    patches
        .par_chunks_mut(per_task * taps * cols)
        .enumerate()
        .for_each(|(b, rows)| fill(b * per_task, rows));
}

/// Output planes this small (ResNet-18's 7x7 and 4x4 stages) are gathered through a table: the
/// row-wise copies and border fills cost a few calls per row of 4..8 floats, more than the copying.
const GATHER_MAX_OUTPUTS: usize = 64;

/// For each tap (i, j) and output position, the input position it reads, or `h*w` (an appended
/// zero) where it falls in the padding; None where the plane is not small enough to gain.
fn gather_table(g: &ConvGeometry) -> Option<Vec<u32>> {
    let out = g.oh * g.ow;
    if out > GATHER_MAX_OUTPUTS || g.kh * g.kw == 1 {
        return None;
    }
    let zero = (g.h * g.w) as u32;
    let mut table = Vec::with_capacity(g.kh * g.kw * out);
    for i in 0..g.kh {
        for j in 0..g.kw {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let iy = (oy * g.stride + i) as isize - g.padding as isize;
                    let ix = (ox * g.stride + j) as isize - g.padding as isize;
                    let inside = (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix);
                    table.push(if inside {
                        (iy as usize * g.w + ix as usize) as u32
                    } else {
                        zero
                    });
                }
            }
        }
    }
    Some(table)
}

/// `im2col_channels` through a `gather_table`.
fn im2col_gather(
    x: &[f32],
    g: &ConvGeometry,
    table: &[u32],
    channels: Range<usize>,
    col: &mut [f32],
    ld: usize,
    offset: usize,
) {
    let (plane_len, out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut padded = vec![0.0f32; plane_len + 1];
    let c0 = channels.start;
    for c in channels {
        padded[..plane_len].copy_from_slice(&x[c * plane_len..(c + 1) * plane_len]);
        for (t, sources) in table.chunks_exact(out).enumerate() {
            let row = &mut col[((c - c0) * taps + t) * ld + offset..][..out];
            for (o, &src) in row.iter_mut().zip(sources) {
                *o = padded[src as usize];
            }
        }
    }
}

/// Stride 1 with "same" padding: the output plane has the input's size (every 3x3 convolution
/// of a ResNet but the downsampling ones, and the data gradients computed as convolutions).
fn keeps_size(g: &ConvGeometry) -> bool {
    g.stride == 1 && g.oh == g.h && g.ow == g.w
}

/// `im2col` for `keeps_size` geometries. Patch row (c, i, j) is then input plane c shifted by
/// the constant (i - p) * w + (j - p): one long copy, then zeros where the shift crossed the
/// border (whole rows at the top or bottom, one or two columns at the sides). The general path
/// copies row by row, and at CIFAR sizes (rows of 8..32 floats) the per-row calls cost more than
/// the copying.
fn im2col_same_size(x: &[f32], g: &ConvGeometry, channels: Range<usize>, col: &mut [f32], ld: usize, offset: usize) {
    let (h, w) = (g.h, g.w);
    let plane_len = h * w;
    let p = g.padding as isize;
    let c0 = channels.start;
    for c in channels {
        let plane = &x[c * plane_len..(c + 1) * plane_len];
        for i in 0..g.kh {
            let dy = i as isize - p;
            // Output rows whose input row oy + dy lies inside the image.
            let first_row = (-dy).clamp(0, h as isize) as usize;
            let end_row = (h as isize - dy).clamp(first_row as isize, h as isize) as usize;
            for j in 0..g.kw {
                let dx = j as isize - p;
                let row = &mut col[(((c - c0) * g.kh + i) * g.kw + j) * ld + offset..][..plane_len];
                if first_row == end_row || dx.unsigned_abs() >= w {
                    row.fill(0.0);
                    continue;
                }
                let (start, end) = (first_row * w, end_row * w);
                row[..start].fill(0.0);
                row[end..].fill(0.0);
                // out[d] = plane[d + shift] for every valid (row, column); the copy is clamped to
                // the plane, and what it leaves out or wraps into lies in a border column, which
                // is zeroed below.
                let shift = dy * w as isize + dx;
                let lo = (start as isize).max(-shift) as usize;
                let hi = ((end as isize).min(plane_len as isize - shift)).max(lo as isize) as usize;
                row[start..lo].fill(0.0);
                row[hi..end].fill(0.0);
                let src = (lo as isize + shift) as usize;
                row[lo..hi].copy_from_slice(&plane[src..src + (hi - lo)]);
                // Element by element: the border is 1 or 2 floats a row, where a fill is a call.
                let border = dx.unsigned_abs();
                let columns = if dx < 0 { 0..border } else { w - border..w };
                for out in row[start..end].chunks_exact_mut(w) {
                    for x in columns.clone() {
                        out[x] = 0.0;
                    }
                }
            }
        }
    }
}

fn im2col_general(x: &[f32], g: &ConvGeometry, channels: Range<usize>, col: &mut [f32], ld: usize, offset: usize) {
    let (oh, ow) = (g.oh, g.ow);
    let p = g.padding as isize;
    let c0 = channels.start;
    for c in channels {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[(((c - c0) * g.kh + i) * g.kw + j) * ld + offset..][..oh * ow];
                let (first, last) = valid_columns(g, j);
                for (oy, out) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = (oy * g.stride + i) as isize - p;
                    if iy < 0 || iy >= g.h as isize || first == last {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    out[..first].fill(0.0);
                    out[last..].fill(0.0);
                    let start = first * g.stride + j - g.padding;
                    if g.stride == 1 {
                        // Rows are short (8..56 floats): a plain loop beats a memmove call.
                        for (o, v) in out[first..last].iter_mut().zip(&src[start..]) {
                            *o = *v;
                        }
                    } else {
                        for (o, v) in out[first..last].iter_mut().zip(src[start..].iter().step_by(g.stride)) {
                            *o = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Adds the patch matrix back onto one image's gradient (the adjoint of `im2col`).
fn col2im(col: &[f32], g: &ConvGeometry, gx: &mut [f32], ld: usize, offset: usize) {
    if phases::suits(g) {
        return phases::col2im(col, g, gx, ld, offset);
    }
    col2im_rows(col, g, gx, ld, offset);
}

/// `col2im` row by row: a strided scatter where the stride exceeds 1.
fn col2im_rows(col: &[f32], g: &ConvGeometry, gx: &mut [f32], ld: usize, offset: usize) {
    let (oh, ow) = (g.oh, g.ow);
    let p = g.padding as isize;
    for c in 0..g.c_in {
        let plane = &mut gx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &col[((c * g.kh + i) * g.kw + j) * ld + offset..][..oh * ow];
                for oy in 0..oh {
                    let iy = (oy * g.stride + i) as isize - p;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let src = &row[oy * ow..(oy + 1) * ow];
                    let (first, last_excl) = valid_columns(g, j);
                    if first >= last_excl {
                        continue;
                    }
                    let start = first * g.stride + j - g.padding;
                    if g.stride == 1 {
                        let len = last_excl - first;
                        dst[start..start + len]
                            .iter_mut()
                            .zip(&src[first..last_excl])
                            .for_each(|(d, s)| *d += s);
                    } else {
                        for (d, s) in dst[start..].iter_mut().step_by(g.stride).zip(&src[first..last_excl]) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

fn patch_len(g: &ConvGeometry) -> usize {
    g.c_in * g.kh * g.kw
}

/// Runs `per_chunk(index, output_chunk, scratch, threads)` over `out` in chunks of `chunk_len`,
/// in parallel (one scratch buffer of `scratch_len` floats per task) when there are enough chunks
/// to fill the cores, else one after another with multi-threaded GEMMs. Fails, having run none or
/// some of the chunks, when a scratch buffer cannot be allocated.
fn for_each_chunk<F>(out: &mut [f32], chunk_len: usize, scratch_len: usize, per_chunk: F) -> Result<()>
where
    F: Fn(usize, &mut [f32], &mut CpuBuffer, Threads) + Sync + Send,
{
    let chunks = out.len().div_ceil(chunk_len.max(1));
    if chunks >= rayon::current_num_threads() && chunks > 1 {
        out.par_chunks_mut(chunk_len).enumerate().try_for_each_init(
            || CpuBuffer::try_uninit(scratch_len).ok(),
            |scratch, (i, o)| match scratch {
                Some(s) => {
                    per_chunk(i, o, s, Threads::Single);
                    Ok(())
                }
                None => Err(scratch_oom(scratch_len)),
            },
        )
    } else {
        let mut scratch = CpuBuffer::try_uninit(scratch_len)?;
        for (i, o) in out.chunks_mut(chunk_len).enumerate() {
            per_chunk(i, o, &mut scratch, Threads::All);
        }
        Ok(())
    }
}

/// Images that share one GEMM: small feature maps (the last stages) make thin matrices that
/// waste the GEMM's tiles and call overhead, so several images' patches go side by side.
fn images_per_gemm(g: &ConvGeometry) -> usize {
    const MIN_COLUMNS: usize = 512;
    let want = MIN_COLUMNS.div_ceil((g.oh * g.ow).max(1));
    let keep_cores_busy = (g.n / (2 * rayon::current_num_threads())).max(1);
    want.min(keep_cores_busy).max(1)
}

/// What the forward pass applies to each output value as it leaves the GEMM:
/// `act(y + bias[channel] + residual)`, each part optional. With batch norm folded into the
/// weights and bias, this finishes a whole conv-BN-act(-add) chain in one pass over the output.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// [c_out]
    pub bias: Option<&'a [f32]>,
    /// The output's shape, [n, c_out, oh, ow].
    pub residual: Option<&'a [f32]>,
    pub act: Option<Activation>,
}

impl Epilogue<'_> {
    fn is_identity(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && self.act.is_none()
    }

    /// Finishes the outputs of images `first..` (whole images of [c_out, hw]) in place.
    fn apply(&self, out: &mut [f32], g: &ConvGeometry, first: usize) {
        if self.is_identity() {
            return;
        }
        let hw = g.oh * g.ow;
        for (i, img) in out.chunks_exact_mut(g.c_out * hw).enumerate() {
            for (o, row) in img.chunks_exact_mut(hw).enumerate() {
                let b = self.bias.map_or(0.0, |b| b[o]);
                let r = self.residual.map(|r| &r[((first + i) * g.c_out + o) * hw..][..hw]);
                // One monomorphised loop per activation, so each vectorises.
                match self.act {
                    None => finish_row(row, b, r, |v| v),
                    Some(Activation::Relu) => finish_row(row, b, r, |v| activate(v, Activation::Relu)),
                    Some(Activation::Tanh) => finish_row(row, b, r, |v| activate(v, Activation::Tanh)),
                    Some(Activation::Sigmoid) => finish_row(row, b, r, |v| activate(v, Activation::Sigmoid)),
                }
            }
        }
    }
}

/// `row = f(row + b [+ residual])`: the sum in the order the unfused kernels add.
#[inline(always)]
fn finish_row(row: &mut [f32], b: f32, residual: Option<&[f32]>, f: impl Fn(f32) -> f32) {
    match residual {
        None => row.iter_mut().for_each(|v| *v = f(*v + b)),
        Some(r) => row.iter_mut().zip(r).for_each(|(v, &r)| *v = f((*v + b) + r)),
    }
}

/// y[n, c_out, oh*ow] for the images `first..first+count`, written into `out` (that many images)
/// and finished with `epilogue` image by image, while each is still in cache.
#[allow(clippy::too_many_arguments)]
fn forward_group(
    x: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    first: usize,
    out: &mut [f32],
    scratch: &mut CpuBuffer,
    threads: Threads,
    epilogue: &Epilogue,
) {
    let (in_len, hw, k) = (g.c_in * g.h * g.w, g.oh * g.ow, patch_len(g));
    let count = out.len() / (g.c_out * hw);
    let wv = MatView::new(w, g.c_out, k);
    if count == 1 && g.is_pointwise() {
        gemm(
            out,
            wv,
            MatView::new(&x[first * in_len..(first + 1) * in_len], k, hw),
            false,
            threads,
        );
        epilogue.apply(out, g, first);
        return;
    }
    let cols = count * hw;
    let (patches, wide) = scratch.split_at_mut(k * cols);
    im2col_images(x, g, first..first + count, patches, threads);
    if count == 1 {
        gemm(out, wv, MatView::new(patches, k, cols), false, threads);
        epilogue.apply(out, g, first);
        return;
    }
    // [c_out, count*hw] -> count images of [c_out, hw]
    let wide = &mut wide[..g.c_out * cols];
    gemm(wide, wv, MatView::new(patches, k, cols), false, threads);
    for (i, img) in out.chunks_exact_mut(g.c_out * hw).enumerate() {
        for (o, row) in img.chunks_exact_mut(hw).enumerate() {
            row.copy_from_slice(&wide[o * cols + i * hw..][..hw]);
        }
        epilogue.apply(img, g, first + i);
    }
}

/// The forward convolution, each output finished by `epilogue` (see [`Epilogue`]). The caller has
/// checked the bias and residual lengths against `g`.
pub fn forward(x: &[f32], w: &[f32], epilogue: &Epilogue, g: &ConvGeometry) -> Result<CpuBuffer> {
    if direct_allowed() {
        if let Some(y) = direct::forward(x, w, epilogue, g) {
            return y;
        }
    }
    let (out_hw, k) = (g.oh * g.ow, patch_len(g));
    let mut y = CpuBuffer::try_uninit(g.n * g.c_out * out_hw)?;
    if y.is_empty() {
        return Ok(y);
    }
    let group = images_per_gemm(g);
    let cols = group * out_hw;
    let scratch_len = k * cols + if group > 1 { g.c_out * cols } else { 0 };
    let per_group = group * g.c_out * out_hw;
    for_each_chunk(&mut y, per_group, scratch_len, |i, out, scratch, threads| {
        forward_group(x, w, g, i * group, out, scratch, threads, epilogue)
    })?;
    Ok(y)
}

/// Whether the direct AVX-512 kernels take the shapes they suit (for `info`'s CPU report).
pub(crate) fn direct_kernels_active() -> bool {
    direct_allowed() && direct::available()
}

/// `RESNET_WGPU_CPU_CONV=im2col` keeps every convolution on im2col + GEMM: for benchmarking one
/// path against the other in the same build.
fn direct_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var("RESNET_WGPU_CPU_CONV").map_or(true, |v| v != "im2col"))
}

/// For stride 1 the data gradient is itself a convolution: of dy with the kernel flipped and its
/// channels swapped, padded by k-1-p. That runs on the im2col fast path instead of a scatter.
fn backward_data_as_convolution(gy: &[f32], w: &[f32], g: &ConvGeometry) -> Option<Result<CpuBuffer>> {
    if g.stride != 1 || g.kh != g.kw || g.padding >= g.kh || g.is_pointwise() {
        return None;
    }
    let (kh, kw) = (g.kh, g.kw);
    let pad = kh - 1 - g.padding;
    let tg = ConvGeometry::new(&[g.n, g.c_out, g.oh, g.ow], &[g.c_in, g.c_out, kh, kw], 1, pad).ok()?;
    if tg.oh != g.h || tg.ow != g.w {
        return None;
    }
    let mut flipped = match try_vec(w.len(), 0.0f32, "a flipped convolution kernel") {
        Ok(v) => v,
        Err(e) => return Some(Err(e)),
    };
    // Written in order on all cores (ResNet-18's last stage flips 2.4M weights per step).
    let taps = kh * kw;
    flipped
        .par_chunks_mut(g.c_out * taps)
        .enumerate()
        .for_each(|(c, per_input)| {
            for (o, out) in per_input.chunks_exact_mut(taps).enumerate() {
                let src = &w[(o * g.c_in + c) * taps..][..taps];
                for (d, &v) in out.iter_mut().zip(src.iter().rev()) {
                    *d = v;
                }
            }
        });
    Some(forward(gy, &flipped, &Epilogue::default(), &tg))
}

pub fn backward_data(gy: &[f32], w: &[f32], g: &ConvGeometry) -> Result<CpuBuffer> {
    if let Some(gx) = backward_data_as_convolution(gy, w, g) {
        return gx;
    }
    let (in_len, out_hw, k) = (g.c_in * g.h * g.w, g.oh * g.ow, patch_len(g));
    // col2im accumulates, so this one starts from zero.
    let mut gx = CpuBuffer::try_zeroed(g.n * in_len)?;
    if gx.is_empty() {
        return Ok(gx);
    }
    if g.is_pointwise() {
        for_each_chunk(&mut gx, in_len, 0, |i, gxi, _, threads| {
            let gyi = MatView::new(&gy[i * g.c_out * out_hw..(i + 1) * g.c_out * out_hw], g.c_out, out_hw);
            gemm(gxi, MatView::transposed(w, k, g.c_out), gyi, false, threads);
        })?;
        return Ok(gx);
    }
    // Several images' output gradients side by side, as the forward pass does: one image of a
    // downsampling layer's 4x4 or 7x7 output is a GEMM 16 or 49 columns wide.
    let group = images_per_gemm(g);
    let cols = group * out_hw;
    let scratch_len = k * cols + if group > 1 { g.c_out * cols } else { 0 };
    for_each_chunk(&mut gx, group * in_len, scratch_len, |i, gx_group, scratch, threads| {
        let (first, count) = (i * group, gx_group.len() / in_len);
        let cols = count * out_hw;
        let (col, side_by_side) = scratch.split_at_mut(k * cols);
        let gy_group = &gy[first * g.c_out * out_hw..(first + count) * g.c_out * out_hw];
        let gy_view = if count == 1 {
            MatView::new(gy_group, g.c_out, out_hw)
        } else {
            let side_by_side = &mut side_by_side[..g.c_out * cols];
            for (img, planes) in gy_group.chunks_exact(g.c_out * out_hw).enumerate() {
                for (o, plane) in planes.chunks_exact(out_hw).enumerate() {
                    side_by_side[o * cols + img * out_hw..][..out_hw].copy_from_slice(plane);
                }
            }
            MatView::new(side_by_side, g.c_out, cols)
        };
        gemm(col, MatView::transposed(w, k, g.c_out), gy_view, false, threads);
        for (img, gxi) in gx_group.chunks_exact_mut(in_len).enumerate() {
            col2im(col, g, gxi, cols, img * out_hw);
        }
    })?;
    Ok(gx)
}

/// Images per partial weight gradient. Fixed by the batch size alone, so the summation order, and
/// with it every bit of the result, does not depend on how many threads ran.
fn images_per_chunk(n: usize) -> usize {
    n.div_ceil(16).max(4)
}

/// Patch columns one GEMM of the weight gradient takes at most (bounds the scratch memory).
const MAX_WEIGHT_GRAD_COLUMNS: usize = 8192;

/// The weight gradient, `dW[c_out, k] = sum over images of dY[c_out, hw] . P[k, hw]^T`, computed
/// transposed: `dW^T[k, c_out] += P[k, cols] . dY^T[cols, c_out]`, with dY copied in transposed.
/// Both operands then stream along the GEMM's inner dimension the way its packing wants, which
/// measured 2.2-3.2x the one-thread GFLOP/s of the untransposed product on ResNet-20's shapes (AVX-512,
/// `examples/gemm_shapes.rs`); the [k, c_out] result is transposed once at the end.
pub fn backward_weight(x: &[f32], gy: &[f32], g: &ConvGeometry) -> Result<CpuBuffer> {
    if direct_allowed() {
        if let Some(gw) = direct::backward_weight(x, gy, g, images_per_chunk(g.n)) {
            return gw;
        }
    }
    let (hw, k) = (g.oh * g.ow, patch_len(g));
    let w_len = g.c_out * k;
    // A wide layer's partial sums are megabytes each: with a handful of images per chunk, writing
    // and adding them costs more than the products (ResNet-18's 4x4 stage ran at a third of the
    // GEMM's rate). Its whole batch is one chunk of multi-threaded GEMMs instead.
    let chunk = if w_len >= WIDE_WEIGHT_FLOATS {
        g.n.max(1)
    } else {
        images_per_chunk(g.n)
    };
    let chunks = g.n.div_ceil(chunk);
    let per_gemm = (MAX_WEIGHT_GRAD_COLUMNS / hw.max(1)).clamp(1, chunk);
    let threads = if chunks >= rayon::current_num_threads() {
        Threads::Single
    } else {
        Threads::All
    };
    let partial = |c: usize| -> Result<CpuBuffer> {
        let mut gw_t = CpuBuffer::try_uninit(w_len)?;
        let mut patches = CpuBuffer::try_uninit(k * per_gemm * hw)?;
        let mut grads_t = CpuBuffer::try_uninit(per_gemm * hw * g.c_out)?;
        let images = c * chunk..((c + 1) * chunk).min(g.n);
        for (b, first) in images.clone().step_by(per_gemm).enumerate() {
            let batch = first..(first + per_gemm).min(images.end);
            let cols = batch.len() * hw;
            im2col_images(x, g, batch.clone(), &mut patches, threads);
            let transpose_image = |(slot, dst): (usize, &mut [f32])| {
                let i = batch.start + slot;
                transpose_into(&gy[i * g.c_out * hw..(i + 1) * g.c_out * hw], g.c_out, hw, dst);
            };
            let grads_t = &mut grads_t[..cols * g.c_out];
            if threads == Threads::All {
                grads_t
                    .par_chunks_mut(hw * g.c_out)
                    .enumerate()
                    .for_each(transpose_image);
            } else {
                grads_t.chunks_mut(hw * g.c_out).enumerate().for_each(transpose_image);
            }
            gemm(
                &mut gw_t,
                MatView::new(&patches[..k * cols], k, cols),
                MatView::new(grads_t, cols, g.c_out),
                b > 0,
                threads,
            );
        }
        Ok(gw_t)
    };
    let gw_t = sum_in_chunk_order(chunks, threads == Threads::Single, w_len, partial)?;
    let mut gw = CpuBuffer::try_uninit(w_len)?;
    transpose_into_par(&gw_t, k, g.c_out, &mut gw);
    Ok(gw)
}

/// Weight gradients of at least this many floats (1 MiB) count as wide; see `backward_weight`.
const WIDE_WEIGHT_FLOATS: usize = 1 << 18;

/// The sum of `partial(0..chunks)` (buffers of `len` floats), added in chunk order whether the
/// chunks ran in parallel or not, so a weight gradient's bits do not depend on the thread count.
fn sum_in_chunk_order<F>(chunks: usize, parallel: bool, len: usize, partial: F) -> Result<CpuBuffer>
where
    F: Fn(usize) -> Result<CpuBuffer> + Sync + Send,
{
    let partials: Vec<CpuBuffer> = if parallel {
        (0..chunks).into_par_iter().map(partial).collect::<Result<_>>()?
    } else {
        (0..chunks).map(partial).collect::<Result<_>>()?
    };
    let mut iter = partials.into_iter();
    let mut sum = match iter.next() {
        Some(first) => first,
        None => CpuBuffer::try_zeroed(len)?,
    };
    for p in iter {
        sum.iter_mut().zip(p.iter()).for_each(|(a, b)| *a += b);
    }
    Ok(sum)
}

/// `dst[cols, rows] = src[rows, cols]^T`, in square tiles so both sides stay in cache lines; each
/// tile is written a destination row at a time (strided scalar stores stalled on the store buffer).
fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_columns(src, rows, cols, 0, &mut dst[..rows * cols]);
}

/// `transpose_into` on all cores, in blocks of destination rows.
fn transpose_into_par(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const BLOCK: usize = 64;
    dst[..rows * cols]
        .par_chunks_mut(BLOCK * rows.max(1))
        .enumerate()
        .for_each(|(b, part)| transpose_columns(src, rows, cols, b * BLOCK, part));
}

/// Rows `c0..` of `src^T` (that is, columns `c0..` of `src`), as many as `dst` holds.
fn transpose_columns(src: &[f32], rows: usize, cols: usize, c0: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    if rows == 0 {
        return;
    }
    let count = dst.len() / rows;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for (c, out) in dst.chunks_exact_mut(rows).enumerate().take(count) {
            let column = c0 + c;
            for (r, d) in (r0..r1).zip(&mut out[r0..r1]) {
                *d = src[r * cols + column];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition of convolution, the reference the fast path must equal.
    pub(super) fn reference(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut y = vec![0.0; g.n * g.c_out * g.oh * g.ow];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0.0f64;
                        for c in 0..g.c_in {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let iy = (oy * g.stride + i) as isize - g.padding as isize;
                                    let ix = (ox * g.stride + j) as isize - g.padding as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        s += (x[((n * g.c_in + c) * g.h + iy as usize) * g.w + ix as usize]
                                            * w[((o * g.c_in + c) * g.kh + i) * g.kw + j])
                                            as f64;
                                    }
                                }
                            }
                        }
                        y[((n * g.c_out + o) * g.oh + oy) * g.ow + ox] = s as f32;
                    }
                }
            }
        }
        y
    }

    pub(super) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// The shifted-plane im2col, the gather table and the phase planes write exactly what the
    /// row-by-row im2col writes, on every geometry they take (planes narrower than the kernel,
    /// stride 2, padding wider than the plane), for a whole image or for a range of its channels.
    #[test]
    fn every_im2col_writes_what_the_general_one_writes() {
        let mut checked = 0;
        for &(c, h, w, k, stride, pad) in &[
            (3, 7, 5, 3, 1, 1),
            (2, 1, 1, 3, 1, 1),
            (2, 1, 6, 3, 1, 1),
            (2, 5, 1, 3, 1, 1),
            (1, 2, 2, 5, 1, 2),
            (2, 6, 9, 5, 1, 2),
            (4, 8, 8, 1, 1, 0),
            (1, 3, 4, 7, 1, 3),
            (16, 32, 32, 3, 1, 1),
            (5, 7, 7, 3, 2, 1),
            (3, 9, 6, 7, 2, 3),
            (2, 4, 4, 3, 1, 1),
            (3, 3, 5, 5, 3, 4),
        ] {
            let g = ConvGeometry::new(&[1, c, h, w], &[2, c, k, k], stride, pad).unwrap();
            let x = values(c * h * w, 7);
            let hw = g.oh * g.ow;
            let table = gather_table(&g);
            for channels in [0..c, c / 2..c] {
                // Two images side by side, so `ld` and `offset` are exercised; NaN shows a gap.
                let ld = 2 * hw + 3;
                let rows = channels.len() * k * k * ld;
                let mut general = vec![f32::NAN; rows];
                let (mut same, mut gathered, mut phased) = (general.clone(), general.clone(), general.clone());
                for offset in [0, hw + 1] {
                    im2col_general(&x, &g, channels.clone(), &mut general, ld, offset);
                    if phases::suits(&g) {
                        phases::im2col(&x, &g, channels.clone(), &mut phased, ld, offset);
                    }
                    if keeps_size(&g) {
                        im2col_same_size(&x, &g, channels.clone(), &mut same, ld, offset);
                    }
                    if let Some(t) = &table {
                        im2col_gather(&x, &g, t, channels.clone(), &mut gathered, ld, offset);
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                if keeps_size(&g) {
                    assert_eq!(bits(&same), bits(&general), "same size {g:?} {channels:?}");
                    checked += 1;
                }
                if table.is_some() {
                    assert_eq!(bits(&gathered), bits(&general), "gather {g:?} {channels:?}");
                    checked += 1;
                }
                if phases::suits(&g) {
                    assert_eq!(bits(&phased), bits(&general), "phases {g:?} {channels:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 48);
    }

    /// Onto a zeroed gradient (as `backward_data` calls it), the phase-plane col2im adds the same
    /// values in the same order as the row-by-row scatter: bit for bit the same gradient, on
    /// strides 2 and 3, padding wider than the stride, odd planes.
    #[test]
    fn phase_col2im_equals_the_row_scatter_bit_for_bit() {
        for &(c, h, w, k, stride, pad) in &[
            (5, 7, 7, 3, 2, 1),
            (3, 9, 6, 7, 2, 3),
            (3, 3, 5, 5, 3, 4),
            (2, 8, 8, 3, 2, 0),
        ] {
            let g = ConvGeometry::new(&[1, c, h, w], &[2, c, k, k], stride, pad).unwrap();
            assert!(phases::suits(&g));
            let ld = 2 * g.oh * g.ow + 1;
            let col = values(c * k * k * ld, 9);
            let (mut phased, mut rows) = (vec![0.0; c * h * w], vec![0.0; c * h * w]);
            phases::col2im(&col, &g, &mut phased, ld, g.oh * g.ow);
            col2im_rows(&col, &g, &mut rows, ld, g.oh * g.ow);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&phased), bits(&rows), "{g:?}");
        }
    }

    /// The gradients by definition, in f64: (dX, dW) of `sum(y * gy)`.
    fn reference_gradients(x: &[f32], w: &[f32], gy: &[f32], g: &ConvGeometry) -> (Vec<f32>, Vec<f32>) {
        let mut gx = vec![0.0f64; x.len()];
        let mut gw = vec![0.0f64; w.len()];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let d = gy[((n * g.c_out + o) * g.oh + oy) * g.ow + ox] as f64;
                        for c in 0..g.c_in {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let iy = (oy * g.stride + i) as isize - g.padding as isize;
                                    let ix = (ox * g.stride + j) as isize - g.padding as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        let xi = ((n * g.c_in + c) * g.h + iy as usize) * g.w + ix as usize;
                                        let wi = ((o * g.c_in + c) * g.kh + i) * g.kw + j;
                                        gx[xi] += d * w[wi] as f64;
                                        gw[wi] += d * x[xi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
        (f(gx), f(gw))
    }

    /// Both gradients against the definition where the paths differ: several images per GEMM with
    /// a partial last group (small outputs, batch 9 or 17), the gather table, stride 2, 1x1 stride
    /// 2, the flipped-kernel data gradient, and a weight gradient wide enough for one whole-batch
    /// chunk (>= WIDE_WEIGHT_FLOATS), batch 1 included.
    #[test]
    fn gradients_match_the_definition_on_every_path() {
        for &(n, c, h, w, o, k, s, p) in &[
            (9, 3, 7, 7, 5, 3, 2, 1),
            (17, 4, 4, 4, 6, 3, 1, 1),
            (9, 2, 9, 9, 3, 1, 2, 0),
            (1, 2, 11, 10, 2, 7, 2, 3),
            (3, 5, 6, 7, 4, 3, 1, 1),
            (2, 3, 5, 5, 2, 5, 3, 2),
            (3, 200, 3, 3, 160, 3, 1, 1),
            (1, 160, 4, 3, 200, 3, 2, 1),
        ] {
            let g = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
            let x = values(n * c * h * w, 1);
            let wt = values(o * c * k * k, 2);
            let gy = values(n * o * g.oh * g.ow, 3);
            let (want_x, want_w) = reference_gradients(&x, &wt, &gy, &g);
            let got_x = backward_data(&gy, &wt, &g).unwrap();
            let got_w = backward_weight(&x, &gy, &g).unwrap();
            assert_eq!(got_x.len(), want_x.len());
            assert_eq!(got_w.len(), want_w.len());
            // Sums of up to 4,600 products of values in [-1, 1).
            let tol = 1e-5 * (c * k * k).max(n * g.oh * g.ow) as f32;
            for (a, b) in got_x.iter().zip(&want_x) {
                assert!((a - b).abs() <= tol * (1.0 + b.abs()), "dX {g:?}: {a} vs {b}");
            }
            for (a, b) in got_w.iter().zip(&want_w) {
                assert!((a - b).abs() <= tol * (1.0 + b.abs()), "dW {g:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn forward_matches_the_definition_on_awkward_shapes() {
        for &(n, c, h, w, o, k, s, p) in &[
            (1, 3, 7, 5, 4, 3, 1, 1),
            (3, 2, 9, 9, 5, 3, 2, 1),
            (2, 4, 6, 6, 3, 1, 1, 0),
            (2, 4, 7, 7, 3, 1, 2, 0),
            (1, 2, 11, 10, 2, 7, 2, 3),
            (5, 1, 5, 5, 2, 3, 1, 0),
            (2, 3, 4, 4, 2, 5, 3, 2),
            (2, 3, 6, 7, 4, 5, 1, 2),
            (3, 2, 1, 4, 3, 3, 1, 1),
        ] {
            let g = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
            let x = values(n * c * h * w, 1);
            let wt = values(o * c * k * k, 2);
            let got = forward(&x, &wt, &Epilogue::default(), &g).unwrap();
            let want = reference(&x, &wt, &g);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{g:?}: {a} vs {b}");
            }
        }
    }

    /// The epilogue on every path (one image per GEMM, pointwise straight into the output, several
    /// images side by side with a partial last group, the direct kernel) equals the unfused sequence exactly: the
    /// same sums in the same order.
    #[test]
    fn epilogue_equals_bias_residual_and_activation_applied_afterwards() {
        for &(n, c, h, w, o, k, s, p) in &[
            (1, 3, 7, 5, 4, 3, 1, 1),
            (3, 2, 9, 9, 5, 1, 1, 0),
            (9, 3, 4, 4, 6, 3, 1, 1),
            (11, 4, 3, 5, 3, 1, 2, 0),
            // The direct kernel, images in parallel and (batch 1) channel blocks in parallel.
            (5, 3, 8, 8, 6, 3, 1, 1),
            (1, 3, 8, 8, 10, 3, 1, 1),
        ] {
            let g = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], s, p).unwrap();
            let x = values(n * c * h * w, 3);
            let wt = values(o * c * k * k, 4);
            let bias = values(o, 5);
            let residual = values(n * o * g.oh * g.ow, 6);
            let plain = forward(&x, &wt, &Epilogue::default(), &g).unwrap();
            let hw = g.oh * g.ow;
            for act in [
                None,
                Some(Activation::Relu),
                Some(Activation::Tanh),
                Some(Activation::Sigmoid),
            ] {
                for with_residual in [false, true] {
                    let e = Epilogue {
                        bias: Some(&bias),
                        residual: with_residual.then_some(&residual[..]),
                        act,
                    };
                    let got = forward(&x, &wt, &e, &g).unwrap();
                    for (i, (&a, &y)) in got.iter().zip(plain.iter()).enumerate() {
                        let mut v = y + bias[(i / hw) % o];
                        if with_residual {
                            v += residual[i];
                        }
                        let want = act.map_or(v, |act| activate(v, act));
                        assert_eq!(a.to_bits(), want.to_bits(), "{g:?} {act:?} {with_residual} at {i}");
                    }
                }
            }
        }
    }
}
