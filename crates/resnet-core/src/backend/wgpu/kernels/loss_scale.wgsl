// Dynamic loss scaling on the device, as `LossScaler::update` (and `backend::scaled_step`) do it:
// one thread updates the scale and `scaler` ([1 / scale, clean steps, applied steps]) from this
// step's overflow check. Scales are powers of two, so the reciprocal is kept, never divided.

@compute @workgroup_size(1)
fn loss_scale_update() {
    if (!is_finite(check[0])) {
        scale[0] = max(scale[0] * 0.5, P.min_scale);
        scaler[0] = min(scaler[0] * 2.0, P.max_inv);
        scaler[1] = 0.0;
        return;
    }
    let clean = scaler[1] + 1.0;
    scaler[2] = scaler[2] + 1.0;
    if (clean >= f32(P.growth_interval)) {
        scale[0] = min(scale[0] * 2.0, P.max_scale);
        scaler[0] = max(scaler[0] * 0.5, P.min_inv);
        scaler[1] = 0.0;
    } else {
        scaler[1] = clean;
    }
}
