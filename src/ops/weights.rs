use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::quant::DType;

/// A contiguous range of rows of a [`WeightMatrix`] in one GPU buffer.
pub struct WeightChunk {
    pub buffer: wgpu::Buffer,
    /// Index of this chunk's first row in the whole matrix.
    pub first_row: usize,
    /// Rows held by this chunk.
    pub rows: usize,
}

/// A weight matrix of `rows` × `cols` (rows are output features, cols the inner
/// dimension), kept in its storage type's block layout. A matrix larger than the
/// device's largest storage binding is split by rows into several chunks; kernels
/// dispatch once per chunk, so callers never see the split.
pub struct WeightMatrix {
    pub name: String,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub chunks: Vec<WeightChunk>,
}

impl WeightMatrix {
    /// Uploads `bytes` (rows × row_bytes, in `dtype`'s layout), split to fit the device.
    pub fn upload(ctx: &Context, name: &str, dtype: DType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        Self::upload_split(ctx, name, dtype, rows, cols, bytes, ctx.caps.max_storage_binding_bytes)
    }

    /// Like [`WeightMatrix::upload`] with chunks of at most `max_chunk_bytes`.
    pub fn upload_split(
        ctx: &Context,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        max_chunk_bytes: u64,
    ) -> Result<Self> {
        let row_bytes = dtype.row_bytes(cols)?;
        if bytes.len() != rows * row_bytes {
            return Err(Error::Shape {
                op: "weight upload",
                message: format!(
                    "tensor \"{name}\" is {rows}×{cols} {dtype} = {} bytes, but {} bytes were given",
                    rows * row_bytes,
                    bytes.len()
                ),
            });
        }
        // Chunks hold whole rows and stay a multiple of 4 bytes after padding.
        let limit = max_chunk_bytes.min(ctx.caps.max_storage_binding_bytes) / 4 * 4;
        let rows_per_chunk = (limit as usize).saturating_sub(3) / row_bytes.max(1);
        if rows_per_chunk == 0 {
            return Err(Error::Limit {
                what: format!("one row of tensor \"{name}\""),
                needed: row_bytes as u64,
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        let mut chunks = Vec::new();
        let mut first_row = 0;
        while first_row < rows || (rows == 0 && chunks.is_empty()) {
            let n = rows_per_chunk.min(rows - first_row);
            let data = &bytes[first_row * row_bytes..(first_row + n) * row_bytes];
            let buffer = ctx.upload_bytes(&format!("{name}[{first_row}..{}]", first_row + n), data)?;
            chunks.push(WeightChunk { buffer, first_row, rows: n });
            first_row += n;
            if n == 0 {
                break;
            }
        }
        Ok(WeightMatrix { name: name.to_string(), dtype, rows, cols, chunks })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.row_bytes(self.cols).expect("checked at upload")
    }
}
