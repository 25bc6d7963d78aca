//! Tokenizers for the judge and its stand-ins, on the `tokenizers` crate: from a
//! Hugging Face `tokenizer.json`, from a GGUF file's `tokenizer.ggml.*` vocabulary
//! (GPT-2-style byte-level BPE, or Llama-style SentencePiece with scores), and from
//! a SentencePiece `tokenizer.model` (InternLM2, which Safety-J uses).
//!
//! User text is always encoded with special-token parsing off, so a user who types
//! `<|im_end|>` gets the ordinary tokens for those characters, never the control
//! token; only the chat template itself goes through [`Tokenizer::encode_special`].
//! Decoding works on bytes, so a stream of tokens turns into whole UTF-8 characters
//! even when one character is spread over several tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Precompiled, Prepend, Replace, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, MetadataValue};

/// GGUF's `tokenizer.ggml.token_type` values, which are also SentencePiece's piece types.
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Qwen2's pre-tokenizer split (llama.cpp pre-tokenizer `qwen2`): single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer split (llama.cpp pre-tokenizer `llama-bpe`): digits in threes.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// SentencePiece's word-boundary marker, which stands for a space inside pieces.
const SPACE_MARKER: char = '\u{2581}';

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

    /// The vocabulary of a byte-level BPE `tokenizer.json` (GPT-2, Qwen2, Llama 3,
    /// SmolLM), as llama.cpp's converter writes it: the `gpt2` model with tokens by
    /// id (gaps filled with `[PAD{id}]`, up to `min_tokens`), merges, special added
    /// tokens as control tokens, and the pre-tokenizer recognised from its regex.
    pub fn from_tokenizer_json(bytes: &[u8], min_tokens: usize) -> Result<Self> {
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| tokenizer_error(format!("tokenizer.json is not JSON: {e}")))?;
        let model = &json["model"];
        if model["type"] != "BPE" || json["decoder"]["type"] != "ByteLevel" {
            return Err(tokenizer_error(format!(
                "tokenizer.json has model {} with decoder {}; only byte-level BPE converts to a GGUF gpt2 vocabulary",
                model["type"], json["decoder"]["type"]
            )));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| tokenizer_error("tokenizer.json has no model.vocab".into()))?;
        let mut entries: Vec<(u32, String, i32)> = Vec::with_capacity(vocab.len());
        for (token, id) in vocab {
            let id = id
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    tokenizer_error(format!(
                        "tokenizer.json gives token \"{token}\" the id {id}"
                    ))
                })?;
            entries.push((id, token.clone(), token_type::NORMAL));
        }
        for added in json["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str())
            else {
                return Err(tokenizer_error(format!(
                    "tokenizer.json has an added token without id or content: {added}"
                )));
            };
            let kind = if added["special"].as_bool().unwrap_or(false) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            entries.retain(|(other, _, _)| u64::from(*other) != id);
            entries.push((id as u32, content.to_string(), kind));
        }
        let count = entries
            .iter()
            .map(|(id, _, _)| *id as usize + 1)
            .max()
            .unwrap_or(0)
            .max(min_tokens);
        let mut tokens: Vec<String> = (0..count).map(|id| format!("[PAD{id}]")).collect();
        let mut token_type = vec![token_type::UNUSED; count];
        for (id, token, kind) in entries {
            tokens[id as usize] = token;
            token_type[id as usize] = kind;
        }
        let merges = model["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|merge| match merge {
                serde_json::Value::String(pair) => Ok(pair.clone()),
                serde_json::Value::Array(pair) if pair.len() == 2 => Ok(format!(
                    "{} {}",
                    pair[0].as_str().unwrap_or_default(),
                    pair[1].as_str().unwrap_or_default()
                )),
                other => Err(tokenizer_error(format!(
                    "tokenizer.json merge {other} is not a pair"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model: "gpt2".to_string(),
            pre: Some(byte_level_pre(&json["pre_tokenizer"])?.to_string()),
            tokens,
            scores: Vec::new(),
            token_type,
            merges,
            bos_id: None,
            eos_id: None,
            unknown_id: None,
            padding_id: None,
            add_bos: false,
            add_eos: false,
            add_space_prefix: false,
        })
    }
}

