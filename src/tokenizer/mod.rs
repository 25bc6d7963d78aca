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

//!
//! The files: [`vocab`] reads a GGUF file's or a SentencePiece model's vocabulary,
//! [`convert`] turns a `tokenizer.json` into a GGUF vocabulary, [`build`] turns a
//! vocabulary into a `tokenizers` pipeline, [`sentencepiece`] reads the SentencePiece
//! protobuf, and [`decode`] turns ids back into text, whole or streamed.

mod build;
mod convert;
pub mod decode;
mod sentencepiece;
pub mod vocab;

use std::collections::HashMap;
use std::sync::Mutex;

use tokenizers::DecoderWrapper;

use crate::error::{Error, Result};
use build::{byte_level_bpe, sentencepiece_bpe, SentencePieceNormalizer, SentencePieces};
pub use convert::MAX_VOCAB_SIZE;
pub use decode::StreamDecoder;
use decode::{byte_level_chars, token_to_bytes, ByteDecoding};
use sentencepiece::{SentencePieceModel, SP_MODEL_TYPE_BPE};
pub use vocab::GgufVocab;

/// GGUF's `tokenizer.ggml.token_type` values, which are also SentencePiece's piece types.
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// SentencePiece's word-boundary marker, which stands for a space inside pieces.
const SPACE_MARKER: char = '\u{2581}';
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

fn tokenizer_error(message: String) -> Error {
    Error::Tokenizer(message)
}

#[cfg(test)]
mod tests;
