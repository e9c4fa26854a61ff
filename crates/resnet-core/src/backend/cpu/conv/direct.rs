//! Direct convolution for stride-1 "same" geometries on AVX-512: every 3x3 convolution of a ResNet
//! but the downsampling ones, and (through the flipped-kernel form) their data gradients; and the
//! weight gradient of the narrow ones (see `suits_weight_grad`).
//!
//! Why not im2col: with 16-64 output channels each patch value feeds only that many FMAs, so
//! writing the 9x-larger patch matrix and then packing it for the GEMM cost about as much as the
//! arithmetic (a profile of ResNet-20's step: im2col and copies ~30%, microkernels ~44%).
//!
//! How: the image is copied once into zero-padded planes of width `wp = w + kw - 1`. In that layout
//! output position `q = y*wp + x` reads input `q + i*wp + j` for tap (i, j): every tap is the same
//! plane shifted by a constant, so 16 consecutive outputs are one unaligned vector load per input
//! channel and tap, whatever the plane's width. The `wp - w` columns per row that fall in the
//! padding are computed and thrown away (6% at 32 wide, 20% at 8). A register tile holds `OB`
//! output channels x `T` vectors; weights are packed so each tap's `OB` values are adjacent.
//!
//! Sums run over input channels, then taps in (i, j) order, in one f32 accumulator per output:
//! not the GEMM's order, so results differ from the im2col path in the last bits (the tests bound
//! it), but are the same on every run and thread count.

use super::{for_each_chunk, keeps_size, sum_in_chunk_order, Epilogue};
use crate::backend::cpu::buffers::CpuBuffer;
use crate::backend::cpu::gemm::Threads;
use crate::backend::ConvGeometry;
use crate::error::Result;
use crate::memory::try_vec;
use rayon::prelude::*;

/// Floats per vector.
const LANES: usize = 16;
/// Output channels per register tile.
const MAX_OB: usize = 8;
/// Vectors per register tile: `MAX_OB * MAX_T` accumulators + `MAX_T` inputs fit 32 registers.
const MAX_T: usize = 3;

/// Whether this CPU runs the direct kernel (AVX-512F, detected at run time, so a prebuilt binary
/// runs everywhere and falls back to im2col elsewhere).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Geometries the direct kernel computes, and where it is measured to beat im2col + GEMM.
pub fn suits(g: &ConvGeometry) -> bool {
    g.stride == 1 && keeps_size(g) && !g.is_pointwise() && g.kh == g.kw && fills_vectors(g)
}

/// Whether at least 70% of the lanes computed are outputs kept. Tiny planes leave most lanes in
/// the padding: `examples/conv_paths.rs` measured ResNet-18's 4x4 planes (32 lanes for 16
/// outputs) at half im2col's speed, 7x7 (64 for 49) even, 8x8 (80 for 64) 1.4x faster.
fn fills_vectors(g: &ConvGeometry) -> bool {
    let lanes = Plan::new(g).vectors * LANES;
    10 * g.h * g.w >= 7 * lanes
}

/// The layout of one padded image and of the outputs computed from it.
#[derive(Clone, Copy)]
struct Plan {
    /// Padded row width.
    wp: usize,
    /// Floats per padded plane.
    plane: usize,
    /// Floats of one padded image, with slack for the last vector's overreach.
    image: usize,
    /// Output vectors per plane (covering `h * wp` positions).
    vectors: usize,
}

impl Plan {
    fn new(g: &ConvGeometry) -> Plan {
        let wp = g.w + g.kw - 1;
        let plane = (g.h + g.kh - 1) * wp;
        let vectors = (g.h * wp).div_ceil(LANES);
        // The last vector reads up to `vectors*16 - 1 + (kh-1)*wp + kw-1` into the last plane.
        let overreach = (vectors * LANES + (g.kh - 1) * wp + g.kw - 1).saturating_sub(plane);
        Plan {
            wp,
            plane,
            image: g.c_in * plane + overreach,
            vectors,
        }
    }

    /// Floats of one block's outputs, `MAX_OB` rows of `vectors * 16`.
    fn block_out(&self) -> usize {
        MAX_OB * self.vectors * LANES
    }
}

