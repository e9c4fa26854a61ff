// What the three convolution families share in front of gemm_tile.wgsl. The window's shape,
// stride and padding are constants of each variant (conv.rs replaces these values), so the
// patch index arithmetic divides by constants.

const KH: u32 = 3u;
const KW: u32 = 3u;
const STRIDE: u32 = 1u;
const PAD: u32 = 1u;

// A row of A: where it starts, and whether it exists (m < M).
struct ARow {
    base: u32,
    ok: bool,
}
