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
// The tiles are staged by gemm_stage.wgsl (A_K_FAST/B_K_FAST are explained there).
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

    var stage = stage_new(m0, n0, k_begin, lid);
    if (PREFETCH) {
        stage_fetch(&stage, k_end);
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
            stage_fetch(&stage, k_end);
        }
        stage_store(&stage, lid);
        workgroupBarrier();
        if (PREFETCH) {
            // The next tile's loads go out now and land while this tile is multiplied.
            stage_fetch(&stage, k_end);
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
