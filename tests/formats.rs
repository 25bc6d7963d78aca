//! Model file formats against independent writers and readers (PyPI `gguf` and
//! `safetensors`, via the committed fixtures of tests/fixtures/formats/), round trips
//! through safetyj's own GGUF writer, and every kind of bad input.

use std::path::PathBuf;

use serde_json::{json, Value};

use safetyj::formats::gguf::{
    GgufFile, GgufPlan, GgufWriter, MetadataArray, MetadataValue, ValueType,
};
use safetyj::formats::safetensors::{SafetensorsCheckpoint, SafetensorsFile};
use safetyj::formats::{ByteSource, FileSource, HfConfig, MemorySource, MmapSource};
use safetyj::quant::{dequantize_to_vec, DType};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/formats")
        .join(name)
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn f32_list(values: &Value) -> Vec<f32> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// A metadata value as the fixtures' JSON writes it: `{type, value}`, arrays as
/// `{elem, items}` of plain values.
fn plain_json(value: &MetadataValue) -> Value {
    match value {
        MetadataValue::U8(v) => json!(v),
        MetadataValue::I8(v) => json!(v),
        MetadataValue::U16(v) => json!(v),
        MetadataValue::I16(v) => json!(v),
        MetadataValue::U32(v) => json!(v),
        MetadataValue::I32(v) => json!(v),
        MetadataValue::F32(v) => json!(*v as f64),
        MetadataValue::Bool(v) => json!(v),
        MetadataValue::String(v) => json!(v),
        MetadataValue::U64(v) => json!(v),
        MetadataValue::I64(v) => json!(v),
        MetadataValue::F64(v) => json!(v),
        MetadataValue::Array(a) => {
            json!({"elem": a.elem().to_string(), "items": a.items().iter().map(plain_json).collect::<Vec<_>>()})
        }
    }
}

/// Leaves of a value in order, as GGUFReader's `contents()` flattens nested arrays.
fn flat_json(value: &MetadataValue) -> Value {
    fn leaves(value: &MetadataValue, out: &mut Vec<Value>) {
        match value {
            MetadataValue::Array(a) => a.items().iter().for_each(|v| leaves(v, out)),
            other => out.push(plain_json(other)),
        }
    }
    match value {
        MetadataValue::Array(_) => {
            let mut out = Vec::new();
            leaves(value, &mut out);
            Value::Array(out)
        }
        other => plain_json(other),
    }
}

/// GGUFReader's `types` list: the value type, then element types down nested arrays.
fn type_chain(value: &MetadataValue) -> Vec<String> {
    let mut chain = vec![value.value_type().to_string()];
    if let MetadataValue::Array(a) = value {
        match a.items().first() {
            Some(first @ MetadataValue::Array(_)) => chain.extend(type_chain(first)),
            _ => chain.push(a.elem().to_string()),
        }
    }
    chain
}

