//! The GGUF writer: a [`GgufPlan`] gathers the header, then [`GgufWriter`] streams the
//! tensor data one tensor at a time.

use std::io::Write;

use super::value::{encode_string, encode_value, MetadataValue};
use super::{
    format_error, tensor_bytes, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_WRITE_VERSION,
    MAX_DIMS,
};
use crate::error::{Error, Result};
use crate::quant::DType;

/// A tensor a [`GgufPlan`] will hold.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// The tensor's name.
    pub name: String,
    /// Sizes, innermost first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub dtype: DType,
    /// Bytes of data the tensor needs.
    pub size: u64,
}

/// Everything a GGUF header states, gathered before writing: metadata and the
/// tensors (in the order their data will be written).
#[derive(Debug, Clone, Default)]
pub struct GgufPlan {
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PlannedTensor>,
}

impl GgufPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a metadata pair; fails on a repeated key or an alignment that is not a
    /// U32 power of two.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: MetadataValue) -> Result<()> {
        let key = key.into();
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(format_error(
                "GGUF plan",
                format!("metadata key `{key}` is added twice"),
            ));
        }
        if key == ALIGNMENT_KEY && !matches!(value, MetadataValue::U32(a) if a.is_power_of_two()) {
            return Err(format_error(
                "GGUF plan",
                format!("`{ALIGNMENT_KEY}` must be a U32 power of two"),
            ));
        }
        self.metadata.push((key, value));
        Ok(())
    }

    /// Adds a tensor whose data will follow the ones added before it; fails on a
    /// repeated name or dims that `dtype` cannot store.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        dtype: DType,
    ) -> Result<()> {
        let name = name.into();
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(format_error(
                "GGUF plan",
                format!("tensor `{name}` is added twice"),
            ));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(format_error(
                "GGUF plan",
                format!(
                    "tensor `{name}` has {} dimensions; GGUF allows 1 to {MAX_DIMS}",
                    dims.len()
                ),
            ));
        }
        let size = tensor_bytes(dims, dtype)
            .map_err(|why| format_error("GGUF plan", format!("tensor `{name}` {why}")))?;
        self.tensors.push(PlannedTensor {
            name,
            dims: dims.to_vec(),
            dtype,
            size,
        });
        Ok(())
    }

    /// The tensors, in data order.
    pub fn tensors(&self) -> &[PlannedTensor] {
        &self.tensors
    }

    /// The bytes a [`GgufWriter`] writes before any tensor data: magic, version,
    /// metadata, tensor infos and padding to the alignment. Written alone, they make a
    /// header-only skeleton of the model that [`GgufFile::read_header_only`] reads.
    pub fn header_bytes(&self) -> Vec<u8> {
        let alignment = self.alignment();
        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC);
        header.extend_from_slice(&GGUF_WRITE_VERSION.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            encode_string(&mut header, key);
            header.extend_from_slice(&value.value_type().id().to_le_bytes());
            encode_value(&mut header, value);
        }
        let mut offset = 0u64;
        for tensor in &self.tensors {
            encode_string(&mut header, &tensor.name);
            header.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for d in &tensor.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&tensor.dtype.gguf_id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + tensor.size).next_multiple_of(alignment);
        }
        header.resize(
            (header.len() as u64).next_multiple_of(alignment) as usize,
            0,
        );
        header
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find_map(|(k, v)| match v {
                MetadataValue::U32(a) if k == ALIGNMENT_KEY => Some(*a as u64),
                _ => None,
            })
            .unwrap_or(DEFAULT_ALIGNMENT as u64)
    }
}

/// Writes a GGUF v3 file as a stream: [`GgufWriter::start`] writes the header from a
/// [`GgufPlan`], then each tensor's data is written in plan order, one at a time, so
/// a quantizer never holds more than one tensor.
pub struct GgufWriter<W: Write> {
    out: W,
    name: String,
    tensors: Vec<PlannedTensor>,
    alignment: u64,
    next: usize,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header, metadata, tensor infos and padding for `plan` to `out`
    /// (called `name` in errors).
    pub fn start(mut out: W, name: &str, plan: &GgufPlan) -> Result<Self> {
        let header = plan.header_bytes();
        out.write_all(&header).map_err(|e| Error::Io {
            file: name.to_string(),
            source: e,
        })?;
        Ok(Self {
            out,
            name: name.to_string(),
            tensors: plan.tensors.clone(),
            alignment: plan.alignment(),
            next: 0,
        })
    }

    /// Writes the data of the next tensor in plan order, which must be `name` and
    /// exactly its planned size, followed by alignment padding.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(expected) = self.tensors.get(self.next) else {
            return Err(format_error(
                &self.name,
                format!("tensor `{name}` is written after every planned tensor"),
            ));
        };
        if expected.name != name {
            return Err(format_error(
                &self.name,
                format!(
                    "tensor `{name}` is written where the plan has `{}` next",
                    expected.name
                ),
            ));
        }
        if expected.size != bytes.len() as u64 {
            return Err(format_error(
                &self.name,
                format!(
                    "tensor `{name}` is {} bytes, but the plan needs {}",
                    bytes.len(),
                    expected.size
                ),
            ));
        }
        let padding = (bytes.len() as u64).next_multiple_of(self.alignment) - bytes.len() as u64;
        self.out
            .write_all(bytes)
            .and_then(|_| self.out.write_all(&vec![0u8; padding as usize]))
            .map_err(|e| Error::Io {
                file: self.name.clone(),
                source: e,
            })?;
        self.next += 1;
        Ok(())
    }

    /// Checks every planned tensor was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W> {
        if let Some(missing) = self.tensors.get(self.next) {
            return Err(format_error(
                &self.name,
                format!("finished before tensor `{}` was written", missing.name),
            ));
        }
        self.out.flush().map_err(|e| Error::Io {
            file: self.name.clone(),
            source: e,
        })?;
        Ok(self.out)
    }
}
