//! `quantize_checkpoint` end to end: tiny random Hugging Face checkpoints (written
//! here) quantized to GGUF must give the logits of quantizing on load; the file's
//! metadata, tensor table and tokenizer are checked, bad input is refused, an
//! independent reader (PyPI gguf, tests/fixtures/convert) agrees on a deterministic
//! file, and the tokenizer of real GGUF files is rebuilt from their metadata.

mod common;

use std::path::{Path, PathBuf};

use safetyj::formats::gguf::{GgufFile, MetadataValue};
use safetyj::formats::MmapSource;
use safetyj::model::convert::quantize_checkpoint;
use safetyj::model::load::{GgufWeights, HfWeights};
use safetyj::model::{Logits, Model};
use safetyj::quant::{self, DType};
use safetyj::tokenizer::{GgufVocab, Tokenizer};

use common::{ctx, ids, real_model};

/// A fresh empty directory under the target's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("convert")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic pseudo-random values (xorshift64).
struct Values(u64);

impl Values {
    /// `n` values in [center - scale, center + scale).
    fn take(&mut self, n: usize, center: f32, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
                center + scale * (2.0 * unit - 1.0)
            })
            .collect()
    }
}

/// Writes a safetensors file: 8-byte header length, JSON header, data (F32 or BF16).
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], bf16: bool) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        let start = data.len();
        for v in values {
            if bf16 {
                data.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
            } else {
                data.extend_from_slice(&v.to_le_bytes());
            }
        }
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": if bf16 { "BF16" } else { "F32" },
                "shape": shape,
                "data_offsets": [start, data.len()],
            }),
        );
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap();
}

const HIDDEN: usize = 256;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 512;
const VOCAB: usize = 300;

/// Which tiny checkpoint to write.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Llama,
    InternLm2,
}

/// Writes a tiny random checkpoint (config.json + model.safetensors) of `layers`
/// layers into `dir`, leaving out the tensor called `skip`.
fn write_checkpoint(dir: &Path, kind: Kind, layers: usize, bf16: bool, seed: u64, skip: &str) {
    let mut rng = Values(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, center: f32, scale: f32| {
        let n = shape.iter().product();
        let values = rng.take(n, center, scale);
        if name != skip {
            tensors.push((name, shape, values));
        }
    };
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let matrix_scale = 0.08;
    match kind {
        Kind::Llama => {
            add(
                "model.embed_tokens.weight".into(),
                vec![VOCAB, HIDDEN],
                0.0,
                1.0,
            );
            for i in 0..layers {
                let l = |s: &str| format!("model.layers.{i}.{s}");
                add(l("input_layernorm.weight"), vec![HIDDEN], 1.0, 0.2);
                add(
                    l("self_attn.q_proj.weight"),
                    vec![q, HIDDEN],
                    0.0,
                    matrix_scale,
                );
                add(
                    l("self_attn.k_proj.weight"),
                    vec![kv, HIDDEN],
                    0.0,
                    matrix_scale,
                );
                add(
                    l("self_attn.v_proj.weight"),
                    vec![kv, HIDDEN],
                    0.0,
                    matrix_scale,
                );
                add(
                    l("self_attn.o_proj.weight"),
                    vec![HIDDEN, q],
                    0.0,
                    matrix_scale,
                );
                add(l("post_attention_layernorm.weight"), vec![HIDDEN], 1.0, 0.2);
                add(
                    l("mlp.gate_proj.weight"),
                    vec![FFN, HIDDEN],
                    0.0,
                    matrix_scale,
                );
                add(
                    l("mlp.up_proj.weight"),
                    vec![FFN, HIDDEN],
                    0.0,
                    matrix_scale,
                );
                add(
                    l("mlp.down_proj.weight"),
                    vec![HIDDEN, FFN],
                    0.0,
                    matrix_scale,
                );
            }
            add("model.norm.weight".into(), vec![HIDDEN], 1.0, 0.2);
            add(
                "lm_head.weight".into(),
                vec![VOCAB, HIDDEN],
                0.0,
                matrix_scale,
            );
        }
        Kind::InternLm2 => {
            add(
                "model.tok_embeddings.weight".into(),
                vec![VOCAB, HIDDEN],
                0.0,
                1.0,
            );
            for i in 0..layers {
                let l = |s: &str| format!("model.layers.{i}.{s}");
                add(l("attention_norm.weight"), vec![HIDDEN], 1.0, 0.2);
                add(
                    l("attention.wqkv.weight"),
                    vec![q + 2 * kv, HIDDEN],
                    0.0,
                    matrix_scale,
                );
                add(l("attention.wo.weight"), vec![HIDDEN, q], 0.0, matrix_scale);
                add(l("ffn_norm.weight"), vec![HIDDEN], 1.0, 0.2);
                add(
                    l("feed_forward.w1.weight"),
                    vec![FFN, HIDDEN],
                    0.0,
                    matrix_scale,
                );
                add(
                    l("feed_forward.w3.weight"),
                    vec![FFN, HIDDEN],
                    0.0,
                    matrix_scale,
                );
                add(
                    l("feed_forward.w2.weight"),
                    vec![HIDDEN, FFN],
                    0.0,
                    matrix_scale,
                );
            }
            add("model.norm.weight".into(), vec![HIDDEN], 1.0, 0.2);
            add(
                "output.weight".into(),
                vec![VOCAB, HIDDEN],
                0.0,
                matrix_scale,
            );
        }
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors, bf16);
    let model_type = match kind {
        Kind::Llama => "llama",
        Kind::InternLm2 => "internlm2",
    };
    let config = serde_json::json!({
        "model_type": model_type,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
        "tie_word_embeddings": false,
        "bias": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

/// GPT-2's byte-to-character table (bytes that print stand for themselves).
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            }
        })
        .collect()
}