#[test]
fn gguf_written_by_python_reads_as_written_through_file_and_mmap() {
    let expected = fixture_json("python_written.expected.json");
    let path = fixture("python_written.gguf");
    let sources: [Box<dyn ByteSource>; 2] = [
        Box::new(FileSource::open(&path).unwrap()),
        Box::new(MmapSource::open(&path).unwrap()),
    ];
    for source in sources {
        let file = GgufFile::read(source.as_ref()).unwrap();
        assert_eq!(file.version(), 3);
        assert_eq!(file.alignment(), expected["alignment"].as_u64().unwrap());
        let want_meta = expected["metadata"].as_array().unwrap();
        assert_eq!(file.metadata().len(), want_meta.len());
        for ((key, value), want) in file.metadata().iter().zip(want_meta) {
            assert_eq!(key, want["key"].as_str().unwrap());
            assert_eq!(
                value.value_type().to_string(),
                want["type"].as_str().unwrap(),
                "{key}"
            );
            assert_eq!(plain_json(value), want["value"], "{key}");
        }
        let want_tensors = expected["tensors"].as_array().unwrap();
        assert_eq!(file.tensors().len(), want_tensors.len());
        for (info, want) in file.tensors().iter().zip(want_tensors) {
            let name = want["name"].as_str().unwrap();
            assert_eq!(info.name, name);
            let dims: Vec<u64> = want["dims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(info.dims, dims, "{name}");
            assert_eq!(
                info.dtype.gguf_id() as u64,
                want["type"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(
                info.file_offset,
                want["file_offset"].as_u64().unwrap(),
                "{name}"
            );
            let bytes = file.read_tensor(source.as_ref(), name).unwrap();
            assert_eq!(hex(&bytes), want["bytes_hex"].as_str().unwrap(), "{name}");
            let values = dequantize_to_vec(info.dtype, &bytes, info.elements() as usize).unwrap();
            assert_eq!(
                values,
                f32_list(&want["values"]),
                "{name}: values differ from gguf.quants"
            );
        }
        assert_eq!(file.get_str("general.architecture").unwrap(), "testarch");
        assert_eq!(file.get_u32("test.u8").unwrap(), 255);
        assert_eq!(file.get_i64("test.i64").unwrap(), i64::MIN);
        assert_eq!(file.get_u64("test.u64").unwrap(), u64::MAX);
        assert_eq!(file.get_f32("test.f32").unwrap(), 0.15625);
        assert!(file.get_bool("test.bool").unwrap());
        assert_eq!(
            file.get_str_array("test.array.strings").unwrap(),
            ["<s>", "</s>", "你好"]
        );
        assert_eq!(file.get_f32_array("test.array.f32").unwrap(), [0.5, -0.25]);
        assert_eq!(file.get_i64_array("test.array.i32").unwrap(), [1, -2, 3]);
    }
}

/// Deterministic bytes for a `rows` × `cols` tensor of `dtype` whose every float
/// field (values, block scales) is finite, so dequantized values compare exactly.
fn tensor_bytes(dtype: DType, rows: usize, cols: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2654435761).wrapping_add(12345);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let elems = rows * cols;
    let small = |bits: u32| (bits % 2001) as f32 / 1000.0 - 1.0;
    match dtype {
        DType::F32 => (0..elems)
            .flat_map(|_| small(next()).to_le_bytes())
            .collect(),
        DType::F16 => (0..elems)
            .flat_map(|_| half::f16::from_f32(small(next())).to_le_bytes())
            .collect(),
        DType::BF16 => (0..elems)
            .flat_map(|_| half::bf16::from_f32(small(next())).to_le_bytes())
            .collect(),
        _ => {
            let block_bytes = dtype.block_bytes();
            let scale_offsets: &[usize] = match dtype {
                DType::Q4_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
                DType::Q6_K => &[208],
                _ => &[0],
            };
            let blocks = elems / dtype.block_elems();
            let mut out: Vec<u8> = (0..blocks * block_bytes).map(|_| next() as u8).collect();
            for block in out.chunks_exact_mut(block_bytes) {
                for &at in scale_offsets {
                    let scale = half::f16::from_f32(0.001 + (next() % 100) as f32 / 10000.0);
                    block[at..at + 2].copy_from_slice(&scale.to_le_bytes());
                }
            }
            out
        }
    }
}

fn every_type_metadata() -> Vec<(&'static str, MetadataValue)> {
    let ints = |items: Vec<MetadataValue>| {
        MetadataValue::Array(MetadataArray::new(ValueType::I32, items).unwrap())
    };
    vec![
        (
            "general.architecture",
            MetadataValue::String("llama".into()),
        ),
        ("t.u8", MetadataValue::U8(200)),
        ("t.i8", MetadataValue::I8(-100)),
        ("t.u16", MetadataValue::U16(60000)),
        ("t.i16", MetadataValue::I16(-30000)),
        ("t.u32", MetadataValue::U32(4_000_000_000)),
        ("t.i32", MetadataValue::I32(-2_000_000_000)),
        ("t.f32", MetadataValue::F32(1e-6)),
        ("t.bool", MetadataValue::Bool(false)),
        (
            "t.string",
            MetadataValue::String("ok 安全 \u{1F600}".into()),
        ),
        ("t.u64", MetadataValue::U64(1 << 40)),
        ("t.i64", MetadataValue::I64(-(1 << 40))),
        ("t.f64", MetadataValue::F64(std::f64::consts::PI)),
        (
            "t.strings",
            MetadataValue::Array(MetadataArray::strings(["a", "", "不安全"])),
        ),
        (
            "t.ints",
            ints(vec![MetadataValue::I32(7), MetadataValue::I32(-8)]),
        ),
        (
            "t.nested",
            MetadataValue::Array(
                MetadataArray::new(
                    ValueType::Array,
                    vec![
                        ints(vec![MetadataValue::I32(1), MetadataValue::I32(2)]),
                        ints(vec![MetadataValue::I32(3)]),
                    ],
                )
                .unwrap(),
            ),
        ),
    ]
}

/// The plan behind rust_written.gguf: every metadata type and every tensor type.
fn fixture_plan() -> (GgufPlan, Vec<Vec<u8>>) {
    let mut plan = GgufPlan::new();
    for (key, value) in every_type_metadata() {
        plan.add_metadata(key, value).unwrap();
    }
    let mut data = Vec::new();
    for (i, dtype) in DType::ALL.into_iter().enumerate() {
        let cols = dtype.block_elems().max(3);
        let rows = 2;
        plan.add_tensor(
            format!("w.{}", dtype.name().to_lowercase()),
            &[cols as u64, rows],
            dtype,
        )
        .unwrap();
        data.push(tensor_bytes(dtype, rows as usize, cols, i as u32 + 1));
    }
    (plan, data)
}

fn write_gguf(plan: &GgufPlan, data: &[Vec<u8>]) -> Vec<u8> {
    let mut writer = GgufWriter::start(Vec::new(), "test.gguf", plan).unwrap();
    for (tensor, bytes) in plan.tensors().iter().zip(data) {
        writer.write_tensor(&tensor.name, bytes).unwrap();
    }
    writer.finish().unwrap()
}

#[test]
fn gguf_writer_output_matches_the_committed_fixture() {
    let (plan, data) = fixture_plan();
    let bytes = write_gguf(&plan, &data);
    let path = fixture("rust_written.gguf");
    if std::env::var_os("SAFETYJ_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "GgufWriter's output changed; see make_fixtures.py"
    );
}

#[test]
fn gguf_written_by_safetyj_reads_in_python_as_planned() {
    let (plan, data) = fixture_plan();
    let bytes = write_gguf(&plan, &data);
    let ours = GgufFile::read(&MemorySource::new("ours", bytes)).unwrap();
    let python = fixture_json("rust_written.expected.json");
    assert_eq!(python["version"], json!(3));
    assert_eq!(python["alignment"].as_u64().unwrap(), ours.alignment());
    assert_eq!(python["data_offset"].as_u64().unwrap(), ours.data_offset());
    let metadata = python["metadata"].as_array().unwrap();
    assert_eq!(metadata.len(), every_type_metadata().len());
    for ((key, value), seen) in every_type_metadata().iter().zip(metadata) {
        assert_eq!(seen["key"].as_str().unwrap(), *key);
        assert_eq!(seen["types"], json!(type_chain(value)), "{key}");
        match value {
            MetadataValue::F32(v) => {
                assert_eq!(seen["value"].as_f64().unwrap() as f32, *v, "{key}")
            }
            _ => assert_eq!(seen["value"], flat_json(value), "{key}"),
        }
    }
    let tensors = python["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), plan.tensors().len());
    for ((planned, bytes), seen) in plan.tensors().iter().zip(&data).zip(tensors) {
        let name = &planned.name;
        assert_eq!(seen["name"].as_str().unwrap(), name);
        assert_eq!(seen["dims"], json!(planned.dims), "{name}");
        assert_eq!(
            seen["type"].as_u64().unwrap(),
            planned.dtype.gguf_id() as u64,
            "{name}"
        );
        assert_eq!(
            seen["file_offset"].as_u64().unwrap(),
            ours.tensor(name).unwrap().file_offset,
            "{name}"
        );
        assert_eq!(seen["bytes_hex"].as_str().unwrap(), hex(bytes), "{name}");
        let elems = planned.dims.iter().product::<u64>() as usize;
        let values = dequantize_to_vec(planned.dtype, bytes, elems).unwrap();
        let want = f32_list(&seen["values"]);
        for (i, (g, w)) in values.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}[{i}]: safetyj {g}, gguf.quants {w}"
            );
        }
    }
}

