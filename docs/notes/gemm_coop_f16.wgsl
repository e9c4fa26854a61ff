// Mixed-precision GEMM draft for wgpu 30 / naga 30 cooperative matrices.
//
//   C[M, N] = A[M, K] * B[K, N]        (all three row-major, f32 in memory)
//
// A and B are read as f32, rounded to f16 and staged in workgroup memory
// (zero-padded past M / N / K), multiplied with f16 cooperative matrices and
// accumulated in f32 cooperative matrices. The 64x64 output tile of a
// workgroup goes through workgroup memory so the edges can be masked.
//
// Dispatch: ceil(N / 64) x ceil(M / 64) x 1 workgroups (x = column tile,
// y = row tile) for every entry point.
//
// Entry points (they share one set of workgroup buffers, 20 KiB in all:
// request `max_compute_workgroup_storage_size >= 20480`, the default is 16384):
//
//   gemm_coop16      16x16x16 f16 x f16 -> f32. The accumulators stay in the
//                    f32 workgroup tile (load C, multiply-add, store C each
//                    K step). Works for any subgroup size that divides 128.
//   gemm_coop16_reg  16x16x16, accumulators in registers: each subgroup owns
//                    32x32 quadrants (2x2 fragments). Needs at most 4
//                    subgroups per workgroup, i.e. subgroup size >= 32
//                    (NVIDIA: 32). Use gemm_coop16 elsewhere.
//   gemm_coop8       8x8x8 f16 x f16 -> f32 version of gemm_coop16 (e.g. for
//                    adapters that only report 8x8x8, such as Metal).
//
// Rules this file follows (see REPORT.md):
// * every coopLoad/coopStore/coopMultiplyAdd runs in control flow that is
//   uniform across the subgroup: only loops whose bounds come from uniform
//   values or from subgroup_id / num_subgroups, never an `if` around them;
// * `coopLoadT`/`coopStoreT` = row-major memory, stride in elements;
// * every pointer offset and stride is a multiple of 16 bytes
//   (VUID-RuntimeSpirv-OpCooperativeMatrixLoadKHR-08986);
// * @workgroup_size(128): the x size must be a multiple of the subgroup size
//   (VUID-VkPipelineShaderStageCreateInfo-module-08987).

enable f16;
enable wgpu_cooperative_matrix;

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> mat_a: array<f32>;        // M x K
@group(0) @binding(1) var<storage, read> mat_b: array<f32>;        // K x N
@group(0) @binding(2) var<storage, read_write> mat_c: array<f32>;  // M x N
@group(0) @binding(3) var<uniform> params: GemmParams;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;
const WG_SIZE: u32 = 128u;

// Row-major strides of the workgroup tiles, in elements.
const A_STRIDE: u32 = TILE_K; // a_tile: TILE_M x TILE_K f16 (32-byte rows)
const B_STRIDE: u32 = TILE_N; // b_tile: TILE_K x TILE_N f16 (128-byte rows)
const C_STRIDE: u32 = TILE_N; // c_tile: TILE_M x TILE_N f32 (256-byte rows)

var<workgroup> a_tile: array<f16, 1024>; // TILE_M * TILE_K
var<workgroup> b_tile: array<f16, 1024>; // TILE_K * TILE_N
var<workgroup> c_tile: array<f32, 4096>; // TILE_M * TILE_N

// Rounds the A[row0.., k0..] and B[k0.., col0..] blocks to f16 into a_tile and
// b_tile; elements outside the matrices become 0 so they add nothing.
fn stage_tiles(lid: u32, row0: u32, col0: u32, k0: u32) {
    for (var i = lid; i < TILE_M * TILE_K; i += WG_SIZE) {
        let r = row0 + i / TILE_K;
        let kk = k0 + i % TILE_K;
        var v = 0.0;
        if (r < params.m && kk < params.k) {
            v = mat_a[r * params.k + kk];
        }
        a_tile[i] = f16(v);
    }
    for (var i = lid; i < TILE_K * TILE_N; i += WG_SIZE) {
        let kk = k0 + i / TILE_N;
        let c = col0 + i % TILE_N;
        var v = 0.0;
        if (kk < params.k && c < params.n) {
            v = mat_b[kk * params.n + c];
        }
        b_tile[i] = f16(v);
    }
}

fn clear_c_tile(lid: u32) {
    for (var i = lid; i < TILE_M * TILE_N; i += WG_SIZE) {
        c_tile[i] = 0.0;
    }
}

// Copies the part of c_tile that lies inside C to global memory.
fn write_c_tile(lid: u32, row0: u32, col0: u32) {
    for (var i = lid; i < TILE_M * TILE_N; i += WG_SIZE) {
        let r = row0 + i / TILE_N;
        let c = col0 + i % TILE_N;
        if (r < params.m && c < params.n) {
            mat_c[r * params.n + c] = c_tile[i];
        }
    }
}

