//! Recycled host buffers. A training step allocates the same few hundred large arrays every time;
//! handing them back to the system and asking again costs page faults and zeroing on every
//! step. Buffers return here when their last owner drops them and are reused by length.

use crate::error::Result;
use crate::memory;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Smaller buffers are cheap to allocate; pooling them would only add lock traffic.
const MIN_POOLED_LEN: usize = 4096;
/// Free buffers kept per length: a step's peak use of one shape, with room to spare.
const MAX_FREE_PER_LEN: usize = 256;

static FREE: Mutex<Option<HashMap<usize, Vec<Vec<f32>>>>> = Mutex::new(None);

pub struct CpuBuffer(Vec<f32>);

/// Floats held by the free lists (reclaimable: counted as available memory by the estimates).
static CACHED_FLOATS: AtomicUsize = AtomicUsize::new(0);

impl CpuBuffer {
    /// A cached buffer of exactly `len` floats, if the pool has one.
    fn take_cached(len: usize) -> Option<Vec<f32>> {
        if len < MIN_POOLED_LEN {
            return None;
        }
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        let v = free.as_mut()?.get_mut(&len)?.pop()?;
        CACHED_FLOATS.fetch_sub(len, Ordering::Relaxed);
        Some(v)
    }

    /// A buffer of `len` floats whose contents are unspecified (but initialised): for outputs a
    /// kernel overwrites entirely. Fails with `Error::OutOfMemory` (naming the bytes) when the
    /// host has no room, after releasing the pool's cached buffers and trying again.
    pub fn try_uninit(len: usize) -> Result<Self> {
        match Self::take_cached(len) {
            Some(v) => Ok(CpuBuffer(v)),
            None => Ok(CpuBuffer(memory::try_vec(len, 0.0, "a tensor")?)),
        }
    }

    pub fn try_zeroed(len: usize) -> Result<Self> {
        match Self::take_cached(len) {
            Some(mut v) => {
                v.fill(0.0);
                Ok(CpuBuffer(v))
            }
            None => Ok(CpuBuffer(memory::try_vec(len, 0.0, "a tensor")?)),
        }
    }

    pub fn from_vec(v: Vec<f32>) -> Self {
        CpuBuffer(v)
    }

    pub fn try_from_slice(s: &[f32]) -> Result<Self> {
        let mut b = Self::try_uninit(s.len())?;
        b.0.copy_from_slice(s);
        Ok(b)
    }

    /// A copy (copy-on-write of shared storage before an in-place update).
    pub fn try_clone(&self) -> Result<Self> {
        Self::try_from_slice(&self.0)
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        let len = self.0.len();
        if len < MIN_POOLED_LEN {
            return;
        }
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        let list = free.get_or_insert_with(HashMap::new).entry(len).or_default();
        if list.len() < MAX_FREE_PER_LEN {
            list.push(std::mem::take(&mut self.0));
            CACHED_FLOATS.fetch_add(len, Ordering::Relaxed);
        }
    }
}

impl Deref for CpuBuffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for CpuBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// Returns every cached buffer to the system (after a large model is disposed).
pub fn release_cached() {
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    *free = None;
    CACHED_FLOATS.store(0, Ordering::Relaxed);
}

/// Bytes held by cached (free) buffers: memory the next allocations can have back.
pub fn cached_bytes() -> u64 {
    CACHED_FLOATS.load(Ordering::Relaxed) as u64 * 4
}

impl From<Vec<f32>> for CpuBuffer {
    fn from(v: Vec<f32>) -> Self {
        CpuBuffer(v)
    }
}
