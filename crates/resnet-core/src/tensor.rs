//! The tensor handle: a shape, device storage, and (for results of recorded ops) the op that made
//! it. Cloning a `Tensor` is cheap and shares everything; the storage of a leaf can be replaced in
//! place (optimiser steps, running statistics, loading a checkpoint).

use crate::autograd::{self, Op};
use crate::backend::{Device, Storage};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

struct Inner {
    id: usize,
    shape: Vec<usize>,
    storage: RwLock<Storage>,
    /// Bumped whenever the values change in place (`update_storage`, `set_storage`): what is
    /// derived from them and cached (batch norm folded into a convolution's weights) compares
    /// versions to know it is stale, whoever made the change (optimiser, loader, a custom loop).
    version: AtomicU64,
    /// The op that produced this tensor, kept only while gradients are being recorded, until a
    /// backward pass that frees the graph has used it (`autograd::backward_freeing`).
    op: Mutex<Option<Arc<Op>>>,
    /// Whether an op produced this tensor (still true once that op has been released).
    recorded: bool,
    requires_grad: bool,
    /// Accumulated gradient; only leaves that require grad ever hold one.
    grad: Mutex<Option<Storage>>,
}

impl Tensor {
    fn build(storage: Storage, shape: Vec<usize>, op: Option<Op>, requires_grad: bool) -> Tensor {
        Tensor(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape,
            storage: RwLock::new(storage),
            version: AtomicU64::new(0),
            recorded: op.is_some(),
            op: Mutex::new(op.map(Arc::new)),
            requires_grad,
            grad: Mutex::new(None),
        }))
    }

    /// A constant (no gradient) from host data.
    pub fn from_vec(data: &[f32], shape: &[usize], device: Device) -> Result<Tensor> {
        check_len("tensor", data.len(), shape)?;
        Ok(Tensor::build(
            device.backend().upload(data)?,
            shape.to_vec(),
            None,
            false,
        ))
    }

    /// A trainable leaf from host data.
    pub fn parameter(data: &[f32], shape: &[usize], device: Device) -> Result<Tensor> {
        check_len("parameter", data.len(), shape)?;
        Ok(Tensor::build(
            device.backend().upload(data)?,
            shape.to_vec(),
            None,
            true,
        ))
    }

    /// A constant over existing storage.
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Result<Tensor> {
        check_len("tensor", storage.len(), shape)?;
        Ok(Tensor::build(storage, shape.to_vec(), None, false))
    }

    /// The result of an op: records `op` for backward when gradients are being recorded and
    /// any input needs one.
    pub(crate) fn from_op(storage: Storage, shape: Vec<usize>, op: Op) -> Tensor {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>());
        if autograd::is_grad_enabled() && op.inputs().iter().any(|t| t.requires_grad()) {
            Tensor::build(storage, shape, Some(op), true)
        } else {
            Tensor::build(storage, shape, None, false)
        }
    }

    pub fn id(&self) -> usize {
        self.0.id
    }

    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    pub fn numel(&self) -> usize {
        self.0.shape.iter().product()
    }

    pub fn device(&self) -> Device {
        self.storage().device()
    }

    pub fn storage(&self) -> Storage {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the values have been changed in place (see `Inner::version`).
    pub fn version(&self) -> u64 {
        self.0.version.load(Ordering::Acquire)
    }

    /// Runs `f` on the storage in place (optimiser steps, running statistics).
    pub fn update_storage<R>(&self, f: impl FnOnce(&mut Storage) -> Result<R>) -> Result<R> {
        let mut guard = self.0.storage.write().unwrap_or_else(|e| e.into_inner());
        // Bumped even when `f` fails: it may have changed some values before failing.
        self.0.version.fetch_add(1, Ordering::AcqRel);
        f(&mut guard)
    }

    /// Replaces the values (same shape, same device), e.g. when loading a checkpoint.
    pub fn set_storage(&self, storage: Storage) -> Result<()> {
        if storage.len() != self.numel() {
            return Err(Error::shape(
                "set_storage",
                format!(
                    "tensor {:?} holds {} values, new storage has {}",
                    self.shape(),
                    self.numel(),
                    storage.len()
                ),
            ));
        }
        let mut guard = self.0.storage.write().unwrap_or_else(|e| e.into_inner());
        self.0.version.fetch_add(1, Ordering::AcqRel);
        *guard = storage;
        Ok(())
    }

    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let s = self.storage();
        s.device().backend().download(&s)
    }

    /// Reads a one-element tensor (a loss) back to the host.
    pub fn scalar(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape(
                "scalar",
                format!("expected one element, got shape {:?}", self.shape()),
            ));
        }
        Ok(self.to_vec()?[0])
    }

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    pub fn is_leaf(&self) -> bool {
        !self.0.recorded
    }

    /// The op that produced this tensor; `None` for a leaf, and for a result whose op a
    /// graph-freeing backward has released.
    pub(crate) fn op(&self) -> Option<Arc<Op>> {
        self.0.op.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Takes the op out, so that what it saved for backward can be freed once it is used.
    pub(crate) fn take_op(&self) -> Option<Arc<Op>> {
        self.0.op.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The accumulated gradient of a leaf, if backward has reached it.
    pub fn grad(&self) -> Option<Tensor> {
        let g = self.0.grad.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        Tensor::from_storage(g, self.shape()).ok()
    }

    pub fn grad_storage(&self) -> Option<Storage> {
        self.0.grad.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Replaces the accumulated gradient (the data-parallel reduction installs the sum over
    /// ranks).
    pub(crate) fn set_grad(&self, g: Option<Storage>) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = g;
    }

    /// Adds `g` to the accumulated gradient (PyTorch's `.grad +=`).
    pub(crate) fn accumulate_grad(&self, g: Storage) -> Result<()> {
        let mut slot = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(match slot.take() {
            None => g,
            Some(prev) => prev.device().backend().add(&prev, &g)?,
        });
        Ok(())
    }

    /// Back-propagates from this scalar through the recorded ops into the leaves' `grad`.
    pub fn backward(&self) -> Result<()> {
        autograd::backward(self)
    }

    /// The same values, cut off from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor::build(self.storage(), self.shape().to_vec(), None, false)
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(#{}, {:?}, {}, requires_grad={})",
            self.id(),
            self.shape(),
            self.device(),
            self.requires_grad()
        )
    }
}

fn check_len(op: &'static str, len: usize, shape: &[usize]) -> Result<()> {
    let numel: usize = shape.iter().product();
    if numel != len {
        return Err(Error::shape(
            op,
            format!("shape {shape:?} needs {numel} values, got {len}"),
        ));
    }
    Ok(())
}
