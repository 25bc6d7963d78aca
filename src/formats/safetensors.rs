//! safetensors: single files and sharded checkpoints (`model.safetensors.index.json`),
//! read one tensor at a time through a [`ByteSource`].
//!
//! A file is an 8-byte little-endian header length N, N bytes of JSON mapping each
//! tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative to
//! the data that follows the header) plus an optional `__metadata__` string map.
//!
//! The header is read with the `safetensors` crate: its `TensorInfo` and `Dtype`
//! parse each entry, and its `Metadata` checks the format's rule that the tensors
//! tile the data exactly (no overlap, no gap). A thin layer around it adds what the
//! crate lacks: reading the header alone (the crate's `SafeTensors` wants the whole
//! file in one buffer, which a memory map has but the browser's Range loader does
//! not), refusing duplicate keys (the crate's map keeps the last silently), checking
//! the data fits in the file, shard names that stay beside the index, and errors
//! that name the file and tensor (the crate's size error names neither).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use serde::Deserialize;

use super::source::ByteSource;
use crate::error::{Error, Result};
use crate::quant::DType;

/// The largest JSON header accepted (the `safetensors` crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// The safetensors dtypes safetyj reads.
const SUPPORTED: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn format_error(file: &str, message: String) -> Error {
    Error::Format {
        file: file.to_string(),
        message,
    }
}

/// Where one tensor's data lies and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsTensorInfo {
    /// The tensor's name (`model.layers.0.self_attn.q_proj.weight`, …).
    pub name: String,
    /// The dtype as written in the file (`F32`, `BF16`, `I64`, …).
    pub dtype_name: String,
    /// The dtype, when it is one safetyj reads (F32, F16, BF16).
    pub dtype: Option<DType>,
    /// Sizes, outermost first (row-major, as in PyTorch).
    pub shape: Vec<u64>,
    /// Absolute offset of the first byte in the file.
    pub file_offset: u64,
    /// Bytes the tensor occupies.
    pub size: u64,
}

impl SafetensorsTensorInfo {
    /// The tensor's byte range in the file.
    pub fn file_range(&self) -> Range<u64> {
        self.file_offset..self.file_offset + self.size
    }
}

