//! Node.js binding for resnet-core. It only translates: JS values to Rust types and back, core
//! errors (and panics) to JS `Error`s, and long work onto the libuv thread pool (one generic task,
//! `job::Job`), so the event loop stays free. Nothing here keeps the process alive: no threadsafe functions, no
//! handles; a script using the addon exits by itself.

mod convert;
mod data;
mod distributed;
mod errors;
mod job;
mod model;
mod optim;
mod profile;
mod tensor;

/// The GPU adapters wgpu can see, their limits and features, and which device 'gpu'/'auto' use
/// and why (`resnet-wgpu info`).
#[napi_derive::napi]
pub fn adapters_info() -> String {
    resnet_core::backend::adapters_info()
}

/// The CPU the CPU backend computes on: its model, thread count and the f32 GEMM kernel chosen at
/// run time (`resnet-wgpu info`). Starts the CPU thread pool, so comes after `setCpuThreads`.
#[napi_derive::napi]
pub fn cpu_info() -> String {
    resnet_core::backend::cpu::gemm::kernel_report().to_string()
}
