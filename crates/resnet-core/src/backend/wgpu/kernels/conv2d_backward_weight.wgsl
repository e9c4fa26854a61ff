// Weight gradient of convolution as an implicit GEMM (with gemm_tile.wgsl):
// gw[o, c, i, j] = sum over (n, oy, ox) of gy[n, o, oy, ox] * x[n, c, oy*S + i - P, ox*S + j - P].
// GEMM view: M = c_out, N = c_in * KH * KW, K = batch * oh * ow (the long reduction). The
// reduction is split (split-K): each workgroup sums k_chunk positions into its own partial
// [splits, M, N], and reduce.wgsl adds the partials in a fixed order (deterministic).

const A_K_FAST: bool = true;
const B_K_FAST: bool = true;

// Row o of A: gy[n, o, p] for k = (n, p).
fn a_row(m: u32) -> ARow {
    return ARow(m * P.oh * P.ow, m < P.m);
}

// Position k = (image, p) of the reduction, advanced without division.
struct AKs {
    k: u32,
    img: u32,
    p: u32,
}

fn a_ks(k: u32) -> AKs {
    let o = grid_pos(k, P.oh, P.ow);
    return AKs(k, o.outer, o.p);
}

fn a_ks_next(s: AKs) -> AKs {
    let ohw = P.oh * P.ow;
    var p = s.p + BK;
    var img = s.img;
    while (p >= ohw) {
        p -= ohw;
        img += 1u;
    }
    return AKs(s.k + BK, img, p);
}

fn load_a(r: ARow, s: AKs, k_end: u32) -> f32 {
    if (r.ok && s.k < k_end) {
        return gy[s.img * P.m * P.oh * P.ow + r.base + s.p];
    }
    return 0.0;
}

struct BCol {
    base: u32,
    ki: i32,
    kj: i32,
    ok: bool,
}

// Column (c, i, j) of B: x[n, c, oy*S + i - P, ox*S + j - P] for k = (n, oy, ox).
fn b_col(col: u32) -> BCol {
    let win = grid_pos(col, KH, KW);
    return BCol(win.outer * P.h * P.w, i32(win.row) - i32(PAD), i32(win.col) - i32(PAD), col < P.n);
}

// Position k = (image, oy, ox) of the reduction, advanced without division.
struct BKs {
    k: u32,
    img: u32,
    oy: u32,
    ox: u32,
}

fn b_ks(k: u32) -> BKs {
    let o = grid_pos(k, P.oh, P.ow);
    return BKs(k, o.outer, o.row, o.col);
}

fn b_ks_next(s: BKs) -> BKs {
    var ox = s.ox + BK;
    var oy = s.oy;
    var img = s.img;
    while (ox >= P.ow) {
        ox -= P.ow;
        oy += 1u;
    }
    while (oy >= P.oh) {
        oy -= P.oh;
        img += 1u;
    }
    return BKs(s.k + BK, img, oy, ox);
}

fn load_b(c: BCol, s: BKs, k_end: u32) -> f32 {
    if (!c.ok || s.k >= k_end) {
        return 0.0;
    }
    let iy = i32(s.oy * STRIDE) + c.ki;
    let ix = i32(s.ox * STRIDE) + c.kj;
    if (iy < 0 || ix < 0 || iy >= i32(P.h) || ix >= i32(P.w)) {
        return 0.0;
    }
    return x[s.img * P.c_in * P.h * P.w + c.base + u32(iy) * P.w + u32(ix)];
}

fn store_c(m: u32, col: u32, split: u32, v: f32) {
    partial[(split * P.m + m) * P.n + col] = v;
}
