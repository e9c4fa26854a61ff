// Elementwise kernels: one element a thread, WG threads a workgroup, workgroups on a 2-D grid
// (each dimension at most 65535) so any length fits. `op` selects the activation:
// 0 relu, 1 tanh, 2 sigmoid (`activate` is activation.wgsl's).

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) { y[i] = a[i] + b[i]; }
}

@compute @workgroup_size(WG)
fn add_activation(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) { y[i] = activate(a[i] + b[i], P.op); }
}

@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) { y[i] = a[i] * P.alpha; }
}

@compute @workgroup_size(WG)
fn activation(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) { y[i] = activate(a[i], P.op); }
}

// a = the activation's output, b = the gradient of that output.
@compute @workgroup_size(WG)
fn activation_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) { y[i] = activate_grad(a[i], b[i], P.op); }
}

// y = alpha everywhere (zeros; NaN poison in tests).
@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) { y[i] = P.alpha; }
}

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) { y[i] = a[i]; }
}

// y[r, c] = a[r, c] + b[c], `cols` columns.
@compute @workgroup_size(WG)
fn add_row_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i < P.len) { y[i] = a[i] + b[i % P.cols]; }
}
