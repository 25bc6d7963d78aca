//! Hostile input: one test per hole of issue #18 in the byte parsers and the batch
//! runner. Each fails without its fix (a crash, an allocation of terabytes, silent
//! acceptance, or a line lost or misattributed).

use std::path::PathBuf;

use safetyj::formats::gguf::{GgufFile, HeaderParse, MAX_HEADER_MEMORY};
use safetyj::formats::safetensors::SafetensorsFile;
use safetyj::formats::MemorySource;
use safetyj::journal::JournalOptions;
use safetyj::judge::batch::run_with;
use safetyj::judge::engine::JudgeRequest;
use safetyj::judge::Mode;
use safetyj::tokenizer::{GgufVocab, MAX_VOCAB_SIZE};
use safetyj::Error;

/// GGUF header bytes: metadata as (key, type id, encoded value), tensors as (name,
/// dims, ggml type, data offset).
fn gguf_header(metadata: &[(&str, u32, Vec<u8>)], tensors: &[(&str, &[u64], u32, u64)]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for (key, kind, value) in metadata {
        string(&mut out, key);
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(value);
    }
    for (name, dims, kind, offset) in tensors {
        string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    out.resize(out.len().next_multiple_of(32), 0);
    out
}

fn format_message(result: safetyj::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Format { message, .. }) => message,
        other => panic!("expected a format error, got {other:?}"),
    }
}

/// A one-byte-per-item array whose count fits in a (claimed) huge file would have
/// reserved 32 bytes of memory per item: 2 TiB here. Refused by the memory bound.
#[test]
fn gguf_array_count_is_bounded_by_memory_not_only_by_file_bytes() {
    let count: u64 = 1 << 36;
    let mut value = 0u32.to_le_bytes().to_vec(); // array of U8
    value.extend_from_slice(&count.to_le_bytes());
    let header = gguf_header(&[("big", 9, value)], &[]);
    let message = format_message(GgufFile::parse("huge.gguf", 1 << 40, &header));
    assert!(
        message.contains("metadata key `big`") && message.contains(&MAX_HEADER_MEMORY.to_string()),
        "{message}"
    );
}

/// Two tensors over the same bytes (or overlapping ones) were accepted: only each
/// tensor's end was checked.
#[test]
fn gguf_overlapping_tensor_ranges_are_refused() {
    for second_offset in [0u64, 64] {
        // `a` is 128 bytes of F32 at 0; `b` starts inside it.
        let header = gguf_header(&[], &[("a", &[32], 0, 0), ("b", &[32], 0, second_offset)]);
        let mut file = header.clone();
        file.resize(header.len() + 256, 0);
        let message = format_message(GgufFile::read(&MemorySource::new("aliased.gguf", file)));
        assert!(
            message.contains("`a`") && message.contains("`b`") && message.contains("overlap"),
            "{message}"
        );
    }
    // Adjacent tensors are fine.
    let header = gguf_header(&[], &[("a", &[32], 0, 0), ("b", &[32], 0, 128)]);
    let mut file = header.clone();
    file.resize(header.len() + 256, 0);
    let parsed = GgufFile::read(&MemorySource::new("fine.gguf", file)).unwrap();
    assert_eq!(parsed.tensors().len(), 2);
}

/// The incremental parser asks for more bytes, never for fewer than it has, and a
/// truncated header is an error, not a request past the end of the file.
#[test]
fn gguf_incremental_parse_asks_for_more_then_finishes() {
    let header = gguf_header(
        &[("general.name", 8, {
            let mut v = 5u64.to_le_bytes().to_vec();
            v.extend_from_slice(b"tiny!");
            v
        })],
        &[("a", &[32], 0, 0)],
    );
    let mut file = header.clone();
    file.resize(header.len() + 128, 0);
    let mut have = 10;
    let parsed = loop {
        match GgufFile::parse("tiny.gguf", file.len() as u64, &file[..have]).unwrap() {
            HeaderParse::Done(parsed) => break parsed,
            HeaderParse::NeedBytes(n) => {
                assert!(
                    n as usize > have && n as usize <= file.len(),
                    "asked for {n} with {have}"
                );
                have = n as usize;
            }
        }
    };
    assert_eq!(parsed.get_str("general.name").unwrap(), "tiny!");
    let refused = GgufFile::parse("cut.gguf", 30, &file[..30])
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("cut.gguf: truncated") && refused.contains("cannot fit"),
        "{refused}"
    );
}

