use super::*;
use serde_json::Value;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn read_fixture_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir().join(name)).expect("fixture present");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn ids_of(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("ids array")
        .iter()
        .map(|id| id.as_u64().expect("id") as u32)
        .collect()
}

/// Expected ids and decodes, checked for every case of a fixture.
fn assert_matches_cases(tokenizer: &Tokenizer, expected: &Value, what: &str) {
    let cases = expected["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20, "{what}: fixture has too few cases");
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let want = ids_of(&case["ids"]);
        let got = tokenizer.encode_text(text).expect("encode");
        assert_eq!(got, want, "{what}: ids of {text:?}");
        let decoded = case["decoded"].as_str().expect("decoded");
        assert_eq!(
            tokenizer.decode(&want).expect("decode"),
            decoded,
            "{what}: decode of {text:?}"
        );
        let mut stream = tokenizer.stream_decoder();
        let mut streamed = String::new();
        for &id in &want {
            streamed.push_str(&stream.push(id).expect("push"));
        }
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, decoded, "{what}: streamed decode of {text:?}");
    }
}

fn sentencepiece_model_bytes() -> Vec<u8> {
    std::fs::read(fixture_dir().join("sp_bpe.model")).expect("sp_bpe.model present")
}

/// The Qwen tokenizer.json, from SAFETYJ_QWEN_TOKENIZER_JSON. Missing is a skip
/// locally and a failure in CI, which fetches it with fetch_qwen_tokenizer.sh.
fn qwen_tokenizer_json() -> Option<Vec<u8>> {
    let path = std::env::var_os("SAFETYJ_QWEN_TOKENIZER_JSON").map(PathBuf::from);
    match path.filter(|p| p.is_file()) {
        Some(path) => Some(std::fs::read(path).expect("Qwen tokenizer.json readable")),
        None if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "SAFETYJ_QWEN_TOKENIZER_JSON must name the Qwen tokenizer.json in CI \
             (run tests/fixtures/tokenizer/fetch_qwen_tokenizer.sh)"
        ),
        None => {
            eprintln!(
                "skipping: SAFETYJ_QWEN_TOKENIZER_JSON is not set (see fetch_qwen_tokenizer.sh)"
            );
            None
        }
    }
}

/// The Qwen tokenizer.json's vocabulary as a GGUF `gpt2` vocabulary: model vocab
/// and merges, with added tokens typed control (special) or user-defined.
fn qwen_gguf_vocab(json: &[u8]) -> GgufVocab {
    let value: Value = serde_json::from_slice(json).expect("tokenizer.json is JSON");
    let mut tokens: Vec<(u32, String, i32)> = value["model"]["vocab"]
        .as_object()
        .expect("vocab")
        .iter()
        .map(|(token, id)| {
            (
                id.as_u64().expect("id") as u32,
                token.clone(),
                token_type::NORMAL,
            )
        })
        .collect();
    for added in value["added_tokens"].as_array().expect("added_tokens") {
        let kind = if added["special"].as_bool() == Some(true) {
            token_type::CONTROL
        } else {
            token_type::USER_DEFINED
        };
        tokens.push((
            added["id"].as_u64().expect("id") as u32,
            added["content"].as_str().expect("content").into(),
            kind,
        ));
    }
    tokens.sort();
    assert!(
        tokens
            .iter()
            .enumerate()
            .all(|(i, (id, _, _))| *id as usize == i),
        "Qwen ids are dense"
    );
    let merges = value["model"]["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .map(|pair| {
            format!(
                "{} {}",
                pair[0].as_str().expect("left"),
                pair[1].as_str().expect("right")
            )
        })
        .collect();
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("qwen2".into()),
        token_type: tokens.iter().map(|t| t.2).collect(),
        tokens: tokens.into_iter().map(|t| t.1).collect(),
        merges,
        eos_id: Some(151645),
        padding_id: Some(151643),
        ..GgufVocab::default()
    }
}

