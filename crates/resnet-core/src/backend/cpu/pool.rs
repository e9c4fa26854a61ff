//! Max pooling and global average pooling on the CPU, one (image, channel) plane per task.

use super::buffers::CpuBuffer;
use crate::backend::PoolGeometry;
use crate::error::Result;
use rayon::prelude::*;

/// Every window's maximum of one plane, -inf for a window entirely in the padding, and the index
/// in the plane it came from (`NONE` there). Separable: the maxima along each input row first
/// (`rows`, h x ow, with their columns in `row_cols`), then down the columns; each pass goes tap
/// by tap over whole rows of outputs, reading contiguous runs (a strided row is first split into
/// its phases), with selects instead of branches, so both vectorise (a per-window scan cost ~250
/// cycles an output on ResNet-18's stem). Both keep the window scan's choice: a later value is
/// taken only if larger or NaN, so the first maximum of the first row holding it wins (row-major
/// first), for NaN the last NaN of the last row holding one (where the scan ends), and a window of
/// nothing but -inf keeps its first element.
fn plane_max(plane: &[f32], g: &PoolGeometry, scratch: &mut RowScratch, out: &mut [f32], source: &mut [u32]) {
    let RowScratch {
        rows,
        row_cols,
        phases,
        first_columns,
    } = scratch;
    let (s, p) = (g.stride, g.padding as isize);
    let phase_len = g.w.div_ceil(s);
    for ((src, best), at) in plane
        .chunks_exact(g.w)
        .zip(rows.chunks_exact_mut(g.ow))
        .zip(row_cols.chunks_exact_mut(g.ow))
    {
        let src = if s == 1 {
            src
        } else {
            for (b, phase) in phases.chunks_exact_mut(phase_len).enumerate() {
                for (d, &v) in phase.iter_mut().zip(src.iter().skip(b).step_by(s)) {
                    *d = v;
                }
            }
            &phases[..]
        };
        best.fill(f32::NEG_INFINITY);
        at.copy_from_slice(first_columns);
        for j in 0..g.kernel {
            let (first, last) = super::taps_inside(j, g.stride, g.padding, g.w, g.ow);
            if first == last {
                continue;
            }
            // Input column x = ox*s + j - p lies in phase (j - p) mod s at ox + (j - p) div s.
            let t = j as isize - p;
            let (phase, shift) = (t.rem_euclid(s as isize) as usize, t.div_euclid(s as isize));
            // With stride 1 the phase is 0 and `phase_len` the row.
            let run = &src[phase * phase_len + (first as isize + shift) as usize..][..last - first];
            let x0 = (first as isize * s as isize + t) as u32;
            for (k, ((b, a), &v)) in best[first..last]
                .iter_mut()
                .zip(&mut at[first..last])
                .zip(run)
                .enumerate()
            {
                take_if_better(b, a, v, x0 + (k * s) as u32);
            }
        }
    }
    out.fill(f32::NEG_INFINITY);
    source.fill(NONE);
    for (oy, (dst, from)) in out
        .chunks_exact_mut(g.ow)
        .zip(source.chunks_exact_mut(g.ow))
        .enumerate()
    {
        let (first, last) = window(oy, g.stride, g.padding, g.kernel, g.h);
        for iy in first..last {
            let (row, cols) = (&rows[iy * g.ow..][..g.ow], &row_cols[iy * g.ow..][..g.ow]);
            let base = (iy * g.w) as u32;
            for (((d, f), &r), &c) in dst.iter_mut().zip(from.iter_mut()).zip(row).zip(cols) {
                // The first row's value stands (a window of -inf keeps its first element);
                // a row window entirely in the padding (NONE) offers nothing.
                let take = ((c != NONE) & ((iy == first) | (r > *d) | r.is_nan())) as u32;
                let keep = take.wrapping_sub(1);
                *d = f32::from_bits((r.to_bits() & !keep) | (d.to_bits() & keep));
                *f = (base.wrapping_add(c) & !keep) | (*f & keep);
            }
        }
    }
}

/// The input range `[lo, hi)` of window `o` along an axis of length `len` (empty when the window
/// lies entirely in the padding).
fn window(o: usize, stride: usize, padding: usize, kernel: usize, len: usize) -> (usize, usize) {
    let start = (o * stride) as isize - padding as isize;
    let lo = start.clamp(0, len as isize) as usize;
    let hi = (start + kernel as isize).clamp(lo as isize, len as isize) as usize;
    (lo, hi)
}

/// The window scan's step along a row: take `v` (from `at`) if it is larger, or NaN.
#[inline(always)]
fn take_if_better(best: &mut f32, source: &mut u32, v: f32, at: u32) {
    // Masks, not `if`: LLVM turns selects on floats back into branches here.
    let take = ((v > *best) | v.is_nan()) as u32;
    let keep = take.wrapping_sub(1);
    *best = f32::from_bits((v.to_bits() & !keep) | (best.to_bits() & keep));
    *source = (at & !keep) | (*source & keep);
}

/// No source: a window entirely in the padding.
const NONE: u32 = u32::MAX;

/// One task's scratch for `plane_max`: the row maxima and the columns they came from.
struct RowScratch {
    rows: Vec<f32>,
    row_cols: Vec<u32>,
    /// One input row split into its `stride` phases.
    phases: Vec<f32>,
    /// Each output column's first input column (`NONE` for a window in the padding): where a
    /// window of nothing but -inf takes its value from.
    first_columns: Vec<u32>,
}

