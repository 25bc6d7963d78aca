//! The judge on the local engine: renders a protocol's prompt, reuses the prefilled
//! template prefix, scores the label continuations for P(unsafe), and streams the
//! critique.

use std::ops::ControlFlow;
use std::sync::Mutex;

use super::{detect_language, Dialogue, JudgeProtocol, Label, Lang, Mode, PromptPart};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::model::generate::{self, GenerateOptions, Sampling, StopReason};
use crate::model::{Logits, Model, Session};
use crate::ops::{self, Elem, Tensor};
use crate::tokenizer::Tokenizer;

/// What to judge and how.
#[derive(Debug, Clone)]
pub struct JudgeRequest {
    pub dialogue: Dialogue,
    /// The template language; `None` picks it from the dialogue's text.
    pub lang: Option<Lang>,
    pub mode: Mode,
}

/// The judge's answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub label: Label,
    /// P(unsafe sequence) / (P(safe sequence) + P(unsafe sequence)) at the label
    /// position, from the model's own probabilities.
    pub p_unsafe: f64,
    /// The threshold `label` was decided with.
    pub threshold: f64,
    pub lang: Lang,
    pub mode: Mode,
    /// The answer as the model gave it: the fixed prefix, the label, and in
    /// critique mode everything generated after it (`[Answer] unsafe\n[Analysis] …`).
    pub output: String,
    /// The analysis text (critique mode only).
    pub critique: Option<String>,
    /// Why the critique ended (critique mode only).
    pub critique_stop: Option<StopReason>,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    pub time_to_verdict_ms: f64,
    pub total_ms: f64,
}

/// Settings of a [`Judge`].
#[derive(Debug, Clone)]
pub struct JudgeOptions {
    /// P(unsafe) at or above which the verdict is unsafe.
    pub threshold: f64,
    /// Positions of the KV cache (prompt plus critique); at most the model's context.
    pub context: usize,
    /// Most tokens of a critique.
    pub max_critique_tokens: usize,
}

impl Default for JudgeOptions {
    fn default() -> Self {
        JudgeOptions {
            threshold: 0.5,
            context: 4096,
            max_critique_tokens: 512,
        }
    }
}

/// A judge model loaded on the GPU, ready to evaluate dialogues.
pub struct Judge {
    ctx: Context,
    model: Model,
    tokenizer: Tokenizer,
    protocol: Box<dyn JudgeProtocol>,
    options: JudgeOptions,
    state: Mutex<JudgeState>,
}

/// The judge's KV cache and what it holds.
struct JudgeState {
    session: Session,
    /// The tokens whose keys and values occupy the session's first positions. A new
    /// prompt reuses the longest prefix it shares with them (the template of a
    /// verdict, the instructions of an evaluator call) and prefills only the rest.
    cached: Vec<u32>,
}

impl JudgeState {
    /// Keeps the longest prefix of the cache that `ids` starts with, leaving at least
    /// one token of `ids` to run, and returns its length.
    fn reuse_prefix(&mut self, ids: &[u32]) -> Result<usize> {
        let shared = self
            .cached
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len().saturating_sub(1));
        self.cached.truncate(shared);
        self.session.truncate(shared)?;
        Ok(shared)
    }
}

/// Greedy decoding of at most `max_tokens` that ends with the turn: at the
/// tokenizer's EOS or ChatML's `<|im_end|>`, as a token or as text.
fn greedy_until_end(tokenizer: &Tokenizer, max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        sampling: Sampling::Greedy,
        stop_tokens: stop_tokens(tokenizer),
        stop_strings: vec!["<|im_end|>".into()],
    }
}

/// Token ids that end a turn: the tokenizer's EOS and the usual end-of-turn tokens.
fn stop_tokens(tokenizer: &Tokenizer) -> Vec<u32> {
    let mut stops: Vec<u32> = tokenizer.eos_id().into_iter().collect();
    stops.extend(
        ["<|im_end|>", "<|endoftext|>", "</s>"]
            .iter()
            .filter_map(|t| tokenizer.token_id(t)),
    );
    stops.sort_unstable();
    stops.dedup();
    stops
}

