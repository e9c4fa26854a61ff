// The paper's option-A shortcut: y[n, o, oy, ox] = x[n, o - pad_before, oy*S, ox*S] for the
// channels that exist, 0 for the zero-padded ones; and its adjoint, one thread per input element.

const WG: u32 = 256u;

struct Params {
    len: u32,
    c_in: u32,
    c_out: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    stride: u32,
    pad_before: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

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
