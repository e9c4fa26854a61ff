// Convolution forward as an implicit GEMM (with gemm_tile.wgsl): y[n, o, oy, ox] =
// sum over (c, i, j) of w[o, c, i, j] * x[n, c, oy*S + i - P, ox*S + j - P] (+ bias[o]).
// GEMM view: M = c_out, N = batch * oh * ow, K = c_in * KH * KW; A is the weight as it lies
// ([c_out, K] row-major), B is the input's patch matrix, gathered on the fly while loading tiles:
// no im2col buffer. The window is conv_window.wgsl's; a 1x1 stride-1 unpadded variant is a plain
// GEMM.

const A_K_FAST: bool = true;
const B_K_FAST: bool = false;
// The inference epilogue, fused where the GEMM is not split (conv.rs decides): the residual added
// and the activation applied (its code as activation.wgsl's; NO_ACT for none) in the store.
const NO_ACT: u32 = 99u;
const ACT: u32 = 99u;
const RESIDUAL: bool = false;

// The reduction cursors AKs/BKs are gemm_plain_k.wgsl's (plain k, nothing to precompute).

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
    let o = grid_pos(col, P.oh, P.ow);
    return BCol(o.outer * P.c_in * P.h * P.w, i32(o.row * STRIDE) - i32(PAD), i32(o.col * STRIDE) - i32(PAD), col < P.n);
}

fn load_b(c: BCol, s: BKs, k_end: u32) -> f32 {
    let k = s.k;
    if (!c.ok || k >= k_end) {
        return 0.0;
    }
    // k = (ci, i, j) of the window.
    let win = grid_pos(k, KH, KW);
    let iy = c.iy0 + i32(win.row);
    let ix = c.ix0 + i32(win.col);
    if (iy < 0 || ix < 0 || iy >= i32(P.h) || ix >= i32(P.w)) {
        return 0.0;
    }
    return x[c.base + (win.outer * P.h + u32(iy)) * P.w + u32(ix)];
}

fn store_c(m: u32, col: u32, split: u32, v: f32) {
    let o = grid_pos(col, P.oh, P.ow);
    let at = (o.outer * P.m + m) * (P.oh * P.ow) + o.p;
    var out = v;
    if (P.has_bias != 0u && split == 0u) {
        out += bias[m];
    }
    if (RESIDUAL) {
        out += residual[at];
    }
    if (ACT != NO_ACT) {
        out = activate(out, ACT);
    }
    // Split-K partials follow one another, each laid out as y.
    y[split * P.m * P.n + at] = out;
}
