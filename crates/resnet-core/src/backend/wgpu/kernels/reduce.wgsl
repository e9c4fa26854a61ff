// Reductions. Sums are taken in a fixed order (per thread, then a tree in workgroup memory), so
// results do not depend on timing.
//   sum_leading:   out[i] = sum over s of x[s * len + i]      (split-K partials, Linear's bias grad)
//   sum_leading_epilogue: act(that sum + residual[i])         (an inference convolution's split-K
//                  partials and the epilogue its store could not apply: P.act 0 none, else 1 + code)
//   sum_chunks:    out[g] = sum of x[g * CHUNK ..][..CHUNK]    (sum_all, applied until one is left)
//   channel_sums:  partial[q, c] = sum of chunk q of channel c of an [N, C, HW] tensor
//                  (then sum_leading over q: the per-channel sum, e.g. a bias gradient)
//   flag_nonfinite: out[0] = some inf or NaN of x, if x has one (left alone otherwise)

fn leading_sum(i: u32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < P.count; j++) {
        s += x[j * P.len + i];
    }
    return s;
}

@compute @workgroup_size(WG)
fn sum_leading(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) {
        out[i] = leading_sum(i);
    }
}

@compute @workgroup_size(WG)
fn sum_leading_epilogue(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    var s = leading_sum(i);
    if (P.residual != 0u) {
        s = s + residual[i];
    }
    if (P.act != 0u) {
        s = activate(s, P.act - 1u);
    }
    out[i] = s;
}

@compute @workgroup_size(WG)
fn sum_chunks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = workgroup_index(wid, nwg);
    if (g >= P.count) {
        return;
    }
    var s = 0.0;
    for (var i = 0u; i < ITEMS; i++) {
        let e = g * CHUNK + i * WG + lid;
        if (e < P.len) {
            s += x[e];
        }
    }
    let total = workgroup_sum(s, lid);
    if (lid == 0u) {
        out[g] = total;
    }
}

// One workgroup per (chunk q, channel c); P.count = number of chunks, P.len = N * HW.
@compute @workgroup_size(WG)
fn channel_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let flat = workgroup_index(wid, nwg);
    if (flat >= P.count * P.c) {
        return;
    }
    let ch = flat % P.c;
    let q = flat / P.c;
    var s = 0.0;
    for (var i = 0u; i < ITEMS; i++) {
        let e = q * CHUNK + i * WG + lid;
        if (e < P.len) {
            s += x[channel_element(e, ch, P.c, P.hw)];
        }
    }
    let total = workgroup_sum(s, lid);
    if (lid == 0u) {
        out[flat] = total;
    }
}

// A mixed-precision step's overflow check, one dispatch a gradient into the same out[0] (zeroed
// first): a thread that meets an inf or a NaN stores it there. Several threads may store at
// once, every one of them a non-finite value, so whichever lands the check is not finite.
@compute @workgroup_size(WG)
fn flag_nonfinite(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = workgroup_index(wid, nwg);
    if (g >= P.count) {
        return;
    }
    for (var i = 0u; i < ITEMS; i++) {
        let e = g * CHUNK + i * WG + lid;
        if (e < P.len) {
            let v = x[e];
            if (!is_finite(v)) {
                out[0] = v;
            }
        }
    }
}
