use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::encoder::SubmissionSlot;
use super::Encoder;
use crate::error::{Error, Result};

/// A WGSL kernel source: its file name (for errors and the cache key) and text.
#[derive(Debug, Clone, Copy)]
pub struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

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

/// A wgpu error reduced to its kind and message: unlike `wgpu::Error` on the web, it
/// can be kept by the (`Send`) uncaptured-error handler.
enum GpuFault {
    OutOfMemory(String),
    Validation(String),
}

impl From<wgpu::Error> for GpuFault {
    fn from(error: wgpu::Error) -> Self {
        match error {
            wgpu::Error::OutOfMemory { source } => GpuFault::OutOfMemory(source.to_string()),
            wgpu::Error::Validation { description, .. }
            | wgpu::Error::Internal { description, .. } => GpuFault::Validation(description),
        }
    }
}

type PipelineKey = (&'static str, Vec<(String, String)>);

/// The GPU device with its queue, capabilities and caches. Cheap to share by reference
/// across threads; all methods take `&self`.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: Capabilities,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Op names of cached pipelines by address, for [`Context::start_profile`].
    pipeline_names: Mutex<HashMap<usize, String>>,
    profiler: Mutex<Option<Profiler>>,
    /// Uniform buffers by (label, contents): parameter blocks repeat every step.
    uniforms: Mutex<HashMap<(String, Vec<u8>), wgpu::Buffer>>,
    /// Scratch storage buffers by label, grown on demand: see [`Context::scratch_buffer`].
    scratch: Mutex<HashMap<String, wgpu::Buffer>>,
    /// Bind groups by pipeline and bound buffers: see [`Context::bind_group`].
    bind_groups: Mutex<BindGroupCache>,
    lost: Arc<Mutex<Option<String>>>,
    /// On the web, errors arrive here instead of through a blocking error scope.
    uncaptured: Arc<Mutex<Option<GpuFault>>>,
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
    }
}

