//! A vocabulary turned into a `tokenizers` pipeline: byte-level BPE (GGUF `gpt2`) or
//! SentencePiece-style BPE (GGUF `llama`, SentencePiece `tokenizer.model`), as
//! Hugging Face's converters build them.

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Precompiled, Prepend, Replace, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::vocab::GgufVocab;
use super::{token_type, tokenizer_error, SPACE_MARKER};
use crate::error::Result;

/// Qwen2's pre-tokenizer split (llama.cpp pre-tokenizer `qwen2`): single digits.
pub(super) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pre-tokenizer split (llama.cpp pre-tokenizer `llama-bpe`): digits in threes.
pub(super) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Byte-level BPE from a `gpt2` GGUF vocabulary.
pub(super) fn byte_level_bpe(vocab: &GgufVocab, types: &[i32]) -> Result<tokenizers::Tokenizer> {
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
    // Checked here because the `tokenizers` BPE builder (0.23) panics, rather than
    // failing, on a merge whose result is longer than every token in the vocabulary
    // (found by tests/fuzz.rs).
    if let Some((left, right)) = merges
        .iter()
        .find(|(left, right)| !ids.contains_key(&format!("{left}{right}")))
    {
        return Err(tokenizer_error(format!(
            "GGUF merge \"{left} {right}\" makes \"{left}{right}\", which is not in the vocabulary"
        )));
    }
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
pub(super) struct SentencePieces<'a> {
    pub(super) pieces: &'a [String],
    pub(super) scores: &'a [f32],
    pub(super) types: &'a [i32],
    pub(super) unknown_id: Option<u32>,
    pub(super) byte_fallback: bool,
}

/// SentencePiece's text normalisation settings.
pub(super) struct SentencePieceNormalizer {
    pub(super) add_dummy_prefix: bool,
    pub(super) remove_extra_whitespaces: bool,
    pub(super) precompiled_charsmap: Vec<u8>,
}

/// SentencePiece BPE as Hugging Face's `LlamaConverter` builds it: merges generated
/// from the scores, byte fallback, unknown pieces fused, spaces as `▁`.
pub(super) fn sentencepiece_bpe(
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
