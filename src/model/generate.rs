//! Generation: greedy or seeded sampling on the GPU, stop tokens and strings, a
//! per-token streaming callback, and context checks.

use std::ops::ControlFlow;
use std::time::Duration;

use super::forward::{Logits, Model, Session};
use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder};
use crate::ops::sample::SampleParams;
use crate::ops::{self, Tensor};
use crate::tokenizer::Tokenizer;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties: lowest id).
    Greedy,
    /// Temperature, top-k (0 = off) and top-p (1 = off) sampling, reproducible
    /// from `seed`.
    Random {
        temperature: f32,
        top_k: u32,
        top_p: f32,
        seed: u64,
    },
}

impl Sampling {
    /// The sampling op's parameters; `None` for greedy picking.
    pub fn params(self) -> Option<SampleParams> {
        match self {
            Sampling::Greedy => None,
            Sampling::Random {
                temperature,
                top_k,
                top_p,
                ..
            } => Some(SampleParams {
                temperature,
                top_k,
                top_p,
            }),
        }
    }
}

/// What to generate and when to stop.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Token ids that end generation (not included in the text).
    pub stop_tokens: Vec<u32>,
    /// Strings that end generation when they appear in the text (cut off).
    pub stop_strings: Vec<String>,
}

/// Why generation ended.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    StopString,
    MaxTokens,
    /// The callback asked to stop.
    Cancelled,
    /// The session's cache is full.
    ContextFull,
}

/// The outcome of [`generate_async`] and [`generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub stop: StopReason,
    pub prefill: Duration,
    pub decode: Duration,
}

/// A small xorshift generator: reproducible uniform numbers for sampling, identical
/// on every platform (and on every engine: each pick takes the next number).
pub(crate) struct Uniform(u64);

impl Uniform {
    /// The generator `sampling` starts from (its seed; a fixed one for greedy).
    pub(crate) fn for_sampling(sampling: Sampling) -> Uniform {
        Uniform(match sampling {
            Sampling::Random { seed, .. } => seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            Sampling::Greedy => 1,
        })
    }

    /// The next number in [0, 1).
    pub(crate) fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Records picking the next token from the first row of `logits` into `out`.
fn record_pick(
    ctx: &Context,
    encoder: &mut Encoder,
    logits: &Tensor,
    sampling: Sampling,
    u: f32,
    out: &Tensor,
) -> Result<()> {
    match sampling.params() {
        None => ops::argmax::encode(ctx, encoder, logits, 0, out, 0),
        Some(params) => ops::sample::encode(ctx, encoder, logits, 0, out, 0, &params, u),
    }
}

/// Runs `prompt` (appended to what `session` already holds) and generates up to
/// `options.max_tokens` tokens, calling `on_text` with each new piece of text as soon
/// as it is complete UTF-8; return `ControlFlow::Break` from it to stop early.
/// Each step is one submit (the forward pass, the pick and the copy of the chosen
/// token) and reads back only that token, awaiting the GPU (native and web).
pub async fn generate_async(
    ctx: &Context,
    model: &Model,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Generation> {
    check_prompt(session.len(), session.capacity(), prompt)?;
    let mut uniform = Uniform::for_sampling(options.sampling);
    let started = web_time::Instant::now();
    // One submit per step: the forward pass, the pick (into the session's picked
    // token, which the next step reads on the GPU) and the copy of the token.
    let chosen = session.picked_token().clone();
    let pick = |encoder: &mut Encoder, logits: &Tensor, u: f32| {
        record_pick(ctx, encoder, logits, options.sampling, u, &chosen)?;
        chosen.record_read(ctx, encoder)
    };
    let token = |bytes: Vec<u8>| bytemuck::pod_read_unaligned::<u32>(&bytes[..4]);
    let mut readback = model.forward_then(ctx, session, prompt, Logits::Last, |e, l| {
        pick(e, l, uniform.next())
    })?;
    // Set when the first token arrives.
    let mut prefill = None;
    let mut decode_started = None;

    let mut decoder = tokenizer.stream_decoder();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let stop = loop {
        // While the CPU waits for the token being read back, the GPU already runs
        // the step that feeds it (when one may follow); a stop undoes that step.
        let room = session.len() < session.capacity();
        let ahead = if room && tokens.len() + 1 < options.max_tokens {
            Some(
                model.forward_picked_then(ctx, session, Logits::Last, |e, l| {
                    pick(e, l, uniform.next())
                })?,
            )
        } else {
            None
        };
        let next = token(ctx.finish_readback(readback).await?);
        prefill.get_or_insert_with(|| started.elapsed());
        decode_started.get_or_insert_with(web_time::Instant::now);
        let stop = accept(
            next,
            options,
            &mut decoder,
            &mut tokens,
            &mut text,
            &mut on_text,
        )?;
        if let Some(stop) = stop {
            if ahead.is_some() {
                session.truncate(session.len() - 1)?;
            }
            break stop;
        }
        match ahead {
            Some(ahead) => readback = ahead,
            // No step was queued: the token limit or the context's end is reached.
            None if tokens.len() >= options.max_tokens => break StopReason::MaxTokens,
            None => break StopReason::ContextFull,
        }
    };
    finish_text(stop, decoder, &mut text, &mut on_text);
    Ok(Generation {
        tokens,
        text,
        stop,
        prefill: prefill.unwrap_or_default(),
        decode: decode_started.map(|t| t.elapsed()).unwrap_or_default(),
    })
}

/// Fails when `prompt` is empty or does not fit the `capacity - len` free positions.
pub(crate) fn check_prompt(len: usize, capacity: usize, prompt: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::InvalidInput("the prompt is empty".into()));
    }
    if len + prompt.len() > capacity {
        return Err(Error::InvalidInput(format!(
            "the prompt has {} tokens but only {} of the context's {capacity} positions are free",
            prompt.len(),
            capacity - len,
        )));
    }
    Ok(())
}

