// The paper's option-A shortcut: y[n, o, oy, ox] = x[n, o - pad_before, oy*S, ox*S] for the
// channels that exist, 0 for the zero-padded ones; and its adjoint, one thread per input element.

// P.len = n * c_out * oh * ow
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let ohw = P.oh * P.ow;
    let plane = i / ohw;
    let p = i - plane * ohw;
    let img = plane / P.c_out;
    let o = plane - img * P.c_out;
    if (o < P.pad_before || o >= P.pad_before + P.c_in) {
        dst[i] = 0.0;
        return;
    }
    let oy = p / P.ow;
    let ox = p - oy * P.ow;
    dst[i] = src[((img * P.c_in + o - P.pad_before) * P.h + oy * P.stride) * P.w + ox * P.stride];
}

// P.len = n * c_in * h * w
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let hw = P.h * P.w;
    let plane = i / hw;
    let p = i - plane * hw;
    let img = plane / P.c_in;
    let c = plane - img * P.c_in;
    let iy = p / P.w;
    let ix = p - iy * P.w;
    if (iy % P.stride != 0u || ix % P.stride != 0u) {
        dst[i] = 0.0;
        return;
    }
    dst[i] = src[((img * P.c_out + c + P.pad_before) * P.oh + iy / P.stride) * P.ow + ix / P.stride];
}
