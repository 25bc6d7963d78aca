//! Per-dispatch GPU timing with timestamp queries (`safetyj bench --profile`).

use super::Context;
use crate::error::{Error, Result};

/// Dispatches one profile can time (two timestamp queries each).
pub const PROFILE_MAX_DISPATCHES: u32 = 2048;

/// Timestamp queries of a running profile and the op name of each timed dispatch.
pub(super) struct Profiler {
    queries: wgpu::QuerySet,
    names: Vec<String>,
}

impl Profiler {
    /// Timestamp writes for the pass of one dispatch of `name`, while queries remain.
    pub(super) fn timestamp_writes(
        &mut self,
        name: String,
    ) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let first = 2 * self.names.len() as u32;
        if first + 2 > 2 * PROFILE_MAX_DISPATCHES {
            return None;
        }
        self.names.push(name);
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(first),
            end_of_pass_write_index: Some(first + 1),
        })
    }
}

impl Context {
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
}
