//! GGUF (versions 2 and 3): a reader that parses the header from a prefix of the file
//! and reads tensors one at a time through a [`ByteSource`], and a streaming writer.
//!
//! Layout: magic `GGUF`, version (u32), tensor count and metadata count (u64), the
//! metadata key/value pairs, the tensor infos (name, dims, ggml type, offset), padding
//! to `general.alignment` (32 by default), then the tensor data. All little-endian.
//! A tensor's dims are in GGUF's order: `dims[0]` is the innermost, contiguous
//! dimension (a weight matrix's columns); `dims[1]` its rows.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;

use super::source::ByteSource;
use crate::error::{Error, Result};
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

/// The first prefix [`GgufFile::read`] fetches; it doubles until the header fits.
pub const FIRST_PREFIX_BYTES: u64 = 1 << 20;

/// The type tag of a metadata value, with GGUF's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// Every type, in GGUF id order.
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    /// The type's id in GGUF's `gguf_type` enumeration.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The type with GGUF id `id`, if it exists.
    pub fn from_id(id: u32) -> Option<ValueType> {
        ValueType::ALL.get(id as usize).copied()
    }

    /// Bytes of the smallest encoded value of this type (a string's or an array's
    /// length prefix alone), used to bound counts read from a file.
    fn min_encoded_bytes(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetadataArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    /// The value's type tag.
    pub fn value_type(&self) -> ValueType {
        match self {
            MetadataValue::U8(_) => ValueType::U8,
            MetadataValue::I8(_) => ValueType::I8,
            MetadataValue::U16(_) => ValueType::U16,
            MetadataValue::I16(_) => ValueType::I16,
            MetadataValue::U32(_) => ValueType::U32,
            MetadataValue::I32(_) => ValueType::I32,
            MetadataValue::F32(_) => ValueType::F32,
            MetadataValue::Bool(_) => ValueType::Bool,
            MetadataValue::String(_) => ValueType::String,
            MetadataValue::Array(_) => ValueType::Array,
            MetadataValue::U64(_) => ValueType::U64,
            MetadataValue::I64(_) => ValueType::I64,
            MetadataValue::F64(_) => ValueType::F64,
        }
    }

    /// The value as an integer, whatever integer type it is stored as.
    pub fn as_i128(&self) -> Option<i128> {
        match *self {
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::I8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::I16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::I32(v) => Some(v.into()),
            MetadataValue::U64(v) => Some(v.into()),
            MetadataValue::I64(v) => Some(v.into()),
            _ => None,
        }
    }

    /// The value as a float (F32 or F64).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A metadata array: every item has the type `elem` (items may be arrays themselves).
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataArray {
    elem: ValueType,
    items: Vec<MetadataValue>,
}

impl MetadataArray {
    /// An array of `elem` values; fails when an item has another type.
    pub fn new(elem: ValueType, items: Vec<MetadataValue>) -> Result<Self> {
        if let Some((i, item)) = items
            .iter()
            .enumerate()
            .find(|(_, v)| v.value_type() != elem)
        {
            return Err(Error::Format {
                file: "GGUF metadata".to_string(),
                message: format!(
                    "array item {i} is {}, but the array holds {elem}",
                    item.value_type()
                ),
            });
        }
        Ok(Self { elem, items })
    }

    /// An array of strings.
    pub fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Self {
        let items = items
            .into_iter()
            .map(|s| MetadataValue::String(s.into()))
            .collect();
        Self {
            elem: ValueType::String,
            items,
        }
    }

    /// The type of every item.
    pub fn elem(&self) -> ValueType {
        self.elem
    }

    /// The items.
    pub fn items(&self) -> &[MetadataValue] {
        &self.items
    }
}

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
    /// [`GgufPlan::header_bytes`]), for tools that need a model's layout and never
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

fn format_error(file: &str, message: String) -> Error {
    Error::Format {
        file: file.to_string(),
        message,
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
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.fail(format!("{} is not valid UTF-8", what())))
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

    cur.check_count(metadata_count, 8 + 4 + 1, &|| {
        "the metadata count".to_string()
    })?;
    let mut metadata = Vec::with_capacity(metadata_count as usize);
    let mut metadata_index = HashMap::with_capacity(metadata_count as usize);
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

    cur.check_count(tensor_count, 8 + 4 + 4 + 8, &|| {
        "the tensor count".to_string()
    })?;
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut tensor_index = HashMap::with_capacity(tensor_count as usize);
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
            cur.check_count(count, elem.min_encoded_bytes(), &|| {
                format!("metadata key `{key}`")
            })?;
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                items.push(read_value(cur, elem, key, depth + 1)?);
            }
            MetadataValue::Array(MetadataArray { elem, items })
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

/// Bytes of a tensor of `dims` stored as `dtype`, or why it cannot be stored so.
fn tensor_bytes(dims: &[u64], dtype: DType) -> std::result::Result<u64, String> {
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

fn encode_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_value(out: &mut Vec<u8>, value: &MetadataValue) {
    match value {
        MetadataValue::U8(v) => out.push(*v),
        MetadataValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::Bool(v) => out.push(*v as u8),
        MetadataValue::String(s) => encode_string(out, s),
        MetadataValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::Array(array) => {
            out.extend_from_slice(&array.elem.id().to_le_bytes());
            out.extend_from_slice(&(array.items.len() as u64).to_le_bytes());
            for item in &array.items {
                encode_value(out, item);
            }
        }
    }
}
