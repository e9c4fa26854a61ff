// SGD as PyTorch defines it (dampening 0), fused: weight decay, momentum, Nesterov and the step
// in one pass over the parameter, in place. A mixed-precision step first unscales the gradient.

fn sgd_at(i: u32, lr: f32, grad_scale: f32) {
    let p = param[i];
    var g = grad[i];
    if (grad_scale != 1.0) {
        g = g * grad_scale;
    }
    let d = g + P.weight_decay * p;
    if (P.momentum != 0.0) {
        var b = d;
        if (P.first_step == 0u) {
            b = P.momentum * momentum_buf[i] + d;
        }
        momentum_buf[i] = b;
        var upd = b;
        if (P.nesterov != 0u) {
            upd = d + P.momentum * b;
        }
        param[i] = p - lr * upd;
    } else {
        param[i] = p - lr * d;
    }
}

@compute @workgroup_size(WG)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    sgd_at(i, P.lr, P.grad_scale);
}

// A mixed-precision step whose skip the device decides, so the host reads nothing back: no
// change when the step's gradients hold an inf or NaN (their overflow `check` is then not finite);
// otherwise unscaled by the loss scaler's 1 / scale, at the rate of the steps applied so far
// (`scaler` is [1 / scale, clean steps, applied steps]; `lrs` has a rate for each count).
@compute @workgroup_size(WG)
fn sgd_gated(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len || !is_finite(check[0])) {
        return;
    }
    sgd_at(i, lrs[u32(scaler[2])], scaler[0]);
}
