//! Choosing the adapter: what the environment asks for, the adapters wgpu sees, and
//! the capabilities (features and real limits) a device on one of them gets.

use crate::error::{Error, Result};

/// Optional features and limits of the device, consulted by kernels to pick variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `shader-f16` is enabled: kernels may use `f16` arithmetic.
    pub shader_f16: bool,
    /// Subgroup operations are enabled.
    pub subgroups: bool,
    /// Smallest subgroup size the adapter reports (0 when unknown).
    pub subgroup_min_size: u32,
    /// GPU timestamp queries are enabled.
    pub timestamp_query: bool,
    /// Largest storage buffer binding, in bytes (128 MiB on lavapipe and many phones).
    pub max_storage_binding_bytes: u64,
    /// Largest buffer, in bytes.
    pub max_buffer_bytes: u64,
    /// Workgroup (shared) memory per workgroup, in bytes.
    pub max_workgroup_storage_bytes: u32,
    /// Invocations per workgroup.
    pub max_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dimension: u32,
    /// Storage buffers one shader stage may bind.
    pub max_storage_buffers_per_stage: u32,
    /// The adapter is a software rasteriser (lavapipe, SwiftShader, WARP).
    pub software: bool,
}

/// What a user sees about one adapter (`safetyj devices`).
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// A software rasteriser (lavapipe, SwiftShader, WARP): exact but slower than
    /// the CPU engine, so `--device auto` does not choose it.
    pub software: bool,
}

/// How to choose the adapter. Defaults come from the environment:
/// `SAFETYJ_BACKEND` (`vulkan`, `metal`, `dx12`, `gl`, `webgpu`; falls back to
/// `WGPU_BACKEND`), `SAFETYJ_ADAPTER` (an index from `safetyj devices` or part of a
/// name) and `SAFETYJ_DISABLE` (comma list of `f16`, `subgroups`, `timestamps`,
/// to force the baseline kernels).
#[derive(Debug, Clone, Default)]
pub struct ContextOptions {
    pub backends: Option<wgpu::Backends>,
    pub adapter: Option<String>,
    pub disable: Vec<String>,
}

impl ContextOptions {
    /// Options read from the environment variables documented on [`ContextOptions`].
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        ContextOptions {
            backends: var("SAFETYJ_BACKEND")
                .or_else(|| var("WGPU_BACKEND"))
                .map(|list| wgpu::Backends::from_comma_list(&list)),
            adapter: var("SAFETYJ_ADAPTER"),
            disable: var("SAFETYJ_DISABLE")
                .map(|list| list.split(',').map(|s| s.trim().to_lowercase()).collect())
                .unwrap_or_default(),
        }
    }
}

/// The optional features to request from an adapter offering `available`: shader
/// f16, subgroups and timestamp queries, minus those `options` disable.
pub(super) fn wanted_features(
    available: wgpu::Features,
    options: &ContextOptions,
) -> wgpu::Features {
    let disabled = |name: &str| options.disable.iter().any(|d| d == name);
    let mut wanted = wgpu::Features::empty();
    if available.contains(wgpu::Features::SHADER_F16) && !disabled("f16") {
        wanted |= wgpu::Features::SHADER_F16;
    }
    if available.contains(wgpu::Features::SUBGROUP) && !disabled("subgroups") {
        wanted |= wgpu::Features::SUBGROUP;
    }
    if available.contains(wgpu::Features::TIMESTAMP_QUERY) && !disabled("timestamps") {
        wanted |= wgpu::Features::TIMESTAMP_QUERY;
    }
    wanted
}

impl Capabilities {
    /// What a device made with `features` on the adapter of `info` and `limits` offers.
    pub(super) fn new(
        features: wgpu::Features,
        info: &wgpu::AdapterInfo,
        limits: &wgpu::Limits,
    ) -> Self {
        Capabilities {
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            max_buffer_bytes: limits.max_buffer_size,
            max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            software: info.device_type == wgpu::DeviceType::Cpu,
        }
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn summarize(adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    AdapterSummary {
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        limits: adapter.limits(),
        features: adapter.features(),
        software: info.device_type == wgpu::DeviceType::Cpu,
    }
}

/// Every adapter wgpu can see, in the order `SAFETYJ_ADAPTER` indices refer to.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn adapters(options: &ContextOptions) -> Vec<AdapterSummary> {
    let backends = options.backends.unwrap_or(wgpu::Backends::PRIMARY);
    let adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
    adapters.iter().map(summarize).collect()
}

#[cfg(not(target_arch = "wasm32"))]
pub(super) async fn choose_adapter(options: &ContextOptions) -> Result<wgpu::Adapter> {
    let backends = options.backends.unwrap_or(wgpu::Backends::PRIMARY);
    let mut adapters = instance(backends).enumerate_adapters(backends).await;
    if adapters.is_empty() {
        return Err(Error::NoAdapter(format!(
            "wgpu found none for backends {backends:?}; install a Vulkan, Metal or DX12 driver \
             (on Linux without a GPU: mesa-vulkan-drivers for lavapipe)"
        )));
    }
    if let Some(wanted) = &options.adapter {
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        let index = match wanted.parse::<usize>() {
            Ok(i) if i < adapters.len() => Some(i),
            _ => names
                .iter()
                .position(|n| n.to_lowercase().contains(&wanted.to_lowercase())),
        };
        return match index {
            Some(i) => Ok(adapters.swap_remove(i)),
            None => Err(Error::NoAdapter(format!(
                "SAFETYJ_ADAPTER=\"{wanted}\" matches none of: {}",
                names.join(", ")
            ))),
        };
    }
    adapters.sort_by_key(|a| device_type_rank(a.get_info().device_type));
    Ok(adapters.swap_remove(0))
}

#[cfg(target_arch = "wasm32")]
pub(super) async fn choose_adapter(options: &ContextOptions) -> Result<wgpu::Adapter> {
    let backends = options.backends.unwrap_or(wgpu::Backends::BROWSER_WEBGPU);
    instance(backends)
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::NoAdapter(format!("this browser offers no WebGPU adapter ({e})")))
}
