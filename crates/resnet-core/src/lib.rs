//! resnet-core: tensors, reverse-mode autograd, convolution, batch norm and the residual networks
//! of He et al. (2015), with the device behind one seam (`backend`). Knows nothing of Node.
//!
//! `ARCHITECTURE.md` at the repository root walks one training batch from `fit` to a WGSL dispatch
//! and back, naming the file of each hop.

pub mod autograd;
pub mod backend;
pub mod data;
pub mod distributed;
pub mod error;
pub mod fused;
pub mod io;
pub(crate) mod json_check;
pub mod memory;
pub mod model;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod precision;
pub mod tensor;

pub use backend::Device;
pub use error::{Error, Result};
pub use model::Model;
pub use tensor::Tensor;
