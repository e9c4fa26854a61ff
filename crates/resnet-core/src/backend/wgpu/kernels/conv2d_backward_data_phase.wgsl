// Data gradient of a strided convolution, one phase at a time (with gemm_tile.wgsl). The input
// positions of phase (PY, PX) are (iy, ix) = (PY + STRIDE*ty, PX + STRIDE*tx); only the taps
// i = I0 + STRIDE*u, j = J0 + STRIDE*v reach them, from output position (ty + BY - u, tx + BX - v),
// where I0 = (PY + PAD) mod STRIDE and BY = (PY + PAD - I0) / STRIDE (and so for x). So K counts
// only the taps that contribute: conv2d_backward_data.wgsl, run for every input position, spends
// 3/4 of a stride-2 reduction multiplying zeros. GEMM view of a phase: M = c_in,
// N = batch * ph * pw, K = c_out * taps_h * taps_w; each phase writes its own positions of gx.

const A_K_FAST: bool = true;
const B_K_FAST: bool = false;

// The phase's first tap and tap counts (conv.rs replaces these values per phase).
const I0: u32 = 0u;
const J0: u32 = 0u;
const TAPS_H: u32 = 2u;
const TAPS_W: u32 = 2u;

// Row c of A: w[o, c, I0 + STRIDE*u, J0 + STRIDE*v] for k = (o, u, v).
fn a_row(m: u32) -> ARow {
    return ARow(m * (KH * KW), m < P.m);
}

fn load_a(r: ARow, s: AKs, k_end: u32) -> f32 {
    let k = s.k;
    if (r.ok && k < k_end) {
        let tap = grid_pos(k, TAPS_H, TAPS_W);
        let i = I0 + STRIDE * tap.row;
        let j = J0 + STRIDE * tap.col;
        return wt[tap.outer * P.m * (KH * KW) + r.base + i * KW + j];
    }
    return 0.0;
}

struct BCol {
    base: u32,
    oy0: i32,
    ox0: i32,
    ok: bool,
}

fn b_col(col: u32) -> BCol {
    let i = grid_pos(col, P.ph, P.pw);
    return BCol(i.outer * P.c_out * P.oh * P.ow, i32(i.row + P.by), i32(i.col + P.bx), col < P.n);
}

fn load_b(c: BCol, s: BKs, k_end: u32) -> f32 {
    let k = s.k;
    if (!c.ok || k >= k_end) {
        return 0.0;
    }
    let tap = grid_pos(k, TAPS_H, TAPS_W);
    let oy = c.oy0 - i32(tap.row);
    let ox = c.ox0 - i32(tap.col);
    if (oy < 0 || ox < 0 || u32(oy) >= P.oh || u32(ox) >= P.ow) {
        return 0.0;
    }
    return gy[c.base + (tap.outer * P.oh + u32(oy)) * P.ow + u32(ox)];
}

// Split-K partials follow one another, each laid out as the whole gx (every phase writes its
// positions in each).
fn store_c(m: u32, col: u32, split: u32, v: f32) {
    let i = grid_pos(col, P.ph, P.pw);
    let iy = P.py + STRIDE * i.row;
    let ix = P.px + STRIDE * i.col;
    gx[split * P.gx_len + (i.outer * P.m + m) * (P.h * P.w) + iy * P.w + ix] = v;
}