/// The llama.cpp pre-tokenizer name of a byte-level `pre_tokenizer` JSON: the split
/// regex of Qwen2 or Llama 3, SmolLM's single digits, or plain GPT-2; any other
/// split regex is refused, since GGUF readers would tokenize differently.
fn byte_level_pre(pre_tokenizer: &serde_json::Value) -> Result<&'static str> {
    fn collect<'a>(
        value: &'a serde_json::Value,
        regexes: &mut Vec<&'a str>,
        types: &mut Vec<&'a str>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(regex) = map.get("Regex").and_then(|r| r.as_str()) {
                    regexes.push(regex);
                }
                if let Some(kind) = map.get("type").and_then(|t| t.as_str()) {
                    types.push(kind);
                }
                map.values().for_each(|v| collect(v, regexes, types));
            }
            serde_json::Value::Array(items) => {
                items.iter().for_each(|v| collect(v, regexes, types))
            }
            _ => {}
        }
    }
    let (mut regexes, mut types) = (Vec::new(), Vec::new());
    collect(pre_tokenizer, &mut regexes, &mut types);
    Ok(if regexes.contains(&QWEN2_SPLIT) {
        "qwen2"
    } else if regexes.contains(&LLAMA3_SPLIT) {
        "llama-bpe"
    } else if let Some(regex) = regexes.first() {
        return Err(tokenizer_error(format!(
            "tokenizer.json pre-tokenizer split /{regex}/ is not one GGUF names (qwen2, llama-bpe)"
        )));
    } else if types.contains(&"Digits") {
        "smollm"
    } else {
        "gpt2"
    })
}

