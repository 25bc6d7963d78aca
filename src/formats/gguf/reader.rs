//! The GGUF header parser: pure over a file prefix ([`GgufFile::parse`], which says
//! when it needs more bytes) or driven over a [`ByteSource`] ([`GgufFile::read`]).

use std::collections::HashMap;
use std::ops::Range;

use super::value::{MetadataArray, MetadataValue, ValueType};
use super::{
    format_error, tensor_bytes, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, FIRST_PREFIX_BYTES, GGUF_MAGIC,
    MAX_ARRAY_NESTING, MAX_DIMS, MAX_HEADER_MEMORY,
};
use crate::error::{Error, Result};
use crate::formats::source::ByteSource;
use crate::quant::DType;

/// Where one tensor's data lies and how it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`, …).
    pub name: String,
    /// Sizes, innermost (contiguous) first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub dtype: DType,
    /// Offset of the first byte, relative to the start of the data section.
    pub offset: u64,
    /// Bytes the tensor occupies.
    pub size: u64,
    /// Absolute offset of the first byte in the file.
    pub file_offset: u64,
}

impl GgufTensorInfo {
    /// The tensor's byte range in the file.
    pub fn file_range(&self) -> Range<u64> {
        self.file_offset..self.file_offset + self.size
    }

    /// Elements in the tensor.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The innermost dimension: a weight matrix's columns (inner dim).
    pub fn cols(&self) -> u64 {
        self.dims[0]
    }

    /// The product of all but the innermost dimension: a weight matrix's rows.
    pub fn rows(&self) -> u64 {
        self.dims[1..].iter().product()
    }
}

/// The outcome of parsing a header from a prefix of a file.
#[derive(Debug)]
pub enum HeaderParse {
    /// The header was complete in the prefix.
    Done(GgufFile),
    /// The header continues past the prefix: fetch at least this many leading bytes
    /// of the file and parse again.
    NeedBytes(u64),
}

/// A parsed GGUF header: metadata, tensor infos and the data section's position.
#[derive(Debug)]
pub struct GgufFile {
    name: String,
    file_len: u64,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Reads the header of `source`, fetching a growing prefix until it fits
    /// (the header alone, never the tensor data). Fails when a tensor's data would
    /// run past the end of the file.
    pub fn read(source: &dyn ByteSource) -> Result<GgufFile> {
        Self::read_with(source, DataCheck::InFile)
    }

    /// Reads the header of `source` like [`GgufFile::read`], but accepts a file whose
    /// tensor data is missing or cut short: a header-only skeleton (see
    /// [`GgufPlan::header_bytes`](super::GgufPlan::header_bytes)), for tools that need a model's layout and never
    /// its values. The header itself is checked as strictly as by `read`; tensor
    /// offsets are computed as usual, so reading a tensor of such a file fails.
    pub fn read_header_only(source: &dyn ByteSource) -> Result<GgufFile> {
        Self::read_with(source, DataCheck::HeaderOnly)
    }

    fn read_with(source: &dyn ByteSource, data: DataCheck) -> Result<GgufFile> {
        let file_len = source.len();
        let mut prefix = source.read_range(0, FIRST_PREFIX_BYTES.min(file_len) as usize)?;
        loop {
            match GgufFile::parse_with(source.name(), file_len, &prefix, data)? {
                HeaderParse::Done(file) => return Ok(file),
                HeaderParse::NeedBytes(needed) => {
                    let have = prefix.len() as u64;
                    let want = needed.max(have.saturating_mul(2)).min(file_len);
                    if want <= have {
                        return Err(format_error(
                            source.name(),
                            format!("the header parser asked for {needed} bytes but had {have} of {file_len}"),
                        ));
                    }
                    let more = source.read_range(have, (want - have) as usize)?;
                    prefix.extend_from_slice(&more);
                }
            }
        }
    }

    /// Parses a header from `prefix`, the first bytes of a file `file_len` bytes long
    /// called `name`. Pure: no I/O, so an async (browser) loader can drive it.
    pub fn parse(name: &str, file_len: u64, prefix: &[u8]) -> Result<HeaderParse> {
        Self::parse_with(name, file_len, prefix, DataCheck::InFile)
    }