/// A small byte-level BPE tokenizer.json (256 byte tokens, a few merges, two
/// special tokens) and a tokenizer_config.json with a chat template.
fn write_byte_level_tokenizer(dir: &Path) {
    let chars = byte_chars();
    let mut vocab = serde_json::Map::new();
    for (id, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), id.into());
    }
    let space = chars[b' ' as usize];
    let merges = [
        ("h", "e"),
        ("l", "l"),
        ("he", "ll"),
        (&*space.to_string(), "t"),
    ]
    .iter()
    .map(|(a, b)| format!("{a} {b}"))
    .collect::<Vec<_>>();
    for (i, merge) in merges.iter().enumerate() {
        vocab.insert(merge.replace(' ', ""), (256 + i).into());
    }
    let json = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 260, "content": "<|im_start|>", "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
            {"id": 261, "content": "<|im_end|>", "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    let config = serde_json::json!({
        "add_bos_token": false,
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}",
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

fn open_gguf(path: &Path) -> GgufWeights {
    GgufWeights::new(Box::new(MmapSource::open(path).unwrap())).unwrap()
}

fn logits(model: &Model, prompt: &[u32]) -> Vec<f32> {
    let mut session = model.new_session(ctx(), 16).unwrap();
    let out = model
        .forward(ctx(), &mut session, prompt, Logits::All)
        .unwrap();
    out.read_f32(ctx()).unwrap()
}

/// Largest |a - b| over the two slices.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

// The permutation moves rows exactly and quantization is per row, so both paths hold
// the same blocks; only interleaved vs rotate-half RoPE arithmetic differs.
const TOLERANCE: f32 = 1e-4;

