// The register-tiled GEMM loop shared by matmul.wgsl and the three convolution kernels:
// C[M, N] = A[M, K] . B[K, N], one BM x BN tile of C a workgroup, TM x TN of it a thread held in
// registers, K walked BK at a time through workgroup memory, the next K-tile's global loads in
// flight (in registers) while the current one is multiplied. The family file in front of this
// one says what A, B and C are (plain matrices, or an image read as its patch matrix):
//   struct ARow; fn a_row(m) -> ARow          a row of A (set up once per thread and load)
//   struct AKs;  fn a_ks(k) -> AKs             where position k of that row is...
//                fn a_ks_next(s) -> AKs        ...and k + BK (incremental: no division per tile)
//   fn load_a(row, ks, k_end) -> f32           0 outside A or at k >= k_end
//   (the same for B: BCol, b_col(n), BKs, b_ks, b_ks_next, load_b)
//   fn store_c(m, n, split, v)                 m < M, n < N
// (gemm_plain_k.wgsl provides AKs/BKs for families whose cursor is k itself)
// and through its Params, which begin with m, n, k, splits, k_chunk (gemm.rs checks it at compile
// time). With splits > 1 the K range is cut in chunks of k_chunk, one a workgroup, each writing
// its own partial C (split-K), which reduce.wgsl adds up in a fixed order.
// A_K_FAST/B_K_FAST: whether consecutive threads load consecutive k (true) or consecutive m/n
// (false) of a tile, whichever is contiguous in memory. Either way a thread's loads of one tile
// share one thing: with k fast they all sit at the same k (one k-state, several rows), otherwise
// in the same row or column (one row, several k-states) -- few registers for addressing.
// PREFETCH: issue the next tile's loads before multiplying the current one.
// Operand: the type the tiles are held in. f16 (mixed precision, on adapters with SHADER_F16)
// rounds both operands to half precision, as PyTorch's autocast does; the products and their sums
// stay f32 (an f16 x f16 product is exact in f32), so only the operands lose bits.

const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 8u;
const TM: u32 = 8u;
const TN: u32 = 8u;
const PREFETCH: bool = true;
alias Operand = f32;

const TY: u32 = BM / TM;
const TX: u32 = BN / TN;
const THREADS: u32 = TX * TY;
const A_LOADS: u32 = (BM * BK + THREADS - 1u) / THREADS;
const B_LOADS: u32 = (BN * BK + THREADS - 1u) / THREADS;
// How many rows (k fast) or k-states (otherwise) a thread keeps for its loads.
const A_ROWS: u32 = select(1u, A_LOADS, A_K_FAST);
const A_KS: u32 = select(A_LOADS, 1u, A_K_FAST);
const B_COLS: u32 = select(1u, B_LOADS, B_K_FAST);
const B_KS: u32 = select(B_LOADS, 1u, B_K_FAST);

var<workgroup> As: array<Operand, BK * BM>;
var<workgroup> Bs: array<Operand, BK * BN>;

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

    // Load i of a tile is element e = lid + i * THREADS of it (if e < BM * BK).
    var a_rows: array<ARow, A_ROWS>;
    var a_s: array<AKs, A_KS>;
    var a_slot: array<u32, A_LOADS>;
    for (var i = 0u; i < A_LOADS; i++) {
        let e = lid + i * THREADS;
        if (A_K_FAST) {
            a_slot[i] = (e % BK) * BM + e / BK;
            a_rows[i] = a_row(m0 + e / BK);
        } else {
            a_slot[i] = e;
            a_s[i] = a_ks(k_begin + e / BM);
        }
    }
    if (A_K_FAST) {
        a_s[0] = a_ks(k_begin + lid % BK);
    } else {
        a_rows[0] = a_row(m0 + lid % BM);
    }
    var b_cols: array<BCol, B_COLS>;
    var b_s: array<BKs, B_KS>;
    var b_slot: array<u32, B_LOADS>;
    for (var i = 0u; i < B_LOADS; i++) {
        let e = lid + i * THREADS;
        if (B_K_FAST) {
            b_slot[i] = (e % BK) * BN + e / BK;
            b_cols[i] = b_col(n0 + e / BK);
        } else {
            b_slot[i] = e;
            b_s[i] = b_ks(k_begin + e / BN);
        }
    }
    if (B_K_FAST) {
        b_s[0] = b_ks(k_begin + lid % BK);
    } else {
        b_cols[0] = b_col(n0 + lid % BN);
    }

    var a_reg: array<f32, A_LOADS>;
    var b_reg: array<f32, B_LOADS>;
    if (PREFETCH) {
        for (var i = 0u; i < A_LOADS; i++) {
            a_reg[i] = load_a(a_rows[select(0u, i, A_K_FAST)], a_s[select(i, 0u, A_K_FAST)], k_end);
        }
        for (var i = 0u; i < B_LOADS; i++) {
            b_reg[i] = load_b(b_cols[select(0u, i, B_K_FAST)], b_s[select(i, 0u, B_K_FAST)], k_end);
        }
        for (var i = 0u; i < A_KS; i++) {
            a_s[i] = a_ks_next(a_s[i]);
        }
        for (var i = 0u; i < B_KS; i++) {
            b_s[i] = b_ks_next(b_s[i]);
        }
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
        if (!PREFETCH) {
            for (var i = 0u; i < A_LOADS; i++) {
                a_reg[i] = load_a(a_rows[select(0u, i, A_K_FAST)], a_s[select(i, 0u, A_K_FAST)], k_end);
            }
            for (var i = 0u; i < B_LOADS; i++) {
                b_reg[i] = load_b(b_cols[select(0u, i, B_K_FAST)], b_s[select(i, 0u, B_K_FAST)], k_end);
            }
            for (var i = 0u; i < A_KS; i++) {
                a_s[i] = a_ks_next(a_s[i]);
            }
            for (var i = 0u; i < B_KS; i++) {
                b_s[i] = b_ks_next(b_s[i]);
            }
        }
        for (var i = 0u; i < A_LOADS; i++) {
            if (lid + i * THREADS < BM * BK) {
                As[a_slot[i]] = Operand(a_reg[i]);
            }
        }
        for (var i = 0u; i < B_LOADS; i++) {
            if (lid + i * THREADS < BN * BK) {
                Bs[b_slot[i]] = Operand(b_reg[i]);
            }
        }
        workgroupBarrier();
        if (PREFETCH) {
            // The next tile's loads go out now and land while this tile is multiplied.
            for (var i = 0u; i < A_LOADS; i++) {
                a_reg[i] = load_a(a_rows[select(0u, i, A_K_FAST)], a_s[select(i, 0u, A_K_FAST)], k_end);
            }
            for (var i = 0u; i < B_LOADS; i++) {
                b_reg[i] = load_b(b_cols[select(0u, i, B_K_FAST)], b_s[select(i, 0u, B_K_FAST)], k_end);
            }
            for (var i = 0u; i < A_KS; i++) {
                a_s[i] = a_ks_next(a_s[i]);
            }
            for (var i = 0u; i < B_KS; i++) {
                b_s[i] = b_ks_next(b_s[i]);
            }
        }
        for (var kk = 0u; kk < BK; kk++) {
            for (var i = 0u; i < TM; i++) {
                a[i] = f32(As[kk * BM + ty + i * TY]);
            }
            for (var j = 0u; j < TN; j++) {
                b[j] = f32(Bs[kk * BN + tx + j * TX]);
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