/// The header's top-level entries in file order, duplicates kept, so a repeated key
/// can be refused (a JSON map would keep only the last).
struct HeaderEntries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for HeaderEntries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<HeaderEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(HeaderEntries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A parsed safetensors header.
#[derive(Debug)]
pub struct SafetensorsFile {
    name: String,
    metadata: BTreeMap<String, String>,
    tensors: Vec<SafetensorsTensorInfo>,
    index: HashMap<String, usize>,
}

impl SafetensorsFile {
    /// The JSON header's length, from the file's first 8 bytes; fails when it is
    /// implausible for a file of `file_len` bytes. Pure, for async loaders.
    pub fn header_len(name: &str, file_len: u64, first_8_bytes: [u8; 8]) -> Result<u64> {
        if file_len < 8 {
            return Err(format_error(
                name,
                format!(
                    "truncated: a safetensors file needs at least 8 bytes, this has {file_len}"
                ),
            ));
        }
        let len = u64::from_le_bytes(first_8_bytes);
        if len > MAX_HEADER_BYTES {
            return Err(format_error(
                name,
                format!("the header length {len} is over the limit of {MAX_HEADER_BYTES} bytes (not a safetensors file?)"),
            ));
        }
        if len > file_len - 8 {
            return Err(format_error(
                name,
                format!("the header length {len} runs past the end of the file ({file_len} bytes)"),
            ));
        }
        Ok(len)
    }

    /// Parses the JSON header `header` of a file `file_len` bytes long, checking
    /// every tensor's offsets and size. Pure, for async loaders.
    pub fn from_header(name: &str, file_len: u64, header: &[u8]) -> Result<Self> {
        let data_start = 8 + header.len() as u64;
        let data_len = file_len.checked_sub(data_start).ok_or_else(|| {
            format_error(
                name,
                format!(
                    "the {}-byte header runs past the end of the file ({file_len} bytes)",
                    header.len()
                ),
            )
        })?;
        let HeaderEntries(entries) = serde_json::from_slice(header)
            .map_err(|e| format_error(name, format!("the header is not a JSON object: {e}")))?;
        let mut seen = HashSet::with_capacity(entries.len());
        if let Some((key, _)) = entries.iter().find(|(key, _)| !seen.insert(key.as_str())) {
            return Err(format_error(
                name,
                format!("the header has key `{key}` twice (which one holds?)"),
            ));
        }
        let mut metadata = BTreeMap::new();
        let mut infos = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if key == "__metadata__" {
                metadata = serde_json::from_value(value).map_err(|e| {
                    format_error(name, format!("`__metadata__` is not a map of strings: {e}"))
                })?;
                continue;
            }
            let dtype_name = value
                .get("dtype")
                .and_then(|d| d.as_str())
                .map(str::to_string);
            if let Some(dtype) = &dtype_name {
                serde_json::from_value::<Dtype>(dtype.as_str().into()).map_err(|_| {
                    format_error(name, format!("tensor `{key}` has unknown dtype `{dtype}`"))
                })?;
            }
            let raw: TensorInfo = serde_json::from_value(value).map_err(|e| {
                format_error(name, format!("tensor `{key}` has a malformed entry: {e}"))
            })?;
            check_tensor(name, &key, &raw, data_len)?;
            infos.push((key, raw));
        }
        infos.sort_by_key(|(_, info)| info.data_offsets);
        // The format's own rule, checked by the crate: tensors tile the data exactly.
        Metadata::new(None, infos.clone()).map_err(|e| {
            format_error(
                name,
                format!("the tensors do not tile the data section without overlap or gap: {e}"),
            )
        })?;
        let tensors: Vec<SafetensorsTensorInfo> = infos
            .into_iter()
            .map(|(key, info)| {
                let dtype_name = info.dtype.to_string();
                SafetensorsTensorInfo {
                    dtype: SUPPORTED.into_iter().find(|d| d.name() == dtype_name),
                    dtype_name,
                    shape: info.shape.iter().map(|&d| d as u64).collect(),
                    file_offset: data_start + info.data_offsets.0 as u64,
                    size: (info.data_offsets.1 - info.data_offsets.0) as u64,
                    name: key,
                }
            })
            .collect();
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            name: name.to_string(),
            metadata,
            tensors,
            index,
        })
    }

    /// Reads and parses the header of `source`.
    pub fn read(source: &dyn ByteSource) -> Result<Self> {
        let file_len = source.len();
        let mut first = [0u8; 8];
        if file_len >= 8 {
            source.read_at(0, &mut first)?;
        }
        let len = Self::header_len(source.name(), file_len, first)?;
        let header = source.read_range(8, len as usize)?;
        Self::from_header(source.name(), file_len, &header)
    }

    /// The name given to the file in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `__metadata__` map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Every tensor, in data order.
    pub fn tensors(&self) -> &[SafetensorsTensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`; fails naming it when absent.
    pub fn tensor(&self, name: &str) -> Result<&SafetensorsTensorInfo> {
        self.index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| format_error(&self.name, format!("tensor `{name}` is not in the file")))
    }

    /// The stored bytes of tensor `name` read from `source` (this header's file),
    /// with its dtype; fails for dtypes other than F32, F16 and BF16.
    pub fn read_tensor(&self, source: &dyn ByteSource, name: &str) -> Result<(DType, Vec<u8>)> {
        let info = self.tensor(name)?;
        let dtype = info.dtype.ok_or_else(|| {
            let supported: Vec<&str> = SUPPORTED.iter().map(|d| d.name()).collect();
            format_error(
                &self.name,
                format!(
                    "tensor `{name}` has dtype {}, which safetyj does not read (it reads {})",
                    info.dtype_name,
                    supported.join(", ")
                ),
            )
        })?;
        let len = usize::try_from(info.size).map_err(|_| {
            format_error(
                &self.name,
                format!(
                    "tensor `{name}` ({} bytes) does not fit in memory",
                    info.size
                ),
            )
        })?;
        Ok((dtype, source.read_range(info.file_offset, len)?))
    }

    /// Tensor `name` read from `source` and widened to f32.
    pub fn read_tensor_f32(&self, source: &dyn ByteSource, name: &str) -> Result<Vec<f32>> {
        let (dtype, bytes) = self.read_tensor(source, name)?;
        Ok(widen_to_f32(dtype, &bytes))
    }
}

/// The named checks of one entry: offsets in order and inside the data, and a span
/// that matches the dtype and shape.
fn check_tensor(file: &str, name: &str, raw: &TensorInfo, data_len: u64) -> Result<()> {
    let (begin, end) = (raw.data_offsets.0 as u64, raw.data_offsets.1 as u64);
    if begin > end || end > data_len {
        return Err(format_error(
            file,
            format!("tensor `{name}` has data offsets [{begin}, {end}], outside the {data_len} bytes of data"),
        ));
    }
    let bits = raw
        .shape
        .iter()
        .try_fold(raw.dtype.bitsize() as u64, |acc, &d| {
            acc.checked_mul(d as u64)
        })
        .ok_or_else(|| {
            format_error(
                file,
                format!(
                    "tensor `{name}` has shape {:?}, whose size overflows",
                    raw.shape
                ),
            )
        })?;
    if bits % 8 != 0 || bits / 8 != end - begin {
        return Err(format_error(
            file,
            format!(
                "tensor `{name}` ({} {:?}) needs {} bytes, but its data offsets [{begin}, {end}] span {}",
                raw.dtype,
                raw.shape,
                bits as f64 / 8.0,
                end - begin
            ),
        ));
    }
    Ok(())
}

/// Little-endian F32, F16 or BF16 bytes as f32 values.
fn widen_to_f32(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    }
}

#[derive(Deserialize)]
struct RawIndex {
    weight_map: BTreeMap<String, String>,
}

/// A checkpoint of one or more safetensors files, with each tensor found in its shard.
pub struct SafetensorsCheckpoint {
    shards: Vec<(Box<dyn ByteSource>, SafetensorsFile)>,
    tensor_shard: BTreeMap<String, usize>,
}

impl SafetensorsCheckpoint {
    /// A checkpoint of one file.
    pub fn single(source: Box<dyn ByteSource>) -> Result<Self> {
        let file = SafetensorsFile::read(source.as_ref())?;
        let tensor_shard = file.tensors().iter().map(|t| (t.name.clone(), 0)).collect();
        Ok(Self {
            shards: vec![(source, file)],
            tensor_shard,
        })
    }

    /// A sharded checkpoint from its index JSON (called `index_name` in errors);
    /// `open_shard` opens a shard by the file name the index gives. Every tensor the
    /// index maps must be in its shard.
    pub fn from_index(
        index_name: &str,
        index_json: &[u8],
        mut open_shard: impl FnMut(&str) -> Result<Box<dyn ByteSource>>,
    ) -> Result<Self> {
        let index: RawIndex = serde_json::from_slice(index_json).map_err(|e| {
            format_error(
                index_name,
                format!("not a safetensors index (no `weight_map`?): {e}"),
            )
        })?;
        let mut shard_names: Vec<&str> = index.weight_map.values().map(String::as_str).collect();
        shard_names.sort_unstable();
        shard_names.dedup();
        let shard_index: HashMap<&str, usize> = shard_names
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i))
            .collect();
        let mut shards = Vec::with_capacity(shard_names.len());
        for shard in &shard_names {
            if shard.is_empty() || shard.contains(['/', '\\']) || *shard == ".." || *shard == "." {
                return Err(format_error(
                    index_name,
                    format!("shard name `{shard}` is not a plain file name beside the index"),
                ));
            }
            let source = open_shard(shard).map_err(|e| {
                format_error(
                    index_name,
                    format!("shard `{shard}` named in the index cannot be opened: {e}"),
                )
            })?;
            let file = SafetensorsFile::read(source.as_ref())?;
            shards.push((source, file));
        }
        let mut tensor_shard = BTreeMap::new();
        for (tensor, shard) in &index.weight_map {
            let i = shard_index[shard.as_str()];
            shards[i].1.tensor(tensor).map_err(|_| {
                format_error(
                    index_name,
                    format!("the index puts tensor `{tensor}` in shard `{shard}`, which does not contain it"),
                )
            })?;
            tensor_shard.insert(tensor.clone(), i);
        }
        Ok(Self {
            shards,
            tensor_shard,
        })
    }

    /// Opens the checkpoint in directory `dir`: `model.safetensors.index.json` and
    /// its shards when the index exists, else `model.safetensors`; files are mapped.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        use super::source::MmapSource;
        let dir = dir.as_ref();
        let index_path = dir.join(INDEX_FILE);
        if index_path.exists() {
            let index_name = index_path.display().to_string();
            let json = std::fs::read(&index_path).map_err(|e| Error::Io {
                file: index_name.clone(),
                source: e,
            })?;
            Self::from_index(&index_name, &json, |shard| {
                Ok(Box::new(MmapSource::open(dir.join(shard))?))
            })
        } else {
            Self::single(Box::new(MmapSource::open(dir.join(SINGLE_FILE))?))
        }
    }

    /// Every tensor name, sorted.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensor_shard.keys().map(String::as_str)
    }

    fn shard_of(&self, name: &str) -> Result<&(Box<dyn ByteSource>, SafetensorsFile)> {
        let names: Vec<&str> = self.shards.iter().map(|(s, _)| s.name()).collect();
        self.tensor_shard
            .get(name)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| {
                format_error(
                    &names.join(", "),
                    format!("tensor `{name}` is not in the checkpoint"),
                )
            })
    }

    /// Where tensor `name` lies and how it is stored.
    pub fn tensor(&self, name: &str) -> Result<&SafetensorsTensorInfo> {
        let (_, file) = self.shard_of(name)?;
        file.tensor(name)
    }

    /// The stored bytes of tensor `name`, with its dtype.
    pub fn read_tensor(&self, name: &str) -> Result<(DType, Vec<u8>)> {
        let (source, file) = self.shard_of(name)?;
        file.read_tensor(source.as_ref(), name)
    }

    /// Tensor `name` widened to f32.
    pub fn read_tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (source, file) = self.shard_of(name)?;
        file.read_tensor_f32(source.as_ref(), name)
    }
}