impl RowScratch {
    fn new(g: &PoolGeometry) -> RowScratch {
        RowScratch {
            rows: vec![0.0; g.h * g.ow],
            row_cols: vec![0; g.h * g.ow],
            phases: vec![0.0; g.stride * g.w.div_ceil(g.stride)],
            first_columns: (0..g.ow)
                .map(|ox| {
                    let (first, last) = window(ox, g.stride, g.padding, g.kernel, g.w);
                    if first < last {
                        first as u32
                    } else {
                        NONE
                    }
                })
                .collect(),
        }
    }
}

pub fn max_pool2d(x: &[f32], g: &PoolGeometry) -> Result<CpuBuffer> {
    let (in_hw, out_hw) = (g.h * g.w, g.oh * g.ow);
    let mut y = CpuBuffer::try_uninit(g.n * g.c * out_hw)?;
    y.par_chunks_mut(out_hw).enumerate().for_each_init(
        || (RowScratch::new(g), vec![0u32; out_hw]),
        |(scratch, source), (p, yp)| plane_max(&x[p * in_hw..(p + 1) * in_hw], g, scratch, yp, source),
    );
    Ok(y)
}

pub fn max_pool2d_backward(x: &[f32], gy: &[f32], g: &PoolGeometry) -> Result<CpuBuffer> {
    let (in_hw, out_hw) = (g.h * g.w, g.oh * g.ow);
    let mut gx = CpuBuffer::try_zeroed(x.len())?;
    gx.par_chunks_mut(in_hw).enumerate().for_each_init(
        || (RowScratch::new(g), vec![0.0f32; out_hw], vec![0u32; out_hw]),
        |(scratch, maxima, source), (p, gp)| {
            plane_max(&x[p * in_hw..(p + 1) * in_hw], g, scratch, maxima, source);
            for (&i, &d) in source.iter().zip(&gy[p * out_hw..(p + 1) * out_hw]) {
                if i != NONE {
                    gp[i as usize] += d;
                }
            }
        },
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's rule: `v` if it beats `best` or is NaN, so a window holding a NaN yields NaN.
    fn pick(best: f32, v: f32) -> f32 {
        if v > best || v.is_nan() {
            v
        } else {
            best
        }
    }

    /// The definition: each window scanned in row-major order with `pick`, remembering where the
    /// running maximum came from.
    fn window_argmax(plane: &[f32], g: &PoolGeometry, oy: usize, ox: usize) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for i in 0..g.kernel {
            let iy = (oy * g.stride + i) as isize - g.padding as isize;
            for j in 0..g.kernel {
                let ix = (ox * g.stride + j) as isize - g.padding as isize;
                if iy < 0 || iy >= g.h as isize || ix < 0 || ix >= g.w as isize {
                    continue;
                }
                let idx = iy as usize * g.w + ix as usize;
                match best {
                    Some((_, b)) if pick(b, plane[idx]).to_bits() == b.to_bits() && !plane[idx].is_nan() => {}
                    _ => best = Some((idx, plane[idx])),
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Values on a coarse grid (many ties), with NaNs and infinities sprinkled in.
    fn awkward_values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let r = (i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 20;
                match r % 53 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => f32::INFINITY,
                    k => (k % 7) as f32 - 3.0,
                }
            })
            .collect()
    }

    #[test]
    fn separable_maximum_and_its_source_equal_the_window_scan() {
        for &(n, c, h, w, k, s, p) in &[
            (2, 3, 112, 112, 3, 2, 1),
            (1, 2, 7, 9, 3, 2, 1),
            (2, 2, 5, 5, 2, 2, 0),
            (1, 1, 6, 4, 3, 1, 1),
            (1, 3, 9, 11, 4, 3, 2),
            (3, 1, 1, 1, 3, 2, 1),
        ] {
            let g = PoolGeometry::new(&[n, c, h, w], k, s, p).unwrap();
            let mut x = awkward_values(n * c * h * w, 5);
            // The first plane mostly -inf: windows of nothing but -inf take their first element.
            for (i, v) in x.iter_mut().take(h * w).enumerate() {
                if i % 11 != 0 {
                    *v = f32::NEG_INFINITY;
                }
            }
            let gy: Vec<f32> = (0..n * c * g.oh * g.ow).map(|i| 1.0 + (i % 13) as f32).collect();
            let y = max_pool2d(&x, &g).unwrap();
            let gx = max_pool2d_backward(&x, &gy, &g).unwrap();
            let mut want_gx = vec![0.0f32; x.len()];
            for plane in 0..n * c {
                let xp = &x[plane * h * w..(plane + 1) * h * w];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = plane * g.oh * g.ow + oy * g.ow + ox;
                        let src = window_argmax(xp, &g, oy, ox);
                        let want = src.map_or(f32::NEG_INFINITY, |i| xp[i]);
                        assert_eq!(
                            y[o].to_bits(),
                            want.to_bits(),
                            "{g:?} window ({oy}, {ox}) of plane {plane}"
                        );
                        if let Some(i) = src {
                            want_gx[plane * h * w + i] += gy[o];
                        }
                    }
                }
            }
            assert_eq!(
                gx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want_gx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{g:?}"
            );
        }
    }
}
