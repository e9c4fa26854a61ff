//! The process's one GPU context: which adapter, why, and the device and queue opened on it with
//! the adapter's own limits. Created on first use and never dropped (a `OnceLock` static): no
//! teardown order to get wrong when a process (or a Node addon) exits, and no thread of ours.

use super::pipelines::Pipelines;
use super::pool::Pool;
use super::queue::Recorder;
use crate::error::{Error, Result};
use std::sync::{Mutex, Once, OnceLock};

/// Names a software adapter (or any adapter) by a substring of its name, e.g. `llvmpipe`.
pub const ADAPTER_ENV: &str = "RESNET_WGPU_ADAPTER";

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Set where the mixed-precision GEMMs run on cooperative matrices (tensor cores): the
    /// subgroup size they are written for (see [`tensor_core_subgroup`]).
    pub cooperative_subgroup: Option<u32>,
    /// Why this adapter was chosen, for `adapters_info`.
    pub reason: String,
    /// The largest device-local memory heap, in bytes, where the backend can say (Vulkan); wgpu
    /// itself has no query for the memory a GPU has.
    pub device_memory: Option<u64>,
    pub pool: Mutex<Pool>,
    pub recorder: Mutex<Recorder>,
    pub pipelines: Pipelines,
    /// The first uncaptured wgpu error (validation, out of memory), reported at the next sync.
    pub error: Mutex<Option<String>>,
    /// Keeps the instance (and so the loader) alive as long as the device; never dropped.
    _instance: wgpu::Instance,
}

static CONTEXT: OnceLock<std::result::Result<GpuContext, String>> = OnceLock::new();
static HANDLER: Once = Once::new();
/// Which hardware adapter to take (data-parallel ranks: local rank k takes adapter k).
static PREFERRED: OnceLock<usize> = OnceLock::new();

/// Takes hardware adapter `index` (in the order `resnet-wgpu info` lists them, best kind first;
/// wrapping around when there are fewer) instead of the first. Must come before the first GPU
/// use; `RESNET_WGPU_ADAPTER` still wins.
pub fn prefer_adapter(index: usize) -> Result<()> {
    if let Some(ctx) = existing_context() {
        return Err(Error::invalid(format!(
            "the GPU is already in use ({}): choose the adapter before the first GPU call",
            ctx.info.name
        )));
    }
    PREFERRED.set(index).or_else(|_| match PREFERRED.get() {
        Some(&i) if i == index => Ok(()),
        other => Err(Error::invalid(format!(
            "GPU adapter {} was already chosen for this process; it cannot become {index}",
            other.copied().unwrap_or(index)
        ))),
    })
}

/// The context, created on first call; a failure is remembered and returned every time.
pub fn context() -> Result<&'static GpuContext> {
    let ctx = CONTEXT
        .get_or_init(GpuContext::create)
        .as_ref()
        .map_err(|e| Error::Device(e.clone()))?;
    HANDLER.call_once(|| ctx.install_error_handler());
    Ok(ctx)
}

/// The context if it has already been created (memory statistics must not create one).
pub fn existing_context() -> Option<&'static GpuContext> {
    CONTEXT.get().and_then(|c| c.as_ref().ok())
}

fn instance() -> wgpu::Instance {
    // Mesa's implicit device-select layer connects to a Wayland/X display just to rank devices
    // (we rank them ourselves) and prints errors on every headless machine. Off unless the user
    // set it. Runs once, before any Vulkan call, from the OnceLock initialiser.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        std::env::set_var("NODEVICE_SELECT", "1");
    }
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        // Vulkan, Metal, DX12: the compute-capable native APIs. GL has no storage buffers worth the name.
        backends: wgpu::Backends::PRIMARY.with_env(),
        // No validation layers unless asked for through WGPU_* variables: tests and release alike.
        flags: wgpu::InstanceFlags::empty().with_env(),
        // Where the driver reports a memory budget (Vulkan's VK_EXT_memory_budget, DX12), buffer
        // creation past 95% of it fails with an out-of-memory error, which the pool catches and
        // turns into an Error, instead of oversubscribing the GPU until the device is lost.
        memory_budget_thresholds: wgpu::MemoryBudgetThresholds {
            for_resource_creation: Some(95),
            for_device_loss: None,
        },
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// Every adapter of the native APIs (wgpu's `WGPU_BACKEND` may narrow them).
fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY.with_env()))
}

