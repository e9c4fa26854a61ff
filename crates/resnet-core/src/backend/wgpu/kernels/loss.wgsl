// Softmax cross-entropy and top-k hits, one thread a sample (row of logits). Labels are class
// indices stored as f32. The backward scale includes upstream[0], read on the device: no host
// round trip in the middle of backward.

@compute @workgroup_size(WG)
fn cross_entropy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = element(wid, nwg, lid);
    if (r >= P.n) {
        return;
    }
    let base = r * P.classes;
    var mx = logits[base];
    for (var j = 1u; j < P.classes; j++) {
        mx = max(mx, logits[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < P.classes; j++) {
        sum += exp(logits[base + j] - mx);
    }
    let log_sum = log(sum);
    for (var j = 0u; j < P.classes; j++) {
        probs[base + j] = exp(logits[base + j] - mx - log_sum);
    }
    let label = u32(labels[r]);
    losses[r] = log_sum - (logits[base + label] - mx);
}

// probs here are the saved softmax (read); one thread an element of [n, classes].
@compute @workgroup_size(WG)
fn cross_entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.n * P.classes) {
        return;
    }
    let r = i / P.classes;
    let j = i - r * P.classes;
    let s = P.scale * upstream[0];
    var g = probs[i] * s;
    if (j == u32(labels[r])) {
        g -= s;
    }
    losses[i] = g;
}

// 1.0 where fewer than k logits beat the label's logit.
@compute @workgroup_size(WG)
fn topk_correct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = element(wid, nwg, lid);
    if (r >= P.n) {
        return;
    }
    let base = r * P.classes;
    let target_v = logits[base + u32(labels[r])];
    var better = 0u;
    for (var j = 0u; j < P.classes; j++) {
        if (logits[base + j] > target_v) {
            better++;
        }
    }
    losses[r] = select(0.0, 1.0, better < P.k && target_v == target_v);
}
