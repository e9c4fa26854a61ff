//! Persistence: model checkpoints.

pub mod checkpoint;
