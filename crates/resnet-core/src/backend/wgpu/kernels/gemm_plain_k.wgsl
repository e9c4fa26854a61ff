// Reduction cursors for gemm_tile.wgsl when neither operand needs per-k precomputation: the
// cursor is the position k itself, one type serving A and B. Shared by matmul, conv2d_forward and
// conv2d_backward_data.
struct AKs {
    k: u32,
}

alias BKs = AKs;

fn a_ks(k: u32) -> AKs {
    return AKs(k);
}

fn a_ks_next(s: AKs) -> AKs {
    return AKs(s.k + BK);
}

fn b_ks(k: u32) -> BKs {
    return a_ks(k);
}

fn b_ks_next(s: BKs) -> BKs {
    return a_ks_next(s);
}