/// `channels` in blocks of the first width while it fits, then the next: (first channel, width).
fn widths(channels: usize, widths: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut o = 0;
    for &width in widths {
        while channels - o >= width {
            out.push((o, width));
            o += width;
        }
    }
    out
}

/// The forward pass's output channel blocks: 8 per register tile, then 4, 2, 1.
fn blocks(c_out: usize) -> Vec<(usize, usize)> {
    widths(c_out, &[8, 4, 2, 1])
}

/// Weights as, per block, [c_in][tap][width]: the values one tap broadcasts are adjacent.
fn pack_weights(w: &[f32], g: &ConvGeometry) -> Result<Vec<f32>> {
    let taps = g.kh * g.kw;
    let mut packed = try_vec(w.len(), 0.0f32, "packed convolution weights")?;
    let mut at = 0;
    for (o0, width) in blocks(g.c_out) {
        for c in 0..g.c_in {
            for tap in 0..taps {
                for ob in 0..width {
                    packed[at] = w[((o0 + ob) * g.c_in + c) * taps + tap];
                    at += 1;
                }
            }
        }
    }
    Ok(packed)
}

/// Copies one image into zero-padded planes (`padded` has `plan.image` floats).
fn pad_image(x: &[f32], g: &ConvGeometry, plan: &Plan, padded: &mut [f32]) {
    let (top, left) = ((g.kh - 1) / 2, (g.kw - 1) / 2);
    padded.fill(0.0);
    for c in 0..g.c_in {
        let src = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        let dst = &mut padded[c * plan.plane..(c + 1) * plan.plane];
        for (y, row) in src.chunks_exact(g.w).enumerate() {
            dst[(y + top) * plan.wp + left..][..g.w].copy_from_slice(row);
        }
    }
}

/// The forward convolution of `suits` geometries on AVX-512, or `None` where this CPU lacks it.
pub fn forward(x: &[f32], w: &[f32], epilogue: &Epilogue, g: &ConvGeometry) -> Option<Result<CpuBuffer>> {
    if !available() || !suits(g) {
        return None;
    }
    Some(forward_avx512(x, w, epilogue, g))
}

fn forward_avx512(x: &[f32], w: &[f32], epilogue: &Epilogue, g: &ConvGeometry) -> Result<CpuBuffer> {
    let plan = Plan::new(g);
    let hw = g.h * g.w;
    let mut y = CpuBuffer::try_uninit(g.n * g.c_out * hw)?;
    if y.is_empty() {
        return Ok(y);
    }
    let packed = pack_weights(w, g)?;
    let blocks = blocks(g.c_out);
    let in_len = g.c_in * hw;
    let img_len = g.c_out * hw;
    let offsets: Vec<usize> = (0..g.kh)
        .flat_map(|i| (0..g.kw).map(move |j| i * plan.wp + j))
        .collect();
    let one_image = |i: usize, out: &mut [f32], padded: &mut [f32], block_out: &mut [f32], threads: Threads| {
        pad_image(&x[i * in_len..(i + 1) * in_len], g, &plan, padded);
        let padded = &*padded;
        // Each block's output channels and packed weights.
        let mut parts = Vec::with_capacity(blocks.len());
        let (mut rest, mut packed_rest) = (&mut out[..], &packed[..]);
        for &(_, width) in &blocks {
            let (o, r) = rest.split_at_mut(width * hw);
            let (wk, pr) = packed_rest.split_at(g.c_in * g.kh * g.kw * width);
            parts.push((o, wk, width));
            rest = r;
            packed_rest = pr;
        }
        let run = |(o, wk, width): (&mut [f32], &[f32], usize), scratch: &mut [f32]| {
            run_block(padded, wk, width, g, &plan, &offsets, scratch);
            copy_valid(scratch, width, g, &plan, o);
        };
        if threads == Threads::Single {
            parts.into_iter().for_each(|part| run(part, block_out));
        } else {
            // Too few images to fill the cores: the blocks of this one run in parallel.
            parts
                .into_par_iter()
                .for_each_init(|| vec![0.0f32; plan.block_out()], |scratch, part| run(part, scratch));
        }
        epilogue.apply(out, g, i);
    };
    for_each_chunk(
        &mut y,
        img_len,
        plan.image + plan.block_out(),
        |i, out, scratch, threads| {
            let (padded, block_out) = scratch.split_at_mut(plan.image);
            one_image(i, out, padded, block_out, threads);
        },
    )?;
    Ok(y)
}

