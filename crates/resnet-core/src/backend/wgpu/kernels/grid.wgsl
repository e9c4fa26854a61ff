// Index decoding shared by the families that address NCHW tensors or convolution windows.

// Where flat index i lies in an array of [rows, cols] slices: the slice (`outer`: an image, a
// plane or a channel), the position `p` within it, and that position's row and column.
struct GridPos {
    outer: u32,
    p: u32,
    row: u32,
    col: u32,
}

fn grid_pos(i: u32, rows: u32, cols: u32) -> GridPos {
    let size = rows * cols;
    let outer = i / size;
    let p = i - outer * size;
    let row = p / cols;
    return GridPos(outer, p, row, p - row * cols);
}

// Index in an [N, C, HW] tensor of value e (of N * HW) of channel ch.
fn channel_element(e: u32, ch: u32, c: u32, hw: u32) -> u32 {
    let img = e / hw;
    return (img * c + ch) * hw + (e - img * hw);
}
