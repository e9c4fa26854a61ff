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

/// A host copy of a JS typed array for a task on the thread pool: a batch too large to copy is an
/// Error naming the bytes (resnet-core's `OutOfMemory`), not an abort of the process.
pub fn copy_array<T: Clone>(data: &[T], what: &str) -> napi::Result<Vec<T>> {
    resnet_core::memory::try_copy(data, what).map_err(js_error)
}

pub fn invalid(msg: impl Into<String>) -> napi::Error {
    napi::Error::new(napi::Status::InvalidArg, msg.into())
}