/// How token ids turn back into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteDecoding {
    /// GPT-2 byte-level: each character of a token stands for one byte.
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xAB>` pieces are raw bytes, and (when the
    /// encoder added a dummy prefix) the first space of the text is dropped.
    SentencePiece { strip_leading_space: bool },
}

/// A text tokenizer: encodes user text and chat templates to ids, and decodes ids,
/// whole or streamed, back to text.
pub struct Tokenizer {
    /// Guarded because the crate keeps special-token parsing as a setting, not a
    /// per-call argument; each encode sets it before running.
    inner: Mutex<tokenizers::Tokenizer>,
    /// The bytes each id decodes to, indexed by id.
    token_bytes: Vec<Vec<u8>>,
    strip_leading_space: bool,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. Its decoder must be byte-level (GPT-2,
    /// Qwen, Llama 3) or SentencePiece-style (byte fallback or Metaspace).
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| tokenizer_error(format!("tokenizer.json could not be read: {e}")))?;
        let decoding = match inner.get_decoder() {
            Some(DecoderWrapper::ByteLevel(_)) => ByteDecoding::ByteLevel,
            Some(DecoderWrapper::Metaspace(metaspace)) => ByteDecoding::SentencePiece {
                strip_leading_space: metaspace.get_prepend_scheme()
                    != tokenizers::pre_tokenizers::metaspace::PrependScheme::Never,
            },
            Some(DecoderWrapper::Sequence(sequence))
                if sequence.get_decoders().iter().any(|d| matches!(d, DecoderWrapper::ByteFallback(_))) =>
            {
                ByteDecoding::SentencePiece {
                    strip_leading_space: sequence
                        .get_decoders()
                        .iter()
                        .any(|d| matches!(d, DecoderWrapper::Strip(strip) if strip.content == ' ' && strip.start > 0)),
                }
            }
            other => return Err(tokenizer_error(format!(
                "tokenizer.json has decoder {other:?}; only byte-level and SentencePiece-style decoders are supported"
            ))),
        };
        Self::assemble(inner, decoding, None, None)
    }

    /// Builds the tokenizer a GGUF file describes, converted the way Hugging Face's
    /// converters do: `gpt2` becomes byte-level BPE with the file's merges and the
    /// pre-tokenizer named by `pre`; `llama` becomes SentencePiece-style BPE whose
    /// merges come from the scores, with byte fallback.
    pub fn from_gguf_vocab(vocab: &GgufVocab) -> Result<Self> {
        let count = vocab.tokens.len();
        if count == 0 {
            return Err(tokenizer_error("GGUF vocabulary has no tokens".into()));
        }
        if !vocab.token_type.is_empty() && vocab.token_type.len() != count {
            return Err(tokenizer_error(format!(
                "GGUF vocabulary has {count} tokens but {} token types",
                vocab.token_type.len()
            )));
        }
        let types = if vocab.token_type.is_empty() {
            vec![token_type::NORMAL; count]
        } else {
            vocab.token_type.clone()
        };
        for (name, id) in [
            ("bos", vocab.bos_id),
            ("eos", vocab.eos_id),
            ("unknown", vocab.unknown_id),
            ("padding", vocab.padding_id),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= count) {
                return Err(tokenizer_error(format!(
                    "GGUF {name} token id {id} is outside the {count}-token vocabulary"
                )));
            }
        }
        let inner = match vocab.model.as_str() {
            "gpt2" => byte_level_bpe(vocab, &types)?,
            "llama" => {
                if vocab.scores.len() != count {
                    return Err(tokenizer_error(format!(
                        "GGUF llama vocabulary has {count} tokens but {} scores",
                        vocab.scores.len()
                    )));
                }
                let pieces = SentencePieces {
                    pieces: &vocab.tokens,
                    scores: &vocab.scores,
                    types: &types,
                    unknown_id: vocab.unknown_id,
                    byte_fallback: types.contains(&token_type::BYTE),
                };
                let normalizer = SentencePieceNormalizer {
                    add_dummy_prefix: vocab.add_space_prefix,
                    remove_extra_whitespaces: false,
                    precompiled_charsmap: Vec::new(),
                };
                sentencepiece_bpe(&pieces, &normalizer)?
            }
            other => {
                return Err(tokenizer_error(format!(
                "GGUF tokenizer model \"{other}\" is not supported (only \"gpt2\" and \"llama\")"
            )))
            }
        };
        let decoding = if vocab.model == "gpt2" {
            ByteDecoding::ByteLevel
        } else {
            ByteDecoding::SentencePiece {
                strip_leading_space: vocab.add_space_prefix,
            }
        };
        Self::assemble(inner, decoding, vocab.bos_id, vocab.eos_id)
    }

    /// Loads a SentencePiece `tokenizer.model` (a serialized `ModelProto`) of the BPE
    /// kind, converted as Hugging Face's `LlamaConverter` does.
    pub fn from_sentencepiece_model(bytes: &[u8]) -> Result<Self> {
        let model = SentencePieceModel::parse(bytes)?;
        if model.model_type != SP_MODEL_TYPE_BPE {
            return Err(tokenizer_error(format!(
                "SentencePiece model type {} is not supported (only BPE, type {SP_MODEL_TYPE_BPE})",
                model.model_type
            )));
        }
        if model.treat_whitespace_as_suffix || !model.normalizer.escape_whitespaces {
            return Err(tokenizer_error(
                "SentencePiece models with treat_whitespace_as_suffix or without escape_whitespaces are not supported"
                    .into(),
            ));
        }
        let count = model.pieces.len();
        let special_id = |id: i32| u32::try_from(id).ok().filter(|&id| (id as usize) < count);
        let pieces = SentencePieces {
            pieces: &model.pieces,
            scores: &model.scores,
            types: &model.types,
            unknown_id: special_id(model.unk_id),
            byte_fallback: model.byte_fallback,
        };
        let normalizer = SentencePieceNormalizer {
            add_dummy_prefix: model.normalizer.add_dummy_prefix,
            remove_extra_whitespaces: model.normalizer.remove_extra_whitespaces,
            precompiled_charsmap: model.normalizer.precompiled_charsmap.clone(),
        };
        let inner = sentencepiece_bpe(&pieces, &normalizer)?;
        let decoding = ByteDecoding::SentencePiece {
            strip_leading_space: model.normalizer.add_dummy_prefix,
        };
        Self::assemble(
            inner,
            decoding,
            special_id(model.bos_id),
            special_id(model.eos_id),
        )
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        decoding: ByteDecoding,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
    ) -> Result<Self> {
        let size = inner.get_vocab_size(true) as u32;
        let byte_of: HashMap<char, u8> = byte_level_chars()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let token_bytes = (0..size)
            .map(|id| match inner.id_to_token(id) {
                Some(token) => token_to_bytes(&token, decoding, &byte_of),
                None => Vec::new(),
            })
            .collect();
        let strip_leading_space = matches!(
            decoding,
            ByteDecoding::SentencePiece {
                strip_leading_space: true
            }
        );
        Ok(Self {
            inner: Mutex::new(inner),
            token_bytes,
            strip_leading_space,
            bos_id,
            eos_id,
        })
    }

    /// Encodes text typed by a user: control tokens written out in the text (such as
    /// `<|im_end|>`) stay ordinary text. No BOS or EOS is added.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, false)
    }

    /// Encodes template text, in which control tokens (such as `<|im_start|>`) become
    /// their ids. Never pass user text here. No BOS or EOS is added.
    pub fn encode_special(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, true)
    }

    fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| tokenizer_error("an earlier encode panicked".into()))?;
        inner.set_encode_special_tokens(!parse_special);
        let encoding = inner
            .encode(text, false)
            .map_err(|e| tokenizer_error(format!("encoding {} bytes failed: {e}", text.len())))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The id of a token given by its exact vocabulary string (such as `"<|im_end|>"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.lock().ok()?.token_to_id(token)
    }

    /// The number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The beginning-of-sequence id the vocabulary declares (`None` for tokenizer.json,
    /// which does not say).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The end-of-sequence id the vocabulary declares (`None` for tokenizer.json).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// Decodes ids to text, control tokens included as their text. Byte sequences
    /// that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut decoder = self.stream_decoder();
        let mut text = String::new();
        for &id in ids {
            text.push_str(&decoder.push(id)?);
        }
        text.push_str(&decoder.finish());
        Ok(text)
    }

    /// A decoder for generated tokens one at a time, which returns only whole
    /// characters and holds back the bytes of a character not yet complete.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            pending: Vec::new(),
            at_start: true,
        }
    }

    fn bytes_of(&self, id: u32) -> Result<&[u8]> {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or_else(|| {
                tokenizer_error(format!(
                    "token id {id} is outside the vocabulary of {} ids",
                    self.token_bytes.len()
                ))
            })
    }
}