/// Quantizes `dir` to each type and compares the GGUF's logits with quantize-on-load.
fn check_round_trip(dir: &Path, name: &str) {
    let prompt = [1u32, 17, 42, 299, 5, 128];
    for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_K] {
        let out = dir.with_file_name(format!("{name}-{dtype}.gguf"));
        let mut calls = Vec::new();
        let report = quantize_checkpoint(dir, &out, dtype, &mut |done, total, tensor| {
            calls.push((done, total, tensor.to_string()))
        })
        .unwrap();
        assert_eq!(calls.len(), report.tensors);
        assert_eq!(calls.last().unwrap().0, report.tensors);
        let gguf = Model::load(ctx(), &open_gguf(&out), |_, _| {}).unwrap();
        let hf = Model::load(ctx(), &HfWeights::open(dir, dtype).unwrap(), |_, _| {}).unwrap();
        let (got, want) = (logits(&gguf, &prompt), logits(&hf, &prompt));
        let diff = max_diff(&got, &want);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            scale > 0.1,
            "{name} {dtype}: logits are degenerate ({scale})"
        );
        assert!(
            diff <= TOLERANCE,
            "{name} {dtype}: GGUF logits differ from quantize-on-load by {diff}"
        );
    }
}

#[test]
fn llama_gguf_matches_quantize_on_load() {
    let dir = scratch("llama").join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    write_checkpoint(&dir, Kind::Llama, 2, false, 7, "");
    check_round_trip(&dir, "llama");
}

#[test]
fn internlm2_bf16_gguf_matches_quantize_on_load() {
    let dir = scratch("internlm2").join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    write_checkpoint(&dir, Kind::InternLm2, 1, true, 11, "");
    check_round_trip(&dir, "internlm2");
}

#[test]
fn metadata_tensor_table_and_tokenizer_are_llama_cpps() {
    let root = scratch("metadata");
    let dir = root.join("tiny-llama");
    std::fs::create_dir_all(&dir).unwrap();
    write_checkpoint(&dir, Kind::Llama, 1, true, 3, "");
    write_byte_level_tokenizer(&dir);
    let out = root.join("out.gguf");
    // A single .safetensors file with config.json beside it works as well as the dir.
    let report = quantize_checkpoint(
        &dir.join("model.safetensors"),
        &out,
        DType::Q4_K,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert!(report.tokenizer);
    assert_eq!(report.tensors, 1 + 9 + 2);
    assert!(!root.join("out.gguf.partial").exists());

    let weights = open_gguf(&out);
    let f = weights.file();
    assert_eq!(report.bytes_out, f.file_len());
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_str("general.name").unwrap(), "tiny-llama");
    assert_eq!(f.get_u32("general.file_type").unwrap(), 14);
    assert_eq!(f.get_u32("general.quantization_version").unwrap(), 2);
    for (key, want) in [
        ("llama.context_length", 128),
        ("llama.embedding_length", HIDDEN as u64),
        ("llama.block_count", 1),
        ("llama.feed_forward_length", FFN as u64),
        ("llama.attention.head_count", HEADS as u64),
        ("llama.attention.head_count_kv", KV_HEADS as u64),
        ("llama.rope.dimension_count", HEAD_DIM as u64),
    ] {
        assert_eq!(f.get_u64(key).unwrap(), want, "{key}");
    }
    assert_eq!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert!(f
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("<|im_start|>"));

    let table: Vec<(&str, DType, Vec<u64>)> = f
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.dims.clone()))
        .collect();
    let h = HIDDEN as u64;
    let want = vec![
        ("token_embd.weight", DType::Q4_K, vec![h, VOCAB as u64]),
        ("blk.0.attn_norm.weight", DType::F32, vec![h]),
        ("blk.0.attn_q.weight", DType::Q4_K, vec![h, h]),
        (
            "blk.0.attn_k.weight",
            DType::Q4_K,
            vec![h, (KV_HEADS * HEAD_DIM) as u64],
        ),
        (
            "blk.0.attn_v.weight",
            DType::Q4_K,
            vec![h, (KV_HEADS * HEAD_DIM) as u64],
        ),
        ("blk.0.attn_output.weight", DType::Q4_K, vec![h, h]),
        ("blk.0.ffn_norm.weight", DType::F32, vec![h]),
        ("blk.0.ffn_gate.weight", DType::Q4_K, vec![h, FFN as u64]),
        ("blk.0.ffn_up.weight", DType::Q4_K, vec![h, FFN as u64]),
        ("blk.0.ffn_down.weight", DType::Q4_K, vec![FFN as u64, h]),
        ("output_norm.weight", DType::F32, vec![h]),
        ("output.weight", DType::Q4_K, vec![h, VOCAB as u64]),
    ];
    assert_eq!(table, want);

    // The tokenizer written from tokenizer.json reads back and encodes as the original.
    let vocab = GgufVocab::from_gguf(f).unwrap();
    assert_eq!(vocab.model, "gpt2");
    assert_eq!(vocab.pre.as_deref(), Some("gpt2"));
    assert_eq!(
        vocab.tokens.len(),
        VOCAB,
        "padded to the config's vocab_size"
    );
    assert_eq!(vocab.tokens[VOCAB - 1], format!("[PAD{}]", VOCAB - 1));
    assert_eq!(
        (vocab.bos_id, vocab.eos_id, vocab.add_bos),
        (Some(1), Some(2), false)
    );
    let from_gguf = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    let from_json =
        Tokenizer::from_json_bytes(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    let text = "hello the hell\u{e9} <|im_start|>x";
    for special in [false, true] {
        let encode = |t: &Tokenizer| {
            if special {
                t.encode_special(text)
            } else {
                t.encode_text(text)
            }
        };
        let ids = encode(&from_gguf).unwrap();
        assert_eq!(ids, encode(&from_json).unwrap(), "special {special}");
        assert!(ids.contains(&258), "the merge \"hell\" is used: {ids:?}");
        assert_eq!(ids.contains(&260), special, "{ids:?}");
    }
}

