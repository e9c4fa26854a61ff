//! SGD with momentum, weight decay and Nesterov, and the learning-rate schedules of the recipes.

mod schedule;
mod sgd;

pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};
