//! GGUF (versions 2 and 3): a reader that parses the header from a prefix of the file
//! and reads tensors one at a time through a [`ByteSource`](super::ByteSource), and a
//! streaming writer.
//!
//! Layout: magic `GGUF`, version (u32), tensor count and metadata count (u64), the
//! metadata key/value pairs, the tensor infos (name, dims, ggml type, offset), padding
//! to `general.alignment` (32 by default), then the tensor data. All little-endian.
//! A tensor's dims are in GGUF's order: `dims[0]` is the innermost, contiguous
//! dimension (a weight matrix's columns); `dims[1]` its rows.
//!
//! [`value`] holds the metadata value types, [`reader`] the header parser and
//! [`writer`] the streaming writer.

pub mod reader;
pub mod value;
pub mod writer;

pub use reader::{GgufFile, GgufTensorInfo, HeaderParse};
pub use value::{MetadataArray, MetadataValue, ValueType};
pub use writer::{GgufPlan, GgufWriter, PlannedTensor};

use crate::error::Error;
use crate::quant::DType;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The version [`GgufWriter`] writes.
pub const GGUF_WRITE_VERSION: u32 = 3;

/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// The metadata key that sets the tensor data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// The most dimensions a GGUF tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// The deepest nesting of metadata arrays accepted (arrays of arrays of …).
pub const MAX_ARRAY_NESTING: usize = 8;

/// The most memory a parsed GGUF header may take (metadata values, strings and
/// tensor infos): a count that fits in the file can still claim far more memory than
/// the bytes it spans (a one-byte array item is a 32-byte value), so memory is bounded
/// on its own. A 150k-token vocabulary with its merges takes about 30 MiB.
pub const MAX_HEADER_MEMORY: u64 = 1 << 30;

/// The first prefix [`GgufFile::read`] fetches; it doubles until the header fits.
pub const FIRST_PREFIX_BYTES: u64 = 1 << 20;

fn format_error(file: &str, message: String) -> Error {
    Error::Format {
        file: file.to_string(),
        message,
    }
}

/// Bytes of a tensor of `dims` stored as `dtype`, or why it cannot be stored so.
pub(super) fn tensor_bytes(dims: &[u64], dtype: DType) -> std::result::Result<u64, String> {
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("has dims {dims:?}, whose element count overflows u64"))?;
    let block = dtype.block_elems() as u64;
    if !dims[0].is_multiple_of(block) {
        return Err(format!(
            "has an innermost dimension of {} that is not a whole number of {block}-element {dtype} blocks",
            dims[0]
        ));
    }
    (elements / block)
        .checked_mul(dtype.block_bytes() as u64)
        .ok_or_else(|| format!("has dims {dims:?}, whose size in bytes overflows u64"))
}