    fn parse_with(
        name: &str,
        file_len: u64,
        prefix: &[u8],
        data: DataCheck,
    ) -> Result<HeaderParse> {
        let mut cursor = Cursor {
            name,
            buf: prefix,
            pos: 0,
            file_len,
            memory_left: MAX_HEADER_MEMORY,
        };
        match parse_header(&mut cursor, data) {
            Ok(file) => Ok(HeaderParse::Done(file)),
            Err(Stop::NeedBytes(n)) => Ok(HeaderParse::NeedBytes(n)),
            Err(Stop::Fail(e)) => Err(e),
        }
    }

    /// The name given to the file in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Tensor data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Every metadata pair, in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`; fails naming it when absent.
    pub fn tensor(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| format_error(&self.name, format!("tensor `{name}` is not in the file")))
    }

    /// Reads the bytes of the tensor called `name` from `source` (the file this
    /// header came from), exactly as stored.
    pub fn read_tensor(&self, source: &dyn ByteSource, name: &str) -> Result<Vec<u8>> {
        let info = self.tensor(name)?;
        source.read_range(
            info.file_offset,
            usize::try_from(info.size).map_err(|_| {
                format_error(
                    &self.name,
                    format!(
                        "tensor `{name}` ({} bytes) does not fit in memory",
                        info.size
                    ),
                )
            })?,
        )
    }

    /// The value at `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The value at `key`; fails naming the key when absent.
    pub fn require(&self, key: &str) -> Result<&MetadataValue> {
        self.get(key)
            .ok_or_else(|| format_error(&self.name, format!("metadata key `{key}` is missing")))
    }

    fn wrong_type(&self, key: &str, value: &MetadataValue, wanted: &str) -> Error {
        format_error(
            &self.name,
            format!(
                "metadata key `{key}` is {}, expected {wanted}",
                describe(value)
            ),
        )
    }

    fn integer<T: TryFrom<i128>>(&self, key: &str, wanted: &str) -> Result<T> {
        let value = self.require(key)?;
        value
            .as_i128()
            .and_then(|v| T::try_from(v).ok())
            .ok_or_else(|| self.wrong_type(key, value, wanted))
    }

    /// The integer at `key` as a u32 (any integer type whose value fits).
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.integer(key, "an integer in u32 range")
    }

    /// The integer at `key` as a u64 (any integer type whose value fits).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.integer(key, "an integer in u64 range")
    }

    /// The integer at `key` as an i64 (any integer type whose value fits).
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.integer(key, "an integer in i64 range")
    }

    /// The float at `key` (F32, or F64 rounded to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let value = self.require(key)?;
        value
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| self.wrong_type(key, value, "a float"))
    }

    /// The bool at `key`.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            MetadataValue::Bool(b) => Ok(*b),
            other => Err(self.wrong_type(key, other, "a bool")),
        }
    }

    /// The string at `key`.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let value = self.require(key)?;
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, value, "a string"))
    }

    /// The array at `key`.
    pub fn get_array(&self, key: &str) -> Result<&MetadataArray> {
        match self.require(key)? {
            MetadataValue::Array(a) => Ok(a),
            other => Err(self.wrong_type(key, other, "an array")),
        }
    }

    /// The array of strings at `key` (a tokenizer's vocabulary, merges, …).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let array = self.get_array(key)?;
        array
            .items()
            .iter()
            .map(|v| v.as_str())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                self.wrong_type(
                    key,
                    &MetadataValue::Array(array.clone()),
                    "an array of strings",
                )
            })
    }

    /// The array of floats at `key` (token scores, …).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let array = self.get_array(key)?;
        array
            .items()
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                self.wrong_type(
                    key,
                    &MetadataValue::Array(array.clone()),
                    "an array of floats",
                )
            })
    }

    /// The array of integers at `key` as i64 (token types, …).
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        let array = self.get_array(key)?;
        array
            .items()
            .iter()
            .map(|v| v.as_i128().and_then(|i| i64::try_from(i).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                self.wrong_type(
                    key,
                    &MetadataValue::Array(array.clone()),
                    "an array of integers",
                )
            })
    }
}