/// `out[ob][q]` for one block of `width` channels, every vector of the plane.
/// `offsets` are the taps' shifts in the padded plane, row by row: `i*wp + j`.
fn run_block(
    padded: &[f32],
    wk: &[f32],
    width: usize,
    g: &ConvGeometry,
    plan: &Plan,
    offsets: &[usize],
    out: &mut [f32],
) {
    assert!(padded.len() >= plan.image && out.len() >= width * plan.vectors * LANES);
    assert_eq!(wk.len(), g.c_in * g.kh * g.kw * width);
    assert!(offsets.len() == g.kh * g.kw && offsets.iter().all(|&o| o < (g.kh - 1) * plan.wp + g.kw));
    let stride = plan.vectors * LANES;
    let taps = offsets.len();
    // Input channels in groups whose weights (8 x 32 x 9 floats, 9 KB) stay in L1 across every
    // tile of the plane; later groups add onto the sums the earlier ones stored, which repeats
    // the unsplit loop's operations exactly.
    for c0 in (0..g.c_in).step_by(CHANNELS_PER_PASS) {
        let channels = CHANNELS_PER_PASS.min(g.c_in - c0);
        let weights = &wk[c0 * taps * width..(c0 + channels) * taps * width];
        let resume = c0 > 0;
        let mut v = 0;
        while v < plan.vectors {
            let t = (plan.vectors - v).min(MAX_T);
            let at = v * LANES;
            // SAFETY: `available()` checked AVX-512F. Reads: input channel c reads
            // `c*plane + at + offset + 16*t' + lane` with at + 16*t' + lane < vectors*16 and
            // offset <= (kh-1)*wp + kw-1, which `Plan::image` covers. Writes (and, resuming,
            // reads): `ob*stride + at + 16*t' + lane < width*stride`, asserted above. The weights
            // are `channels*taps*width` floats.
            unsafe {
                let (x, o) = (padded.as_ptr().add(c0 * plan.plane + at), out.as_mut_ptr().add(at));
                let args = (x, plan.plane, channels, offsets, weights.as_ptr(), o, stride, resume);
                match (width, t) {
                    (8, 3) => tile::<8, 3>(args),
                    (8, 2) => tile::<8, 2>(args),
                    (8, _) => tile::<8, 1>(args),
                    (4, 3) => tile::<4, 3>(args),
                    (4, 2) => tile::<4, 2>(args),
                    (4, _) => tile::<4, 1>(args),
                    (2, 3) => tile::<2, 3>(args),
                    (2, 2) => tile::<2, 2>(args),
                    (2, _) => tile::<2, 1>(args),
                    (_, 3) => tile::<1, 3>(args),
                    (_, 2) => tile::<1, 2>(args),
                    (_, _) => tile::<1, 1>(args),
                }
            }
            v += t;
        }
    }
}

/// Input channels one pass of `run_block` takes.
const CHANNELS_PER_PASS: usize = 32;

/// (input at the tile, plane stride, input channels, tap offsets, packed weights, output at the
/// tile, output row stride, whether to add onto the output instead of overwriting it)
type TileArgs<'a> = (*const f32, usize, usize, &'a [usize], *const f32, *mut f32, usize, bool);

/// One register tile: `OB` channels x `T` vectors of 16 outputs, summed over `c_in` input
/// channels and every tap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const OB: usize, const T: usize>((x, plane, c_in, offsets, w, out, stride, resume): TileArgs) {
    use std::arch::x86_64::*;
    const { assert!(OB <= MAX_OB && T <= MAX_T) };
    let mut acc = [[_mm512_setzero_ps(); T]; OB];
    if resume {
        for (ob, row) in acc.iter_mut().enumerate() {
            for (t, a) in row.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(out.add(ob * stride + t * LANES));
            }
        }
    }
    let mut wp = w;
    for c in 0..c_in {
        let base = x.add(c * plane);
        for &off in offsets {
            let src = base.add(off);
            let mut v = [_mm512_setzero_ps(); T];
            for (t, v) in v.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(src.add(t * LANES));
            }
            for row in acc.iter_mut() {
                let wv = _mm512_set1_ps(*wp);
                wp = wp.add(1);
                for (a, v) in row.iter_mut().zip(&v) {
                    *a = _mm512_fmadd_ps(*v, wv, *a);
                }
            }
        }
    }
    for (ob, row) in acc.iter().enumerate() {
        for (t, a) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add(ob * stride + t * LANES), *a);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const OB: usize, const T: usize>(_: TileArgs) {
    unreachable!("the direct convolution runs only where available() found AVX-512")
}

