//! im2col and col2im for strided convolutions through phase planes. With stride s, tap (i, j)
//! reads padded input rows `oy*s + i` and columns `ox*s + j`: every s-th value. Split once into
//! the s*s phase planes `phase[a][b][r][q] = padded[r*s + a][q*s + b]`, the tap reads phase
//! (i % s, j % s) at rows `oy + i/s` and columns `ox + j/s`: contiguous runs, copied whole. The
//! row-by-row strided gathers they replace cost 42% of ResNet-20's downsampling convolutions
//! (perf, `examples/conv_paths.rs`), the matching scatters 20%.

use crate::backend::ConvGeometry;
use std::ops::Range;

/// Whether the phase-plane route applies (strided, and more than one tap to share the split).
pub(super) fn suits(g: &ConvGeometry) -> bool {
    g.stride > 1 && g.kh * g.kw > 1
}

/// Shape of one input channel's phase planes.
#[derive(Clone, Copy)]
struct Phases {
    /// Rows and columns of one phase plane.
    rows: usize,
    cols: usize,
}

impl Phases {
    fn new(g: &ConvGeometry) -> Phases {
        let s = g.stride;
        Phases {
            rows: (g.h + 2 * g.padding).div_ceil(s),
            cols: (g.w + 2 * g.padding).div_ceil(s),
        }
    }

    fn plane_len(&self) -> usize {
        self.rows * self.cols
    }

    /// Floats for all s*s planes of one channel.
    fn len(&self, g: &ConvGeometry) -> usize {
        g.stride * g.stride * self.plane_len()
    }

    /// For each input row y and column phase b (in that order): the first input column `x0` that
    /// lands in phase plane (row phase, b), and where it lands; columns `x0+s, x0+2s, ...` follow
    /// it. Computed once per call: the divisions cost more than the copies when done per row.
    fn row_runs(&self, g: &ConvGeometry) -> Vec<(usize, usize)> {
        let (s, p) = (g.stride, g.padding);
        let mut runs = Vec::with_capacity(g.h * s);
        for y in 0..g.h {
            let r = y + p;
            for b in 0..s {
                let x0 = (b + s - p % s) % s;
                if x0 < g.w {
                    runs.push((
                        x0,
                        ((r % s) * s + b) * self.plane_len() + (r / s) * self.cols + (x0 + p) / s,
                    ));
                }
            }
        }
        runs
    }

    /// Where tap (i, j)'s run for output row 0 starts; row oy's starts `oy * cols` later.
    fn tap_start(&self, s: usize, i: usize, j: usize) -> usize {
        ((i % s) * s + j % s) * self.plane_len() + (i / s) * self.cols + j / s
    }
}

/// `im2col_channels` for `suits` geometries: same values, same layout.
pub(super) fn im2col(x: &[f32], g: &ConvGeometry, channels: Range<usize>, col: &mut [f32], ld: usize, offset: usize) {
    let (s, plane_len) = (g.stride, g.h * g.w);
    let ph = Phases::new(g);
    let mut phases = vec![0.0f32; ph.len(g)];
    let runs = ph.row_runs(g);
    let runs_per_row = runs.len() / g.h.max(1);
    let c0 = channels.start;
    for c in channels {
        let plane = &x[c * plane_len..(c + 1) * plane_len];
        // The padding's cells stay zero from the allocation: only the image's cells are written.
        for (y, row) in plane.chunks_exact(g.w).enumerate() {
            for &(x0, start) in &runs[y * runs_per_row..(y + 1) * runs_per_row] {
                for (d, &v) in phases[start..].iter_mut().zip(row[x0..].iter().step_by(s)) {
                    *d = v;
                }
            }
        }
        for i in 0..g.kh {
            for j in 0..g.kw {
                let out = &mut col[(((c - c0) * g.kh + i) * g.kw + j) * ld + offset..][..g.oh * g.ow];
                let tap = &phases[ph.tap_start(s, i, j)..];
                for (run, src) in out.chunks_exact_mut(g.ow).zip(tap.chunks(ph.cols)) {
                    // Runs are 4..56 floats: a plain loop beats a memmove call.
                    for (d, &v) in run.iter_mut().zip(src) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// `col2im` for `suits` geometries: the patch rows are summed on the phase planes tap by tap, in
/// the row-by-row scatter's order, then added onto `gx`. Onto a zeroed `gx`, as `backward_data`
/// calls it, each cell thus receives the same additions in the same order: the same bits.
pub(super) fn col2im(col: &[f32], g: &ConvGeometry, gx: &mut [f32], ld: usize, offset: usize) {
    let (s, plane_len) = (g.stride, g.h * g.w);
    let ph = Phases::new(g);
    let mut phases = vec![0.0f32; ph.len(g)];
    let runs = ph.row_runs(g);
    let runs_per_row = runs.len() / g.h.max(1);
    for c in 0..g.c_in {
        phases.fill(0.0);
        for i in 0..g.kh {
            for j in 0..g.kw {
                let rows = &col[((c * g.kh + i) * g.kw + j) * ld + offset..][..g.oh * g.ow];
                let tap = &mut phases[ph.tap_start(s, i, j)..];
                for (run, dst) in rows.chunks_exact(g.ow).zip(tap.chunks_mut(ph.cols)) {
                    dst.iter_mut().zip(run).for_each(|(d, v)| *d += v);
                }
            }
        }
        let plane = &mut gx[c * plane_len..(c + 1) * plane_len];
        for (y, row) in plane.chunks_exact_mut(g.w).enumerate() {
            for &(x0, start) in &runs[y * runs_per_row..(y + 1) * runs_per_row] {
                for (d, &v) in row[x0..].iter_mut().step_by(s).zip(&phases[start..]) {
                    *d += v;
                }
            }
        }
    }
}