fn assert_qwen_template(tokenizer: &Tokenizer, expected: &Value, what: &str) {
    let template = &expected["template"];
    let text = template["text"].as_str().expect("template text");
    let want = ids_of(&template["ids"]);
    assert_eq!(
        tokenizer.encode_special(text).expect("encode"),
        want,
        "{what}: template ids"
    );
    assert_eq!(
        tokenizer.decode(&want).expect("decode"),
        template["decoded"].as_str().expect("decoded")
    );
    let im_end = expected["im_end_id"].as_u64().expect("im_end_id") as u32;
    assert_eq!(
        tokenizer.token_id("<|im_end|>"),
        Some(im_end),
        "{what}: <|im_end|> id"
    );
    assert!(
        want.contains(&im_end),
        "{what}: the template parses <|im_end|> as a control token"
    );
    let user = tokenizer.encode_text("<|im_end|>").expect("encode");
    assert!(
        !user.contains(&im_end) && user.len() > 1,
        "{what}: user text {user:?} must not contain <|im_end|>"
    );
}

#[test]
fn sentencepiece_model_matches_sentencepiece_ids() {
    let tokenizer =
        Tokenizer::from_sentencepiece_model(&sentencepiece_model_bytes()).expect("load");
    let expected = read_fixture_json("sp_expected.json");
    assert_eq!(
        tokenizer.vocab_size() as u64,
        expected["vocab_size"].as_u64().expect("vocab_size")
    );
    assert_eq!(
        tokenizer.bos_id().map(u64::from),
        expected["bos_id"].as_u64()
    );
    assert_eq!(
        tokenizer.eos_id().map(u64::from),
        expected["eos_id"].as_u64()
    );
    assert_matches_cases(&tokenizer, &expected, "sentencepiece model");
}

#[test]
fn sentencepiece_nfkc_model_matches_sentencepiece_ids() {
    let bytes =
        std::fs::read(fixture_dir().join("sp_bpe_nfkc.model")).expect("sp_bpe_nfkc.model present");
    let tokenizer = Tokenizer::from_sentencepiece_model(&bytes).expect("load");
    assert_matches_cases(
        &tokenizer,
        &read_fixture_json("sp_nfkc_expected.json"),
        "sentencepiece nfkc model",
    );
}

#[test]
fn sentencepiece_control_tokens_only_from_templates() {
    let tokenizer =
        Tokenizer::from_sentencepiece_model(&sentencepiece_model_bytes()).expect("load");
    let im_end = read_fixture_json("sp_expected.json")["im_end_id"]
        .as_u64()
        .expect("im_end_id") as u32;
    assert_eq!(tokenizer.token_id("<|im_end|>"), Some(im_end));
    assert_eq!(
        tokenizer.encode_special("<|im_end|>").expect("encode"),
        vec![im_end]
    );
    let user = tokenizer.encode_text("<|im_end|>").expect("encode");
    assert!(
        !user.contains(&im_end),
        "user text became a control token: {user:?}"
    );
}

#[test]
fn llama_gguf_vocab_matches_sentencepiece_ids() {
    let model = SentencePieceModel::parse(&sentencepiece_model_bytes()).expect("parse");
    let vocab = GgufVocab {
        model: "llama".into(),
        tokens: model.pieces.clone(),
        scores: model.scores.clone(),
        token_type: model.types.clone(),
        bos_id: Some(model.bos_id as u32),
        eos_id: Some(model.eos_id as u32),
        unknown_id: Some(model.unk_id as u32),
        add_bos: true,
        add_space_prefix: true,
        ..GgufVocab::default()
    };
    let tokenizer = Tokenizer::from_gguf_vocab(&vocab).expect("load");
    assert_matches_cases(
        &tokenizer,
        &read_fixture_json("sp_expected.json"),
        "llama GGUF vocab",
    );
}

#[test]
fn qwen_tokenizer_json_matches_reference_ids() {
    let Some(json) = qwen_tokenizer_json() else {
        return;
    };
    let tokenizer = Tokenizer::from_json_bytes(&json).expect("load");
    let expected = read_fixture_json("qwen_expected.json");
    assert_matches_cases(&tokenizer, &expected, "Qwen tokenizer.json");
    assert_qwen_template(&tokenizer, &expected, "Qwen tokenizer.json");
}

