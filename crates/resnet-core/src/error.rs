//! One error type for the whole core. Every variant carries enough context (op, shapes, file, key)
//! that the message alone tells a user what to fix; the Node binding turns it into a JS `Error`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("labels out of range: label {label} at index {index}, but the model has {classes} classes (expected 0..{classes})")]
    LabelRange { label: i64, index: usize, classes: usize },

    #[error("input contains a non-finite value (NaN or Inf) at index {index}")]
    NonFinite { index: usize },

    #[error("{op}: tensors live on different devices ({a} and {b})")]
    DeviceMismatch { op: &'static str, a: String, b: String },

    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    #[error("state dict does not match the model: {0}")]
    StateDict(String),

    #[error("backward: {0}")]
    Autograd(String),

    #[error("device error: {0}")]
    Device(String),

    /// Memory ran out on the host or the GPU, or an estimate showed that a request cannot fit.
    /// `bytes` is the amount asked for (or estimated); the message names it and, where known,
    /// what was available.
    #[error("{message}")]
    OutOfMemory { bytes: u64, message: String },

    /// A collective failed, timed out, or the ranks disagree (spec, world size, options).
    #[error("distributed: {0}")]
    Distributed(String),

    #[error("internal error (please report): {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}