/// A value's type for error messages (`U32`, `array of String`, …).
fn describe(value: &MetadataValue) -> String {
    match value {
        MetadataValue::Array(a) => format!("an array of {}", a.elem()),
        other => other.value_type().to_string(),
    }
}

/// The GGUF name of ggml type `id`, for errors about types safetyj does not read.
fn ggml_type_name(id: u32) -> &'static str {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
    ];
    NAMES.get(id as usize).copied().unwrap_or("unknown")
}

/// Whether a header's tensors must lie inside the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataCheck {
    /// Every tensor's data must end within the file (a model to run).
    InFile,
    /// The data may be missing (a header-only skeleton).
    HeaderOnly,
}

/// Why parsing stopped: the prefix ended early, or the file is bad.
enum Stop {
    NeedBytes(u64),
    Fail(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Fail(e)
    }
}

type Parsed<T> = std::result::Result<T, Stop>;

/// Reads little-endian values from a file prefix, telling "prefix too short" apart
/// from "file too short".
struct Cursor<'a> {
    name: &'a str,
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
    /// Bytes of memory the parsed header may still take (see [`MAX_HEADER_MEMORY`]).
    memory_left: u64,
}

impl<'a> Cursor<'a> {
    fn fail(&self, message: String) -> Stop {
        Stop::Fail(format_error(self.name, message))
    }

