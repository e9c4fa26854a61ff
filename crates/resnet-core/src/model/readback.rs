//! Reading a step's scalars back in one download. On a GPU every download waits for the queue to
//! drain, so the scalars a step reports (loss, hit counts) are first put side by side on the
//! device and fetched together.

use crate::autograd::no_grad;
use crate::backend::{Device, Storage};
use crate::error::Result;
use crate::ops;
use crate::tensor::Tensor;

/// The one-element storages `scalars`, in order, in one download. With no concatenation op, each
/// goes to its slot through a [1, 1] x [1, K] product with a one-hot row, taking the slots filled
/// so far as its bias: exact, since `s * 1`, `s * 0` and `x + 0` change no finite value. A value
/// that is not finite would spread (`inf * 0`), so then each is read on its own.
pub(crate) fn read_scalars<const K: usize>(scalars: [&Storage; K], device: Device) -> Result<[f32; K]> {
    let packed = no_grad(|| {
        let mut filled: Option<Tensor> = None;
        for (slot, s) in scalars.iter().enumerate() {
            let mut one_hot = [0.0f32; K];
            one_hot[slot] = 1.0;
            let basis = Tensor::from_vec(&one_hot, &[K, 1], device)?;
            let value = Tensor::from_storage((*s).clone(), &[1, 1])?;
            let bias = filled.map(|f| ops::reshape(&f, &[K])).transpose()?;
            filled = Some(ops::linear(&value, &basis, bias.as_ref())?);
        }
        match filled {
            Some(f) => f.to_vec(),
            None => Ok(Vec::new()),
        }
    })?;
    let mut out = [0.0f32; K];
    if packed.len() == K && packed.iter().all(|v| v.is_finite()) {
        out.copy_from_slice(&packed);
        return Ok(out);
    }
    let be = device.backend();
    for (v, s) in out.iter_mut().zip(scalars) {
        *v = be.download(s)?[0];
    }
    Ok(out)
}