/// Turns a stream of token ids into text, never splitting a UTF-8 character.
/// Concatenating every [`push`](Self::push) and the final [`finish`](Self::finish)
/// gives exactly [`Tokenizer::decode`] of all the ids.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
    at_start: bool,
}

impl StreamDecoder<'_> {
    /// Adds one token and returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self.tokenizer.bytes_of(id)?;
        self.pending.extend_from_slice(bytes);
        if self.at_start && !self.pending.is_empty() {
            self.at_start = false;
            if self.tokenizer.strip_leading_space && self.pending[0] == b' ' {
                self.pending.remove(0);
            }
        }
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return Ok(text);
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    text.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match error.error_len() {
                        Some(invalid) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + invalid);
                        }
                        None => {
                            self.pending.drain(..valid);
                            return Ok(text);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: bytes of an unfinished character become U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

fn tokenizer_error(message: String) -> Error {
    Error::Tokenizer(message)
}

/// The GPT-2 byte-to-character table: printable Latin-1 bytes map to themselves,
/// the rest to U+0100 onwards, so every byte has a visible, non-space character.
fn byte_level_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut next_extra = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        chars[byte as usize] = if printable {
            byte as char
        } else {
            let c = char::from_u32(next_extra).unwrap_or(char::REPLACEMENT_CHARACTER);
            next_extra += 1;
            c
        };
    }
    chars
}