    /// Bytes left in the file after the cursor.
    fn remaining_in_file(&self) -> u64 {
        self.file_len.saturating_sub(self.pos as u64)
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Parsed<&'a [u8]> {
        let pos = self.pos as u64;
        let end = pos
            .checked_add(n)
            .filter(|&end| end <= self.file_len)
            .ok_or_else(|| {
                self.fail(format!(
                    "truncated: {} needs {n} bytes at offset {pos}, but the file ends at {}",
                    what(),
                    self.file_len
                ))
            })?;
        if end > self.buf.len() as u64 {
            return Err(Stop::NeedBytes(end));
        }
        let bytes = &self.buf[self.pos..end as usize];
        self.pos = end as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Parsed<[u8; N]> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Parsed<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Parsed<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Parsed<String> {
        let len = self.u64(&|| format!("the length of {}", what()))?;
        let bytes = self.take(len, what)?;
        self.charge(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.fail(format!("{} is not valid UTF-8", what())))
    }

    /// Takes `bytes` of the header's memory budget, failing once the parsed header
    /// would hold more than [`MAX_HEADER_MEMORY`] bytes in memory.
    fn charge(&mut self, bytes: u64, what: &dyn Fn() -> String) -> Parsed<()> {
        match self.memory_left.checked_sub(bytes) {
            Some(left) => {
                self.memory_left = left;
                Ok(())
            }
            None => Err(self.fail(format!(
                "{} would take {bytes} bytes of memory, past the limit of {MAX_HEADER_MEMORY} \
                 bytes for a whole GGUF header",
                what()
            ))),
        }
    }

    /// Checks that `count` items of at least `min_bytes` each fit in the file and that
    /// `count` values of `T` fit in the memory budget, and returns `count` as a
    /// capacity: a corrupt count is refused before anything is allocated for it.
    fn capacity<T>(
        &mut self,
        count: u64,
        min_bytes: u64,
        what: &dyn Fn() -> String,
    ) -> Parsed<usize> {
        self.check_count(count, min_bytes, what)?;
        self.charge(count.saturating_mul(std::mem::size_of::<T>() as u64), what)?;
        usize::try_from(count).map_err(|_| {
            self.fail(format!(
                "{} claims {count} items, more than this machine can address",
                what()
            ))
        })
    }

    /// Fails unless `count` items of at least `min_bytes` each can fit in the rest of
    /// the file, so a corrupt count is refused before anything is allocated for it.
    fn check_count(&self, count: u64, min_bytes: u64, what: &dyn Fn() -> String) -> Parsed<()> {
        if count.saturating_mul(min_bytes) > self.remaining_in_file() {
            return Err(self.fail(format!(
                "truncated: {} claims {count} items, which cannot fit in the {} bytes left after offset {}",
                what(),
                self.remaining_in_file(),
                self.pos
            )));
        }
        Ok(())
    }
}

fn parse_header(cur: &mut Cursor, data: DataCheck) -> Parsed<GgufFile> {
    let magic: [u8; 4] = cur.array(&|| "the magic number".to_string())?;
    if magic != GGUF_MAGIC {
        return Err(cur.fail(format!(
            "not a GGUF file: it starts with bytes {magic:02x?} (\"{}\"), expected \"GGUF\"",
            String::from_utf8_lossy(&magic)
        )));
    }
    let version = cur.u32(&|| "the version".to_string())?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (a big-endian GGUF file, which safetyj does not read)"
        } else {
            ""
        };
        return Err(cur.fail(format!(
            "GGUF version {version} is not supported{hint}; safetyj reads versions 2 and 3"
        )));
    }
    let tensor_count = cur.u64(&|| "the tensor count".to_string())?;
    let metadata_count = cur.u64(&|| "the metadata count".to_string())?;

    let capacity =
        cur.capacity::<(String, MetadataValue, String, usize)>(metadata_count, 8 + 4 + 1, &|| {
            "the metadata count".to_string()
        })?;
    let mut metadata = Vec::with_capacity(capacity);
    let mut metadata_index = HashMap::with_capacity(capacity);
    for i in 0..metadata_count {
        let key = cur.string(&|| format!("metadata key #{i}"))?;
        let type_id = cur.u32(&|| format!("the type of metadata key `{key}`"))?;
        let value_type = ValueType::from_id(type_id).ok_or_else(|| {
            cur.fail(format!(
                "metadata key `{key}` has unknown value type {type_id}"
            ))
        })?;
        let value = read_value(cur, value_type, &key, 0)?;
        if metadata_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(cur.fail(format!("metadata key `{key}` appears twice")));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT as u64,
        Some(MetadataValue::U32(a)) if a.is_power_of_two() => *a as u64,
        Some(other) => {
            return Err(cur.fail(format!(
                "`{ALIGNMENT_KEY}` must be a U32 power of two, but it is {other:?}"
            )))
        }
    };

    let capacity =
        cur.capacity::<(GgufTensorInfo, String, usize)>(tensor_count, 8 + 4 + 4 + 8, &|| {
            "the tensor count".to_string()
        })?;
    let mut tensors = Vec::with_capacity(capacity);
    let mut tensor_index = HashMap::with_capacity(capacity);
    for i in 0..tensor_count {
        let info = read_tensor_info(cur, i, alignment)?;
        if tensor_index
            .insert(info.name.clone(), tensors.len())
            .is_some()
        {
            return Err(cur.fail(format!("tensor `{}` appears twice", info.name)));
        }
        tensors.push(info);
    }

    let data_offset = (cur.pos as u64).next_multiple_of(alignment);
    for info in &mut tensors {
        let start = data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.size));
        match (start, end) {
            (Some(start), Some(end)) if end <= cur.file_len || data == DataCheck::HeaderOnly => {
                info.file_offset = start
            }
            _ => {
                let header_only = if data_offset >= cur.file_len {
                    "; the file holds no tensor data at all: a header-only skeleton, which \
                     `safetyj synth --like` turns into a loadable model of random weights"
                } else {
                    ""
                };
                return Err(cur.fail(format!(
                    "tensor `{}` ({} bytes at data offset {}, file offset {}) runs past the end of the file ({} bytes){header_only}",
                    info.name,
                    info.size,
                    info.offset,
                    data_offset as u128 + info.offset as u128,
                    cur.file_len
                )));
            }
        }
    }

    check_disjoint(cur, &tensors)?;

    Ok(GgufFile {
        name: cur.name.to_string(),
        file_len: cur.file_len,
        version,
        metadata,
        metadata_index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
    })
}

/// Fails when two tensors' data ranges overlap (an aliased tensor would be read, and
/// could be written, through two names).
fn check_disjoint(cur: &Cursor, tensors: &[GgufTensorInfo]) -> Parsed<()> {
    let mut by_start: Vec<&GgufTensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    by_start.sort_by_key(|t| t.offset);
    for pair in by_start.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.offset < a.offset + a.size {
            return Err(cur.fail(format!(
                "tensors `{}` (data bytes {}..{}) and `{}` (from data byte {}) overlap",
                a.name,
                a.offset,
                a.offset + a.size,
                b.name,
                b.offset
            )));
        }
    }
    Ok(())
}

