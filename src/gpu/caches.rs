//! The caches of per-step GPU objects: uniform blocks, scratch buffers and bind
//! groups, so a decode step records without allocating what the step before made.

use std::collections::HashMap;

use super::Context;
use crate::error::Result;

impl Context {
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
}

/// Distinct uniform blocks kept for reuse; the cache starts over when full (new step
/// sizes and shapes add blocks; positions do not, they live in a buffer of their own).
const UNIFORM_CACHE_ENTRIES: usize = 4096;

/// Bind groups kept per generation of the [`BindGroupCache`]. A decode step of a
/// 24-layer model binds about 400 distinct groups, the same ones every step.
pub(super) const BIND_GROUP_CACHE_ENTRIES: usize = 2048;

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
pub(super) struct BindGroupCache {
    /// Entries per generation.
    capacity: usize,
    current: HashMap<BindGroupKey, wgpu::BindGroup>,
    previous: HashMap<BindGroupKey, wgpu::BindGroup>,
    /// Groups created since the context was made.
    created: u64,
}

impl BindGroupCache {
    pub(super) fn new(capacity: usize) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Shader;

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
}
