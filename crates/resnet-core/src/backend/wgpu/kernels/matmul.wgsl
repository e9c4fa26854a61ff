// Dense row-major GEMM (with gemm_tile.wgsl): c[M, N] = op(a) . op(b), op(a) [M, K] being a
// or a transposed (TRANS_A), op(b) [K, N] being b or b transposed (TRANS_B).

const TRANS_A: bool = false;
const TRANS_B: bool = false;
const A_K_FAST: bool = true;
const B_K_FAST: bool = false;

// The reduction cursors AKs/BKs are gemm_plain_k.wgsl's (plain k, nothing to precompute).

struct ARow {
    m: u32,
    ok: bool,
}

fn a_row(m: u32) -> ARow {
    return ARow(m, m < P.m);
}

fn load_a(r: ARow, s: AKs, k_end: u32) -> f32 {
    let k = s.k;
    if (!r.ok || k >= k_end) {
        return 0.0;
    }
    if (TRANS_A) {
        return ma[k * P.m + r.m];
    }
    return ma[r.m * P.k + k];
}

struct BCol {
    n: u32,
    ok: bool,
}

fn b_col(n: u32) -> BCol {
    return BCol(n, n < P.n);
}

fn load_b(c: BCol, s: BKs, k_end: u32) -> f32 {
    let k = s.k;
    if (!c.ok || k >= k_end) {
        return 0.0;
    }
    if (TRANS_B) {
        return mb[c.n * P.k + k];
    }
    return mb[k * P.n + c.n];
}

fn store_c(m: u32, n: u32, split: u32, v: f32) {
    mc[(split * P.m + m) * P.n + n] = v;
}
