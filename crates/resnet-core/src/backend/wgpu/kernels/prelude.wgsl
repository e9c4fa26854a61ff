// Helpers shared by every family whose kernels run WG threads a workgroup (WG is generated from
// the Rust constant). Workgroup arrays a kernel does not touch take no memory in its pipeline.

// The element a thread owns: workgroups lie on a 2-D grid (each dimension at most the adapter's
// limit), so any length fits.
fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

// The flat index of a workgroup on the same 2-D grid.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Workgroup sums in a fixed order (a tree over the threads), so results do not depend on timing.
var<workgroup> red: array<f32, WG>;
var<workgroup> red0: array<f32, WG>;
var<workgroup> red1: array<f32, WG>;

// The sum of every thread's v; safe to call again right after (the last barrier frees `red`).
fn workgroup_sum(v: f32, lid: u32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// Two sums at once (a statistic and its square, a gradient and its projection); call once.
fn workgroup_sum2(a: f32, b: f32, lid: u32) -> vec2<f32> {
    red0[lid] = a;
    red1[lid] = b;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red0[lid] += red0[lid + s];
            red1[lid] += red1[lid + s];
        }
        workgroupBarrier();
    }
    return vec2<f32>(red0[0], red1[0]);
}

// Neither inf nor NaN, read from the exponent bits (a comparison may be folded away by a driver
// that assumes no NaN).
fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}
