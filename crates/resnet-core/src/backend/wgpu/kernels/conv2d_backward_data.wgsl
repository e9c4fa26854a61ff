// Data gradient of convolution as an implicit GEMM (with gemm_tile.wgsl):
// gx[n, c, iy, ix] = sum over (o, i, j) of w[o, c, i, j] * gy[n, o, oy, ox] where
// oy*S + i - P = iy and ox*S + j - P = ix. GEMM view: M = c_in, N = batch * h * w,
// K = c_out * KH * KW; A is the weight read transposed, B gathers gy (zero where the output
// position is fractional or outside). Each input element is written once: no scatter, no atomics.

const A_K_FAST: bool = true;
const B_K_FAST: bool = false;

// The reduction cursors AKs/BKs are gemm_plain_k.wgsl's (plain k, nothing to precompute).

// Row c of A: w[o, c, i, j] for k = (o, i, j).
fn a_row(m: u32) -> ARow {
    return ARow(m * (KH * KW), m < P.m);
}

fn load_a(r: ARow, s: AKs, k_end: u32) -> f32 {
    let k = s.k;
    if (r.ok && k < k_end) {
        // k = (o, i, j) of the window.
        let win = grid_pos(k, KH, KW);
        return wt[win.outer * P.m * (KH * KW) + r.base + win.p];
    }
    return 0.0;
}

struct BCol {
    base: u32,
    ty0: i32,
    tx0: i32,
    ok: bool,
}

fn b_col(col: u32) -> BCol {
    let i = grid_pos(col, P.h, P.w);
    return BCol(i.outer * P.c_out * P.oh * P.ow, i32(i.row + PAD), i32(i.col + PAD), col < P.n);
}

fn load_b(c: BCol, s: BKs, k_end: u32) -> f32 {
    let k = s.k;
    if (!c.ok || k >= k_end) {
        return 0.0;
    }
    let win = grid_pos(k, KH, KW);
    let ty = c.ty0 - i32(win.row);
    let tx = c.tx0 - i32(win.col);
    if (ty < 0 || tx < 0) {
        return 0.0;
    }
    let oy = u32(ty) / STRIDE;
    let ox = u32(tx) / STRIDE;
    if (oy * STRIDE != u32(ty) || ox * STRIDE != u32(tx) || oy >= P.oh || ox >= P.ow) {
        return 0.0;
    }
    return gy[c.base + (win.outer * P.oh + oy) * P.ow + ox];
}

fn store_c(m: u32, col: u32, split: u32, v: f32) {
    let i = grid_pos(col, P.h, P.w);
    // Split-K partials follow one another, each laid out as gx.
    gx[split * P.m * P.n + (i.outer * P.m + m) * (P.h * P.w) + i.p] = v;
}
