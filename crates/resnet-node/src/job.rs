//! One kind of task for every call that runs on the libuv thread pool: the work is a closure
//! (run off the main thread, panics caught by `guard`), and a plain function turns its result
//! into the JS value on the main thread. Each call site says only what differs.

use napi::bindgen_prelude::{AsyncTask, ToNapiValue, TypeName};
use napi::{Env, Result, Task};

use crate::errors::guard;

type Work<T> = Box<dyn FnOnce() -> Result<T> + Send>;

/// Work that yields `T` on a pool thread, resolved to the JS value `J` on the main thread.
pub struct Job<T, J = T> {
    /// The call's name for a panic's message (`trainStep: internal error ...`).
    what: &'static str,
    /// Taken by `compute`, which napi calls once.
    work: Option<Work<T>>,
    to_js: fn(T) -> Result<J>,
}

/// What an async binding method returns.
pub type Pending<T, J = T> = AsyncTask<Job<T, J>>;

/// A job whose result is already a JS value (a `#[napi(object)]`, `()`, a `String`).
pub fn job<T>(what: &'static str, work: impl FnOnce() -> Result<T> + Send + 'static) -> Pending<T>
where
    T: ToNapiValue + TypeName + Send + 'static,
{
    job_with(what, work, Ok)
}

/// A job whose result becomes a JS value through `to_js` (a typed array, a class instance).
pub fn job_with<T, J>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
    to_js: fn(T) -> Result<J>,
) -> Pending<T, J>
where
    T: Send + 'static,
    J: ToNapiValue + TypeName,
{
    AsyncTask::new(Job {
        what,
        work: Some(Box::new(work)),
        to_js,
    })
}

impl<T, J> Task for Job<T, J>
where
    T: Send + 'static,
    J: ToNapiValue + TypeName,
{
    type Output = T;
    type JsValue = J;

    fn compute(&mut self) -> Result<T> {
        let work = self
            .work
            .take()
            .ok_or_else(|| napi::Error::from_reason(format!("{}: the task ran twice", self.what)))?;
        guard(self.what, work)
    }

    fn resolve(&mut self, _env: Env, output: T) -> Result<J> {
        (self.to_js)(output)
    }
}