fn safetensors_bytes(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

/// A repeated tensor name used to overwrite the first entry silently.
#[test]
fn safetensors_duplicate_keys_are_refused() {
    let header = r#"{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "t": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#;
    let message = format_message(SafetensorsFile::read(&MemorySource::new(
        "dup.safetensors",
        safetensors_bytes(header, 12),
    )));
    assert!(message.contains("key `t` twice"), "{message}");
}

/// Two tensors over the same bytes, or one overlapping the next, were accepted.
#[test]
fn safetensors_overlapping_or_aliased_ranges_are_refused() {
    for header in [
        r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#,
        r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
    ] {
        let message = format_message(SafetensorsFile::read(&MemorySource::new(
            "alias.safetensors",
            safetensors_bytes(header, 12),
        )));
        assert!(message.contains("overlap"), "{message}");
    }
}

fn tokenizer_json(added_id: &str) -> Vec<u8> {
    format!(
        r#"{{"model": {{"type": "BPE", "vocab": {{"a": 0, "b": 1}}, "merges": []}},
            "decoder": {{"type": "ByteLevel"}}, "pre_tokenizer": {{"type": "ByteLevel"}},
            "added_tokens": [{{"id": {added_id}, "content": "<|x|>", "special": true}}]}}"#
    )
    .into_bytes()
}

