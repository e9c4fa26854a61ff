// How both GEMM loops (gemm_tile.wgsl, gemm_coop.wgsl) bring each K step's BM x BK tile of A and
// BK x BN tile of B from the family's hooks into workgroup memory. The loop file defines BM, BN,
// BK, THREADS, Operand and the tiles As[k * BM + m], Bs[k * BN + n]. Load i of a tile is element
// e = lid + i * THREADS of it (if e < BM * BK). A_K_FAST/B_K_FAST: whether consecutive threads
// load consecutive k (true) or consecutive m/n (false) of a tile, whichever is contiguous in
// memory. Either way a thread's loads of one tile share one thing: with k fast they all sit at the
// same k (one k-state, several rows), otherwise in the same row or column (one row, several
// k-states) -- few registers for addressing.

const A_LOADS: u32 = (BM * BK + THREADS - 1u) / THREADS;
const B_LOADS: u32 = (BN * BK + THREADS - 1u) / THREADS;
// How many rows (k fast) or k-states (otherwise) a thread keeps for its loads.
const A_ROWS: u32 = select(1u, A_LOADS, A_K_FAST);
const A_KS: u32 = select(A_LOADS, 1u, A_K_FAST);
const B_COLS: u32 = select(1u, B_LOADS, B_K_FAST);
const B_KS: u32 = select(B_LOADS, 1u, B_K_FAST);

// One thread's part of the staging: where its loads come from and go to, and the values of the
// tile fetched last, held in registers until they are stored.
struct Stage {
    a_rows: array<ARow, A_ROWS>,
    a_s: array<AKs, A_KS>,
    a_slot: array<u32, A_LOADS>,
    b_cols: array<BCol, B_COLS>,
    b_s: array<BKs, B_KS>,
    b_slot: array<u32, B_LOADS>,
    a_reg: array<f32, A_LOADS>,
    b_reg: array<f32, B_LOADS>,
}

// Thread `lid`'s staging for the tile at (m0, n0), its reduction starting at k_begin.
fn stage_new(m0: u32, n0: u32, k_begin: u32, lid: u32) -> Stage {
    var s: Stage;
    for (var i = 0u; i < A_LOADS; i++) {
        let e = lid + i * THREADS;
        if (A_K_FAST) {
            s.a_slot[i] = (e % BK) * BM + e / BK;
            s.a_rows[i] = a_row(m0 + e / BK);
        } else {
            s.a_slot[i] = e;
            s.a_s[i] = a_ks(k_begin + e / BM);
        }
    }
    if (A_K_FAST) {
        s.a_s[0] = a_ks(k_begin + lid % BK);
    } else {
        s.a_rows[0] = a_row(m0 + lid % BM);
    }
    for (var i = 0u; i < B_LOADS; i++) {
        let e = lid + i * THREADS;
        if (B_K_FAST) {
            s.b_slot[i] = (e % BK) * BN + e / BK;
            s.b_cols[i] = b_col(n0 + e / BK);
        } else {
            s.b_slot[i] = e;
            s.b_s[i] = b_ks(k_begin + e / BN);
        }
    }
    if (B_K_FAST) {
        s.b_s[0] = b_ks(k_begin + lid % BK);
    } else {
        s.b_cols[0] = b_col(n0 + lid % BN);
    }
    return s;
}

// The next tile's values into registers (0 at k >= k_end); the cursors move on by BK.
fn stage_fetch(s: ptr<function, Stage>, k_end: u32) {
    for (var i = 0u; i < A_LOADS; i++) {
        (*s).a_reg[i] = load_a((*s).a_rows[select(0u, i, A_K_FAST)], (*s).a_s[select(i, 0u, A_K_FAST)], k_end);
    }
    for (var i = 0u; i < B_LOADS; i++) {
        (*s).b_reg[i] = load_b((*s).b_cols[select(0u, i, B_K_FAST)], (*s).b_s[select(i, 0u, B_K_FAST)], k_end);
    }
    for (var i = 0u; i < A_KS; i++) {
        (*s).a_s[i] = a_ks_next((*s).a_s[i]);
    }
    for (var i = 0u; i < B_KS; i++) {
        (*s).b_s[i] = b_ks_next((*s).b_s[i]);
    }
}

// The fetched tile into workgroup memory, rounded to Operand.
fn stage_store(s: ptr<function, Stage>, lid: u32) {
    for (var i = 0u; i < A_LOADS; i++) {
        if (lid + i * THREADS < BM * BK) {
            As[(*s).a_slot[i]] = Operand((*s).a_reg[i]);
        }
    }
    for (var i = 0u; i < B_LOADS; i++) {
        if (lid + i * THREADS < BN * BK) {
            Bs[(*s).b_slot[i]] = Operand((*s).b_reg[i]);
        }
    }
}