/// The valid columns of a block's padded-width outputs, into `out` ([width, h*w]).
fn copy_valid(block_out: &[f32], width: usize, g: &ConvGeometry, plan: &Plan, out: &mut [f32]) {
    let stride = plan.vectors * LANES;
    for ob in 0..width {
        let src = &block_out[ob * stride..];
        let dst = &mut out[ob * g.h * g.w..(ob + 1) * g.h * g.w];
        for (y, row) in dst.chunks_exact_mut(g.w).enumerate() {
            row.copy_from_slice(&src[y * plan.wp..y * plan.wp + g.w]);
        }
    }
}

/// Output channels x input channels per weight-gradient tile: 24 accumulators + 4 gradient
/// vectors + 1 input vector.
const WG_OB: usize = 4;
const WG_CB: usize = 6;
/// Taps of the kernels the direct weight gradient takes (3x3).
const WG_TAPS: usize = 9;

/// Geometries whose weight gradient runs direct: 3x3 stride-1 "same", where im2col + GEMM is
/// weakest. `examples/conv_paths.rs` (2 threads, AVX-512) measured the direct form 1.3-3x faster
/// with at most 32 output channels (the GEMM's N) on planes of 16x16 and up, and slower on
/// ResNet-18's 64-256 channels and on 8x8 planes (stacked, 30% padding, with short dot products
/// whose final sums weigh more).
pub fn suits_weight_grad(g: &ConvGeometry) -> bool {
    g.stride == 1 && keeps_size(g) && g.kh == 3 && g.kw == 3 && g.c_out <= 32 && g.h * g.w >= 196
}

/// The images of one chunk stacked per channel, `[channels][rows][wp]`: image n's rows start at
/// row `1 + n*(h+1)`, so one zero row separates consecutive images and serves as the bottom
/// padding of one and the top padding of the next. Output position `q = (n*(h+1) + y)*wp + x`
/// then reads input `q + i*wp + j` for tap (i, j), across every image of the chunk: one long
/// dot product per (output channel, input channel, tap), with the gradient zero wherever q is
/// not an output.
#[derive(Clone, Copy)]
struct Stack {
    wp: usize,
    /// Floats per channel: every image's rows and one zero row above the first.
    channel: usize,
    /// Output vectors per channel (the positions of every image's rows, zero rows included).
    vectors: usize,
}

impl Stack {
    fn new(g: &ConvGeometry, images: usize) -> Stack {
        let wp = g.w + 2;
        let positions = images * (g.h + 1) * wp;
        let vectors = positions.div_ceil(LANES);
        // Input channel reads reach `vectors*16 - 1 + 2*wp + 2`; the gradient's, `vectors*16 - 1`.
        let channel = vectors * LANES + 2 * wp + 2;
        Stack { wp, channel, vectors }
    }

    /// Copies `images` images' channels ([n][channels][h][w]) into `dst` ([channels][channel]),
    /// zero everywhere else, shifted down `first_row` rows (1 for the input, 0 for the gradient).
    fn fill(&self, src: &[f32], channels: usize, g: &ConvGeometry, images: usize, first_row: usize, dst: &mut [f32]) {
        dst.fill(0.0);
        let left = if first_row == 0 { 0 } else { 1 };
        for n in 0..images {
            for c in 0..channels {
                let plane = &src[(n * channels + c) * g.h * g.w..][..g.h * g.w];
                let base = c * self.channel + (first_row + n * (g.h + 1)) * self.wp + left;
                for (y, row) in plane.chunks_exact(g.w).enumerate() {
                    dst[base + y * self.wp..][..g.w].copy_from_slice(row);
                }
            }
        }
    }
}

