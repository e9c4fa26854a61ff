// Convolution forward as an implicit GEMM (with gemm_tile.wgsl): y[n, o, oy, ox] =
// sum over (c, i, j) of w[o, c, i, j] * x[n, c, oy*S + i - P, ox*S + j - P] (+ bias[o]).
// GEMM view: M = c_out, N = batch * oh * ow, K = c_in * KH * KW; A is the weight as it lies
// ([c_out, K] row-major), B is the input's patch matrix, gathered on the fly while loading tiles:
// no im2col buffer. The kernel shape, stride and padding are constants of the variant, so the
// patch index arithmetic divides by constants; a 1x1 stride-1 unpadded variant is a plain GEMM.

const KH: u32 = 3u;
const KW: u32 = 3u;
const STRIDE: u32 = 1u;
const PAD: u32 = 1u;
const A_K_FAST: bool = true;
const B_K_FAST: bool = false;

// The reduction cursors AKs/BKs are gemm_plain_k.wgsl's (plain k, nothing to precompute).

struct ARow {
    base: u32,
    ok: bool,
}

fn a_row(m: u32) -> ARow {
    return ARow(m * P.k, m < P.m);
}

fn load_a(r: ARow, s: AKs, k_end: u32) -> f32 {
    if (r.ok && s.k < k_end) {
        return wt[r.base + s.k];
    }
    return 0.0;
}

struct BCol {
    base: u32,
    iy0: i32,
    ix0: i32,
    ok: bool,
}

fn b_col(col: u32) -> BCol {
    let ohw = P.oh * P.ow;
    let img = col / ohw;
    let p = col - img * ohw;
    let oy = p / P.ow;
    let ox = p - oy * P.ow;
    return BCol(img * P.c_in * P.h * P.w, i32(oy * STRIDE) - i32(PAD), i32(ox * STRIDE) - i32(PAD), col < P.n);
}

fn load_b(c: BCol, s: BKs, k_end: u32) -> f32 {
    let k = s.k;
    if (!c.ok || k >= k_end) {
        return 0.0;
    }
    let ci = k / (KH * KW);
    let r = k - ci * (KH * KW);
    let ki = r / KW;
    let kj = r - ki * KW;
    let iy = c.iy0 + i32(ki);
    let ix = c.ix0 + i32(kj);
    if (iy < 0 || ix < 0 || iy >= i32(P.h) || ix >= i32(P.w)) {
        return 0.0;
    }
    return x[c.base + (ci * P.h + u32(iy)) * P.w + u32(ix)];
}

fn store_c(m: u32, col: u32, split: u32, v: f32) {
    let ohw = P.oh * P.ow;
    let img = col / ohw;
    let p = col - img * ohw;
    var out = v;
    if (P.has_bias != 0u && split == 0u) {
        out += bias[m];
    }
    // Split-K partials follow one another, each laid out as y.
    y[split * P.m * P.n + (img * P.m + m) * ohw + p] = out;
}
