// The register-tiled GEMM loop shared by matmul.wgsl and the three convolution kernels:
// C[M, N] = A[M, K] . B[K, N], one BM x BN tile of C a workgroup, TM x TN of it a thread held in
// registers, K walked BK at a time through workgroup memory. The family file in front of this one
// says what A, B and C are (plain matrices, or an image read as its patch matrix), through
//   struct ARow; fn a_row(m) -> ARow; fn load_a(row, k, k_end) -> f32   (0 outside A)
//   struct BCol; fn b_col(n) -> BCol; fn load_b(col, k, k_end) -> f32   (0 outside B)
//   fn store_c(m, n, split, v)                                          (m < M, n < N)
// and through its Params, which begin with m, n, k, splits, k_chunk. With splits > 1 the K range
// is cut in chunks of k_chunk, one a workgroup, each writing its own partial C (split-K).
// A_K_FAST/B_K_FAST: whether consecutive threads load consecutive k (true) or consecutive m/n
// (false) of a tile, whichever is contiguous in memory.

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 8u;
const TM: u32 = 8u;
const TN: u32 = 8u;

const TY: u32 = BM / TM;
const TX: u32 = BN / TN;
const THREADS: u32 = TX * TY;
const A_LOADS: u32 = (BM * BK + THREADS - 1u) / THREADS;
const B_LOADS: u32 = (BN * BK + THREADS - 1u) / THREADS;

var<workgroup> As: array<f32, BK * BM>;
var<workgroup> Bs: array<f32, BK * BN>;

@compute @workgroup_size(THREADS)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tiles_n = (P.n + BN - 1u) / BN;
    let tiles_m = (P.m + BM - 1u) / BM;
    let flat = wid.x + wid.y * nwg.x;
    if (flat >= tiles_n * tiles_m * P.splits) {
        return;
    }
    let tile_n = flat % tiles_n;
    let rest = flat / tiles_n;
    let tile_m = rest % tiles_m;
    let split = rest / tiles_m;
    let m0 = tile_m * BM;
    let n0 = tile_n * BN;
    let k_begin = split * P.k_chunk;
    let k_end = min(P.k, k_begin + P.k_chunk);

    // The tile elements this thread loads: fixed rows/columns, so their addressing is set up once.
    var a_rows: array<ARow, A_LOADS>;
    var a_k: array<u32, A_LOADS>;
    var a_slot: array<u32, A_LOADS>;
    for (var i = 0u; i < A_LOADS; i++) {
        let e = min(lid + i * THREADS, BM * BK - 1u);
        var m: u32;
        var kk: u32;
        if (A_K_FAST) { kk = e % BK; m = e / BK; } else { m = e % BM; kk = e / BM; }
        a_rows[i] = a_row(m0 + m);
        a_k[i] = kk;
        a_slot[i] = kk * BM + m;
    }
    var b_cols: array<BCol, B_LOADS>;
    var b_k: array<u32, B_LOADS>;
    var b_slot: array<u32, B_LOADS>;
    for (var i = 0u; i < B_LOADS; i++) {
        let e = min(lid + i * THREADS, BN * BK - 1u);
        var n: u32;
        var kk: u32;
        if (B_K_FAST) { kk = e % BK; n = e / BK; } else { n = e % BN; kk = e / BN; }
        b_cols[i] = b_col(n0 + n);
        b_k[i] = kk;
        b_slot[i] = kk * BN + n;
    }

    let tx = lid % TX;
    let ty = lid / TX;
    var acc: array<f32, TM * TN>;
    for (var i = 0u; i < TM * TN; i++) {
        acc[i] = 0.0;
    }
    var a: array<f32, TM>;
    var b: array<f32, TN>;

    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        for (var i = 0u; i < A_LOADS; i++) {
            As[a_slot[i]] = load_a(a_rows[i], k0 + a_k[i], k_end);
        }
        for (var i = 0u; i < B_LOADS; i++) {
            Bs[b_slot[i]] = load_b(b_cols[i], k0 + b_k[i], k_end);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            for (var i = 0u; i < TM; i++) {
                a[i] = As[kk * BM + ty + i * TY];
            }
            for (var j = 0u; j < TN; j++) {
                b[j] = Bs[kk * BN + tx + j * TX];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] = fma(a[i], b[j], acc[i * TN + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < TM; i++) {
        let m = m0 + ty + i * TY;
        if (m < P.m) {
            for (var j = 0u; j < TN; j++) {
                let n = n0 + tx + j * TX;
                if (n < P.n) {
                    store_c(m, n, split, acc[i * TN + j]);
                }
            }
        }
    }
}