/// The weight gradient of `suits_weight_grad` geometries on AVX-512, or `None` where this CPU
/// lacks it. Images go in chunks of `images_per_chunk` whose partial sums are added in chunk
/// order, so the result does not depend on the thread count.
pub fn backward_weight(x: &[f32], gy: &[f32], g: &ConvGeometry, images_per_chunk: usize) -> Option<Result<CpuBuffer>> {
    if !available() || !suits_weight_grad(g) {
        return None;
    }
    Some(backward_weight_avx512(x, gy, g, images_per_chunk))
}

fn backward_weight_avx512(x: &[f32], gy: &[f32], g: &ConvGeometry, images_per_chunk: usize) -> Result<CpuBuffer> {
    let w_len = g.c_out * g.c_in * WG_TAPS;
    let chunk = images_per_chunk.clamp(1, g.n.max(1));
    let chunks = g.n.div_ceil(chunk);
    let in_chunks_parallel = chunks >= rayon::current_num_threads();
    let partial = |k: usize| -> Result<CpuBuffer> {
        let first = k * chunk;
        let images = chunk.min(g.n - first);
        let stack = Stack::new(g, images);
        let mut xs = CpuBuffer::try_uninit(g.c_in * stack.channel)?;
        let mut gs = CpuBuffer::try_uninit(g.c_out * stack.channel)?;
        let hw = g.h * g.w;
        stack.fill(
            &x[first * g.c_in * hw..(first + images) * g.c_in * hw],
            g.c_in,
            g,
            images,
            1,
            &mut xs,
        );
        stack.fill(
            &gy[first * g.c_out * hw..(first + images) * g.c_out * hw],
            g.c_out,
            g,
            images,
            0,
            &mut gs,
        );
        let mut gw = CpuBuffer::try_uninit(w_len)?;
        let (xs, gs) = (&*xs, &*gs);
        let c_blocks = widths(g.c_in, &[6, 4, 2, 1]);
        let per_block = |o0: usize, out: &mut [f32]| {
            let width = out.len() / (g.c_in * WG_TAPS);
            for t in 0..WG_TAPS {
                let offset = (t / 3) * stack.wp + t % 3;
                for &(c0, c_width) in &c_blocks {
                    let mut sums = [[0.0f32; WG_CB]; WG_OB];
                    weight_grad_tile(xs, gs, &stack, (o0, width), (c0, c_width), offset, &mut sums);
                    for (ob, row) in sums.iter().take(width).enumerate() {
                        for (cb, &v) in row.iter().take(c_width).enumerate() {
                            out[(ob * g.c_in + c0 + cb) * WG_TAPS + t] = v;
                        }
                    }
                }
            }
        };
        let o_blocks = widths(g.c_out, &[4, 2, 1]);
        let mut parts = Vec::with_capacity(o_blocks.len());
        let mut rest = &mut gw[..];
        for &(o0, width) in &o_blocks {
            let (part, r) = rest.split_at_mut(width * g.c_in * WG_TAPS);
            parts.push((o0, part));
            rest = r;
        }
        if in_chunks_parallel {
            parts.into_iter().for_each(|(o0, out)| per_block(o0, out));
        } else {
            parts.into_par_iter().for_each(|(o0, out)| per_block(o0, out));
        }
        Ok(gw)
    };
    sum_in_chunk_order(chunks, in_chunks_parallel, w_len, partial)
}

