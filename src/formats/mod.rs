//! Model file formats, read without loading whole files: GGUF (read and write),
//! safetensors (single files and sharded checkpoints) and Hugging Face `config.json`,
//! all through a [`ByteSource`] so the same readers work on files, memory maps and
//! (in the browser) HTTP range requests.

pub mod config;
pub mod gguf;
pub mod remote;
pub mod safetensors;
pub mod source;

pub use config::HfConfig;
pub use gguf::{
    GgufFile, GgufPlan, GgufTensorInfo, GgufWriter, MetadataArray, MetadataValue, ValueType,
};
pub use remote::{CachedFetch, MemoryFetch, RangeFetch, RangeStore, RemoteVersion};
pub use safetensors::{SafetensorsCheckpoint, SafetensorsFile, SafetensorsTensorInfo};
pub use source::{ByteSource, MemorySource};
#[cfg(not(target_arch = "wasm32"))]
pub use source::{FileSource, MmapSource};
