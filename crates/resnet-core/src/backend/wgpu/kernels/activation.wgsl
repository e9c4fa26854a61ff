// The activations by code (0 relu, 1 tanh, 2 sigmoid) and their derivatives, shared by the
// elementwise kernels, the convolution's epilogue and batch norm's fused passes.

// tanh from exp where the built-in may overflow to NaN (|v| large on some drivers).
fn tanh_safe(v: f32) -> f32 {
    let s = abs(v);
    if (s < 0.5) {
        return tanh(v);
    }
    let e = exp(-2.0 * s);
    return sign(v) * (1.0 - e) / (1.0 + e);
}

fn activate(v: f32, act: u32) -> f32 {
    switch act {
        case 0u: { return select(0.0, v, v > 0.0); }
        case 1u: { return tanh_safe(v); }
        default: { return 1.0 / (1.0 + exp(-v)); }
    }
}

// d act / d x from the output y.
fn activate_grad(yv: f32, g: f32, act: u32) -> f32 {
    switch act {
        case 0u: { return select(0.0, g, yv > 0.0); }
        case 1u: { return g * (1.0 - yv * yv); }
        default: { return g * yv * (1.0 - yv); }
    }
}
