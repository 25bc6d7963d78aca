//! Property tests ("fuzzing" on stable Rust, with proptest) of every parser that reads
//! bytes from strangers: the GGUF header (whole and incremental), the safetensors
//! header, tokenizer.json conversion, the SentencePiece protobuf reader, JSONL batch
//! lines and the Safety-J output parser. Inputs are the committed fixtures mutated
//! (bytes flipped, inserted, deleted, cut, length fields set to extremes) or built
//! from the format's own pieces. The property is always: a typed result, never a
//! panic (proptest turns a panic into a failure and shrinks it); and where a parse
//! succeeds, what it returns is consistent. Case counts keep the file near a minute
//! on CI's two cores; `PROPTEST_CASES` raises them for a longer local run. A failing
//! input is kept in `tests/fuzz.proptest-regressions` and replayed first.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::Config;
use safetyj::formats::gguf::{GgufFile, HeaderParse};
use safetyj::formats::safetensors::SafetensorsFile;
use safetyj::formats::MemorySource;
use safetyj::judge::batch::parse_line;
use safetyj::judge::safety_j::SafetyJ;
use safetyj::judge::{JudgeProtocol, Label, Lang, Mode};
use safetyj::tokenizer::{GgufVocab, Tokenizer, MAX_VOCAB_SIZE};

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .unwrap()
}

/// Values that break length and count fields.
const EXTREMES: [u64; 9] = [
    0,
    1,
    7,
    255,
    1 << 31,
    u32::MAX as u64,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// One mutation: (kind, position, value).
fn mutations() -> impl Strategy<Value = Vec<(u8, usize, u64)>> {
    prop::collection::vec((0u8..6, any::<usize>(), any::<u64>()), 1..6)
}

/// `seed` with `ops` applied: overwrite a byte, insert a byte, delete a run, cut the
/// file, write an extreme u64 or u32 (little-endian) over a field.
fn mutate(seed: &[u8], ops: &[(u8, usize, u64)]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for &(kind, pos, value) in ops {
        let at = if bytes.is_empty() {
            0
        } else {
            pos % bytes.len()
        };
        match kind {
            0 if !bytes.is_empty() => bytes[at] = value as u8,
            1 => bytes.insert(at, value as u8),
            2 if !bytes.is_empty() => {
                let end = (at + 1 + (value % 16) as usize).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => bytes.truncate(at),
            4 | 5 => {
                let extreme = EXTREMES[(value % EXTREMES.len() as u64) as usize];
                let width = if kind == 4 { 8 } else { 4 };
                let le = extreme.to_le_bytes();
                for (i, b) in le[..width].iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            _ => {}
        }
    }
    bytes
}

fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        ..Config::default()
    }
}

/// Drives the pure parser the way the browser loader does: start from a small prefix
/// and grow it to what `NeedBytes` asks.
fn parse_incrementally(bytes: &[u8], first: usize) -> safetyj::Result<GgufFile> {
    let mut have = first.min(bytes.len());
    loop {
        match GgufFile::parse("fuzz.gguf", bytes.len() as u64, &bytes[..have])? {
            HeaderParse::Done(file) => return Ok(file),
            HeaderParse::NeedBytes(n) => {
                assert!(
                    n as usize > have && n as usize <= bytes.len(),
                    "NeedBytes({n}) with {have} of {} bytes",
                    bytes.len()
                );
                have = n as usize;
            }
        }
    }
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn gguf_header_never_panics_and_incremental_agrees(
        seed in prop::sample::select(vec!["formats/python_written.gguf", "formats/rust_written.gguf"]),
        ops in mutations(),
        first in 0usize..200,
    ) {
        let bytes = mutate(&fixture(seed), &ops);
        let whole = GgufFile::read(&MemorySource::new("fuzz.gguf", bytes.clone()));
        let incremental = parse_incrementally(&bytes, first);
        match (&whole, &incremental) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.tensors(), b.tensors());
                // Compared as text: a mutated float may be NaN, which equals nothing.
                prop_assert_eq!(format!("{:?}", a.metadata()), format!("{:?}", b.metadata()));
                // Empty tensors take no bytes, so they overlap nothing.
                let mut ranges: Vec<_> = a.tensors().iter().map(|t| t.file_range()).filter(|r| !r.is_empty()).collect();
                ranges.sort_by_key(|r| r.start);
                for pair in ranges.windows(2) {
                    prop_assert!(pair[0].end <= pair[1].start, "overlapping tensors accepted: {:?}", a.tensors());
                }
                prop_assert!(ranges.iter().all(|r| r.end <= bytes.len() as u64));
            }
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "whole {:?} vs incremental {:?}", whole.is_ok(), incremental.is_ok()),
        }
        let _ = GgufFile::read_header_only(&MemorySource::new("fuzz.gguf", bytes));
    }

    #[test]
    fn safetensors_header_never_panics_and_accepted_ranges_tile(
        seed in prop::sample::select(vec![
            "formats/single.safetensors",
            "formats/sharded/model-00001-of-00002.safetensors",
        ]),
        ops in mutations(),
    ) {
        let bytes = mutate(&fixture(seed), &ops);
        let len = bytes.len() as u64;
        if let Ok(file) = SafetensorsFile::read(&MemorySource::new("fuzz.safetensors", bytes)) {
            let ranges: Vec<_> = file.tensors().iter().map(|t| t.file_range()).collect();
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start, "overlapping tensors accepted");
            }
            prop_assert!(ranges.iter().all(|r| r.end <= len));
        }
    }

    #[test]
    fn batch_lines_never_panic(
        line in prop_oneof![
            any::<String>(),
            (any::<String>(), any::<String>(), prop::sample::select(vec!["en", "zh", "xx", ""]))
                .prop_map(|(q, r, lang)| serde_json::json!({"query": q, "response": r, "lang": lang}).to_string()),
            prop::collection::vec((prop::sample::select(vec!["user", "assistant", "system"]), any::<String>()), 0..5)
                .prop_map(|turns| serde_json::json!({"conversation": turns.iter().map(|(role, content)| serde_json::json!({"role": role, "content": content})).collect::<Vec<_>>()}).to_string()),
            (mutations(), Just(())).prop_map(|(ops, ())| String::from_utf8_lossy(&mutate(
                br#"{"conversation": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "lang": "zh", "mode": "critique"}"#,
                &ops,
            )).into_owned()),
        ],
    ) {
        if let Ok(request) = parse_line(&line, Mode::Verdict) {
            prop_assert!(request.dialogue.turns().iter().all(|t| !t.content.trim().is_empty()));
        }
    }

    #[test]
    fn safety_j_output_parser_never_panics(
        pieces in prop::collection::vec(prop_oneof![
            prop::sample::select(vec![
                "[Answer]", "[答案]", "[ answer ]:", "[ANSWER]", "unsafe", "safe", "Safe", "安全", "不安全",
                "[Analysis]", "[分析]", " ", "\n", ":", "[", "]", "\u{FFFD}", "é",
            ]).prop_map(String::from),
            any::<String>(),
        ], 0..12),
    ) {
        let output = pieces.concat();
        for lang in [Lang::En, Lang::Zh] {
            let _ = SafetyJ.parse(&output, lang);
        }
        let answered = format!("{output}[Answer] unsafe");
        if !output.to_lowercase().contains("answer") && !output.contains("答案") {
            prop_assert_eq!(SafetyJ.parse(&answered, Lang::En).label, Some(Label::Unsafe));
        }
    }
}