fn read_value(
    cur: &mut Cursor,
    value_type: ValueType,
    key: &str,
    depth: usize,
) -> Parsed<MetadataValue> {
    let what = || format!("the value of metadata key `{key}`");
    Ok(match value_type {
        ValueType::U8 => MetadataValue::U8(cur.array::<1>(&what)?[0]),
        ValueType::I8 => MetadataValue::I8(i8::from_le_bytes(cur.array(&what)?)),
        ValueType::U16 => MetadataValue::U16(u16::from_le_bytes(cur.array(&what)?)),
        ValueType::I16 => MetadataValue::I16(i16::from_le_bytes(cur.array(&what)?)),
        ValueType::U32 => MetadataValue::U32(u32::from_le_bytes(cur.array(&what)?)),
        ValueType::I32 => MetadataValue::I32(i32::from_le_bytes(cur.array(&what)?)),
        ValueType::F32 => MetadataValue::F32(f32::from_le_bytes(cur.array(&what)?)),
        ValueType::Bool => MetadataValue::Bool(cur.array::<1>(&what)?[0] != 0),
        ValueType::String => MetadataValue::String(cur.string(&what)?),
        ValueType::U64 => MetadataValue::U64(u64::from_le_bytes(cur.array(&what)?)),
        ValueType::I64 => MetadataValue::I64(i64::from_le_bytes(cur.array(&what)?)),
        ValueType::F64 => MetadataValue::F64(f64::from_le_bytes(cur.array(&what)?)),
        ValueType::Array => {
            if depth >= MAX_ARRAY_NESTING {
                return Err(cur.fail(format!(
                    "metadata key `{key}` nests arrays deeper than the limit of {MAX_ARRAY_NESTING}"
                )));
            }
            let elem_id = cur.u32(&|| format!("the element type of metadata key `{key}`"))?;
            let elem = ValueType::from_id(elem_id).ok_or_else(|| {
                cur.fail(format!(
                    "metadata key `{key}` is an array of unknown value type {elem_id}"
                ))
            })?;
            let count = cur.u64(&|| format!("the length of metadata key `{key}`"))?;
            let capacity =
                cur.capacity::<MetadataValue>(count, elem.min_encoded_bytes(), &|| {
                    format!("metadata key `{key}`")
                })?;
            let mut items = Vec::with_capacity(capacity);
            for _ in 0..count {
                items.push(read_value(cur, elem, key, depth + 1)?);
            }
            MetadataValue::Array(MetadataArray::from_parts(elem, items))
        }
    })
}

fn read_tensor_info(cur: &mut Cursor, index: u64, alignment: u64) -> Parsed<GgufTensorInfo> {
    let name = cur.string(&|| format!("the name of tensor #{index}"))?;
    let n_dims = cur.u32(&|| format!("the dimension count of tensor `{name}`"))?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(cur.fail(format!(
            "tensor `{name}` has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(cur.u64(&|| format!("dimension {d} of tensor `{name}`"))?);
    }
    let type_id = cur.u32(&|| format!("the type of tensor `{name}`"))?;
    let offset = cur.u64(&|| format!("the offset of tensor `{name}`"))?;
    let dtype = DType::from_gguf_id(type_id).ok_or_else(|| {
        let supported: Vec<&str> = DType::ALL.iter().map(|t| t.name()).collect();
        cur.fail(format!(
            "tensor `{name}` has ggml type {type_id} ({}), which safetyj does not read (it reads {})",
            ggml_type_name(type_id),
            supported.join(", ")
        ))
    })?;
    let size =
        tensor_bytes(&dims, dtype).map_err(|why| cur.fail(format!("tensor `{name}` {why}")))?;
    if offset % alignment != 0 {
        return Err(cur.fail(format!(
            "tensor `{name}` starts at data offset {offset}, which is not a multiple of the alignment {alignment}"
        )));
    }
    Ok(GgufTensorInfo {
        name,
        dims,
        dtype,
        offset,
        size,
        file_offset: 0,
    })
}
