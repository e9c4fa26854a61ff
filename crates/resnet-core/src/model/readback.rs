//! Reading a step's scalars back in one download. On a GPU every download waits for the queue to
//! drain, so the scalars a step reports (loss, hit counts) are fetched together
//! (`Backend::download_many`: one staging buffer, one wait).

use crate::backend::{Device, Storage};
use crate::error::{Error, Result};

/// The first value of each storage in `scalars`, in order, in one download.
pub(crate) fn read_scalars<const K: usize>(scalars: [&Storage; K], device: Device) -> Result<[f32; K]> {
    let values = device.backend().download_many(&scalars)?;
    let mut out = [0.0f32; K];
    for (v, got) in out.iter_mut().zip(values) {
        *v = *got
            .first()
            .ok_or_else(|| Error::Internal("a step's scalar has no value".into()))?;
    }
    Ok(out)
}