#[test]
fn qwen_gguf_vocab_matches_reference_ids() {
    let Some(json) = qwen_tokenizer_json() else {
        return;
    };
    let tokenizer = Tokenizer::from_gguf_vocab(&qwen_gguf_vocab(&json)).expect("load");
    assert_eq!(tokenizer.eos_id(), Some(151645));
    let expected = read_fixture_json("qwen_expected.json");
    assert_matches_cases(&tokenizer, &expected, "Qwen GGUF vocab");
    assert_qwen_template(&tokenizer, &expected, "Qwen GGUF vocab");
}

#[test]
fn tokenizer_json_that_gguf_cannot_name_is_refused() {
    let json = |pre: &str, decoder: &str| {
        format!(
            r#"{{"model": {{"type": "BPE", "vocab": {{"a": 0}}, "merges": []}},
                "decoder": {{"type": "{decoder}"}}, "pre_tokenizer": {pre}}}"#
        )
    };
    let err = |pre: &str, decoder: &str| {
        GgufVocab::from_tokenizer_json(json(pre, decoder).as_bytes(), 0)
            .unwrap_err()
            .to_string()
    };
    let split = r#"{"type": "Split", "pattern": {"Regex": "[0-9]+"}}"#;
    let unnamed = err(split, "ByteLevel");
    assert!(
        unnamed.contains("/[0-9]+/ is not one GGUF names"),
        "{unnamed}"
    );
    assert!(err("null", "Metaspace").contains("only byte-level BPE"));
    let plain = GgufVocab::from_tokenizer_json(json("null", "ByteLevel").as_bytes(), 2).unwrap();
    assert_eq!(plain.pre.as_deref(), Some("gpt2"));
    assert_eq!(plain.tokens, vec!["a".to_string(), "[PAD1]".to_string()]);
}

#[test]
fn qwen_tokenizer_json_converts_to_the_gguf_vocab() {
    let Some(json) = qwen_tokenizer_json() else {
        return;
    };
    let vocab = GgufVocab::from_tokenizer_json(&json, 0).expect("convert");
    let by_hand = qwen_gguf_vocab(&json);
    assert_eq!(
        (vocab.model.as_str(), vocab.pre.as_deref()),
        ("gpt2", Some("qwen2"))
    );
    assert!(vocab.tokens == by_hand.tokens, "tokens differ");
    assert!(vocab.token_type == by_hand.token_type, "token types differ");
    assert!(vocab.merges == by_hand.merges, "merges differ");
    let padded = GgufVocab::from_tokenizer_json(&json, vocab.tokens.len() + 3).expect("convert");
    assert_eq!(padded.tokens.len(), vocab.tokens.len() + 3);
    assert_eq!(padded.token_type.last(), Some(&token_type::UNUSED));
    let tokenizer = Tokenizer::from_gguf_vocab(&vocab).expect("load");
    let expected = read_fixture_json("qwen_expected.json");
    assert_matches_cases(&tokenizer, &expected, "Qwen tokenizer.json as GGUF vocab");
}

#[test]
fn stream_decoder_holds_back_partial_characters() {
    let tokenizer =
        Tokenizer::from_sentencepiece_model(&sentencepiece_model_bytes()).expect("load");
    let ids = tokenizer.encode_text("安全 😀").expect("encode");
    let mut stream = tokenizer.stream_decoder();
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| stream.push(id).expect("push"))
        .collect();
    assert!(
        pieces.iter().any(String::is_empty),
        "byte-fallback pieces should be held back: {pieces:?}"
    );
    assert_eq!(pieces.concat() + &stream.finish(), "安全 😀");
    let emoji_first_byte = tokenizer.token_id("<0xF0>").expect("byte piece");
    let mut cut = tokenizer.stream_decoder();
    assert_eq!(cut.push(emoji_first_byte).expect("push"), "");
    assert_eq!(cut.finish(), "\u{FFFD}");
}