impl Context {
    /// Lists every adapter wgpu can see (native only), in the order `SAFETYJ_ADAPTER`
    /// indices refer to.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn adapters(options: &ContextOptions) -> Vec<AdapterSummary> {
        let backends = options.backends.unwrap_or(wgpu::Backends::PRIMARY);
        let adapters = pollster::block_on(instance(backends).enumerate_adapters(backends));
        adapters.iter().map(summarize).collect()
    }

    /// Creates a context on the best adapter: high-performance first, then integrated,
    /// then software; `options` can pin a backend or adapter.
    pub async fn new(options: &ContextOptions) -> Result<Self> {
        let adapter = Self::choose_adapter(options).await?;
        Self::from_adapter(adapter, options).await
    }

    /// Blocking form of [`Context::new`] with options from the environment (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new(&ContextOptions::from_env()))
    }

    #[cfg(not(target_arch = "wasm32"))]
    async fn choose_adapter(options: &ContextOptions) -> Result<wgpu::Adapter> {
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
    async fn choose_adapter(options: &ContextOptions) -> Result<wgpu::Adapter> {
        let backends = options.backends.unwrap_or(wgpu::Backends::BROWSER_WEBGPU);
        instance(backends)
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(format!("this browser offers no WebGPU adapter ({e})")))
    }

    async fn from_adapter(adapter: wgpu::Adapter, options: &ContextOptions) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let available = adapter.features();
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
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("safetyj"),
                required_features: wanted,
                // The adapter's real limits, not WebGPU's conservative defaults: the
                // default 128 MiB binding would needlessly split tensors on big GPUs.
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::DeviceRequest {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;

        let lost = Arc::new(Mutex::new(None));
        let lost_slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_slot.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });
        let uncaptured = Arc::new(Mutex::new(None));
        let uncaptured_slot = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error| {
            let mut slot = uncaptured_slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(error.into());
        }));

        let caps = Capabilities {
            shader_f16: wanted.contains(wgpu::Features::SHADER_F16),
            subgroups: wanted.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            timestamp_query: wanted.contains(wgpu::Features::TIMESTAMP_QUERY),
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            max_buffer_bytes: limits.max_buffer_size,
            max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
            max_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            software: info.device_type == wgpu::DeviceType::Cpu,
        };
        Ok(Context {
            device,
            queue,
            info,
            caps,
            pipelines: Mutex::new(HashMap::new()),
            pipeline_names: Mutex::new(HashMap::new()),
            profiler: Mutex::new(None),
            uniforms: Mutex::new(HashMap::new()),
            scratch: Mutex::new(HashMap::new()),
            bind_groups: Mutex::new(BindGroupCache::new(BIND_GROUP_CACHE_ENTRIES)),
            lost,
            uncaptured,
        })
    }

    /// A one-line notice when the adapter is a software one, which is exact but slow.
    pub fn software_notice(&self) -> Option<String> {
        self.caps.software.then(|| {
            format!(
                "note: running on a software GPU adapter ({}); results are exact but slow",
                self.info.name
            )
        })
    }

    /// Fails with [`Error::DeviceLost`] once the device is gone.
    pub fn check_alive(&self) -> Result<()> {
        match self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(reason) => Err(Error::DeviceLost(reason)),
            None => Ok(()),
        }
    }

    /// Runs `f` and turns any wgpu validation or out-of-memory error it raised into a
    /// typed [`Error`] that names `context`.
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        #[cfg(not(target_arch = "wasm32"))]
        let (value, error) = {
            let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let value = f();
            let error = pollster::block_on(validation.pop())
                .or(pollster::block_on(oom.pop()))
                .map(GpuFault::from);
            (value, error)
        };
        #[cfg(target_arch = "wasm32")]
        let (value, error) = {
            let value = f();
            (
                value,
                self.uncaptured
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            )
        };
        match error {
            None => Ok(value),
            Some(e) => Err(Self::typed(context, e)),
        }
    }

    fn typed(context: &str, fault: GpuFault) -> Error {
        match fault {
            GpuFault::OutOfMemory(message) => Error::OutOfMemory {
                context: context.to_string(),
                message,
            },
            GpuFault::Validation(message) => Error::Validation {
                context: context.to_string(),
                message,
            },
        }
    }

    /// Errors raised outside any scope (for example by a failed submit on the web).
    pub fn take_uncaptured(&self, context: &str) -> Result<()> {
        match self
            .uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(Self::typed(context, e)),
            None => Ok(()),
        }
    }

    /// The compiled pipeline for `shader` with `defines`, built once and cached.
    /// Its entry point is `main`; bind group 0 is laid out from the shader.
    pub fn pipeline(
        &self,
        shader: Shader,
        defines: &[(&str, String)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut defines: Vec<(String, String)> = defines
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        defines.sort();
        let key = (shader.name, defines);
        if let Some(p) = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        let mut all = key.1.clone();
        if self.caps.shader_f16 {
            all.push(("HAS_F16".into(), String::new()));
        }
        let source = crate::gpu::preprocess(shader.name, shader.source, &all)?;
        let context = format!("compiling shader {} {:?}", shader.name, key.1);
        let pipeline = self.scoped(&context, || {
            let module = self
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(shader.name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })?;
        let pipeline = Arc::new(pipeline);
        self.pipeline_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                Arc::as_ptr(&pipeline) as usize,
                op_name(shader.name, &key.1),
            );
        self.pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Checks that one binding of `bytes` fits the device, naming `what` otherwise.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.caps.max_storage_binding_bytes {
            return Err(Error::Limit {
                what: what.to_string(),
                needed: bytes,
                limit: self.caps.max_storage_binding_bytes,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        Ok(())
    }

    /// A storage buffer of at least `bytes`, shared by every caller with the same
    /// `label` and reallocated only when a larger one is asked for. For intermediates
    /// written and consumed by consecutive dispatches (wgpu orders the accesses), so
    /// each step does not allocate them again.
    pub fn scratch_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let mut cache = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(buffer) = cache.get(label) {
            if buffer.size() >= bytes {
                return Ok(buffer.clone());
            }
        }
        let buffer = self.storage_buffer(label, bytes)?;
        cache.insert(label.to_string(), buffer.clone());
        Ok(buffer)
    }

    /// An uninitialised storage buffer of `bytes` (rounded up to 4), usable as a copy
    /// source and destination.
    pub fn storage_buffer(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(4).next_multiple_of(4);
        if size > self.caps.max_buffer_bytes {
            return Err(Error::Limit {
                what: format!("buffer \"{label}\""),
                needed: size,
                limit: self.caps.max_buffer_bytes,
                limit_name: "max_buffer_size",
            });
        }
        self.scoped(
            &format!("allocating buffer \"{label}\" ({size} bytes)"),
            || {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            },
        )
    }

    /// A storage buffer holding `bytes`, zero-padded to a multiple of 4.
    pub fn upload_bytes(&self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        let buffer = self.storage_buffer(label, bytes.len() as u64)?;
        self.write_bytes(&buffer, 0, bytes);
        Ok(buffer)
    }

    /// Writes `bytes` at `offset` (both multiples of 4 after zero-padding the tail).
    pub fn write_bytes(&self, buffer: &wgpu::Buffer, offset: u64, bytes: &[u8]) {
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(buffer, offset, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue
                .write_buffer(buffer, offset + whole as u64, &tail);
        }
    }

    /// A uniform buffer holding `value` (a `#[repr(C)]` parameter block). Uniforms are
    /// never written after creation, so one with the same label and contents is
    /// reused: a decode step asks for the same parameter blocks as the step before.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(value);
        let key = (label.to_string(), bytes.to_vec());
        let mut cache = self.uniforms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(buffer) = cache.get(&key) {
            return buffer.clone();
        }
        if cache.len() >= UNIFORM_CACHE_ENTRIES {
            cache.clear();
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (bytes.len() as u64).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, bytes);
        cache.insert(key, buffer.clone());
        buffer
    }

    /// A bind group for `pipeline`'s group 0 with `buffers` at bindings 0, 1, 2, ….
    /// Bind groups are cached by pipeline and buffer identity, so a step that binds
    /// the same weights and activations as the step before records without creating
    /// any; see `BindGroupCache` (below) for how long a cached one (and so its buffers)
    /// is kept.
    pub fn bind_group(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let key = BindGroupKey {
            pipeline: pipeline.clone(),
            buffers: buffers.iter().map(|&b| b.clone()).collect(),
        };
        let mut cache = self.bind_groups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(group) = cache.get(&key) {
            return group;
        }
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        cache.created += 1;
        cache.insert(key, group.clone());
        group
    }

    /// Bind groups created so far (cache misses of [`Context::bind_group`]). A step
    /// that creates none binds only what earlier steps bound: the per-token host
    /// overhead `safetyj bench` reports and the model tests hold at zero.
    pub fn bind_groups_created(&self) -> u64 {
        let cache = self.bind_groups.lock().unwrap_or_else(|p| p.into_inner());
        cache.created
    }

    /// Records one dispatch of `pipeline` over `workgroups`, splitting an x count above
    /// the device's per-dimension limit into y (shaders then compute the flat index as
    /// `wid.x + wid.y * num_workgroups.x`).
    pub fn dispatch(
        &self,
        encoder: &mut Encoder,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        workgroups: (u32, u32, u32),
    ) {
        let (mut x, mut y, z) = workgroups;
        let max = self.caps.max_workgroups_per_dimension;
        if x > max && y == 1 {
            y = x.div_ceil(max);
            x = x.div_ceil(y);
        }
        let mut profiler = self.profiler.lock().unwrap_or_else(|p| p.into_inner());
        let timestamp_writes = profiler.as_mut().and_then(|profiler| {
            let name = self
                .pipeline_names
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(pipeline as *const wgpu::ComputePipeline as usize))
                .cloned()
                .unwrap_or_else(|| "unnamed".into());
            let first = profiler.next_pair(name)?;
            Some(wgpu::ComputePassTimestampWrites {
                query_set: &profiler.queries,
                beginning_of_pass_write_index: Some(first),
                end_of_pass_write_index: Some(first + 1),
            })
        });
        // A timed dispatch needs a pass of its own, whose beginning and end are
        // stamped; untimed ones share the encoder's open pass.
        let mut timed;
        let pass = match timestamp_writes {
            Some(timestamp_writes) => {
                timed = encoder
                    .commands()
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(timestamp_writes),
                    })
                    .forget_lifetime();
                &mut timed
            }
            None => encoder.pass(),
        };
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }

    /// Starts timing every dispatch recorded from now on with GPU timestamps (up to
    /// [`PROFILE_MAX_DISPATCHES`]); [`Context::finish_profile`] reads the times.
    /// Fails when the device has no timestamp queries.
    pub fn start_profile(&self) -> Result<()> {
        if !self.caps.timestamp_query {
            return Err(Error::InvalidInput(format!(
                "profiling needs timestamp queries, which {} does not offer (or SAFETYJ_DISABLE has them off)",
                self.info.name
            )));
        }
        let queries = self.scoped("creating a timestamp query set", || {
            self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PROFILE_MAX_DISPATCHES,
            })
        })?;
        *self.profiler.lock().unwrap_or_else(|p| p.into_inner()) = Some(Profiler {
            queries,
            names: Vec::new(),
        });
        Ok(())
    }

    /// Stops profiling and returns the GPU time of each dispatch recorded since
    /// [`Context::start_profile`], in recording order, as (op name, seconds). The op
    /// name is the shader's file stem with its flag defines, e.g. `matmul[GEMV,Q4_K]`.
    /// Every recorded command must have been submitted.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn finish_profile(&self) -> Result<Vec<(String, f64)>> {
        let Some(profiler) = self
            .profiler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Err(Error::InvalidInput("no profile was started".into()));
        };
        let count = 2 * profiler.names.len() as u32;
        if count == 0 {
            return Ok(Vec::new());
        }
        let resolved = self.scoped("allocating the timestamp buffer", || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: count as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        })?;
        let mut encoder = self.encoder();
        encoder
            .commands()
            .resolve_query_set(&profiler.queries, 0..count, &resolved, 0);
        self.submit("resolving timestamps", encoder)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&pollster::block_on(self.read_bytes(
            &resolved,
            0,
            count as u64 * 8,
        ))?);
        let seconds_per_tick = self.queue.get_timestamp_period() as f64 * 1e-9;
        Ok(profiler
            .names
            .into_iter()
            .zip(ticks.chunks_exact(2))
            .map(|(name, pair)| {
                (
                    name,
                    pair[1].saturating_sub(pair[0]) as f64 * seconds_per_tick,
                )
            })
            .collect())
    }

    /// Waits until the GPU has finished all submitted work (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_idle(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Readback {
                label: "waiting for the GPU".into(),
                message: e.to_string(),
            })
    }

    /// A fresh encoder for the commands of one submit.
    pub fn encoder(&self) -> Encoder {
        Encoder::new(
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default()),
        )
    }

    /// Submits `encoder`, surfacing any error it raised as a typed error naming `context`.
    pub fn submit(&self, context: &str, encoder: Encoder) -> Result<()> {
        let (commands, slots) = encoder.finish();
        let index = self.scoped(context, || self.queue.submit([commands]))?;
        for slot in slots {
            // A slot belongs to one encoder, which is submitted once.
            let _ = slot.set(index.clone());
        }
        self.take_uncaptured(context)
    }

    /// Copies `bytes` from `buffer` at `offset` back to the CPU and waits for them.
    pub async fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        let mut encoder = self.encoder();
        let readback = self.record_readback(&mut encoder, buffer, offset, bytes)?;
        self.submit("copying a buffer for readback", encoder)?;
        self.finish_readback(readback).await
    }

    /// Records copying `bytes` from `buffer` at `offset` into `encoder`, after the
    /// work recorded so far, so that a step and the read of its result are one
    /// submit; [`Context::finish_readback`] waits for the bytes once it is submitted.
    pub fn record_readback(
        &self,
        encoder: &mut Encoder,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Readback> {
        let size = bytes.next_multiple_of(4);
        let staging = self.scoped("allocating a readback buffer", || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: size.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        Ok(Readback {
            staging,
            bytes,
            submission: encoder.submission_slot(),
        })
    }

    /// Waits for a readback recorded with [`Context::record_readback`] into an
    /// encoder that has been submitted, and returns its bytes. Work submitted after
    /// that encoder is not waited for: it may run on while the caller reads.
    pub async fn finish_readback(&self, readback: Readback) -> Result<Vec<u8>> {
        let label = "readback";
        let Readback {
            staging,
            bytes,
            submission,
        } = readback;
        let Some(submission) = submission.get().cloned() else {
            return Err(Error::Readback {
                label: label.into(),
                message: "the commands holding the copy were never submitted".into(),
            });
        };
        let (sender, receiver) = futures_oneshot();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| sender.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| Error::Readback {
                label: label.into(),
                message: e.to_string(),
            })?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        receiver.recv().await.map_err(|e| Error::Readback {
            label: label.into(),
            message: e.to_string(),
        })?;
        self.check_alive()?;
        // On the web, errors of earlier calls arrive asynchronously; by now the GPU
        // has run everything before this copy, so a result is never read from a
        // computation that failed.
        self.take_uncaptured("running GPU work before a readback")?;
        let data = staging.get_mapped_range(..).map_err(|e| Error::Readback {
            label: label.into(),
            message: e.to_string(),
        })?[..bytes as usize]
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Reads `len` f32 values starting at element `offset` (native, blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<f32>> {
        let bytes = pollster::block_on(self.read_bytes(buffer, offset as u64 * 4, len as u64 * 4))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads `len` u32 values starting at element `offset` (native, blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32(&self, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<u32>> {
        let bytes = pollster::block_on(self.read_bytes(buffer, offset as u64 * 4, len as u64 * 4))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}

/// A copy to the CPU recorded into an encoder ([`Context::record_readback`]), read
/// with [`Context::finish_readback`] after the submit.
pub struct Readback {
    staging: wgpu::Buffer,
    bytes: u64,
    /// The submit that carries the copy, once it is made.
    submission: SubmissionSlot,
}

/// Distinct uniform blocks kept for reuse; the cache starts over when full (new step
/// sizes and shapes add blocks; positions do not, they live in a buffer of their own).
const UNIFORM_CACHE_ENTRIES: usize = 4096;

/// Bind groups kept per generation of the [`BindGroupCache`]. A decode step of a
/// 24-layer model binds about 400 distinct groups, the same ones every step.
const BIND_GROUP_CACHE_ENTRIES: usize = 2048;

/// Which bind group a dispatch needs: the pipeline and the buffers at bindings 0, 1, ….
/// wgpu handles compare and hash by identity, and the key holds them, so a buffer
/// that is dropped elsewhere cannot be mistaken for a new one at the same address.
#[derive(PartialEq, Eq, Hash)]
struct BindGroupKey {
    pipeline: wgpu::ComputePipeline,
    buffers: Vec<wgpu::Buffer>,
}

/// A bounded bind group cache that keeps what is used repeatedly: entries live in
/// the current generation; when it is full it becomes the previous one (dropping the
/// one before), and a hit in the previous generation moves the entry back to the
/// current one. A group unused for two generations is dropped, and with it the
/// cache's hold on its buffers (a bind group keeps its buffers' memory alive).
struct BindGroupCache {
    /// Entries per generation.
    capacity: usize,
    current: HashMap<BindGroupKey, wgpu::BindGroup>,
    previous: HashMap<BindGroupKey, wgpu::BindGroup>,
    /// Groups created since the context was made.
    created: u64,
}

impl BindGroupCache {
    fn new(capacity: usize) -> Self {
        BindGroupCache {
            capacity,
            current: HashMap::new(),
            previous: HashMap::new(),
            created: 0,
        }
    }

    fn get(&mut self, key: &BindGroupKey) -> Option<wgpu::BindGroup> {
        if let Some(group) = self.current.get(key) {
            return Some(group.clone());
        }
        let (key, group) = self.previous.remove_entry(key)?;
        self.insert(key, group.clone());
        Some(group)
    }

    fn insert(&mut self, key: BindGroupKey, group: wgpu::BindGroup) {
        if self.current.len() >= self.capacity {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, group);
    }
}

/// Dispatches one profile can time (two timestamp queries each).
pub const PROFILE_MAX_DISPATCHES: u32 = 2048;

/// Timestamp queries of a running profile and the op name of each timed dispatch.
struct Profiler {
    queries: wgpu::QuerySet,
    names: Vec<String>,
}

impl Profiler {
    /// The first of two fresh query indices for a dispatch of `name`, while any remain.
    fn next_pair(&mut self, name: String) -> Option<u32> {
        let first = 2 * self.names.len() as u32;
        if first + 2 > 2 * PROFILE_MAX_DISPATCHES {
            return None;
        }
        self.names.push(name);
        Some(first)
    }
}

/// `matmul.wgsl` with defines GEMV, Q4_K and GEMV_ROWS=4u → `matmul[GEMV,Q4_K]`:
/// the valueless defines are the ones that pick a variant.
fn op_name(shader: &str, defines: &[(String, String)]) -> String {
    let stem = shader.trim_end_matches(".wgsl");
    let flags: Vec<&str> = defines
        .iter()
        .filter(|(_, value)| value.is_empty())
        .map(|(name, _)| name.as_str())
        .collect();
    if flags.is_empty() {
        stem.to_string()
    } else {
        format!("{stem}[{}]", flags.join(","))
    }
}

/// A single-value channel whose receiver is awaitable, for buffer-map callbacks.
fn futures_oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let slot = Arc::new(Mutex::new(OneshotState {
        value: None,
        waker: None,
    }));
    (OneshotSender(slot.clone()), OneshotReceiver(slot))
}

struct OneshotState<T> {
    value: Option<T>,
    waker: Option<std::task::Waker>,
}

struct OneshotSender<T>(Arc<Mutex<OneshotState<T>>>);
struct OneshotReceiver<T>(Arc<Mutex<OneshotState<T>>>);

impl<T> OneshotSender<T> {
    fn send(self, value: T) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.value = Some(value);
        if let Some(w) = state.waker.take() {
            w.wake();
        }
    }
}

impl<T> OneshotReceiver<T> {
    fn recv(self) -> impl std::future::Future<Output = T> {
        std::future::poll_fn(move |cx| {
            let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match state.value.take() {
                Some(v) => std::task::Poll::Ready(v),
                None => {
                    state.waker = Some(cx.waker().clone());
                    std::task::Poll::Pending
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniforms_with_equal_label_and_contents_share_a_buffer() {
        let ctx = crate::ops::testing::ctx();
        let a = ctx.uniform("uniform cache test", &[1u32, 2, 3, 4]);
        let again = ctx.uniform("uniform cache test", &[1u32, 2, 3, 4]);
        let other_contents = ctx.uniform("uniform cache test", &[1u32, 2, 3, 5]);
        let other_label = ctx.uniform("uniform cache test 2", &[1u32, 2, 3, 4]);
        assert_eq!(a, again);
        assert_ne!(a, other_contents);
        assert_ne!(a, other_label);
    }

    #[test]
    fn scratch_buffers_are_shared_until_a_larger_one_is_needed() {
        let ctx = crate::ops::testing::ctx();
        let a = ctx.scratch_buffer("scratch cache test", 64).unwrap();
        let smaller = ctx.scratch_buffer("scratch cache test", 16).unwrap();
        let other_label = ctx.scratch_buffer("scratch cache test 2", 16).unwrap();
        assert_eq!(a, smaller);
        assert_ne!(a, other_label);
        let larger = ctx.scratch_buffer("scratch cache test", 128).unwrap();
        assert_ne!(a, larger);
        assert!(larger.size() >= 128);
        assert_eq!(
            larger,
            ctx.scratch_buffer("scratch cache test", 100).unwrap()
        );
    }

    /// A two-binding pipeline (copies `a[0]` to `b[0]`) for the bind group cache tests.
    fn copy_pipeline(ctx: &Context) -> std::sync::Arc<wgpu::ComputePipeline> {
        let shader = Shader {
            name: "bind group cache test.wgsl",
            source: "@group(0) @binding(0) var<storage, read> a: array<u32>;
                     @group(0) @binding(1) var<storage, read_write> b: array<u32>;
                     @compute @workgroup_size(1) fn main() { b[0] = a[0]; }",
        };
        ctx.pipeline(shader, &[]).unwrap()
    }

    #[test]
    fn bind_groups_are_reused_for_the_same_pipeline_and_buffers() {
        let ctx = crate::ops::testing::ctx();
        let pipeline = copy_pipeline(ctx);
        let a = ctx.storage_buffer("bind group cache a", 4).unwrap();
        let b = ctx.storage_buffer("bind group cache b", 4).unwrap();
        let first = ctx.bind_group(&pipeline, &[&a, &b]);
        assert_eq!(first, ctx.bind_group(&pipeline, &[&a, &b]));
        assert_ne!(first, ctx.bind_group(&pipeline, &[&b, &a]));
        let other = ctx.storage_buffer("bind group cache a", 4).unwrap();
        assert_ne!(first, ctx.bind_group(&pipeline, &[&other, &b]));
    }

    #[test]
    fn bind_group_cache_keeps_entries_in_use_and_drops_stale_ones() {
        let ctx = crate::ops::testing::ctx();
        let pipeline = copy_pipeline(ctx);
        let buffers: Vec<wgpu::Buffer> = (0..16)
            .map(|i| ctx.storage_buffer(&format!("generation {i}"), 4).unwrap())
            .collect();
        let key = |i: usize| BindGroupKey {
            pipeline: (*pipeline).clone(),
            buffers: vec![buffers[i].clone(), buffers[i + 1].clone()],
        };
        let group = ctx.bind_group(&pipeline, &[&buffers[0], &buffers[1]]);
        let mut cache = BindGroupCache::new(3);
        let (hot, stale) = (0, 1);
        cache.insert(key(hot), group.clone());
        cache.insert(key(stale), group.clone());
        for filler in 2..14 {
            cache.insert(key(filler), group.clone());
            assert!(cache.get(&key(hot)).is_some(), "filler {filler}");
            assert!(cache.current.len() + cache.previous.len() <= 6);
        }
        assert!(cache.get(&key(stale)).is_none());
        assert!(cache.get(&key(12)).is_some());
        assert!(cache.get(&key(2)).is_none());
    }

    #[test]
    fn op_names_keep_only_variant_flags() {
        let defines = [
            ("GEMV".to_string(), String::new()),
            ("GEMV_ROWS".to_string(), "4u".to_string()),
            ("Q4_K".to_string(), String::new()),
        ];
        assert_eq!(op_name("matmul.wgsl", &defines), "matmul[GEMV,Q4_K]");
        assert_eq!(op_name("rms_norm.wgsl", &[]), "rms_norm");
    }

    use crate::ops::testing::ctx;

    #[test]
    fn invalid_shader_is_a_validation_error_naming_the_shader() {
        let shader = Shader {
            name: "broken.wgsl",
            source: "@compute @workgroup_size(1) fn main() { let x: f32 = undefined_name; }",
        };
        match ctx().pipeline(shader, &[]) {
            Err(Error::Validation { context, message }) => {
                assert!(context.contains("broken.wgsl"), "{context}");
                assert!(!message.is_empty());
            }
            Err(other) => panic!("expected a validation error, got {other}"),
            Ok(_) => panic!("an undefined identifier compiled"),
        }
    }
}