/// Flushes what the stream decoder still holds into `text` (unless a stop string cut
/// the text).
pub(crate) fn finish_text(
    stop: StopReason,
    decoder: crate::tokenizer::StreamDecoder<'_>,
    text: &mut String,
    on_text: &mut impl FnMut(&str) -> ControlFlow<()>,
) {
    if stop != StopReason::StopString {
        let rest = decoder.finish();
        if !rest.is_empty() {
            text.push_str(&rest);
            let _ = on_text(&rest);
        }
    }
}

/// Takes `next` into the generation: `Some` reason to stop for a stop token (not
/// taken), a stop string (the text is cut before it) or a cancel from `on_text`.
pub(crate) fn accept(
    next: u32,
    options: &GenerateOptions,
    decoder: &mut crate::tokenizer::StreamDecoder,
    tokens: &mut Vec<u32>,
    text: &mut String,
    on_text: &mut impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Option<StopReason>> {
    if options.stop_tokens.contains(&next) {
        return Ok(Some(StopReason::StopToken));
    }
    tokens.push(next);
    let piece = decoder.push(next)?;
    if piece.is_empty() {
        return Ok(None);
    }
    let before = text.len();
    text.push_str(&piece);
    if let Some(cut) = find_stop(text, &options.stop_strings, before) {
        text.truncate(cut);
        if cut > before {
            let _ = on_text(&text[before..]);
        }
        return Ok(Some(StopReason::StopString));
    }
    if on_text(&piece).is_break() {
        return Ok(Some(StopReason::Cancelled));
    }
    Ok(None)
}

/// Blocking form of [`generate_async`] (native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn generate(
    ctx: &Context,
    model: &Model,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &[u32],
    options: &GenerateOptions,
    on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Generation> {
    pollster::block_on(generate_async(
        ctx, model, tokenizer, session, prompt, options, on_text,
    ))
}

/// The byte offset where the earliest stop string begins, looking only at matches
/// that end after `new_from` (older text was already checked).
fn find_stop(text: &str, stops: &[String], new_from: usize) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let start = new_from.saturating_sub(s.len() - 1);
            let start = (start..=new_from)
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(new_from);
            text[start..].find(s.as_str()).map(|i| start + i)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_found_across_pieces() {
        let stops = vec!["<|im_end|>".to_string(), "\n\n".to_string()];
        assert_eq!(find_stop("hello <|im_", &stops, 6), None);
        assert_eq!(find_stop("hello <|im_end|> more", &stops, 11), Some(6));
        assert_eq!(find_stop("a\n\nb", &stops, 2), Some(1));
        assert_eq!(find_stop("中文\n\n", &stops, 6), Some(6));
    }

    #[test]
    fn uniform_numbers_are_in_range_and_reproducible() {
        let mut a = Uniform(42 | 1);
        let mut b = Uniform(42 | 1);
        for _ in 0..1000 {
            let x = a.next();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x, b.next());
        }
    }
}
