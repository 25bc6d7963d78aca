//! The vocabulary a GGUF file's `tokenizer.ggml.*` keys carry, read from a GGUF file
//! or a SentencePiece `tokenizer.model`.

use super::sentencepiece::SentencePieceModel;
use super::tokenizer_error;
use crate::error::Result;
use crate::formats::gguf::{GgufFile, MetadataValue};

/// What a GGUF file's `tokenizer.ggml.*` keys carry, as plain data. The GGUF reader
/// fills it; [`Tokenizer::from_gguf_vocab`] turns it into a tokenizer.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a `gpt2` vocabulary (`"qwen2"`,
    /// `"llama-bpe"`, `"smollm"`, `"gpt2"`/`"default"`); `None` means `"default"`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: one string per id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`: one per token; required for `llama` (merge priority).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.token_type`: one per token (1 normal, 2 unknown, 3 control,
    /// 4 user-defined, 5 unused, 6 byte); empty means all normal.
    pub token_type: Vec<i32>,
    /// `tokenizer.ggml.merges`: `"left right"` pairs, highest priority first (`gpt2`).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unknown_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub padding_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`: whether prompts start with BOS.
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`: whether prompts end with EOS.
    pub add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix` (`llama` only): whether a space is put before
    /// the text, as SentencePiece's `add_dummy_prefix` does. GGUF's default is true.
    pub add_space_prefix: bool,
}

impl GgufVocab {
    /// Reads the `tokenizer.ggml.*` keys of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let id = |key: &str| -> Option<u32> {
            file.get(key)
                .and_then(MetadataValue::as_i128)
                .and_then(|v| u32::try_from(v).ok())
        };
        let flag = |key: &str, default: bool| file.get_bool(key).unwrap_or(default);
        let strings = |key: &str| -> Result<Vec<String>> {
            match file.get(key) {
                Some(_) => Ok(file
                    .get_str_array(key)?
                    .into_iter()
                    .map(String::from)
                    .collect()),
                None => Ok(Vec::new()),
            }
        };
        let token_type = match file.get("tokenizer.ggml.token_type") {
            Some(_) => file
                .get_i64_array("tokenizer.ggml.token_type")?
                .into_iter()
                .map(|t| {
                    i32::try_from(t).map_err(|_| {
                        tokenizer_error(format!("GGUF token type {t} is out of range"))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            model: file.get_str("tokenizer.ggml.model")?.to_string(),
            pre: file.get_str("tokenizer.ggml.pre").ok().map(String::from),
            tokens: strings("tokenizer.ggml.tokens")?,
            scores: match file.get("tokenizer.ggml.scores") {
                Some(_) => file.get_f32_array("tokenizer.ggml.scores")?,
                None => Vec::new(),
            },
            token_type,
            merges: strings("tokenizer.ggml.merges")?,
            bos_id: id("tokenizer.ggml.bos_token_id"),
            eos_id: id("tokenizer.ggml.eos_token_id"),
            unknown_id: id("tokenizer.ggml.unknown_token_id"),
            padding_id: id("tokenizer.ggml.padding_token_id"),
            add_bos: flag("tokenizer.ggml.add_bos_token", false),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true),
        })
    }

    /// The vocabulary of a SentencePiece `tokenizer.model`, as llama.cpp's converter
    /// writes it (`llama` model: pieces, scores, piece types, special ids).
    pub fn from_sentencepiece_model(bytes: &[u8]) -> Result<Self> {
        let model = SentencePieceModel::parse(bytes)?;
        let count = model.pieces.len();
        let special_id = |id: i32| u32::try_from(id).ok().filter(|&id| (id as usize) < count);
        Ok(Self {
            model: "llama".to_string(),
            pre: Some("default".to_string()),
            bos_id: special_id(model.bos_id),
            eos_id: special_id(model.eos_id),
            unknown_id: special_id(model.unk_id),
            padding_id: None,
            add_bos: true,
            add_eos: false,
            add_space_prefix: model.normalizer.add_dummy_prefix,
            tokens: model.pieces,
            scores: model.scores,
            token_type: model.types,
            merges: Vec::new(),
        })
    }
}