impl Judge {
    /// A judge from a loaded model, its tokenizer and the protocol it speaks.
    pub fn new(
        ctx: Context,
        model: Model,
        tokenizer: Tokenizer,
        protocol: Box<dyn JudgeProtocol>,
        options: JudgeOptions,
    ) -> Result<Judge> {
        let capacity = options.context.min(model.config.context);
        let session = model.new_session(&ctx, capacity)?;
        Ok(Judge {
            ctx,
            model,
            tokenizer,
            protocol,
            options,
            state: Mutex::new(JudgeState {
                session,
                cached: Vec::new(),
            }),
        })
    }

    /// Forgets what the KV cache holds, so that the next prompt is prefilled whole
    /// (a cold verdict, as after loading).
    pub fn clear_cache(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.cached.clear();
        state.session.truncate(0)
    }

    /// Loads a judge by preset name (`safety-j-v5`, `qwen2.5-coder-0.5b`, …; fetched
    /// into the cache on first use), GGUF file or Hugging Face folder, speaking the
    /// Safety-J protocol. `progress` receives one-line status texts (downloads, then
    /// tensors loaded). Returns the judge and, when a stand-in preset was named, the
    /// notice to show with its verdicts. Native only: the browser streams a file
    /// by URL instead (`crate::web`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        model: &str,
        options: JudgeOptions,
        progress: impl FnMut(&str),
    ) -> Result<(Judge, Option<String>)> {
        let ctx = Context::new_blocking()?;
        let (model, tokenizer, stand_in) = crate::model::open::open_named(&ctx, model, progress)?;
        let judge = Judge::new(
            ctx,
            model,
            tokenizer,
            Box::new(super::safety_j::SafetyJ),
            options,
        )?;
        Ok((judge, stand_in))
    }

    /// The GPU context the judge runs on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The model's configuration.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of a prompt. Control tokens (`<|im_start|>`) are recognised only in
    /// the template's own text; dialogue text is encoded with special-token parsing
    /// off, so it can never become a control token. Text between control tokens is
    /// encoded as one string, exactly as the reference tokenizes the whole prompt.
    pub fn prompt_tokens(&self, parts: &[PromptPart]) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut text = String::new();
        for part in parts {
            match part {
                PromptPart::Dialogue(s) => text.push_str(s),
                PromptPart::Template(s) => {
                    let mut rest = s.as_str();
                    while let Some((before, id, after)) = self.next_control_token(rest) {
                        text.push_str(before);
                        if !text.is_empty() {
                            ids.extend(self.tokenizer.encode_text(&text)?);
                            text.clear();
                        }
                        ids.push(id);
                        rest = after;
                    }
                    text.push_str(rest);
                }
            }
        }
        if !text.is_empty() {
            ids.extend(self.tokenizer.encode_text(&text)?);
        }
        Ok(ids)
    }

    /// The first `<|…|>` control token of the vocabulary in `s`, with the text around it.
    fn next_control_token<'a>(&self, s: &'a str) -> Option<(&'a str, u32, &'a str)> {
        let mut from = 0;
        while let Some(start) = s[from..].find("<|").map(|i| i + from) {
            let end = s[start..].find("|>").map(|i| start + i + 2)?;
            let candidate = &s[start..end];
            if let Some(id) = self.tokenizer.token_id(candidate) {
                return Some((&s[..start], id, &s[end..]));
            }
            from = start + 2;
        }
        None
    }

    /// Blocking form of [`Judge::evaluate_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn evaluate(
        &self,
        request: &JudgeRequest,
        on_critique: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Verdict> {
        pollster::block_on(self.evaluate_async(request, on_critique))
    }

    /// Judges one dialogue. `on_critique` receives the analysis text as it streams
    /// (critique mode); return `ControlFlow::Break` to stop it early. Awaits the GPU
    /// for each read back (native and web). Holds the judge's state for the whole
    /// evaluation: natively a second caller waits; on the web, callers must not
    /// overlap (the JS API queues them).
    #[allow(clippy::await_holding_lock)]
    pub async fn evaluate_async(
        &self,
        request: &JudgeRequest,
        mut on_critique: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Verdict> {
        let started = web_time::Instant::now();
        let lang = request
            .lang
            .unwrap_or_else(|| detect_language(&request.dialogue.all_text()));
        let mode = request.mode;
        let prompt = self.protocol.prompt(&request.dialogue, lang, mode);
        let ids = self.prompt_tokens(&prompt.parts)?;

        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::InvalidInput("the judge panicked earlier".into()))?;
        let state = &mut *state;
        let capacity = state.session.capacity();
        let reserve = match mode {
            Mode::Verdict => 16,
            Mode::Critique => 16 + self.options.max_critique_tokens,
        };
        if ids.len() + reserve > capacity {
            return Err(Error::InvalidInput(format!(
                "the dialogue needs {} prompt tokens plus {reserve} for the answer, more than the judge's context of {capacity} \
                 tokens; shorten the dialogue or raise the context",
                ids.len()
            )));
        }

        // Reuse what the cache shares with this prompt (at least the template).
        let cached = state.reuse_prefix(&ids)?;

        // The answer's fixed prefix and the two labels, tokenized together so BPE
        // merges across the boundary are honoured; teacher-force their common part.
        let answer = self.protocol.answer_prefix(lang);
        let safe_ids = self.tokenizer.encode_text(&format!(
            "{answer}{}",
            self.protocol.label_text(lang, Label::Safe)
        ))?;
        let unsafe_ids = self.tokenizer.encode_text(&format!(
            "{answer}{}",
            self.protocol.label_text(lang, Label::Unsafe)
        ))?;
        let common = safe_ids
            .iter()
            .zip(&unsafe_ids)
            .take_while(|(a, b)| a == b)
            .count();
        if common == safe_ids.len() || common == unsafe_ids.len() {
            return Err(Error::Unsupported(format!(
                "this tokenizer encodes one label as a prefix of the other ({safe_ids:?} / {unsafe_ids:?}); they cannot be scored apart"
            )));
        }
        let mut first: Vec<u32> = ids[cached..].to_vec();
        first.extend_from_slice(&safe_ids[..common]);
        let (safe_rest, unsafe_rest) = (&safe_ids[common..], &unsafe_ids[common..]);
        // One submit runs the prompt, scores both labels' first tokens and copies
        // their log-probabilities back.
        let ctx = &self.ctx;
        let first_ids =
            Tensor::from_u32(ctx, "label tokens", &[2], &[safe_rest[0], unsafe_rest[0]])?;
        let first_log_probs = Tensor::new(ctx, "label log-probs", &[2], Elem::F32)?;
        let first_probs = Tensor::new(ctx, "label probs", &[2], Elem::F32)?;
        let readback = self.model.forward_then(
            ctx,
            &mut state.session,
            &first,
            Logits::Last,
            |encoder, logits| {
                ops::token_softmax::encode(
                    ctx,
                    encoder,
                    logits,
                    0,
                    &first_ids,
                    &first_log_probs,
                    &first_probs,
                )?;
                first_log_probs.record_read(ctx, encoder)
            },
        )?;
        // Scoring and the critique only write positions after the prompt.
        state.cached = ids.clone();
        let base = state.session.len();
        let first_lp: Vec<f32> =
            bytemuck::pod_collect_to_vec(&ctx.finish_readback(readback).await?);
        let lp_safe = first_lp[0] as f64
            + self
                .continuation_logprob(&mut state.session, safe_rest, base)
                .await?;
        let lp_unsafe = first_lp[1] as f64
            + self
                .continuation_logprob(&mut state.session, unsafe_rest, base)
                .await?;
        // P(unsafe) = e^u / (e^s + e^u), computed without overflow.
        let p_unsafe = 1.0 / (1.0 + (lp_safe - lp_unsafe).exp());
        let label = if p_unsafe >= self.options.threshold {
            Label::Unsafe
        } else {
            Label::Safe
        };
        let time_to_verdict = started.elapsed();

        let mut output = format!("{answer}{}", self.protocol.label_text(lang, label));
        let (critique, critique_stop) = match mode {
            Mode::Verdict => (None, None),
            Mode::Critique => {
                // Continue from the chosen label: its remaining tokens go in as the
                // model's own answer, then the analysis is generated.
                let chosen = if label == Label::Safe {
                    &safe_ids
                } else {
                    &unsafe_ids
                };
                state.session.truncate(base)?;
                let options = greedy_until_end(&self.tokenizer, self.options.max_critique_tokens);
                let generation = generate::generate_async(
                    &self.ctx,
                    &self.model,
                    &self.tokenizer,
                    &mut state.session,
                    &chosen[common..],
                    &options,
                    &mut on_critique,
                )
                .await?;
                output.push_str(&generation.text);
                let parsed = self.protocol.parse(&output, lang);
                (
                    Some(
                        parsed
                            .analysis
                            .unwrap_or_else(|| generation.text.trim().to_string()),
                    ),
                    Some(generation.stop),
                )
            }
        };
        Ok(Verdict {
            label,
            output,
            p_unsafe,
            threshold: self.options.threshold,
            lang,
            mode,
            critique,
            critique_stop,
            prompt_tokens: ids.len(),
            cached_tokens: cached,
            time_to_verdict_ms: time_to_verdict.as_secs_f64() * 1e3,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// log P(`label[1..]` | the session up to `base`, then `label[0]`): 0 for a
    /// one-token label. The session is left at `base`.
    async fn continuation_logprob(
        &self,
        session: &mut Session,
        label: &[u32],
        base: usize,
    ) -> Result<f64> {
        if label.len() < 2 {
            return Ok(0.0);
        }
        let logits =
            self.model
                .forward(&self.ctx, session, &label[..label.len() - 1], Logits::All)?;
        let mut total = 0.0;
        for (row, &token) in label[1..].iter().enumerate() {
            total += self.token_logprob(&logits, row, token).await?;
        }
        session.truncate(base)?;
        Ok(total)
    }

    /// log-softmax of row `row` of `logits` at `token`, computed on the GPU.
    async fn token_logprob(&self, logits: &Tensor, row: usize, token: u32) -> Result<f64> {
        let ctx = &self.ctx;
        let ids = Tensor::from_u32(ctx, "label token", &[1], &[token])?;
        let log_probs = Tensor::new(ctx, "label log-prob", &[1], Elem::F32)?;
        let probs = Tensor::new(ctx, "label prob", &[1], Elem::F32)?;
        let mut enc = ctx.encoder();
        ops::token_softmax::encode(ctx, &mut enc, logits, row, &ids, &log_probs, &probs)?;
        ctx.submit("scoring a label token", enc)?;
        Ok(log_probs.read_f32_async(ctx).await?[0] as f64)
    }

    /// Free greedy decoding of the prompt, as the reference code judged: the raw
    /// output, for benchmark parity and to see how often a model breaks the format
    /// (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn free_decode(
        &self,
        dialogue: &Dialogue,
        lang: Lang,
        mode: Mode,
        max_tokens: usize,
    ) -> Result<String> {
        self.complete_prompt(
            &self.protocol.prompt(dialogue, lang, mode).parts,
            max_tokens,
        )
    }

    /// Blocking form of [`Judge::complete_prompt_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn complete_prompt(&self, parts: &[PromptPart], max_tokens: usize) -> Result<String> {
        pollster::block_on(self.complete_prompt_async(parts, max_tokens))
    }

    /// Greedy completion of any prompt (evaluator calls, free decoding) until the
    /// end of the turn or `max_tokens`, reusing the prefix the cache shares with it.
    #[allow(clippy::await_holding_lock)]
    pub async fn complete_prompt_async(
        &self,
        parts: &[PromptPart],
        max_tokens: usize,
    ) -> Result<String> {
        let ids = self.prompt_tokens(parts)?;
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::InvalidInput("the judge panicked earlier".into()))?;
        let cached = state.reuse_prefix(&ids)?;
        let room = state.session.capacity().saturating_sub(ids.len());
        let options = greedy_until_end(&self.tokenizer, max_tokens.min(room));
        let generation = generate::generate_async(
            &self.ctx,
            &self.model,
            &self.tokenizer,
            &mut state.session,
            &ids[cached..],
            &options,
            |_| ControlFlow::Continue(()),
        )
        .await?;
        state.cached = ids;
        Ok(generation.text)
    }
}
