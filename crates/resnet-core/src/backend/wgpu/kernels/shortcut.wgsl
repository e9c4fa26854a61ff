// The paper's option-A shortcut: y[n, o, oy, ox] = x[n, o - pad_before, oy*S, ox*S] for the
// channels that exist, 0 for the zero-padded ones; and its adjoint, one thread per input element.

// P.len = n * c_out * oh * ow
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let at = grid_pos(i, P.oh, P.ow);
    let img = at.outer / P.c_out;
    let o = at.outer - img * P.c_out;
    if (o < P.pad_before || o >= P.pad_before + P.c_in) {
        dst[i] = 0.0;
        return;
    }
    dst[i] = src[((img * P.c_in + o - P.pad_before) * P.h + at.row * P.stride) * P.w + at.col * P.stride];
}

// P.len = n * c_in * h * w
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let at = grid_pos(i, P.h, P.w);
    let img = at.outer / P.c_in;
    let c = at.outer - img * P.c_in;
    if (at.row % P.stride != 0u || at.col % P.stride != 0u) {
        dst[i] = 0.0;
        return;
    }
    dst[i] = src[((img * P.c_out + c + P.pad_before) * P.oh + at.row / P.stride) * P.ow + at.col / P.stride];
}
