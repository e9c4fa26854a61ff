//! Define-by-run reverse-mode autograd. Each op's result remembers the op (`Op`) and its inputs;
//! `backward` orders that graph topologically and applies the rules of `rules.rs` in reverse,
//! freeing each intermediate gradient as soon as it has been passed on. `backward_freeing` (the
//! training step's) also releases each op once its rule has run, as PyTorch does by default: an
//! activation is then freed as soon as the last gradient that needs it is computed, instead of
//! at the end of the step, which lowers the step's peak memory.

mod op;
mod rules;

pub use op::Op;

use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` without recording ops (inference, evaluation, optimiser updates).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Tensors reachable from `root` through recorded ops, inputs before the ops that use them.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // Iterative DFS: ResNet-1202 is thousands of ops deep, too deep for recursion.
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, inputs_done)) = stack.pop() {
        if inputs_done {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(op) = t.op() {
            for input in op.inputs() {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

pub fn backward(root: &Tensor) -> Result<()> {
    backward_with(root, Graph::Keep, &mut |_| Ok(()))
}

/// What a backward pass does with the graph it has gone through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Graph {
    /// Keep every op and what it saved: backward can run through the same graph again
    /// (`Tensor::backward`, the probes).
    Keep,
    /// Release each op once its rule has run, so its saved tensors go as soon as nothing else
    /// needs them (the training step). A second backward through the same graph is an error.
    Free,
}

/// `backward` that frees the graph as it goes (`Graph::Free`).
pub fn backward_freeing(root: &Tensor) -> Result<()> {
    backward_with(root, Graph::Free, &mut |_| Ok(()))
}

/// `backward_freeing` from `seed` (one value on the root's device) instead of 1: the gradient of
/// `seed * root` without recording the product, so a seed that lives on the device (mixed
/// precision's loss scale) is never read by the host.
pub fn backward_freeing_from(root: &Tensor, seed: Storage) -> Result<()> {
    backward_seeded(root, Some(seed), Graph::Free, &mut |_| Ok(()))
}

/// `backward`, calling `on_leaf` as soon as a leaf's gradient is final (every op that used it has
/// passed its part on): data-parallel training starts the gradient all-reduce from there.
pub fn backward_with(root: &Tensor, graph: Graph, on_leaf: &mut dyn FnMut(&Tensor) -> Result<()>) -> Result<()> {
    backward_seeded(root, None, graph, on_leaf)
}

fn backward_seeded(
    root: &Tensor,
    seed: Option<Storage>,
    graph: Graph,
    on_leaf: &mut dyn FnMut(&Tensor) -> Result<()>,
) -> Result<()> {
    if root.numel() != 1 {
        return Err(Error::Autograd(format!(
            "backward needs a scalar (one element) to start from, got shape {:?}",
            root.shape()
        )));
    }
    if !root.requires_grad() {
        return Err(Error::Autograd(
            "this tensor does not require grad: nothing that produced it was a parameter, or it was computed under no_grad"
                .into(),
        ));
    }
    let backend = root.device().backend();
    let mut grads = HashMap::new();
    let seed = match seed {
        Some(s) if s.len() == 1 && s.device() == root.device() => s,
        Some(s) => {
            return Err(Error::Autograd(format!(
                "a backward seed must be one value on the root's device, got {s:?}"
            )))
        }
        None => backend.upload(&[1.0])?,
    };
    grads.insert(root.id(), seed);
    // Gradient computations are never themselves recorded.
    no_grad(|| {
        // Consumed in reverse: each tensor is dropped from here once its rule has run.
        let mut order = topological_order(root);
        while let Some(t) = order.pop() {
            let Some(g) = grads.remove(&t.id()) else { continue };
            if t.is_leaf() {
                t.accumulate_grad(g)?;
                on_leaf(&t)?;
                continue;
            }
            let op = match graph {
                Graph::Keep => t.op(),
                Graph::Free => t.take_op(),
            };
            let Some(op) = op else {
                return Err(Error::Autograd(
                    "backward through a graph a second time: the training step's backward freed what this graph saved; run the forward pass again"
                        .into(),
                ));
            };
            for (input, gi) in rules::backward(&op, &t, &g)? {
                if !input.requires_grad() {
                    continue;
                }
                let merged = match grads.remove(&input.id()) {
                    None => gi,
                    Some(prev) => backend.add(&prev, &gi)?,
                };
                grads.insert(input.id(), merged);
            }
        }
        Ok(())
    })
}
