// Pooling over NCHW. Max pooling takes the first maximum of each window (PyTorch's tie rule);
// its backward runs one thread per input element, gathering from the windows that hold it, so
// nothing is scattered and no atomics are needed. Global average pooling: one thread a plane.

// Index within its plane of the first maximum of window (oy, ox); -1 for an all-padding window.
fn window_argmax(plane: u32, oy: u32, ox: u32) -> i32 {
    var best = -1;
    var best_v = 0.0;
    for (var i = 0u; i < P.kernel; i++) {
        let iy = i32(oy * P.stride + i) - i32(P.pad);
        if (iy < 0 || iy >= i32(P.h)) {
            continue;
        }
        for (var j = 0u; j < P.kernel; j++) {
            let ix = i32(ox * P.stride + j) - i32(P.pad);
            if (ix < 0 || ix >= i32(P.w)) {
                continue;
            }
            let idx = iy * i32(P.w) + ix;
            let v = x[plane + u32(idx)];
            if (best < 0 || v > best_v || v != v) {
                best = idx;
                best_v = v;
            }
        }
    }
    return best;
}

@compute @workgroup_size(WG)
fn max_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let o = grid_pos(i, P.oh, P.ow);
    let base = o.outer * P.h * P.w;
    let best = window_argmax(base, o.row, o.col);
    if (best < 0) {
        y[i] = bitcast<f32>(0xff800000u);
    } else {
        y[i] = x[base + u32(best)];
    }
}

// One thread per input element; P.len = number of input elements.
@compute @workgroup_size(WG)
fn max_pool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let at = grid_pos(i, P.h, P.w);
    let plane = at.outer;
    // Windows oy with oy*S - pad <= iy < oy*S - pad + kernel.
    let ty = i32(at.row + P.pad);
    let tx = i32(at.col + P.pad);
    let oy0 = max(ty - i32(P.kernel) + i32(P.stride), 0) / i32(P.stride);
    let ox0 = max(tx - i32(P.kernel) + i32(P.stride), 0) / i32(P.stride);
    let oy1 = min(ty / i32(P.stride), i32(P.oh) - 1);
    let ox1 = min(tx / i32(P.stride), i32(P.ow) - 1);
    var g = 0.0;
    for (var oy = oy0; oy <= oy1; oy++) {
        for (var ox = ox0; ox <= ox1; ox++) {
            if (window_argmax(plane * P.h * P.w, u32(oy), u32(ox)) == i32(at.p)) {
                g += gy[(plane * P.oh + u32(oy)) * P.ow + u32(ox)];
            }
        }
    }
    y[i] = g;
}

// [planes, hw] -> [planes]; P.len = planes.
@compute @workgroup_size(WG)
fn global_avg_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    var s = 0.0;
    for (var j = 0u; j < P.hw; j++) {
        s += x[i * P.hw + j];
    }
    y[i] = s / f32(P.hw);
}

// P.len = planes * hw.
@compute @workgroup_size(WG)
fn global_avg_pool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) {
        y[i] = gy[i / P.hw] / f32(P.hw);
    }
}