/// A tokenizer.json of byte-level BPE with the given vocabulary, added tokens and merges.
fn tokenizer_json(
    vocab: &[(String, u64)],
    added: &[(u64, String, bool)],
    merges: &[String],
) -> Vec<u8> {
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .map(|(t, id)| (t.clone(), (*id).into()))
        .collect();
    let added: Vec<_> = added
        .iter()
        .map(|(id, content, special)| serde_json::json!({"id": id, "content": content, "special": special}))
        .collect();
    serde_json::json!({
        "model": {"type": "BPE", "vocab": vocab, "merges": merges},
        "decoder": {"type": "ByteLevel"},
        "pre_tokenizer": {"type": "ByteLevel"},
        "added_tokens": added,
    })
    .to_string()
    .into_bytes()
}

fn small_id() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..64,
        prop::sample::select(EXTREMES.to_vec()),
        Just(MAX_VOCAB_SIZE as u64 - 1),
        Just(MAX_VOCAB_SIZE as u64)
    ]
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn tokenizer_json_conversion_never_panics_and_stays_bounded(
        vocab in prop::collection::vec(("[a-zĠ]{1,3}", 0u64..64), 0..24),
        added in prop::collection::vec((small_id(), "<\\|[a-z]{1,4}\\|>", any::<bool>()), 0..4),
        merges in prop::collection::vec("[a-zĠ]{1,2} [a-zĠ]{1,2}|[a-z]+", 0..8),
        min_tokens in prop_oneof![0usize..100, Just(MAX_VOCAB_SIZE + 1)],
    ) {
        let json = tokenizer_json(&vocab, &added, &merges);
        if let Ok(converted) = GgufVocab::from_tokenizer_json(&json, min_tokens) {
            prop_assert!(converted.tokens.len() <= MAX_VOCAB_SIZE);
            prop_assert_eq!(converted.tokens.len(), converted.token_type.len());
            // Building the tokenizer from the converted vocabulary may refuse it
            // (repeated tokens, merges of unknown tokens), but never panics.
            if converted.tokens.len() < 10_000 {
                let _ = Tokenizer::from_gguf_vocab(&converted);
            }
        }
    }

    #[test]
    fn sentencepiece_reader_never_panics(ops in mutations()) {
        let bytes = mutate(&fixture("tokenizer/sp_bpe.model"), &ops);
        let _ = GgufVocab::from_sentencepiece_model(&bytes);
        let _ = Tokenizer::from_sentencepiece_model(&bytes);
    }
}