#[test]
fn gguf_round_trip_keeps_every_metadata_type_and_tensor_byte() {
    let (mut plan, mut data) = fixture_plan();
    plan.add_metadata("general.alignment", MetadataValue::U32(128))
        .unwrap();
    plan.add_metadata(
        "t.empty",
        MetadataValue::Array(MetadataArray::new(ValueType::F64, vec![]).unwrap()),
    )
    .unwrap();
    plan.add_tensor("cube", &[3, 5, 7, 2], DType::F32).unwrap();
    data.push(tensor_bytes(DType::F32, 70, 3, 99));
    let bytes = write_gguf(&plan, &data);
    assert_eq!(bytes.len() % 128, 0);
    let source = MemorySource::new("round trip", bytes);
    let file = GgufFile::read(&source).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 128);
    assert_eq!(file.data_offset() % 128, 0);
    let written: Vec<(String, MetadataValue)> = every_type_metadata()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain([
            ("general.alignment".to_string(), MetadataValue::U32(128)),
            (
                "t.empty".to_string(),
                MetadataValue::Array(MetadataArray::new(ValueType::F64, vec![]).unwrap()),
            ),
        ])
        .collect();
    assert_eq!(file.metadata(), written.as_slice());
    for (planned, bytes) in plan.tensors().iter().zip(&data) {
        let info = file.tensor(&planned.name).unwrap();
        assert_eq!(
            (info.dims.as_slice(), info.dtype, info.size),
            (planned.dims.as_slice(), planned.dtype, planned.size)
        );
        assert_eq!(info.offset % 128, 0, "{}", planned.name);
        assert_eq!(
            &file.read_tensor(&source, &planned.name).unwrap(),
            bytes,
            "{}",
            planned.name
        );
    }
    let cube = file.tensor("cube").unwrap();
    assert_eq!((cube.cols(), cube.rows(), cube.elements()), (3, 70, 210));
}