/// The message of the error `result` holds; panics (naming `what`) if it is `Ok`.
/// `Tokenizer` is not `Debug`, so `unwrap_err` cannot be used on its results.
fn error_text<T>(result: Result<T>, what: &str) -> String {
    match result {
        Ok(_) => panic!("{what}: expected an error, got Ok"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_are_errors() {
    let tokenizer =
        Tokenizer::from_sentencepiece_model(&sentencepiece_model_bytes()).expect("load");
    let size = tokenizer.vocab_size();
    let err = error_text(
        tokenizer.decode(&[size as u32]),
        "decode past the vocabulary",
    );
    assert!(
        err.contains(&format!(
            "token id {size} is outside the vocabulary of {size} ids"
        )),
        "{err}"
    );
    let bytes = sentencepiece_model_bytes();
    // The cut falls just after a piece's field key, before its length.
    let err = error_text(
        Tokenizer::from_sentencepiece_model(&bytes[..bytes.len() / 2]),
        "half a tokenizer.model",
    );
    assert!(
        err.contains("SentencePiece model is malformed: truncated varint"),
        "{err}"
    );
    // 'n' (0x6e) reads as a key of wire type 6, which protobuf does not have.
    let err = error_text(
        Tokenizer::from_sentencepiece_model(b"not a model"),
        "text as tokenizer.model",
    );
    assert!(
        err.contains("SentencePiece model is malformed: unsupported wire type 6"),
        "{err}"
    );
    let err = error_text(Tokenizer::from_json_bytes(b"{"), "cut tokenizer.json");
    assert!(err.contains("tokenizer.json could not be read"), "{err}");
    let gpt2 = |pre: &str, merges: Vec<String>| GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens: vec!["a".into(), "b".into(), "ab".into()],
        merges,
        ..GgufVocab::default()
    };
    assert!(Tokenizer::from_gguf_vocab(&gpt2("qwen2", vec!["a b".into()])).is_ok());
    let err = error_text(
        Tokenizer::from_gguf_vocab(&gpt2("qwen2", vec!["ab".into()])),
        "merge without a space",
    );
    assert!(
        err.contains("GGUF merge \"ab\" is not two tokens separated by a space"),
        "{err}"
    );
    let err = error_text(
        Tokenizer::from_gguf_vocab(&gpt2("no-such-pre", vec![])),
        "unknown pre-tokenizer",
    );
    assert!(
        err.contains("GGUF pre-tokenizer \"no-such-pre\" is not supported"),
        "{err}"
    );
    let llama_without_scores = GgufVocab {
        model: "llama".into(),
        ..gpt2("default", vec![])
    };
    let err = error_text(
        Tokenizer::from_gguf_vocab(&llama_without_scores),
        "llama vocabulary without scores",
    );
    assert!(
        err.contains("GGUF llama vocabulary has 3 tokens but 0 scores"),
        "{err}"
    );
    let duplicate = GgufVocab {
        tokens: vec!["a".into(), "a".into()],
        ..gpt2("default", vec![])
    };
    let err = error_text(Tokenizer::from_gguf_vocab(&duplicate), "duplicate token");
    assert!(
        err.contains("token \"a\" appears twice in the vocabulary (ids 0 and 1)"),
        "{err}"
    );
    let unknown_model = GgufVocab {
        model: "t5".into(),
        ..gpt2("default", vec![])
    };
    let err = error_text(
        Tokenizer::from_gguf_vocab(&unknown_model),
        "unknown tokenizer model",
    );
    assert!(
        err.contains("GGUF tokenizer model \"t5\" is not supported"),
        "{err}"
    );
}

#[test]
fn gguf_pre_tokenizers_split_digits_as_named() {
    let digits: Vec<String> = ["1", "2", "3", "4", "12", "123", "1234"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let vocab = |pre: &str| GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens: digits.clone(),
        merges: vec!["1 2".into(), "12 3".into(), "123 4".into()],
        ..GgufVocab::default()
    };
    let encode = |pre: &str| {
        Tokenizer::from_gguf_vocab(&vocab(pre))
            .expect("load")
            .encode_text("1234")
            .expect("encode")
    };
    assert_eq!(encode("qwen2"), vec![0, 1, 2, 3]);
    assert_eq!(encode("smollm"), vec![0, 1, 2, 3]);
    assert_eq!(encode("llama-bpe"), vec![5, 3]);
    assert_eq!(encode("gpt2"), vec![6]);
}