@compute @workgroup_size(128)
fn gemm_coop16(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
) {
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE_N;
    clear_c_tile(lid);

    let k_tiles = (params.k + TILE_K - 1u) / TILE_K;
    for (var kt = 0u; kt < k_tiles; kt += 1u) {
        // Orders the previous step's coop loads (and the clearing) before restaging.
        workgroupBarrier();
        stage_tiles(lid, row0, col0, kt * TILE_K);
        workgroupBarrier();

        // 4x4 fragments of 16x16; subgroup s owns f = s, s + sg_count, ...
        // The loop bounds are the same for every invocation of a subgroup.
        for (var f = sg_id; f < 16u; f += sg_count) {
            let fr = f / 4u;
            let fc = f % 4u;
            let a = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[fr * 16u * A_STRIDE], A_STRIDE);
            let b = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[fc * 16u], B_STRIDE);
            let c_off = fr * 16u * C_STRIDE + fc * 16u;
            let acc = coopLoadT<coop_mat16x16<f32, C>>(&c_tile[c_off], C_STRIDE);
            coopStoreT(coopMultiplyAdd(a, b, acc), &c_tile[c_off], C_STRIDE);
        }
    }

    workgroupBarrier();
    write_c_tile(lid, row0, col0);
}

@compute @workgroup_size(128)
fn gemm_coop16_reg(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
) {
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE_N;
    let k_tiles = (params.k + TILE_K - 1u) / TILE_K;

    // Quadrant q (32x32 of the 64x64 tile) is computed by subgroup q % sg_count.
    // With sg_count in {1, 2, 4} every subgroup runs the same number of rounds,
    // so all invocations reach the same barriers.
    for (var q = sg_id; q < 4u; q += sg_count) {
        let qr = (q / 2u) * 32u; // first row of the quadrant inside the tile
        let qc = (q % 2u) * 32u; // first column
        var acc00 = coop_mat16x16<f32, C>();
        var acc01 = coop_mat16x16<f32, C>();
        var acc10 = coop_mat16x16<f32, C>();
        var acc11 = coop_mat16x16<f32, C>();

        for (var kt = 0u; kt < k_tiles; kt += 1u) {
            workgroupBarrier();
            stage_tiles(lid, row0, col0, kt * TILE_K);
            workgroupBarrier();

            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[qr * A_STRIDE], A_STRIDE);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[(qr + 16u) * A_STRIDE], A_STRIDE);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[qc], B_STRIDE);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[qc + 16u], B_STRIDE);
            acc00 = coopMultiplyAdd(a0, b0, acc00);
            acc01 = coopMultiplyAdd(a0, b1, acc01);
            acc10 = coopMultiplyAdd(a1, b0, acc10);
            acc11 = coopMultiplyAdd(a1, b1, acc11);
        }

        // Each quadrant of c_tile is written by exactly one subgroup.
        let c0 = qr * C_STRIDE + qc;
        coopStoreT(acc00, &c_tile[c0], C_STRIDE);
        coopStoreT(acc01, &c_tile[c0 + 16u], C_STRIDE);
        coopStoreT(acc10, &c_tile[c0 + 16u * C_STRIDE], C_STRIDE);
        coopStoreT(acc11, &c_tile[c0 + 16u * C_STRIDE + 16u], C_STRIDE);
    }

    workgroupBarrier();
    write_c_tile(lid, row0, col0);
}

@compute @workgroup_size(128)
fn gemm_coop8(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
) {
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE_N;
    clear_c_tile(lid);

    let k_tiles = (params.k + TILE_K - 1u) / TILE_K;
    for (var kt = 0u; kt < k_tiles; kt += 1u) {
        workgroupBarrier();
        stage_tiles(lid, row0, col0, kt * TILE_K);
        workgroupBarrier();

        // 8x8 fragments of 8x8; two K steps of 8 per staged K tile of 16.
        for (var f = sg_id; f < 64u; f += sg_count) {
            let fr = f / 8u;
            let fc = f % 8u;
            let c_off = fr * 8u * C_STRIDE + fc * 8u;
            var acc = coopLoadT<coop_mat8x8<f32, C>>(&c_tile[c_off], C_STRIDE);
            for (var ks = 0u; ks < TILE_K; ks += 8u) {
                let a = coopLoadT<coop_mat8x8<f16, A>>(&a_tile[fr * 8u * A_STRIDE + ks], A_STRIDE);
                let b = coopLoadT<coop_mat8x8<f16, B>>(&b_tile[ks * B_STRIDE + fc * 8u], B_STRIDE);
                acc = coopMultiplyAdd(a, b, acc);
            }
            coopStoreT(acc, &c_tile[c_off], C_STRIDE);
        }
    }

    workgroupBarrier();
    write_c_tile(lid, row0, col0);
}