#[test]
fn gguf_header_larger_than_the_first_prefix_is_fetched_in_full() {
    let mut plan = GgufPlan::new();
    let vocab: Vec<String> = (0..120_000).map(|i| format!("token-{i:06}")).collect();
    plan.add_metadata(
        "tokenizer.ggml.tokens",
        MetadataValue::Array(MetadataArray::strings(vocab)),
    )
    .unwrap();
    plan.add_tensor("w", &[4], DType::F32).unwrap();
    let bytes = write_gguf(&plan, &[vec![1u8; 16]]);
    assert!(bytes.len() > 2 << 20);
    let source = MemorySource::new("big header", bytes);
    let file = GgufFile::read(&source).unwrap();
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!((tokens.len(), tokens[119_999]), (120_000, "token-119999"));
    assert_eq!(file.read_tensor(&source, "w").unwrap(), vec![1u8; 16]);
}

fn read_err(name: &str, bytes: Vec<u8>) -> String {
    match GgufFile::read(&MemorySource::new(name, bytes)) {
        Ok(_) => panic!("{name}: read succeeded"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_mentions(err: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            err.contains(part),
            "error {err:?} does not mention {part:?}"
        );
    }
}

/// A small valid GGUF: two metadata pairs and tensors `a` (F32 [4, 2]) and `b` (Q8_0 [32]).
fn small_gguf() -> Vec<u8> {
    let mut plan = GgufPlan::new();
    plan.add_metadata(
        "general.architecture",
        MetadataValue::String("llama".into()),
    )
    .unwrap();
    plan.add_metadata("llama.block_count", MetadataValue::U32(2))
        .unwrap();
    plan.add_tensor("a", &[4, 2], DType::F32).unwrap();
    plan.add_tensor("b", &[32], DType::Q8_0).unwrap();
    write_gguf(
        &plan,
        &[
            tensor_bytes(DType::F32, 2, 4, 1),
            tensor_bytes(DType::Q8_0, 1, 32, 2),
        ],
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

/// The byte offset of tensor `name`'s info (its name's length prefix) in `bytes`.
fn tensor_info_at(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    find(bytes, &needle)
}

#[test]
fn gguf_truncated_at_any_length_is_an_error_naming_the_file() {
    let bytes = small_gguf();
    let data_end = GgufFile::read(&MemorySource::new("whole", bytes.clone()))
        .unwrap()
        .tensor("b")
        .unwrap()
        .file_range()
        .end;
    for len in 0..data_end as usize {
        let err = read_err("cut.gguf", bytes[..len].to_vec());
        assert_mentions(&err, &["cut.gguf"]);
        assert!(
            err.contains("truncated") || err.contains("past the end"),
            "length {len}: {err}"
        );
    }
    let err = read_err("cut.gguf", bytes[..bytes.len() - 40].to_vec());
    assert_mentions(&err, &["tensor `b`", "past the end of the file"]);
}

#[test]
fn gguf_bad_magic_and_versions_are_refused() {
    let good = small_gguf();
    let mut bytes = good.clone();
    bytes[..4].copy_from_slice(b"GGML");
    assert_mentions(
        &read_err("m.gguf", bytes),
        &["m.gguf", "not a GGUF file", "GGML"],
    );
    for (version, parts) in [
        (1u32, &["version 1 is not supported"][..]),
        (4, &["version 4"]),
        (3u32.swap_bytes(), &["big-endian"]),
    ] {
        let mut bytes = good.clone();
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        assert_mentions(&read_err("v.gguf", bytes), parts);
    }
    let mut v2 = good.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(
        GgufFile::read(&MemorySource::new("v2", v2))
            .unwrap()
            .version(),
        2
    );
}

#[test]
fn gguf_unknown_tensor_type_names_tensor_and_type() {
    let mut bytes = small_gguf();
    let type_at = tensor_info_at(&bytes, "b") + 8 + 1 + 4 + 8;
    assert_eq!(bytes[type_at..type_at + 4], 8u32.to_le_bytes());
    bytes[type_at..type_at + 4].copy_from_slice(&7u32.to_le_bytes());
    assert_mentions(
        &read_err("t.gguf", bytes.clone()),
        &["tensor `b`", "ggml type 7 (Q5_1)", "does not read"],
    );
    bytes[type_at..type_at + 4].copy_from_slice(&999u32.to_le_bytes());
    assert_mentions(&read_err("t.gguf", bytes), &["tensor `b`", "ggml type 999"]);
}

#[test]
fn gguf_tensor_offsets_past_the_end_or_misaligned_are_refused() {
    let bytes = small_gguf();
    let offset_at = tensor_info_at(&bytes, "b") + 8 + 1 + 4 + 8 + 4;
    let mut past = bytes.clone();
    past[offset_at..offset_at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert_mentions(
        &read_err("o.gguf", past),
        &["o.gguf", "tensor `b`", "1048576", "past the end"],
    );
    let mut overflow = bytes.clone();
    overflow[offset_at..offset_at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert_mentions(
        &read_err("o.gguf", overflow),
        &["tensor `b`", "past the end"],
    );
    let mut misaligned = bytes;
    misaligned[offset_at..offset_at + 8].copy_from_slice(&33u64.to_le_bytes());
    assert_mentions(
        &read_err("o.gguf", misaligned),
        &["tensor `b`", "33", "alignment 32"],
    );
}

#[test]
fn gguf_bad_dims_counts_and_values_are_refused() {
    let bytes = small_gguf();
    let a_at = tensor_info_at(&bytes, "a") + 8 + 1;
    let mut dims = bytes.clone();
    dims[a_at..a_at + 4].copy_from_slice(&5u32.to_le_bytes());
    assert_mentions(&read_err("d.gguf", dims), &["tensor `a`", "5 dimensions"]);
    let b_dim_at = tensor_info_at(&bytes, "b") + 8 + 1 + 4;
    let mut blocks = bytes.clone();
    blocks[b_dim_at..b_dim_at + 8].copy_from_slice(&33u64.to_le_bytes());
    assert_mentions(
        &read_err("d.gguf", blocks),
        &["tensor `b`", "33", "32-element Q8_0 blocks"],
    );
    let mut huge = bytes.clone();
    huge[b_dim_at..b_dim_at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert_mentions(&read_err("d.gguf", huge), &["tensor `b`", "past the end"]);
    let mut counts = bytes.clone();
    counts[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_mentions(&read_err("c.gguf", counts), &["tensor count", "claims"]);
    let mut counts = bytes.clone();
    counts[16..24].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert_mentions(&read_err("c.gguf", counts), &["metadata count", "claims"]);
    let type_at = find(&bytes, b"general.architecture") + "general.architecture".len();
    let mut value_type = bytes.clone();
    value_type[type_at..type_at + 4].copy_from_slice(&13u32.to_le_bytes());
    assert_mentions(
        &read_err("k.gguf", value_type),
        &[
            "metadata key `general.architecture`",
            "unknown value type 13",
        ],
    );
    let mut length = bytes.clone();
    length[type_at + 4..type_at + 12].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_mentions(
        &read_err("k.gguf", length),
        &["metadata key `general.architecture`", "truncated"],
    );
    let mut utf8 = bytes.clone();
    utf8[type_at + 12] = 0xff;
    assert_mentions(
        &read_err("k.gguf", utf8),
        &["metadata key `general.architecture`", "UTF-8"],
    );
    let mut twice = bytes.clone();
    twice[tensor_info_at(&bytes, "b") + 8] = b'a';
    assert_mentions(&read_err("dup.gguf", twice), &["tensor `a` appears twice"]);
}

/// A GGUF header with one metadata pair whose value bytes are `value` (type `type_id`).
fn one_key_gguf(key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&type_id.to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

#[test]
fn gguf_bad_alignment_deep_nesting_and_duplicate_keys_are_refused() {
    for alignment in [0u32, 48] {
        let bytes = one_key_gguf("general.alignment", 4, &alignment.to_le_bytes());
        assert_mentions(
            &read_err("a.gguf", bytes),
            &["general.alignment", "power of two"],
        );
    }
    let bytes = one_key_gguf("general.alignment", 10, &64u64.to_le_bytes());
    assert_mentions(&read_err("a.gguf", bytes), &["general.alignment", "U32"]);
    let mut nested = Vec::new();
    for _ in 0..20 {
        nested.extend_from_slice(&9u32.to_le_bytes());
        nested.extend_from_slice(&1u64.to_le_bytes());
    }
    nested.extend_from_slice(&[0; 12]);
    let bytes = one_key_gguf("deep", 9, &nested);
    assert_mentions(
        &read_err("n.gguf", bytes),
        &["metadata key `deep`", "deeper than the limit of 8"],
    );
    let mut bytes = one_key_gguf("k", 0, &[1]);
    bytes[16..24].copy_from_slice(&2u64.to_le_bytes());
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(b"k");
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.push(2);
    assert_mentions(
        &read_err("dup.gguf", bytes),
        &["metadata key `k` appears twice"],
    );
}

#[test]
fn gguf_missing_tensor_and_wrongly_typed_keys_are_named() {
    let bytes = small_gguf();
    let source = MemorySource::new("s.gguf", bytes);
    let file = GgufFile::read(&source).unwrap();
    assert_mentions(
        &file.read_tensor(&source, "c").unwrap_err().to_string(),
        &["s.gguf", "tensor `c` is not in the file"],
    );
    assert_mentions(
        &file
            .get_u32("llama.context_length")
            .unwrap_err()
            .to_string(),
        &["`llama.context_length` is missing"],
    );
    assert_mentions(
        &file.get_f32("llama.block_count").unwrap_err().to_string(),
        &["`llama.block_count` is U32, expected a float"],
    );
    assert_mentions(
        &file
            .get_str_array("general.architecture")
            .unwrap_err()
            .to_string(),
        &["is String, expected an array"],
    );
    assert_eq!(file.get_u64("llama.block_count").unwrap(), 2);
    let big = one_key_gguf("n", 11, &(-1i64).to_le_bytes());
    let file = GgufFile::read(&MemorySource::new("n.gguf", big)).unwrap();
    assert_mentions(
        &file.get_u32("n").unwrap_err().to_string(),
        &["`n` is I64, expected an integer in u32 range"],
    );
}

#[test]
fn gguf_writer_refuses_misuse() {
    let mut plan = GgufPlan::new();
    assert_mentions(
        &plan
            .add_metadata("general.alignment", MetadataValue::U32(24))
            .unwrap_err()
            .to_string(),
        &["`general.alignment` must be a U32 power of two"],
    );
    plan.add_metadata("k", MetadataValue::U8(1)).unwrap();
    assert_mentions(
        &plan
            .add_metadata("k", MetadataValue::U8(2))
            .unwrap_err()
            .to_string(),
        &["`k` is added twice"],
    );
    assert_mentions(
        &plan
            .add_tensor("q", &[33], DType::Q4_K)
            .unwrap_err()
            .to_string(),
        &["tensor `q`", "256-element Q4_K"],
    );
    assert_mentions(
        &plan
            .add_tensor("q", &[1, 1, 1, 1, 1], DType::F32)
            .unwrap_err()
            .to_string(),
        &["5 dimensions"],
    );
    assert_mentions(
        &MetadataArray::new(ValueType::U8, vec![MetadataValue::I8(1)])
            .unwrap_err()
            .to_string(),
        &["array item 0 is I8, but the array holds U8"],
    );
    plan.add_tensor("x", &[2], DType::F32).unwrap();
    plan.add_tensor("y", &[2], DType::F16).unwrap();
    assert_mentions(
        &plan
            .add_tensor("x", &[2], DType::F32)
            .unwrap_err()
            .to_string(),
        &["tensor `x` is added twice"],
    );
    let mut writer = GgufWriter::start(Vec::new(), "w.gguf", &plan).unwrap();
    assert_mentions(
        &writer.write_tensor("y", &[0; 4]).unwrap_err().to_string(),
        &["w.gguf", "`x` next"],
    );
    assert_mentions(
        &writer.write_tensor("x", &[0; 4]).unwrap_err().to_string(),
        &["4 bytes", "needs 8"],
    );
    writer.write_tensor("x", &[0; 8]).unwrap();
    let err = GgufWriter::start(Vec::new(), "w.gguf", &plan)
        .unwrap()
        .finish()
        .unwrap_err()
        .to_string();
    assert_mentions(&err, &["before tensor `x`"]);
    writer.write_tensor("y", &[0; 4]).unwrap();
    assert_mentions(
        &writer.write_tensor("z", &[0; 4]).unwrap_err().to_string(),
        &["after every planned tensor"],
    );
    assert!(writer.finish().is_ok());
}

#[test]
fn safetensors_written_by_python_read_one_tensor_at_a_time() {
    let expected = fixture_json("safetensors.expected.json");
    let source = FileSource::open(fixture("single.safetensors")).unwrap();
    let file = SafetensorsFile::read(&source).unwrap();
    assert_eq!(
        file.metadata().get("format").map(String::as_str),
        Some("pt")
    );
    for (name, want) in expected["single"].as_object().unwrap() {
        let info = file.tensor(name).unwrap();
        assert_eq!(json!(info.shape), want["shape"], "{name}");
        assert_eq!(
            file.read_tensor_f32(&source, name).unwrap(),
            f32_list(&want["values"]),
            "{name}"
        );
    }
    assert_eq!(file.read_tensor(&source, "c.bf16").unwrap().0, DType::BF16);
    let err = file
        .read_tensor(&source, "ids.i64")
        .unwrap_err()
        .to_string();
    assert_mentions(
        &err,
        &[
            "single.safetensors",
            "tensor `ids.i64`",
            "dtype I64",
            "F32, F16, BF16",
        ],
    );
    assert_mentions(
        &file.tensor("nope").unwrap_err().to_string(),
        &["tensor `nope` is not in the file"],
    );

    let checkpoint = SafetensorsCheckpoint::open_dir(fixture("sharded")).unwrap();
    let names: Vec<&str> = checkpoint.tensor_names().collect();
    assert_eq!(names, ["layers.0.b", "layers.0.w", "layers.1.w"]);
    for (name, want) in expected["sharded"].as_object().unwrap() {
        assert_eq!(
            json!(checkpoint.tensor(name).unwrap().shape),
            want["shape"],
            "{name}"
        );
        assert_eq!(
            checkpoint.read_tensor_f32(name).unwrap(),
            f32_list(&want["values"]),
            "{name}"
        );
    }
    assert_mentions(
        &checkpoint
            .read_tensor("layers.2.w")
            .unwrap_err()
            .to_string(),
        &["tensor `layers.2.w` is not in the checkpoint"],
    );
    let single = SafetensorsCheckpoint::single(Box::new(
        MmapSource::open(fixture("single.safetensors")).unwrap(),
    ))
    .unwrap();
    assert_eq!(
        single.read_tensor_f32("a.f32").unwrap(),
        f32_list(&expected["single"]["a.f32"]["values"])
    );
}

fn safetensors_bytes(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

fn safetensors_err(bytes: Vec<u8>) -> String {
    match SafetensorsFile::read(&MemorySource::new("bad.safetensors", bytes)) {
        Ok(_) => panic!("read succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn safetensors_bad_headers_and_offsets_are_refused() {
    assert_mentions(
        &safetensors_err(vec![1, 2, 3]),
        &["bad.safetensors", "at least 8 bytes"],
    );
    assert_mentions(
        &safetensors_err(u64::MAX.to_le_bytes().to_vec()),
        &["header length", "over the limit"],
    );
    let mut past = 50u64.to_le_bytes().to_vec();
    past.extend_from_slice(b"{}");
    assert_mentions(
        &safetensors_err(past),
        &["header length 50", "past the end"],
    );
    assert_mentions(
        &safetensors_err(safetensors_bytes("[1, 2]", 0)),
        &["not a JSON object"],
    );
    let entry = |dtype: &str, shape: &str, begin: u64, end: u64| {
        format!(
            r#"{{"t": {{"dtype": "{dtype}", "shape": {shape}, "data_offsets": [{begin}, {end}]}}}}"#
        )
    };
    assert_mentions(
        &safetensors_err(safetensors_bytes(&entry("F32", "[4]", 0, 16), 8)),
        &["tensor `t`", "[0, 16]", "8 bytes"],
    );
    assert_mentions(
        &safetensors_err(safetensors_bytes(&entry("F32", "[4]", 8, 4), 16)),
        &["tensor `t`", "[8, 4]"],
    );
    assert_mentions(
        &safetensors_err(safetensors_bytes(&entry("F16", "[4]", 0, 16), 16)),
        &["tensor `t`", "needs 8 bytes", "span 16"],
    );
    assert_mentions(
        &safetensors_err(safetensors_bytes(&entry("Q4", "[4]", 0, 4), 4)),
        &["tensor `t`", "unknown dtype `Q4`"],
    );
    assert_mentions(
        &safetensors_err(safetensors_bytes(r#"{"t": {"dtype": "F32"}}"#, 0)),
        &["tensor `t`", "malformed entry"],
    );
    let fine = SafetensorsFile::read(&MemorySource::new(
        "ok",
        safetensors_bytes(&entry("F32", "[2, 2]", 0, 16), 16),
    ))
    .unwrap();
    assert_eq!(
        fine.tensor("t").unwrap().file_range().end - fine.tensor("t").unwrap().file_range().start,
        16
    );
}

#[test]
fn safetensors_index_with_missing_or_wrong_shards_is_refused() {
    let dir = std::env::temp_dir().join(format!("safetyj-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("sharded/model.safetensors.index.json"),
        dir.join("model.safetensors.index.json"),
    )
    .unwrap();
    std::fs::copy(
        fixture("sharded/model-00001-of-00002.safetensors"),
        dir.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    let err = SafetensorsCheckpoint::open_dir(&dir)
        .err()
        .unwrap()
        .to_string();
    assert_mentions(
        &err,
        &[
            "model.safetensors.index.json",
            "shard `model-00002-of-00002.safetensors`",
            "cannot be opened",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let shard = std::fs::read(fixture("sharded/model-00001-of-00002.safetensors")).unwrap();
    let open = |_: &str| -> safetyj::Result<Box<dyn ByteSource>> {
        Ok(Box::new(MemorySource::new("shard", shard.clone())))
    };
    let wrong = br#"{"weight_map": {"layers.9.w": "model-00001-of-00002.safetensors"}}"#;
    let err = SafetensorsCheckpoint::from_index("index.json", wrong, open)
        .err()
        .unwrap()
        .to_string();
    assert_mentions(
        &err,
        &["index.json", "tensor `layers.9.w`", "does not contain it"],
    );
    let escape = br#"{"weight_map": {"layers.0.w": "../secret.safetensors"}}"#;
    let err = SafetensorsCheckpoint::from_index("index.json", escape, open)
        .err()
        .unwrap()
        .to_string();
    assert_mentions(&err, &["`../secret.safetensors`", "not a plain file name"]);
    let err = SafetensorsCheckpoint::from_index("index.json", b"{}", open)
        .err()
        .unwrap()
        .to_string();
    assert_mentions(&err, &["index.json", "weight_map"]);
}

#[test]
fn hf_config_fills_hugging_face_defaults_per_architecture() {
    let qwen = br#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "rope_scaling": null, "vocab_size": 151936,
        "max_position_embeddings": 32768, "tie_word_embeddings": true, "bos_token_id": 151643,
        "eos_token_id": 151645, "torch_dtype": "bfloat16", "use_sliding_window": false}"#;
    let c = HfConfig::from_json("qwen/config.json", qwen).unwrap();
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (896, 4864, 24)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (14, 2, 64)
    );
    assert_eq!(
        (c.rms_norm_eps, c.rope_theta, c.rope_scaling.clone()),
        (1e-6, 1e6, None)
    );
    assert!(c.tie_word_embeddings && c.attention_bias);
    assert_eq!(
        (c.bos_token_id.clone(), c.eos_token_id.clone()),
        (vec![151643], vec![151645])
    );
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));

    let internlm2 = br#"{"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "hidden_size": 4096,
        "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 1000000,
        "rope_scaling": {"type": "dynamic", "factor": 2.0}, "vocab_size": 92544, "max_position_embeddings": 32768}"#;
    let c = HfConfig::from_json("internlm2/config.json", internlm2).unwrap();
    assert!(
        c.attention_bias,
        "InternLM2Config's `bias` defaults to true"
    );
    assert_eq!(
        (
            c.intermediate_size,
            c.num_hidden_layers,
            c.head_dim,
            c.rms_norm_eps
        ),
        (11008, 32, 128, 1e-6)
    );
    let scaling = c.rope_scaling.unwrap();
    assert_eq!(
        (scaling.rope_type.as_str(), scaling.factor),
        ("dynamic", Some(2.0))
    );
    assert!(!c.tie_word_embeddings);

    let llama = br#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "head_dim": 32,
        "rope_scaling": {"rope_type": "llama3", "type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192}, "eos_token_id": [128001, 128009]}"#;
    let c = HfConfig::from_json("llama/config.json", llama).unwrap();
    assert_eq!(
        (
            c.num_key_value_heads,
            c.head_dim,
            c.vocab_size,
            c.max_position_embeddings
        ),
        (4, 32, 32000, 2048)
    );
    assert!(!c.attention_bias);
    assert_eq!(c.eos_token_id, vec![128001, 128009]);
    let scaling = c.rope_scaling.unwrap();
    assert_eq!(
        (scaling.rope_type.as_str(), scaling.factor),
        ("llama3", Some(8.0))
    );
    assert_eq!(
        scaling.other["original_max_position_embeddings"],
        json!(8192)
    );
    let internlm2_no_bias = br#"{"model_type": "internlm2", "bias": false}"#;
    assert!(
        !HfConfig::from_json("c", internlm2_no_bias)
            .unwrap()
            .attention_bias
    );
}

/// Qwen3Config's head_dim defaults to 128 (not hidden / heads), and transformers 5's
/// `rope_parameters` carry the base and any scaling when the classic keys are absent.
#[test]
fn hf_config_reads_qwen3_defaults_and_transformers_5_rope_parameters() {
    let qwen3 = br#"{"model_type": "qwen3", "hidden_size": 1024, "num_attention_heads": 16,
        "num_key_value_heads": 8, "rope_parameters": {"rope_theta": 1000000, "rope_type": "default"}}"#;
    let c = HfConfig::from_json("qwen3/config.json", qwen3).unwrap();
    assert_eq!((c.head_dim, c.rope_theta), (128, 1e6));
    assert_eq!(c.rope_scaling, None);
    assert!(!c.attention_bias);
    let llama3 = br#"{"model_type": "llama", "rope_parameters": {"rope_theta": 500000.0,
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}}"#;
    let c = HfConfig::from_json("llama3/config.json", llama3).unwrap();
    let scaling = c.rope_scaling.unwrap();
    assert_eq!(c.rope_theta, 5e5);
    assert_eq!(
        (scaling.rope_type.as_str(), scaling.factor),
        ("llama3", Some(32.0))
    );
    assert!(!scaling.other.contains_key("rope_theta"));
    assert_eq!(scaling.other["high_freq_factor"], json!(4.0));
}

#[test]
fn hf_config_errors_name_the_file_and_field() {
    let err = |json: &[u8]| {
        HfConfig::from_json("m/config.json", json)
            .unwrap_err()
            .to_string()
    };
    assert_mentions(
        &err(b"{"),
        &["m/config.json", "not a valid Hugging Face config"],
    );
    assert_mentions(&err(br#"{"hidden_size": 8}"#), &["model_type"]);
    assert_mentions(
        &err(br#"{"model_type": "llama", "hidden_size": "big"}"#),
        &["hidden_size"],
    );
    assert_mentions(
        &err(br#"{"model_type": "llama", "num_attention_heads": 6, "num_key_value_heads": 4}"#),
        &["num_attention_heads 6", "num_key_value_heads 4"],
    );
    assert_mentions(
        &err(br#"{"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3}"#),
        &["hidden_size 100"],
    );
    assert_mentions(
        &err(br#"{"model_type": "llama", "rope_scaling": {"factor": 2}}"#),
        &["rope_type"],
    );
}