/// The bytes a token decodes to, as Hugging Face's decoders produce them. A
/// byte-level token with a character outside the byte table (an added token such as
/// a Chinese control word) decodes to its own UTF-8, as in Hugging Face.
fn token_to_bytes(token: &str, decoding: ByteDecoding, byte_of: &HashMap<char, u8>) -> Vec<u8> {
    match decoding {
        ByteDecoding::ByteLevel => token
            .chars()
            .map(|c| byte_of.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_else(|| token.as_bytes().to_vec()),
        ByteDecoding::SentencePiece { .. } => match parse_byte_piece(token) {
            Some(byte) => vec![byte],
            None => token.replace(SPACE_MARKER, " ").into_bytes(),
        },
    }
}

/// `<0xAB>` → 0xAB, SentencePiece's byte-fallback pieces.
fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Byte-level BPE from a `gpt2` GGUF vocabulary.
fn byte_level_bpe(vocab: &GgufVocab, types: &[i32]) -> Result<tokenizers::Tokenizer> {
    let ids = vocab_ids(&vocab.tokens)?;
    let merges = vocab
        .merges
        .iter()
        .map(|merge| {
            merge
                .split_once(' ')
                .map(|(left, right)| (left.to_string(), right.to_string()))
                .ok_or_else(|| {
                    tokenizer_error(format!(
                        "GGUF merge \"{merge}\" is not two tokens separated by a space"
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(ids, merges)
        .build()
        .map_err(|e| tokenizer_error(format!("GGUF BPE vocabulary is invalid: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let byte_level =
        |use_regex: bool| PreTokenizerWrapper::from(ByteLevel::new(false, false, use_regex));
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(PreTokenizerWrapper::from)
        .map_err(|e| tokenizer_error(format!("pre-tokenizer regex failed to compile: {e}")))
    };
    let pre = vocab.pre.as_deref().unwrap_or("default");
    let pre_tokenizers = match pre {
        "qwen2" => {
            inner.with_normalizer(Some(NFC)).map_err(|e| tokenizer_error(format!("setting NFC failed: {e}")))?;
            vec![split(QWEN2_SPLIT)?, byte_level(false)]
        }
        "llama-bpe" | "llama3" => vec![split(LLAMA3_SPLIT)?, byte_level(false)],
        "smollm" => vec![Digits::new(true).into(), byte_level(true)],
        "gpt2" | "default" => vec![byte_level(true)],
        other => {
            return Err(tokenizer_error(format!(
                "GGUF pre-tokenizer \"{other}\" is not supported (qwen2, llama-bpe, llama3, smollm, gpt2, default)"
            )))
        }
    };
    inner.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::sequence::Sequence::new(
        pre_tokenizers,
    )));
    add_typed_tokens(&mut inner, &vocab.tokens, types)?;
    Ok(inner)
}

/// A SentencePiece vocabulary, from a `.model` file or a `llama` GGUF vocabulary.
struct SentencePieces<'a> {
    pieces: &'a [String],
    scores: &'a [f32],
    types: &'a [i32],
    unknown_id: Option<u32>,
    byte_fallback: bool,
}

/// SentencePiece's text normalisation settings.
struct SentencePieceNormalizer {
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    precompiled_charsmap: Vec<u8>,
}

/// SentencePiece BPE as Hugging Face's `LlamaConverter` builds it: merges generated
/// from the scores, byte fallback, unknown pieces fused, spaces as `▁`.
fn sentencepiece_bpe(
    pieces: &SentencePieces,
    normalizer: &SentencePieceNormalizer,
) -> Result<tokenizers::Tokenizer> {
    let ids = vocab_ids(pieces.pieces)?;
    let merges = sentencepiece_merges(pieces, &ids);
    let mut builder = BPE::builder()
        .vocab_and_merges(ids, merges)
        .byte_fallback(pieces.byte_fallback)
        .fuse_unk(true);
    if let Some(unknown) = pieces.unknown_id {
        builder = builder.unk_token(pieces.pieces[unknown as usize].clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| tokenizer_error(format!("SentencePiece vocabulary is invalid: {e}")))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if !normalizer.precompiled_charsmap.is_empty() {
        let precompiled = Precompiled::from(&normalizer.precompiled_charsmap).map_err(|e| {
            tokenizer_error(format!("SentencePiece normalisation table is invalid: {e}"))
        })?;
        normalizers.push(precompiled.into());
    }
    let replace = |pattern: tokenizers::normalizers::replace::ReplacePattern,
                   content: &str|
     -> Result<NormalizerWrapper> {
        Replace::new(pattern, content)
            .map(NormalizerWrapper::from)
            .map_err(|e| tokenizer_error(format!("SentencePiece normaliser failed to build: {e}")))
    };
    if normalizer.remove_extra_whitespaces {
        use tokenizers::normalizers::replace::ReplacePattern::Regex;
        normalizers.push(replace(Regex("^ +| +$".into()), "")?);
        normalizers.push(replace(Regex(" {2,}".into()), " ")?);
    }
    if normalizer.add_dummy_prefix {
        normalizers.push(Prepend::new(SPACE_MARKER.to_string()).into());
    }
    normalizers.push(replace(" ".into(), &SPACE_MARKER.to_string())?);
    inner
        .with_normalizer(Some(tokenizers::normalizers::Sequence::new(normalizers)))
        .map_err(|e| {
            tokenizer_error(format!("setting the SentencePiece normaliser failed: {e}"))
        })?;
    add_typed_tokens(&mut inner, pieces.pieces, pieces.types)?;
    Ok(inner)
}

/// Merges implied by SentencePiece scores, ordered as Hugging Face's
/// `generate_merges` orders them: by the merged piece's score, highest first, then
/// by vocabulary order. Only normal pieces take part, as in SentencePiece itself.
fn sentencepiece_merges(
    pieces: &SentencePieces,
    ids: &tokenizers::models::bpe::Vocab,
) -> Vec<(String, String)> {
    let is_normal = |id: u32| pieces.types[id as usize] == token_type::NORMAL;
    let mut merges: Vec<(f32, u32, u32)> = Vec::new();
    for (merged_id, merged) in pieces.pieces.iter().enumerate() {
        if !is_normal(merged_id as u32) {
            continue;
        }
        let mut local: Vec<(f32, u32, u32)> = merged
            .char_indices()
            .skip(1)
            .filter_map(|(split, _)| {
                let left = *ids.get(&merged[..split])?;
                let right = *ids.get(&merged[split..])?;
                (is_normal(left) && is_normal(right)).then_some((
                    pieces.scores[merged_id],
                    left,
                    right,
                ))
            })
            .collect();
        local.sort_by_key(|&(_, left, right)| (left, right));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, left, right)| {
            (
                pieces.pieces[left as usize].clone(),
                pieces.pieces[right as usize].clone(),
            )
        })
        .collect()
}

fn vocab_ids(tokens: &[String]) -> Result<tokenizers::models::bpe::Vocab> {
    let mut ids = tokenizers::models::bpe::Vocab::default();
    for (id, token) in tokens.iter().enumerate() {
        if let Some(first) = ids.insert(token.clone(), id as u32) {
            return Err(tokenizer_error(format!(
                "token \"{token}\" appears twice in the vocabulary (ids {first} and {id})"
            )));
        }
    }
    Ok(ids)
}

/// Registers control and unknown tokens as special (matched only by
/// [`Tokenizer::encode_special`]) and user-defined tokens as always matched.
fn add_typed_tokens(
    inner: &mut tokenizers::Tokenizer,
    tokens: &[String],
    types: &[i32],
) -> Result<()> {
    let typed = |wanted: &[i32]| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(types)
            .filter(|(_, kind)| wanted.contains(kind))
            .map(|(token, _)| AddedToken::from(token.clone(), true).normalized(false))
            .collect()
    };
    let added_error = |e| {
        tokenizer_error(format!(
            "adding the vocabulary's control tokens failed: {e}"
        ))
    };
    inner
        .add_special_tokens(typed(&[token_type::CONTROL, token_type::UNKNOWN]))
        .map_err(added_error)?;
    let user_defined = typed(&[token_type::USER_DEFINED])
        .into_iter()
        .map(|token| token.special(false));
    inner.add_tokens(user_defined).map_err(added_error)?;
    Ok(())
}

/// `TrainerSpec.model_type` of a BPE model.
const SP_MODEL_TYPE_BPE: u64 = 2;

/// The parts of a SentencePiece `ModelProto` the conversion needs.
struct SentencePieceModel {
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    model_type: u64,
    byte_fallback: bool,
    treat_whitespace_as_suffix: bool,
    unk_id: i32,
    bos_id: i32,
    eos_id: i32,
    normalizer: NormalizerSpec,
}

/// SentencePiece's `NormalizerSpec`, with its protobuf defaults.
struct NormalizerSpec {
    precompiled_charsmap: Vec<u8>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

impl SentencePieceModel {
    /// Reads a serialized `ModelProto` (sentencepiece_model.proto field numbers).
    fn parse(bytes: &[u8]) -> Result<Self> {
        let mut model = Self {
            pieces: Vec::new(),
            scores: Vec::new(),
            types: Vec::new(),
            model_type: 1,
            byte_fallback: false,
            treat_whitespace_as_suffix: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            normalizer: NormalizerSpec {
                precompiled_charsmap: Vec::new(),
                add_dummy_prefix: true,
                remove_extra_whitespaces: true,
                escape_whitespaces: true,
            },
        };
        let mut reader = ProtoReader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            match (field, value) {
                (1, ProtoValue::Bytes(piece)) => {
                    let (text, score, kind) = parse_piece(piece)?;
                    model.pieces.push(text);
                    model.scores.push(score);
                    model.types.push(kind);
                }
                (2, ProtoValue::Bytes(trainer)) => model.read_trainer_spec(trainer)?,
                (3, ProtoValue::Bytes(normalizer)) => model.read_normalizer_spec(normalizer)?,
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(tokenizer_error(
                "SentencePiece model has no pieces (is this a tokenizer.model file?)".into(),
            ));
        }
        Ok(model)
    }

    fn read_trainer_spec(&mut self, bytes: &[u8]) -> Result<()> {
        let mut reader = ProtoReader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            if let ProtoValue::Varint(v) = value {
                match field {
                    3 => self.model_type = v,
                    24 => self.treat_whitespace_as_suffix = v != 0,
                    35 => self.byte_fallback = v != 0,
                    40 => self.unk_id = v as i32,
                    41 => self.bos_id = v as i32,
                    42 => self.eos_id = v as i32,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn read_normalizer_spec(&mut self, bytes: &[u8]) -> Result<()> {
        let mut reader = ProtoReader::new(bytes);
        while let Some((field, value)) = reader.next_field()? {
            match (field, value) {
                (2, ProtoValue::Bytes(map)) => self.normalizer.precompiled_charsmap = map.to_vec(),
                (3, ProtoValue::Varint(v)) => self.normalizer.add_dummy_prefix = v != 0,
                (4, ProtoValue::Varint(v)) => self.normalizer.remove_extra_whitespaces = v != 0,
                (5, ProtoValue::Varint(v)) => self.normalizer.escape_whitespaces = v != 0,
                _ => {}
            }
        }
        Ok(())
    }
}

/// One `ModelProto.SentencePiece`: (piece, score, type).
fn parse_piece(bytes: &[u8]) -> Result<(String, f32, i32)> {
    let (mut text, mut score, mut kind) = (None, 0.0, token_type::NORMAL);
    let mut reader = ProtoReader::new(bytes);
    while let Some((field, value)) = reader.next_field()? {
        match (field, value) {
            (1, ProtoValue::Bytes(piece)) => {
                text = Some(
                    String::from_utf8(piece.to_vec())
                        .map_err(|_| proto_error("a piece is not UTF-8"))?,
                )
            }
            (2, ProtoValue::Fixed32(bits)) => score = f32::from_bits(bits),
            (3, ProtoValue::Varint(v)) => kind = v as i32,
            _ => {}
        }
    }
    Ok((
        text.ok_or_else(|| proto_error("a piece has no text"))?,
        score,
        kind,
    ))
}

fn proto_error(what: &str) -> Error {
    tokenizer_error(format!("SentencePiece model is malformed: {what}"))
}

/// One protobuf field value, by wire type.
enum ProtoValue<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A minimal protobuf wire-format reader: fields in order, nested messages as bytes.
struct ProtoReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> ProtoReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.position)
                .ok_or_else(|| proto_error("truncated varint"))?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(proto_error("varint longer than 10 bytes"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self
            .position
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or_else(|| proto_error("a field runs past the end of its message"))?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    /// The next (field number, value), or `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, ProtoValue<'a>)>> {
        if self.position == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => ProtoValue::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                ProtoValue::Fixed64
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| proto_error("length too large"))?;
                ProtoValue::Bytes(self.take(len)?)
            }
            5 => {
                let bytes = self.take(4)?;
                ProtoValue::Fixed32(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            }
            wire => return Err(proto_error(&format!("unsupported wire type {wire}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}

#[cfg(test)]
mod tests {
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
                eprintln!("skipping: SAFETYJ_QWEN_TOKENIZER_JSON is not set (see fetch_qwen_tokenizer.sh)");
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
        let bytes = std::fs::read(fixture_dir().join("sp_bpe_nfkc.model"))
            .expect("sp_bpe_nfkc.model present");
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
        let plain =
            GgufVocab::from_tokenizer_json(json("null", "ByteLevel").as_bytes(), 2).unwrap();
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
        let padded =
            GgufVocab::from_tokenizer_json(&json, vocab.tokens.len() + 3).expect("convert");
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

    #[test]
    fn bad_inputs_are_errors() {
        let tokenizer =
            Tokenizer::from_sentencepiece_model(&sentencepiece_model_bytes()).expect("load");
        assert!(tokenizer.decode(&[tokenizer.vocab_size() as u32]).is_err());
        let bytes = sentencepiece_model_bytes();
        assert!(Tokenizer::from_sentencepiece_model(&bytes[..bytes.len() / 2]).is_err());
        assert!(Tokenizer::from_sentencepiece_model(b"not a model").is_err());
        assert!(Tokenizer::from_json_bytes(b"{").is_err());
        let gpt2 = |pre: &str, merges: Vec<String>| GgufVocab {
            model: "gpt2".into(),
            pre: Some(pre.into()),
            tokens: vec!["a".into(), "b".into(), "ab".into()],
            merges,
            ..GgufVocab::default()
        };
        assert!(Tokenizer::from_gguf_vocab(&gpt2("qwen2", vec!["a b".into()])).is_ok());
        assert!(Tokenizer::from_gguf_vocab(&gpt2("qwen2", vec!["ab".into()])).is_err());
        assert!(Tokenizer::from_gguf_vocab(&gpt2("no-such-pre", vec![])).is_err());
        let llama_without_scores = GgufVocab {
            model: "llama".into(),
            ..gpt2("default", vec![])
        };
        assert!(Tokenizer::from_gguf_vocab(&llama_without_scores).is_err());
        let duplicate = GgufVocab {
            tokens: vec!["a".into(), "a".into()],
            ..gpt2("default", vec![])
        };
        assert!(Tokenizer::from_gguf_vocab(&duplicate).is_err());
        let unknown_model = GgufVocab {
            model: "t5".into(),
            ..gpt2("default", vec![])
        };
        assert!(Tokenizer::from_gguf_vocab(&unknown_model).is_err());
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
}