/// `sums[ob][cb]` = the dot product of gradient channel `o0 + ob` with input channel `c0 + cb`
/// shifted by `offset` (one tap), over the whole stack.
fn weight_grad_tile(
    xs: &[f32],
    gs: &[f32],
    stack: &Stack,
    (o0, o_width): (usize, usize),
    (c0, c_width): (usize, usize),
    offset: usize,
    sums: &mut [[f32; WG_CB]; WG_OB],
) {
    assert!(offset <= 2 * stack.wp + 2);
    assert!(xs.len() >= (c0 + c_width) * stack.channel && gs.len() >= (o0 + o_width) * stack.channel);
    // SAFETY: `available()` checked AVX-512F. Input channel c reads `c*channel + offset + q + lane`
    // with q + lane < vectors*16, which `Stack::channel` covers; the gradient reads
    // `o*channel + q + lane`; both channel ranges are asserted above.
    unsafe {
        let x = xs.as_ptr().add(c0 * stack.channel + offset);
        let gy = gs.as_ptr().add(o0 * stack.channel);
        let args = (x, gy, stack.channel, stack.vectors);
        match (o_width, c_width) {
            (4, 6) => weight_grad_kernel::<4, 6>(args, sums),
            (4, 4) => weight_grad_kernel::<4, 4>(args, sums),
            (4, 2) => weight_grad_kernel::<4, 2>(args, sums),
            (4, _) => weight_grad_kernel::<4, 1>(args, sums),
            (2, 6) => weight_grad_kernel::<2, 6>(args, sums),
            (2, 4) => weight_grad_kernel::<2, 4>(args, sums),
            (2, 2) => weight_grad_kernel::<2, 2>(args, sums),
            (2, _) => weight_grad_kernel::<2, 1>(args, sums),
            (_, 6) => weight_grad_kernel::<1, 6>(args, sums),
            (_, 4) => weight_grad_kernel::<1, 4>(args, sums),
            (_, 2) => weight_grad_kernel::<1, 2>(args, sums),
            (_, _) => weight_grad_kernel::<1, 1>(args, sums),
        }
    }
}

