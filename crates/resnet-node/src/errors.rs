//! Core errors and Rust panics become JS `Error`s carrying the message; nothing aborts the process.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// A core error as a JS `Error` with the core's message.
pub fn js_error(e: resnet_core::Error) -> napi::Error {
    napi::Error::from_reason(e.to_string())
}

/// Runs `f`, turning a panic into a JS `Error` (used by every sync entry point and task body).
pub fn guard<T>(what: &str, f: impl FnOnce() -> napi::Result<T>) -> napi::Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(napi::Error::from_reason(format!(
                "{what}: internal error (please report): {detail}"
            )))
        }
    }
}

/// `guard` for closures returning a core `Result`.
pub fn guard_core<T>(what: &str, f: impl FnOnce() -> resnet_core::Result<T>) -> napi::Result<T> {
    guard(what, || f().map_err(js_error))
}

pub fn invalid(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(napi::Status::InvalidArg, msg.into())
}
