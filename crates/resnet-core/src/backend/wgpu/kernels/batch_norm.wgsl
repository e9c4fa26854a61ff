// Batch normalisation over NCHW, per channel. Statistics in two steps: per (chunk, channel)
// partial sums, one workgroup each (`stats_partial`, `backward_partial`), then one thread per
// channel adds its chunks (`stats_finalize`, `backward_finalize`). The variance is taken around
// a shift (the channel's first value) so large means cost no precision. Normalisation uses the
// biased variance; the running variance gets the unbiased one (PyTorch).
// A fused epilogue (P.act > 0: activation P.act - 1, after the residual when P.residual != 0)
// finishes `apply`'s value in the same pass, and backward then starts from the activation's
// output gradient: the batch-norm output and its gradient are never written out. The fused
// values are the unfused kernels' to the bit: the same f32 operations in the same order.

fn at(e: u32, ch: u32) -> u32 {
    return channel_element(e, ch, P.c, P.hw);
}

// The partial sums are [chunks, 2, C]: chunk q's pair of sums of channel ch.
fn store_partial(q: u32, ch: u32, t: vec2<f32>) {
    partial[(q * 2u) * P.c + ch] = t.x;
    partial[(q * 2u + 1u) * P.c + ch] = t.y;
}

// Channel ch's pair of sums over all chunks, added in chunk order.
fn chunk_totals(ch: u32) -> vec2<f32> {
    var a = 0.0;
    var b = 0.0;
    for (var q = 0u; q < P.chunks; q++) {
        a += partial[(q * 2u) * P.c + ch];
        b += partial[(q * 2u + 1u) * P.c + ch];
    }
    return vec2<f32>(a, b);
}

@compute @workgroup_size(WG)
fn stats_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let flat = workgroup_index(wid, nwg);
    if (flat >= P.chunks * P.c) {
        return;
    }
    let ch = flat % P.c;
    let q = flat / P.c;
    let shift = x[ch * P.hw];
    var s = 0.0;
    var ss = 0.0;
    for (var i = 0u; i < ITEMS; i++) {
        let e = q * CHUNK + i * WG + lid;
        if (e < P.count) {
            let d = x[at(e, ch)] - shift;
            s += d;
            ss = fma(d, d, ss);
        }
    }
    let t = workgroup_sum2(s, ss, lid);
    if (lid == 0u) {
        store_partial(q, ch, t);
    }
}

// Channel ch's statistics from its chunks' sums.
fn finalize_stats(ch: u32) {
    let t = chunk_totals(ch);
    let s = t.x;
    let ss = t.y;
    let n = f32(P.count);
    let d = s / n;
    let v = max(ss / n - d * d, 0.0);
    mean[ch] = x[ch * P.hw] + d;
    var_[ch] = v;
    invstd[ch] = 1.0 / sqrt(v + P.eps);
}

fn update_running(ch: u32) {
    running_mean[ch] = (1.0 - P.momentum) * running_mean[ch] + P.momentum * mean[ch];
    running_var[ch] = (1.0 - P.momentum) * running_var[ch] + P.momentum * var_[ch] * P.unbias;
}

@compute @workgroup_size(WG)
fn stats_finalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = element(wid, nwg, lid);
    if (ch < P.c) {
        finalize_stats(ch);
    }
}

// stats_finalize and running_update in one dispatch (a training step's batch norm).
@compute @workgroup_size(WG)
fn stats_finalize_running(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = element(wid, nwg, lid);
    if (ch < P.c) {
        finalize_stats(ch);
        update_running(ch);
    }
}

// The fused epilogue of element i: the residual added, then the activation.
fn finish(v: f32, i: u32) -> f32 {
    var s = v;
    if (P.residual != 0u) {
        s = s + residual[i];
    }
    if (P.act == 0u) {
        return s;
    }
    return activate(s, P.act - 1u);
}

// The gradient of batch norm's output at j: gy itself, or gy through the fused activation.
fn grad_at(j: u32) -> f32 {
    if (P.act == 0u) {
        return gy[j];
    }
    return activate_grad(out[j], gy[j], P.act - 1u);
}

// y = finish((x - mean) * invstd * gamma + beta)
@compute @workgroup_size(WG)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let ch = (i / P.hw) % P.c;
    let scale = invstd[ch] * gamma[ch];
    let shift = beta[ch] - mean[ch] * scale;
    y[i] = finish(fma(x[i], scale, shift), i);
}

@compute @workgroup_size(WG)
fn backward_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let flat = workgroup_index(wid, nwg);
    if (flat >= P.chunks * P.c) {
        return;
    }
    let ch = flat % P.c;
    let q = flat / P.c;
    let m = mean[ch];
    var s = 0.0;
    var sx = 0.0;
    for (var i = 0u; i < ITEMS; i++) {
        let e = q * CHUNK + i * WG + lid;
        if (e < P.count) {
            let j = at(e, ch);
            let g = grad_at(j);
            s += g;
            sx = fma(g, x[j] - m, sx);
        }
    }
    let t = workgroup_sum2(s, sx, lid);
    if (lid == 0u) {
        store_partial(q, ch, t);
    }
}

@compute @workgroup_size(WG)
fn backward_finalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = element(wid, nwg, lid);
    if (ch >= P.c) {
        return;
    }
    let t = chunk_totals(ch);
    dbeta[ch] = t.x;
    dgamma[ch] = t.y * invstd[ch];
}

// dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)) with batch statistics,
// gamma * invstd * dy with frozen ones.
@compute @workgroup_size(WG)
fn backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = element(wid, nwg, lid);
    if (i >= P.len) {
        return;
    }
    let ch = (i / P.hw) % P.c;
    let k = gamma[ch] * invstd[ch];
    if (P.batch_statistics != 0u) {
        let n = f32(P.count);
        let mean_gy = dbeta[ch] / n;
        let proj = dgamma[ch] / n * invstd[ch];
        y[i] = k * (grad_at(i) - mean_gy - (x[i] - mean[ch]) * proj);
    } else {
        y[i] = k * grad_at(i);
    }
}

// Frozen statistics: invstd from the running variance.
@compute @workgroup_size(WG)
fn frozen_invstd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = element(wid, nwg, lid);
    if (ch < P.c) {
        invstd[ch] = 1.0 / sqrt(var_[ch] + P.eps);
    }
}

@compute @workgroup_size(WG)
fn running_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = element(wid, nwg, lid);
    if (ch < P.c) {
        update_running(ch);
    }
}
