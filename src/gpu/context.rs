//! The GPU context: device, queue and capabilities, buffers, dispatch and submit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::adapter::{self, Capabilities, ContextOptions};
use super::caches::{BindGroupCache, BIND_GROUP_CACHE_ENTRIES};
use super::faults::GpuFault;
use super::pipelines::PipelineKey;
use super::profiler::Profiler;
use super::Encoder;
use crate::error::{Error, Result};

/// The GPU device with its queue, capabilities and caches. Cheap to share by reference
/// across threads; all methods take `&self`.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: Capabilities,
    pub(super) pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// Op names of cached pipelines by address, for [`Context::start_profile`].
    pub(super) pipeline_names: Mutex<HashMap<usize, String>>,
    pub(super) profiler: Mutex<Option<Profiler>>,
    /// Uniform buffers by (label, contents): parameter blocks repeat every step.
    pub(super) uniforms: Mutex<HashMap<(String, Vec<u8>), wgpu::Buffer>>,
    /// Scratch storage buffers by label, grown on demand: see [`Context::scratch_buffer`].
    pub(super) scratch: Mutex<HashMap<String, wgpu::Buffer>>,
    /// Bind groups by pipeline and bound buffers: see [`Context::bind_group`].
    pub(super) bind_groups: Mutex<BindGroupCache>,
    pub(super) lost: Arc<Mutex<Option<String>>>,
    /// On the web, errors arrive here instead of through a blocking error scope.
    pub(super) uncaptured: Arc<Mutex<Option<GpuFault>>>,
}

impl Context {
    /// Lists every adapter wgpu can see (native only), in the order `SAFETYJ_ADAPTER`
    /// indices refer to.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn adapters(options: &ContextOptions) -> Vec<adapter::AdapterSummary> {
        adapter::adapters(options)
    }

    /// Creates a context on the best adapter: high-performance first, then integrated,
    /// then software; `options` can pin a backend or adapter.
    pub async fn new(options: &ContextOptions) -> Result<Self> {
        let adapter = adapter::choose_adapter(options).await?;
        Self::from_adapter(adapter, options).await
    }

    /// Blocking form of [`Context::new`] with options from the environment (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new(&ContextOptions::from_env()))
    }

    async fn from_adapter(adapter: wgpu::Adapter, options: &ContextOptions) -> Result<Self> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let wanted = adapter::wanted_features(adapter.features(), options);
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

        let caps = Capabilities::new(wanted, &info, &limits);
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
            profiler.timestamp_writes(name)
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
}