fn is_hardware(t: wgpu::DeviceType) -> bool {
    matches!(
        t,
        wgpu::DeviceType::DiscreteGpu | wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::VirtualGpu
    )
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        _ => 3,
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    let driver = if info.driver.is_empty() {
        String::new()
    } else {
        format!(", driver {} {}", info.driver, info.driver_info)
    };
    format!("{} ({:?}, {:?}{driver})", info.name, info.backend, info.device_type)
}

/// Picks the adapter: the one named by `RESNET_WGPU_ADAPTER` if set, otherwise the best hardware
/// GPU. A software rasteriser (llvmpipe/lavapipe, `DeviceType::Cpu`) is never picked unless named.
fn choose(adapters: Vec<wgpu::Adapter>) -> std::result::Result<(wgpu::Adapter, String), String> {
    let names: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
    let seen = if names.is_empty() {
        "none".to_string()
    } else {
        names.join("; ")
    };
    if let Ok(wanted) = std::env::var(ADAPTER_ENV) {
        let w = wanted.to_lowercase();
        return match adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&w))
        {
            Some(a) => Ok((a, format!("named by {ADAPTER_ENV}={wanted}"))),
            None => Err(format!(
                "no GPU adapter matches {ADAPTER_ENV}={wanted} (adapters found: {seen})"
            )),
        };
    }
    let mut hardware: Vec<wgpu::Adapter> = adapters
        .into_iter()
        .filter(|a| is_hardware(a.get_info().device_type))
        .collect();
    hardware.sort_by_key(|a| rank(a.get_info().device_type));
    let count = hardware.len();
    let (index, why) = match PREFERRED.get() {
        Some(&i) if count > 0 => (
            i % count,
            format!("hardware adapter {} of {count}, as asked for (index {i})", i % count),
        ),
        _ => (0, String::new()),
    };
    match hardware.into_iter().nth(index) {
        Some(a) if !why.is_empty() => Ok((a, why)),
        Some(a) => {
            let t = a.get_info().device_type;
            Ok((a, format!("the first {t:?} adapter")))
        }
        None => Err(format!(
            "no GPU adapter found (Vulkan/Metal/DX12; adapters found: {seen}); use device 'cpu' or 'auto', \
             or name a software adapter with {ADAPTER_ENV}=llvmpipe"
        )),
    }
}

/// The size of the adapter's largest device-local memory heap (Vulkan: vkGetPhysicalDeviceMemoryProperties
/// through wgpu-hal); None on other backends.
fn device_local_heap(adapter: &wgpu::Adapter) -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "windows", target_os = "android"))]
    {
        // SAFETY: the hal adapter is only read (its physical device and instance handles), while
        // `adapter` keeps it alive; vkGetPhysicalDeviceMemoryProperties has no preconditions
        // beyond valid handles.
        unsafe {
            let hal = adapter.as_hal::<wgpu::hal::api::Vulkan>()?;
            let props = hal
                .shared_instance()
                .raw_instance()
                .get_physical_device_memory_properties(hal.raw_physical_device());
            const DEVICE_LOCAL: u32 = 0x1; // VK_MEMORY_HEAP_DEVICE_LOCAL_BIT
            let count = (props.memory_heap_count as usize).min(props.memory_heaps.len());
            props.memory_heaps[..count]
                .iter()
                .filter(|h| h.flags.as_raw() & DEVICE_LOCAL != 0)
                .map(|h| h.size)
                .max()
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "android")))]
    {
        let _ = adapter;
        None
    }
}

/// The limits to ask for: everything the adapter offers that our kernels use.
fn wanted_limits(adapter: &wgpu::Limits) -> wgpu::Limits {
    let mut l = wgpu::Limits::downlevel_defaults();
    l.max_storage_buffer_binding_size = adapter.max_storage_buffer_binding_size;
    l.max_buffer_size = adapter.max_buffer_size;
    l.max_compute_workgroup_storage_size = adapter.max_compute_workgroup_storage_size;
    l.max_compute_invocations_per_workgroup = adapter.max_compute_invocations_per_workgroup;
    l.max_compute_workgroup_size_x = adapter.max_compute_workgroup_size_x;
    l.max_compute_workgroup_size_y = adapter.max_compute_workgroup_size_y;
    l.max_compute_workgroup_size_z = adapter.max_compute_workgroup_size_z;
    l.max_compute_workgroups_per_dimension = adapter.max_compute_workgroups_per_dimension;
    l.max_storage_buffers_per_shader_stage = adapter.max_storage_buffers_per_shader_stage.min(16);
    l.max_uniform_buffer_binding_size = adapter.max_uniform_buffer_binding_size;
    l.min_uniform_buffer_offset_alignment = adapter.min_uniform_buffer_offset_alignment;
    l.min_storage_buffer_offset_alignment = adapter.min_storage_buffer_offset_alignment;
    l
}

