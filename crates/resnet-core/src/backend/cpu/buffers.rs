//! Recycled host buffers. A training step allocates the same few hundred large arrays every time;
//! handing them back to the system and asking again costs page faults and zeroing on every
//! step. Buffers return here when their last owner drops them and are reused by length.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Smaller buffers are cheap to allocate; pooling them would only add lock traffic.
const MIN_POOLED_LEN: usize = 4096;
/// Free buffers kept per length: a step's peak use of one shape, with room to spare.
const MAX_FREE_PER_LEN: usize = 256;

static FREE: Mutex<Option<HashMap<usize, Vec<Vec<f32>>>>> = Mutex::new(None);

pub struct CpuBuffer(Vec<f32>);

impl CpuBuffer {
    /// A buffer of `len` floats whose contents are unspecified (but initialised): for outputs a
    /// kernel overwrites entirely.
    pub fn uninit(len: usize) -> Self {
        if len >= MIN_POOLED_LEN {
            let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = free.as_mut().and_then(|m| m.get_mut(&len)).and_then(|list| list.pop()) {
                return CpuBuffer(v);
            }
        }
        CpuBuffer(vec![0.0; len])
    }

    pub fn zeroed(len: usize) -> Self {
        let mut b = Self::uninit(len);
        b.0.fill(0.0);
        b
    }

    pub fn from_vec(v: Vec<f32>) -> Self {
        CpuBuffer(v)
    }

    pub fn from_slice(s: &[f32]) -> Self {
        let mut b = Self::uninit(s.len());
        b.0.copy_from_slice(s);
        b
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
        }
    }
}

impl Clone for CpuBuffer {
    fn clone(&self) -> Self {
        Self::from_slice(&self.0)
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
    *FREE.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

impl From<Vec<f32>> for CpuBuffer {
    fn from(v: Vec<f32>) -> Self {
        CpuBuffer(v)
    }
}