#[test]
fn sentencepiece_tokenizer_model_goes_into_the_metadata() {
    let root = scratch("sentencepiece");
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    write_checkpoint(&dir, Kind::InternLm2, 1, true, 5, "");
    let model_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/sp_bpe.model");
    std::fs::copy(&model_file, dir.join("tokenizer.model")).unwrap();
    let out = root.join("out.gguf");
    quantize_checkpoint(&dir, &out, DType::Q8_0, &mut |_, _, _| {}).unwrap();
    let weights = open_gguf(&out);
    let vocab = GgufVocab::from_gguf(weights.file()).unwrap();
    assert_eq!(vocab.model, "llama");
    assert_eq!(vocab.tokens.len(), vocab.scores.len());
    let from_gguf = Tokenizer::from_gguf_vocab(&vocab).unwrap();
    let from_model =
        Tokenizer::from_sentencepiece_model(&std::fs::read(&model_file).unwrap()).unwrap();
    let text = "Hello world, this is a test.";
    assert_eq!(
        from_gguf.encode_text(text).unwrap(),
        from_model.encode_text(text).unwrap()
    );
}

#[test]
fn bad_input_is_refused_with_the_cause_named() {
    let root = scratch("bad");
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    write_checkpoint(
        &dir,
        Kind::Llama,
        1,
        false,
        1,
        "model.layers.0.mlp.down_proj.weight",
    );
    let out = root.join("out.gguf");
    let err = |source: &Path, dtype| {
        quantize_checkpoint(source, &out, dtype, &mut |_, _, _| {})
            .unwrap_err()
            .to_string()
    };

    let missing = err(&dir, DType::Q8_0);
    assert!(
        missing.contains("model.layers.0.mlp.down_proj.weight"),
        "{missing}"
    );

    let unsupported = err(&dir, DType::Q5_K);
    assert!(
        unsupported.contains("Q5_K is not supported"),
        "{unsupported}"
    );

    std::fs::remove_file(dir.join("config.json")).unwrap();
    let no_config = err(&dir, DType::Q8_0);
    assert!(no_config.contains("config.json"), "{no_config}");

    let nowhere = err(&root.join("absent"), DType::Q8_0);
    assert!(nowhere.contains("absent"), "{nowhere}");
    assert!(!out.exists() && !root.join("out.gguf.partial").exists());
}