impl GpuContext {
    fn create() -> std::result::Result<GpuContext, String> {
        let instance = instance();
        let (adapter, reason) = choose(adapters(&instance))?;
        let info = adapter.get_info();
        let device_memory = device_local_heap(&adapter);
        let adapter_limits = adapter.limits();
        let limits = wanted_limits(&adapter_limits);
        // Optional features are taken where offered; every kernel has a path without them.
        let mut features = adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16);
        let cooperative_subgroup = tensor_core_subgroup(&adapter, &info, &adapter_limits);
        if cooperative_subgroup.is_some() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let experimental_features = if cooperative_subgroup.is_some() {
            // SAFETY: wgpu's experimental cooperative matrices are asked for only on adapters that
            // report an f16 x f16 -> f32 16x16x16 configuration, and used only by the GEMM loop
            // written for it (gemm_coop.wgsl); `RESNET_WGPU_COOP=off` turns them off.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("resnet-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("could not open {}: {e}", describe(&info)))?;
        let ctx = GpuContext {
            pipelines: Pipelines::default(),
            pool: Mutex::new(Pool::default()),
            recorder: Mutex::new(Recorder::new(limits.min_uniform_buffer_offset_alignment)),
            error: Mutex::new(None),
            device,
            queue,
            info,
            limits,
            features,
            cooperative_subgroup,
            reason,
            device_memory,
            _instance: instance,
        };
        Ok(ctx)
    }

    /// Installs the error sink. Called once, right after the context is in its static: wgpu's
    /// default handler panics, and a kernel bug must be an `Err`, not an abort of the host process.
    fn install_error_handler(&'static self) {
        self.device
            .on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
                let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = Some(e.to_string());
                }
            }));
    }

    /// Returns (and keeps) the first wgpu error seen, if any.
    pub fn check_error(&self) -> Result<()> {
        match &*self.error.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(Error::Device(format!("GPU error: {e}"))),
            None => Ok(()),
        }
    }

    pub fn describe(&self) -> String {
        describe(&self.info)
    }
}

/// One adapter as `adapters_info` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    /// The largest device-local memory heap (Vulkan only), in bytes.
    pub device_memory: Option<u64>,
    pub subgroup: bool,
    pub shader_f16: bool,
    /// The f16 x f16 -> f32 cooperative-matrix shapes the driver reports (`MxNxK`), where wgpu's
    /// experimental cooperative matrices are offered; empty elsewhere.
    pub cooperative_matrix_f16: Vec<String>,
    /// Set where precision 'mixed' runs its GEMMs on cooperative matrices: the subgroup size.
    pub tensor_core_subgroup: Option<u32>,
}

impl AdapterReport {
    /// How precision 'mixed' runs here: tensor-core shapes exist, f16 shaders, or not at all.
    pub fn mixed_precision(&self) -> String {
        if !self.shader_f16 {
            return "no (no f16 shaders)".into();
        }
        match (self.cooperative_matrix_f16.is_empty(), self.tensor_core_subgroup) {
            (true, _) => "yes, f16 operands in the tiled GEMM (no cooperative matrices)".into(),
            (false, Some(size)) => format!(
                "yes, on tensor cores: 16x16x16 cooperative matrices, subgroups of {size} (offered f16->f32: {})",
                self.cooperative_matrix_f16.join(", ")
            ),
            (false, None) => format!(
                "yes, f16 operands in the tiled GEMM (cooperative matrices f16->f32: {}, but no 16x16x16 one with \
                 subgroups of one size, or RESNET_WGPU_COOP=off)",
                self.cooperative_matrix_f16.join(", ")
            ),
        }
    }
}