/// (input channel c0 at the tap's offset, gradient channel o0, channel stride, vectors)
type WeightGradArgs = (*const f32, *const f32, usize, usize);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_kernel<const OB: usize, const CB: usize>(
    (x, gy, stride, vectors): WeightGradArgs,
    sums: &mut [[f32; WG_CB]; WG_OB],
) {
    use std::arch::x86_64::*;
    const { assert!(OB <= WG_OB && CB <= WG_CB) };
    let mut acc = [[_mm512_setzero_ps(); CB]; OB];
    for v in 0..vectors {
        let q = v * LANES;
        let mut d = [_mm512_setzero_ps(); OB];
        for (ob, d) in d.iter_mut().enumerate() {
            *d = _mm512_loadu_ps(gy.add(ob * stride + q));
        }
        for cb in 0..CB {
            let xv = _mm512_loadu_ps(x.add(cb * stride + q));
            for (row, d) in acc.iter_mut().zip(&d) {
                row[cb] = _mm512_fmadd_ps(xv, *d, row[cb]);
            }
        }
    }
    let mut lanes = [[[0.0f32; LANES]; CB]; OB];
    for (lane_row, row) in lanes.iter_mut().zip(&acc) {
        for (l, a) in lane_row.iter_mut().zip(row) {
            _mm512_storeu_ps(l.as_mut_ptr(), *a);
        }
    }
    for (sum_row, row) in sums.iter_mut().zip(&lanes) {
        for (s, l) in sum_row.iter_mut().zip(row) {
            *s = l.iter().sum();
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_grad_kernel<const OB: usize, const CB: usize>(_: WeightGradArgs, _: &mut [[f32; WG_CB]; WG_OB]) {
    unreachable!("the direct weight gradient runs only where available() found AVX-512")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{reference, values};
    use super::*;

    /// The weight gradient's definition: dW[o, c, i, j] = sum over n, y, x of
    /// dY[n, o, y, x] * x[n, c, y + i - 1, x + j - 1], in f64.
    fn weight_grad_reference(x: &[f32], gy: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut gw = vec![0.0f32; g.c_out * g.c_in * 9];
        for o in 0..g.c_out {
            for c in 0..g.c_in {
                for t in 0..9 {
                    let (i, j) = (t / 3, t % 3);
                    let mut s = 0.0f64;
                    for n in 0..g.n {
                        for y in 0..g.h {
                            for xx in 0..g.w {
                                let (iy, ix) = (y as isize + i as isize - 1, xx as isize + j as isize - 1);
                                if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                                    continue;
                                }
                                s += gy[((n * g.c_out + o) * g.h + y) * g.w + xx] as f64
                                    * x[((n * g.c_in + c) * g.h + iy as usize) * g.w + ix as usize] as f64;
                            }
                        }
                    }
                    gw[(o * g.c_in + c) * 9 + t] = s as f32;
                }
            }
        }
        gw
    }

    /// Against the definition: chunks in parallel and one after another (blocks in parallel),
    /// a partial last chunk, output channels leaving every tile width, non-square planes.
    #[test]
    fn weight_gradient_equals_the_definition() {
        if !available() {
            eprintln!("no AVX-512F here: the direct kernel is not used, nothing to compare");
            return;
        }
        for &(n, c, h, w, o, per_chunk) in &[
            (1, 3, 14, 14, 16, 4),
            (9, 2, 15, 17, 5, 4),
            (2, 16, 32, 32, 16, 4),
            (7, 4, 16, 16, 7, 2),
            (3, 5, 20, 10, 2, 1),
            (2, 7, 14, 15, 32, 1),
        ] {
            let g = ConvGeometry::new(&[n, c, h, w], &[o, c, 3, 3], 1, 1).unwrap();
            assert!(suits_weight_grad(&g), "{g:?}");
            let x = values(n * c * h * w, 21);
            let gy = values(n * o * h * w, 22);
            let got = backward_weight_avx512(&x, &gy, &g, per_chunk).unwrap();
            let want = weight_grad_reference(&x, &gy, &g);
            assert_eq!(got.len(), want.len());
            let terms = (n * h * w) as f32;
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * terms * (1.0 + b.abs()),
                    "{g:?} at {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn tiny_planes_stay_on_im2col() {
        let geometry = |side: usize| ConvGeometry::new(&[2, 8, side, side], &[8, 8, 3, 3], 1, 1).unwrap();
        assert!(!suits(&geometry(4)));
        assert!(!suits(&geometry(1)));
        assert!(suits(&geometry(7)));
        assert!(suits(&geometry(8)));
        assert!(suits(&geometry(32)));
        let weight_grad = |c_out: usize, side: usize| {
            suits_weight_grad(&ConvGeometry::new(&[2, 8, side, side], &[c_out, 8, 3, 3], 1, 1).unwrap())
        };
        assert!(weight_grad(16, 32) && weight_grad(32, 14));
        assert!(!weight_grad(64, 32) && !weight_grad(16, 8));
    }

    #[test]
    fn blocks_cover_every_channel_once() {
        for c_out in 1..40 {
            let b = blocks(c_out);
            assert_eq!(b.iter().map(|&(_, w)| w).sum::<usize>(), c_out);
            for pair in b.windows(2) {
                assert_eq!(pair[0].0 + pair[0].1, pair[1].0);
            }
        }
    }

    /// Against the definition, on widths that leave partial vectors and tiles, channel counts
    /// that leave every block width, batch 1 (blocks in parallel) and larger batches (images in
    /// parallel), and 5x5 and 7x7 kernels.
    #[test]
    fn equals_the_definition() {
        if !available() {
            eprintln!("no AVX-512F here: the direct kernel is not used, nothing to compare");
            return;
        }
        let mut checked = 0;
        for &(n, c, h, w, o, k) in &[
            (1, 3, 7, 13, 15, 3),
            (3, 2, 9, 9, 5, 3),
            (1, 16, 32, 32, 16, 3),
            (4, 5, 8, 8, 11, 3),
            (1, 4, 13, 12, 9, 5),
            (1, 2, 20, 20, 4, 7),
            (5, 7, 4, 6, 16, 3),
            // Input channels over two passes and a partial third.
            (2, 70, 8, 8, 12, 3),
        ] {
            let g = ConvGeometry::new(&[n, c, h, w], &[o, c, k, k], 1, (k - 1) / 2).unwrap();
            assert!(suits(&g), "{g:?}");
            let x = values(n * c * h * w, 11);
            let wt = values(o * c * k * k, 12);
            let got = forward_avx512(&x, &wt, &Epilogue::default(), &g).unwrap();
            let want = reference(&x, &wt, &g);
            assert_eq!(got.len(), want.len());
            let terms = (c * k * k) as f32;
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * terms * (1.0 + b.abs()),
                    "{g:?} at {i}: {a} vs {b}"
                );
            }
            checked += 1;
        }
        assert_eq!(checked, 8);
    }
}
