// The cooperative-matrix GEMM loop (tensor cores): gemm_tile.wgsl's twin for precision 'mixed' on
// adapters with 16x16x16 f16 x f16 -> f32 cooperative matrices. The family file in front of it is
// the same (its a_row/load_a/b_col/load_b/store_c hooks and its Params), and so are the output
// tile of a workgroup (BM x BN = 64 x 128, as gemm.rs's tile for M > 32), the split-K scheme and
// the staging of the tiles (gemm_stage.wgsl).
// A workgroup is SUBGROUPS = 8 subgroups of SG threads; subgroup s owns the 32x32 block
// (s / 4, s % 4) of the tile as 2 x 2 accumulators. Each step of BK = 32 along K loads the A and B
// tiles into workgroup memory rounded to Operand (f16: as gemm_tile.wgsl's f16 tiles, so the two
// loops see the same operands), and each subgroup multiplies its fragments, summing in f32. At the
// end every accumulator passes through the subgroup's 16x16 f32 scratch, from which the family's
// store_c (bounds, layout, epilogue) writes it. SG is the adapter's one subgroup size (gemm.rs).

enable wgpu_cooperative_matrix;

const BM: u32 = 64u;
const BN: u32 = 128u;
const BK: u32 = 32u;
const SG: u32 = 32u;
alias Operand = f32;

const SUBGROUPS: u32 = 8u;
const THREADS: u32 = SG * SUBGROUPS;
const FRAG: u32 = 256u;

// As[k * BM + m] and Bs[k * BN + n]: A read column-major (stride BM), B row-major (stride BN).
var<workgroup> As: array<Operand, BK * BM>;
var<workgroup> Bs: array<Operand, BK * BN>;
var<workgroup> Cs: array<f32, SUBGROUPS * FRAG>;

// One accumulator of subgroup `sg`, at (row, col) of the tile, through the scratch to store_c.
fn store_fragment(acc: coop_mat16x16<f32, C>, sg: u32, lane: u32, row: u32, col: u32, split: u32) {
    coopStoreT(acc, &Cs[sg * FRAG], 16u);
    workgroupBarrier();
    for (var e = lane; e < FRAG; e += SG) {
        let m = row + e / 16u;
        let n = col + e % 16u;
        if (m < P.m && n < P.n) {
            store_c(m, n, split, Cs[sg * FRAG + e]);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(THREADS)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let tiles_n = (P.n + BN - 1u) / BN;
    let tiles_m = (P.m + BM - 1u) / BM;
    let flat = wid.x + wid.y * nwg.x;
    // Whole workgroups leave together: the cooperative operations need every invocation of a
    // subgroup, and the barriers every invocation of the workgroup.
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

    // The accumulators start from a zeroed scratch.
    for (var e = lid; e < SUBGROUPS * FRAG; e += THREADS) {
        Cs[e] = 0.0;
    }
    workgroupBarrier();
    var c00 = coopLoadT<coop_mat16x16<f32, C>>(&Cs[sg * FRAG], 16u);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;
    let row = (sg / 4u) * 32u;
    let col = (sg % 4u) * 32u;

    stage_fetch(&stage, k_end);
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        stage_store(&stage, lid);
        workgroupBarrier();
        // The next tile's loads go out now and land while this one is multiplied.
        stage_fetch(&stage, k_end);
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = coopLoad<coop_mat16x16<Operand, A>>(&As[kk * BM + row], BM);
            let a1 = coopLoad<coop_mat16x16<Operand, A>>(&As[kk * BM + row + 16u], BM);
            let b0 = coopLoadT<coop_mat16x16<Operand, B>>(&Bs[kk * BN + col], BN);
            let b1 = coopLoadT<coop_mat16x16<Operand, B>>(&Bs[kk * BN + col + 16u], BN);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }

    store_fragment(c00, sg, lane, m0 + row, n0 + col, split);
    store_fragment(c01, sg, lane, m0 + row, n0 + col + 16u, split);
    store_fragment(c10, sg, lane, m0 + row + 16u, n0 + col, split);
    store_fragment(c11, sg, lane, m0 + row + 16u, n0 + col + 16u, split);
}
