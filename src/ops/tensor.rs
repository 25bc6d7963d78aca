use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Readback};

/// Element type of an activation [`Tensor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    U32,
}

/// A dense row-major tensor of f32 activations (or u32 token ids) on the GPU.
/// The last dimension is the row length ("cols"); all others multiply into "rows".
/// A clone shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub elem: Elem,
}

impl Tensor {
    /// An uninitialised tensor of `shape`.
    pub fn new(ctx: &Context, label: &str, shape: &[usize], elem: Elem) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        let bytes = len as u64 * 4;
        ctx.check_binding(&format!("tensor \"{label}\" {shape:?}"), bytes)?;
        Ok(Tensor {
            buffer: ctx.storage_buffer(label, bytes)?,
            shape: shape.to_vec(),
            elem,
        })
    }

    /// A tensor of `shape` holding `data` (its length must match).
    pub fn from_f32(ctx: &Context, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = Tensor::new(ctx, label, shape, Elem::F32)?;
        t.check_len(data.len())?;
        ctx.write_bytes(&t.buffer, 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A u32 tensor (token ids, positions) holding `data`.
    pub fn from_u32(ctx: &Context, label: &str, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        let t = Tensor::new(ctx, label, shape, Elem::U32)?;
        t.check_len(data.len())?;
        ctx.write_bytes(&t.buffer, 0, bytemuck::cast_slice(data));
        Ok(t)
    }

    fn check_len(&self, given: usize) -> Result<()> {
        if given != self.len() {
            return Err(Error::Shape {
                op: "tensor upload",
                message: format!(
                    "shape {:?} holds {} values, {given} given",
                    self.shape,
                    self.len()
                ),
            });
        }
        Ok(())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the last dimension.
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Product of all dimensions but the last.
    pub fn rows(&self) -> usize {
        self.len() / self.cols().max(1)
    }

    /// A view of the same buffer as `shape` (same element count): e.g. `[tokens,
    /// heads * head_dim]` seen as `[tokens * heads, head_dim]` for a per-head op.
    pub fn reshaped(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(Error::Shape {
                op: "tensor view",
                message: format!("{:?} cannot be seen as {shape:?}", self.shape),
            });
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            elem: self.elem,
        })
    }

    /// Fails unless the element type is `elem`, naming `op` and the role of the tensor.
    pub fn expect_elem(&self, op: &'static str, role: &str, elem: Elem) -> Result<()> {
        if self.elem != elem {
            return Err(Error::Shape {
                op,
                message: format!("{role} must be {elem:?}, not {:?}", self.elem),
            });
        }
        Ok(())
    }

    /// Overwrites every element with a NaN pattern (0xFFFF_FFFF), so that a kernel
    /// that forgets to write an element is caught by comparison.
    pub fn poison(&self, ctx: &Context) {
        ctx.write_bytes(&self.buffer, 0, &vec![0xffu8; self.len() * 4]);
    }

    /// Records copying the whole tensor back into `encoder`, after the work recorded
    /// so far; read it with [`Context::finish_readback`] once the encoder is submitted.
    pub fn record_read(&self, ctx: &Context, encoder: &mut Encoder) -> Result<Readback> {
        ctx.record_readback(encoder, &self.buffer, 0, self.len() as u64 * 4)
    }

    /// Copies the tensor back as f32 values, awaiting the GPU (the form the web needs).
    pub async fn read_f32_async(&self, ctx: &Context) -> Result<Vec<f32>> {
        let bytes = ctx
            .read_bytes(&self.buffer, 0, self.len() as u64 * 4)
            .await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Copies the tensor back as f32 values (native, blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, ctx: &Context) -> Result<Vec<f32>> {
        ctx.read_f32(&self.buffer, 0, self.len())
    }

    /// Copies the tensor back as u32 values (native, blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32(&self, ctx: &Context) -> Result<Vec<u32>> {
        ctx.read_u32(&self.buffer, 0, self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::ctx;

    #[test]
    fn async_and_recorded_reads_return_what_was_uploaded() {
        let ctx = ctx();
        let values = [1.5f32, -2.25, 3e-7, 0.0, f32::MAX];
        let floats = Tensor::from_f32(ctx, "floats", &[5], &values).unwrap();
        let read = pollster::block_on(floats.read_f32_async(ctx)).unwrap();
        assert_eq!(read, values);
        let ids = [0u32, 7, u32::MAX];
        let ints = Tensor::from_u32(ctx, "ids", &[3], &ids).unwrap();
        let mut encoder = ctx.encoder();
        let readback = ints.record_read(ctx, &mut encoder).unwrap();
        ctx.submit("reading ids back", encoder).unwrap();
        let bytes = pollster::block_on(ctx.finish_readback(readback)).unwrap();
        assert_eq!(bytemuck::pod_collect_to_vec::<u8, u32>(&bytes), ids);
    }

    #[test]
    fn a_view_shares_the_buffer_and_keeps_the_element_count() {
        let ctx = ctx();
        let t = Tensor::from_f32(ctx, "t", &[2, 6], &[1.0; 12]).unwrap();
        let heads = t.reshaped(&[4, 3]).unwrap();
        assert_eq!((heads.rows(), heads.cols()), (4, 3));
        assert_eq!(heads.buffer, t.buffer);
        let err = t.reshaped(&[5, 3]).err().unwrap().to_string();
        assert!(err.contains("[2, 6] cannot be seen as [5, 3]"), "{err}");
    }
}