/// The deterministic checkpoint tests/fixtures/convert/check_with_gguf_py.py reads
/// (through the GGUF this writes), quantized to each type.
fn write_independent_reader_ggufs() -> Vec<(DType, PathBuf)> {
    let root = scratch("gguf_py");
    let dir = root.join("tiny-internlm2");
    std::fs::create_dir_all(&dir).unwrap();
    write_checkpoint(&dir, Kind::InternLm2, 1, true, 2024, "");
    let model_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/sp_bpe.model");
    std::fs::copy(model_file, dir.join("tokenizer.model")).unwrap();
    [DType::Q8_0, DType::Q4_0, DType::Q4_K]
        .into_iter()
        .map(|dtype| {
            let out = root.join(format!(
                "tiny-internlm2.{}.gguf",
                dtype.name().to_lowercase()
            ));
            quantize_checkpoint(&dir, &out, dtype, &mut |_, _, _| {}).unwrap();
            (dtype, out)
        })
        .collect()
}

fn metadata_json(value: &MetadataValue) -> serde_json::Value {
    match value {
        MetadataValue::String(s) => s.as_str().into(),
        MetadataValue::Bool(b) => (*b).into(),
        MetadataValue::Array(a) => serde_json::json!({"array_len": a.items().len()}),
        other => match (other.as_i128(), other.as_f64()) {
            (Some(i), _) => (i as i64).into(),
            (_, Some(f)) => f.into(),
            _ => serde_json::Value::Null,
        },
    }
}

/// Compares what PyPI gguf read from our files (tests/fixtures/convert/expected.json)
/// with the files written now: same metadata, tensor table and dequantized values.
#[test]
fn independent_gguf_reader_agrees() {
    let expected_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert/expected.json");
    let written = write_independent_reader_ggufs();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
    for (dtype, path) in written {
        let file_name = path.file_name().unwrap().to_str().unwrap().to_string();
        let want = &expected[&file_name];
        assert!(
            want.is_object(),
            "{file_name} is not in {}",
            expected_path.display()
        );
        let weights = open_gguf(&path);
        let f = weights.file();
        let metadata: serde_json::Map<String, serde_json::Value> = f
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), metadata_json(v)))
            .collect();
        assert_eq!(
            serde_json::Value::Object(metadata),
            want["metadata"],
            "{file_name} metadata"
        );
        let source = MmapSource::open(&path).unwrap();
        let tensors = want["tensors"].as_array().unwrap();
        assert_eq!(tensors.len(), f.tensors().len(), "{file_name}");
        for (t, w) in f.tensors().iter().zip(tensors) {
            assert_eq!(t.name, w["name"].as_str().unwrap());
            assert_eq!(
                t.dtype.name(),
                w["type"].as_str().unwrap(),
                "{} ({dtype})",
                t.name
            );
            let dims: Vec<u64> = w["dims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            assert_eq!(t.dims, dims, "{}", t.name);
            let bytes = f.read_tensor(&source, &t.name).unwrap();
            let values = quant::dequantize_to_vec(t.dtype, &bytes, t.elements() as usize).unwrap();
            let sum: f64 = values.iter().map(|&v| v as f64).sum();
            let abs: f64 = values.iter().map(|&v| (v as f64).abs()).sum();
            let weighted: f64 = values
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 * ((i % 97) as f64))
                .sum();
            for (what, got) in [("sum", sum), ("abs_sum", abs), ("weighted_sum", weighted)] {
                let want = w[what].as_f64().unwrap();
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{} {what}: {got} vs gguf-py {want}",
                    t.name
                );
            }
        }
    }
}