/// A huge added-token id allocated that many `[PADn]` strings (4 billion here), and an
/// id past u32 was truncated onto another token's id (2^32 + 1 became 1).
#[test]
fn tokenizer_json_ids_past_the_vocabulary_limit_are_refused() {
    for id in ["4000000000", "4294967297", "-1", "1.5"] {
        let err = GgufVocab::from_tokenizer_json(&tokenizer_json(id), 0).unwrap_err();
        assert!(
            matches!(&err, Error::Tokenizer(m) if m.contains("<|x|>") && m.contains(&MAX_VOCAB_SIZE.to_string())),
            "{id}: {err}"
        );
    }
    let err = GgufVocab::from_tokenizer_json(&tokenizer_json("2"), MAX_VOCAB_SIZE + 1).unwrap_err();
    assert!(
        matches!(&err, Error::Tokenizer(m) if m.contains("past the limit")),
        "{err}"
    );
    let vocab = GgufVocab::from_tokenizer_json(&tokenizer_json("5"), 0).unwrap();
    assert_eq!(
        vocab.tokens,
        ["a", "b", "[PAD2]", "[PAD3]", "[PAD4]", "<|x|>"]
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("safetyj-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A scripted evaluator: the batch logic under test is everything around the engine.
fn echo(request: &JudgeRequest) -> safetyj::Result<String> {
    Ok(request.dialogue.response().to_string())
}

fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A line that is not UTF-8 aborted the whole run before; now it is recorded as that
/// line's error and the lines after it are judged. An empty response is an error too.
#[test]
fn batch_records_bad_lines_and_goes_on() {
    let dir = temp_dir("bad-lines");
    let (input, output) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    let mut bytes = b"{\"query\": \"q1\", \"response\": \"r1\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"query\": \"\xff\xfe\", \"response\": \"r2\"}\n");
    bytes.extend_from_slice(b"{\"query\": \"q3\", \"response\": \"\"}\n\nnot json\n");
    bytes.extend_from_slice(b"{\"query\": \"q6\", \"response\": \"r6\"}");
    std::fs::write(&input, bytes).unwrap();
    let summary = run_with(
        &input,
        &output,
        Mode::Verdict,
        JournalOptions::default(),
        echo,
        |_, _| {},
    )
    .unwrap();
    assert_eq!((summary.judged, summary.failed), (2, 3));
    let out = records(&output);
    let lines: Vec<u64> = out.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 2, 3, 5, 6]);
    assert!(
        out[1]["error"].as_str().unwrap().contains("not UTF-8"),
        "{}",
        out[1]
    );
    assert!(
        out[2]["error"]
            .as_str()
            .unwrap()
            .contains("response is empty"),
        "{}",
        out[2]
    );
    assert!(
        out[3]["error"]
            .as_str()
            .unwrap()
            .contains("not a dialogue object"),
        "{}",
        out[3]
    );
    assert_eq!(out[4]["verdict"], "r6");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A lost device used to be written as the answer of every remaining line, and a
/// rerun skipped them all. Now the run stops and nothing is recorded for the line.
#[test]
fn batch_stops_on_a_transient_error_and_the_rerun_redoes_the_line() {
    let dir = temp_dir("transient");
    let (input, output) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    std::fs::write(
        &input,
        "{\"query\": \"q\", \"response\": \"a\"}\n{\"query\": \"q\", \"response\": \"b\"}\n{\"query\": \"q\", \"response\": \"c\"}\n",
    )
    .unwrap();
    let lost = |request: &JudgeRequest| match request.dialogue.response() {
        "b" => Err(Error::DeviceLost("driver reset".into())),
        other => Ok(other.to_string()),
    };
    let err = run_with(
        &input,
        &output,
        Mode::Verdict,
        JournalOptions::default(),
        lost,
        |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::DeviceLost(_)), "{err}");
    assert_eq!(records(&output).len(), 1);
    let summary = run_with(
        &input,
        &output,
        Mode::Verdict,
        JournalOptions { fsync: true },
        echo,
        |_, _| {},
    )
    .unwrap();
    assert_eq!((summary.resumed, summary.judged, summary.failed), (1, 2, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An input edited between runs used to be resumed by line number alone, pairing old
/// verdicts with new dialogues. Now the rerun stops naming the line.
#[test]
fn batch_rerun_on_an_edited_input_names_the_changed_line() {
    let dir = temp_dir("edited");
    let (input, output) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    std::fs::write(
        &input,
        "{\"query\": \"q\", \"response\": \"a\"}\n{\"query\": \"q\", \"response\": \"b\"}\n",
    )
    .unwrap();
    run_with(
        &input,
        &output,
        Mode::Verdict,
        JournalOptions::default(),
        echo,
        |_, _| {},
    )
    .unwrap();
    std::fs::write(
        &input,
        "{\"query\": \"q\", \"response\": \"a\"}\n{\"query\": \"q\", \"response\": \"EDITED\"}\n",
    )
    .unwrap();
    let err = run_with(
        &input,
        &output,
        Mode::Verdict,
        JournalOptions::default(),
        echo,
        |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput(m) if m.contains("line 2") && m.contains("changed")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A GGUF header of a llama model with the given block count and head count.
fn llama_header(block_count: u64, heads: u64) -> Vec<u8> {
    use safetyj::formats::gguf::{GgufPlan, MetadataValue};
    use safetyj::quant::DType;
    let mut plan = GgufPlan::new();
    let meta = [
        (
            "general.architecture",
            MetadataValue::String("llama".into()),
        ),
        ("llama.block_count", MetadataValue::U64(block_count)),
        ("llama.embedding_length", MetadataValue::U64(64)),
        ("llama.attention.head_count", MetadataValue::U64(heads)),
        ("llama.attention.key_length", MetadataValue::U64(1 << 16)),
        ("llama.feed_forward_length", MetadataValue::U64(128)),
        ("llama.context_length", MetadataValue::U64(256)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            MetadataValue::F32(1e-5),
        ),
    ];
    for (key, value) in meta {
        plan.add_metadata(key, value).unwrap();
    }
    plan.add_tensor("token_embd.weight", &[64, 32], DType::F32)
        .unwrap();
    plan.header_bytes()
}

/// Configs had lower bounds only: a billion layers would be looped over, and
/// heads × head dim was multiplied unchecked. Both are refused before any weight.
#[test]
fn absurd_model_configs_are_refused_before_anything_is_built() {
    let config = |blocks, heads| {
        let file = GgufFile::read_header_only(&MemorySource::new(
            "absurd.gguf",
            llama_header(blocks, heads),
        ))
        .unwrap();
        safetyj::model::load::gguf_config(&file, None)
    };
    let message = format_message(config(1_000_000_000, 2));
    assert!(
        message.contains("1000000000 layers") && message.contains("limit"),
        "{message}"
    );
    let message = format_message(config(2, 1 << 20));
    assert!(message.contains("heads × head dim"), "{message}");
    assert!(config(2, 2).is_ok());
}

/// Found by tests/fuzz.rs: a merge whose result is longer than every token made the
/// `tokenizers` BPE builder panic (index out of range) instead of failing.
#[test]
fn a_merge_longer_than_every_token_is_an_error_not_a_panic() {
    let json = br#"{"model": {"type": "BPE", "vocab": {"\u0120\u0120": 2}, "merges": ["\u0120\u0120 \u0120\u0120"]},
        "decoder": {"type": "ByteLevel"}, "pre_tokenizer": {"type": "ByteLevel"}, "added_tokens": []}"#;
    let vocab = GgufVocab::from_tokenizer_json(json, 0).unwrap();
    let err = safetyj::tokenizer::Tokenizer::from_gguf_vocab(&vocab)
        .err()
        .unwrap();
    assert!(
        matches!(&err, Error::Tokenizer(m) if m.contains("not in the vocabulary")),
        "{err}"
    );
}
