// SGD as PyTorch defines it (dampening 0), fused: weight decay, momentum, Nesterov and the step
// in one pass over the parameter, in place. A mixed-precision step first unscales the gradient.

@compute @workgroup_size(WG)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let p = param[i];
    var g = grad[i];
    if (P.grad_scale != 1.0) {
        g = g * P.grad_scale;
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
        param[i] = p - P.lr * upd;
    } else {
        param[i] = p - P.lr * d;
    }
}