/// The tokenizer rebuilt from a real GGUF's metadata encodes the chat prompt and the
/// probes as Hugging Face did (tests/fixtures/models/real).
fn check_real_tokenizer(fixture: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/real");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(fixture)).unwrap()).unwrap();
    let Some(path) = real_model(meta["gguf_file"].as_str().unwrap()) else {
        return;
    };
    let source = MmapSource::open(&path).unwrap();
    let file = GgufFile::read(&source).unwrap();
    let tokenizer = Tokenizer::from_gguf_vocab(&GgufVocab::from_gguf(&file).unwrap()).unwrap();
    let mut prompt = tokenizer
        .encode_special(meta["prompt_text"].as_str().unwrap())
        .unwrap();
    if meta["special_tokens_added_by_tokenizer"].as_bool() == Some(true) {
        prompt.insert(0, tokenizer.bos_id().unwrap());
    }
    assert_eq!(prompt, ids(&meta["prompt_ids"]), "{fixture} prompt");
    for probe in meta["tokenizer_probes"].as_array().unwrap() {
        let text = probe["text"].as_str().unwrap();
        // Hugging Face encoded the probes with its default special-token parsing.
        assert_eq!(
            tokenizer.encode_special(text).unwrap(),
            ids(&probe["ids"]),
            "{fixture}: {text:?}"
        );
    }
}

#[test]
fn real_smollm2_gguf_tokenizer_from_metadata() {
    check_real_tokenizer("smollm2-135m.en.json");
}

#[test]
fn real_qwen_gguf_tokenizer_from_metadata() {
    check_real_tokenizer("qwen2.5-coder-0.5b.en.json");
    check_real_tokenizer("qwen2.5-coder-0.5b.zh.json");
}

/// Qwen2 keeps Hugging Face's Q/K row order (llama.cpp does not permute it) and its
/// QKV biases; the committed tiny checkpoint has widths of no whole block, so every
/// tensor stays F32 and the logits agree as closely as for the other arches.
#[test]
fn qwen2_with_biases_round_trips_unpermuted() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-qwen2");
    let out = scratch("qwen2").join("tiny-qwen2.gguf");
    quantize_checkpoint(&fixture, &out, DType::Q8_0, &mut |_, _, _| {}).unwrap();
    let weights = open_gguf(&out);
    let bias = weights.file().tensor("blk.0.attn_q.bias").unwrap();
    assert_eq!(bias.dtype, DType::F32);
    let prompt = [1u32, 17, 42, 5];
    let gguf = Model::load(ctx(), &weights, |_, _| {}).unwrap();
    let hf = Model::load(
        ctx(),
        &HfWeights::open(&fixture, DType::Q8_0).unwrap(),
        |_, _| {},
    )
    .unwrap();
    let diff = max_diff(&logits(&gguf, &prompt), &logits(&hf, &prompt));
    assert!(
        diff <= TOLERANCE,
        "qwen2: GGUF logits differ from quantize-on-load by {diff}"
    );
}

/// `safetyj quantize` writes the file and prints its summary; a type it does not
/// write is refused by the argument parser.
#[test]
fn cli_quantize_writes_and_summarises() {
    let root = scratch("cli");
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    write_checkpoint(&dir, Kind::Llama, 1, true, 9, "");
    let out = root.join("out.gguf");
    let run = |dtype: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_safetyj"))
            .args([
                "quantize",
                dir.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--type",
                dtype,
            ])
            .output()
            .unwrap()
    };
    let ok = run("q4_0");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("12 tensors") && stdout.contains("Q4_0"),
        "{stdout}"
    );
    assert_eq!(
        open_gguf(&out)
            .file()
            .tensor("blk.0.attn_q.weight")
            .unwrap()
            .dtype,
        DType::Q4_0
    );
    let refused = run("q6_k");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("q6_k"));
}
