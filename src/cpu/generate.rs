//! Generation on the CPU: the same stop rules, streaming and seeded sampling as the
//! GPU's [`crate::model::generate`], one step at a time (the CPU has nothing to
//! overlap with while it waits).

use std::ops::ControlFlow;

use super::model::{CpuModel, CpuSession};
use super::pick::pick;
use crate::error::Result;
use crate::model::generate::{
    accept, check_prompt, finish_text, GenerateOptions, Generation, StopReason, Uniform,
};
use crate::model::Logits;
use crate::tokenizer::Tokenizer;

/// Runs `prompt` after what `session` holds and generates up to `options.max_tokens`
/// tokens, calling `on_text` with each complete piece of text; see
/// [`crate::model::generate::generate_async`] for the contract, which this keeps
/// token for token (each pick draws the next uniform number of the same sequence).
pub fn generate(
    model: &CpuModel,
    tokenizer: &Tokenizer,
    session: &mut CpuSession,
    prompt: &[u32],
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Generation> {
    check_prompt(session.len(), session.capacity(), prompt)?;
    let mut uniform = Uniform::for_sampling(options.sampling);
    let started = web_time::Instant::now();
    let mut logits = model.forward(session, prompt, Logits::Last, &[])?.logits;
    let prefill = started.elapsed();
    let decode_started = web_time::Instant::now();
    let mut decoder = tokenizer.stream_decoder();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let stop = loop {
        let next = pick(&logits, options.sampling, uniform.next())?;
        if let Some(stop) = accept(
            next,
            options,
            &mut decoder,
            &mut tokens,
            &mut text,
            &mut on_text,
        )? {
            break stop;
        }
        if tokens.len() >= options.max_tokens {
            break StopReason::MaxTokens;
        }
        if session.len() >= session.capacity() {
            break StopReason::ContextFull;
        }
        logits = model.forward(session, &[next], Logits::Last, &[])?.logits;
    };
    finish_text(stop, decoder, &mut text, &mut on_text);
    Ok(Generation {
        tokens,
        text,
        stop,
        prefill,
        decode: decode_started.elapsed(),
    })
}
