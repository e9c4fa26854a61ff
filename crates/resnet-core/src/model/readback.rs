//! Reading a step's scalars back in one download. On a GPU every download waits for the queue to
//! drain, so the scalars a step reports (loss, hit counts) are fetched together
//! (`Backend::download_many`: one staging buffer, one wait).

use crate::backend::{Device, Storage};
use crate::error::{Error, Result};

/// The first value of each storage in `scalars`, in order, in one download.
pub(crate) fn read_scalars<const K: usize>(scalars: [&Storage; K], device: Device) -> Result<[f32; K]> {
    let values = read_scalar_list(&scalars, device)?;
    let mut out = [0.0f32; K];
    out.copy_from_slice(&values);
    Ok(out)
}

/// `read_scalars` for a number of storages known at run time (queued steps and batches).
pub(crate) fn read_scalar_list(scalars: &[&Storage], device: Device) -> Result<Vec<f32>> {
    if scalars.is_empty() {
        return Ok(Vec::new());
    }
    device
        .backend()
        .download_many(scalars)?
        .into_iter()
        .map(|v| {
            v.first()
                .copied()
                .ok_or_else(|| Error::Internal("a step's scalar has no value".into()))
        })
        .collect()
}
