//! SGD with momentum, weight decay and Nesterov, the learning-rate schedules of the recipes, and
//! the loss scaling of mixed-precision training.

mod loss_scale;
mod schedule;
mod sgd;

pub use loss_scale::{DeviceScaler, LossScaler, ScaledStep};
pub use schedule::Schedule;
pub use sgd::{Sgd, SgdConfig};
