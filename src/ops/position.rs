//! The position of a step's first token, held in a small uniform buffer that the
//! position-dependent kernels (rope, kv_append, attention) bind. A session writes it
//! before each step instead of baking it into their parameter blocks, so those
//! kernels bind the same buffers at every step and their bind groups are made once.

use crate::error::{Error, Result};
use crate::gpu::Context;

/// A step's first position: the value on the host (for shape checks and dispatch
/// sizes) and the same value in a GPU buffer (for the kernels).
///
/// The GPU sees the value last [`set`](Position::set) before a submit, so record and
/// submit a step's commands before setting the next step's position.
pub struct Position {
    buffer: wgpu::Buffer,
    value: u32,
}

impl Position {
    /// A position buffer holding `value`.
    pub fn new(ctx: &Context, value: usize) -> Result<Position> {
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step position"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut position = Position { buffer, value: 0 };
        position.set(ctx, value)?;
        Ok(position)
    }

    /// Queues writing `value`; commands submitted from now on see it.
    pub fn set(&mut self, ctx: &Context, value: usize) -> Result<()> {
        let value = u32::try_from(value).map_err(|_| {
            Error::InvalidInput(format!(
                "position {value} is past the largest the kernels index, {}",
                u32::MAX
            ))
        })?;
        ctx.write_bytes(&self.buffer, 0, bytemuck::bytes_of(&[value, 0, 0, 0]));
        self.value = value;
        Ok(())
    }

    /// The position last set.
    pub fn value(&self) -> usize {
        self.value as usize
    }

    /// The uniform buffer: `vec4<u32>` with the position in `x`.
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::ctx;

    #[test]
    fn position_keeps_its_value_and_refuses_what_u32_cannot_hold() {
        let ctx = ctx();
        let mut position = Position::new(ctx, 7).unwrap();
        assert_eq!(position.value(), 7);
        position.set(ctx, 30_000).unwrap();
        assert_eq!(position.value(), 30_000);
        let err = position.set(ctx, u32::MAX as usize + 1).unwrap_err();
        assert!(err.to_string().contains("past the largest"), "{err}");
        assert_eq!(position.value(), 30_000);
    }
}
