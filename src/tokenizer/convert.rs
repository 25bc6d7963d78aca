//! A byte-level BPE `tokenizer.json` converted to a GGUF `gpt2` vocabulary, as
//! llama.cpp's converter writes it.

use std::collections::BTreeMap;

use super::build::{LLAMA3_SPLIT, QWEN2_SPLIT};
use super::vocab::GgufVocab;
use super::{token_type, tokenizer_error};
use crate::error::Result;

/// The most ids a converted vocabulary may have (added tokens and padding included):
/// the largest real vocabularies have about 260k; a `tokenizer.json` claiming an id
/// past this is refused before any `[PADn]` filler is allocated for the gap.
pub const MAX_VOCAB_SIZE: usize = 1 << 22;

impl GgufVocab {
    /// The vocabulary of a byte-level BPE `tokenizer.json` (GPT-2, Qwen2, Llama 3,
    /// SmolLM), as llama.cpp's converter writes it: the `gpt2` model with tokens by
    /// id (gaps filled with `[PAD{id}]`, up to `min_tokens`), merges, special added
    /// tokens as control tokens, and the pre-tokenizer recognised from its regex.
    ///
    /// Fails when an id (or `min_tokens`) is at or past [`MAX_VOCAB_SIZE`].
    pub fn from_tokenizer_json(bytes: &[u8], min_tokens: usize) -> Result<Self> {
        if min_tokens > MAX_VOCAB_SIZE {
            return Err(tokenizer_error(format!(
                "a vocabulary of {min_tokens} tokens is past the limit of {MAX_VOCAB_SIZE}"
            )));
        }
        let checked_id = |id: Option<u64>, token: &dyn std::fmt::Display| -> Result<u32> {
            id.filter(|&id| id < MAX_VOCAB_SIZE as u64)
                .map(|id| id as u32)
                .ok_or_else(|| {
                    tokenizer_error(format!(
                        "tokenizer.json gives token {token} an id that is not an integer below {MAX_VOCAB_SIZE}"
                    ))
                })
        };
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
        // By id: an added token replaces the vocabulary entry with its id.
        let mut entries: BTreeMap<u32, (String, i32)> = BTreeMap::new();
        for (token, id) in vocab {
            let id = checked_id(id.as_u64(), &format_args!("\"{token}\" (id {id})"))?;
            entries.insert(id, (token.clone(), token_type::NORMAL));
        }
        for added in json["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(content)) = (added.get("id"), added["content"].as_str()) else {
                return Err(tokenizer_error(format!(
                    "tokenizer.json has an added token without id or content: {added}"
                )));
            };
            let id = checked_id(id.as_u64(), &format_args!("\"{content}\" (added, id {id})"))?;
            let kind = if added["special"].as_bool().unwrap_or(false) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            entries.insert(id, (content.to_string(), kind));
        }
        let count = entries
            .last_key_value()
            .map_or(0, |(&id, _)| id as usize + 1)
            .max(min_tokens);
        let mut tokens: Vec<String> = (0..count).map(|id| format!("[PAD{id}]")).collect();
        let mut token_type = vec![token_type::UNUSED; count];
        for (id, (token, kind)) in entries {
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