/// The subgroup size the cooperative-matrix GEMM loop (gemm_coop.wgsl) runs with on `adapter`, or
/// None where it cannot run: it needs an f16 x f16 -> f32 16x16x16 configuration (the one square
/// shape WGSL's `coop_mat16x16` names), f16 shaders, subgroups of one known size (its workgroup
/// is 8 subgroups, one 32x32 block of the output each) within the workgroup limits (threads and
/// 20 KiB of workgroup memory), and `RESNET_WGPU_COOP` not `off`.
fn tensor_core_subgroup(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Option<u32> {
    let needed =
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16;
    if !adapter.features().contains(needed) || std::env::var("RESNET_WGPU_COOP").is_ok_and(|v| v == "off") {
        return None;
    }
    let square = cooperative_f16_shapes(adapter).iter().any(|s| s == "16x16x16");
    let size = info.subgroup_min_size;
    let fits = size == info.subgroup_max_size
        && size > 0
        && 8 * size <= limits.max_compute_invocations_per_workgroup
        && 8 * size <= limits.max_compute_workgroup_size_x
        && super::kernels::gemm::COOP_WORKGROUP_BYTES <= limits.max_compute_workgroup_storage_size;
    (square && fits).then_some(size)
}

/// The f16 x f16 -> f32 cooperative-matrix configurations of an adapter, as `MxNxK`.
fn cooperative_f16_shapes(adapter: &wgpu::Adapter) -> Vec<String> {
    if !adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        return Vec::new();
    }
    let mut shapes: Vec<String> = adapter
        .cooperative_matrix_properties()
        .iter()
        .filter(|p| p.ab_type == wgpu::CooperativeScalarType::F16 && p.cr_type == wgpu::CooperativeScalarType::F32)
        .map(|p| format!("{}x{}x{}", p.m_size, p.n_size, p.k_size))
        .collect();
    shapes.sort_unstable();
    shapes.dedup();
    shapes
}

/// Every adapter wgpu can see, and which one `gpu`/`auto` would use and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuReport {
    pub adapters: Vec<AdapterReport>,
    /// The adapter in use (or that would be used), or None.
    pub selected: Option<String>,
    pub reason: String,
}

pub fn report() -> GpuReport {
    let reports: Vec<AdapterReport> = adapters(&instance())
        .iter()
        .map(|a| {
            let (i, l, f) = (a.get_info(), a.limits(), a.features());
            AdapterReport {
                name: i.name.clone(),
                backend: format!("{:?}", i.backend),
                device_type: format!("{:?}", i.device_type),
                driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
                max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
                max_buffer_size: l.max_buffer_size,
                max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                device_memory: device_local_heap(a),
                subgroup: f.contains(wgpu::Features::SUBGROUP),
                shader_f16: f.contains(wgpu::Features::SHADER_F16),
                cooperative_matrix_f16: cooperative_f16_shapes(a),
                tensor_core_subgroup: tensor_core_subgroup(a, &i, &l),
            }
        })
        .collect();
    let (selected, reason) = match existing_context() {
        Some(c) => (
            Some(c.describe()),
            format!("in use: {}; optional features enabled: {:?}", c.reason, c.features),
        ),
        None => match choose(adapters(&instance())) {
            Ok((a, why)) => (Some(describe(&a.get_info())), why),
            Err(e) => (None, e),
        },
    };
    GpuReport {
        adapters: reports,
        selected,
        reason,
    }
}

impl std::fmt::Display for GpuReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.adapters.is_empty() {
            writeln!(f, "GPU adapters: none found (Vulkan/Metal/DX12)")?;
        } else {
            writeln!(f, "GPU adapters:")?;
        }
        for a in &self.adapters {
            writeln!(
                f,
                "  {} [{} {}] driver: {}\n    device memory {}, max storage binding {} MiB, max buffer {} MiB, \
                 workgroup memory {} KiB, {} invocations/workgroup, subgroups: {}, f16: {}\n    \
                 precision 'mixed': {}",
                a.name,
                a.backend,
                a.device_type,
                if a.driver.is_empty() { "?" } else { &a.driver },
                a.device_memory
                    .map_or("unknown".to_string(), crate::memory::human_bytes),
                a.max_storage_buffer_binding_size >> 20,
                a.max_buffer_size >> 20,
                a.max_compute_workgroup_storage_size >> 10,
                a.max_compute_invocations_per_workgroup,
                a.subgroup,
                a.shader_f16,
                a.mixed_precision()
            )?;
        }
        match &self.selected {
            Some(s) => write!(f, "device 'gpu' uses: {s} ({})", self.reason),
            None => write!(
                f,
                "device 'gpu' is unavailable: {}\ndevice 'auto' uses the CPU",
                self.reason
            ),
        }
    }
}
