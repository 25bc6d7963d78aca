//! The judge on the local engine: renders a protocol's prompt, reuses the prefilled
//! template prefix, scores the label continuations for P(unsafe), and streams the
//! critique.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, RwLock};

use super::defense::{defend, injection_suspected, sentence_prefixes};
use super::head::VerdictHead;
use super::{detect_language, Dialogue, JudgeProtocol, Label, Lang, Mode, PromptPart};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::model::generate::{GenerateOptions, Sampling, StopReason};
use crate::model::{Engine, EngineSession, ModelConfig};
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
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub label: Label,
    /// The protocol the judge spoke (`safety-j`, `qwen3guard-gen`, `llama-guard-3-1b`).
    pub protocol: String,
    /// P(unsafe) that decided the label: the verdict head's when one is attached,
    /// otherwise the model's own (`model_p_unsafe`).
    pub p_unsafe: f64,
    /// The threshold `label` was decided with (the head's own when it decided).
    pub threshold: f64,
    /// P(unsafe sequence) / (P(safe sequence) + P(unsafe sequence)) at the label
    /// position, from the model's own probabilities.
    pub model_p_unsafe: f64,
    /// The model's own probability of each label word the protocol allows after the
    /// answer prefix (`Safe`, `Unsafe`, `Controversial`), normalised over them.
    pub label_probs: Vec<LabelProb>,
    /// The categories of harm, for protocols that name them, when the verdict is
    /// unsafe (empty otherwise).
    pub categories: Vec<CategoryScore>,
    /// The verdict head that decided, by name; `None` when the model's own label
    /// probabilities did.
    pub head: Option<String>,
    /// What the injection defence neutralised in the dialogue, as it was written
    /// (`<|im_end|>`, `［Answer］`, `U+200B`), in order; empty when nothing was or
    /// the defence is off.
    pub sanitized: Vec<String>,
    /// Markers, control tokens, role headers or instruction-like text aimed at the
    /// judge appear in the dialogue (computed whether or not the defence is on).
    pub injection_suspected: bool,
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

/// The model's probability of one label word.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LabelProb {
    /// The word as the model writes it (`Controversial`).
    pub word: String,
    /// The label it counts as.
    pub label: Label,
    pub p: f64,
}

/// One category of harm of an unsafe verdict.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify), tsify(missing_as_null))]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CategoryScore {
    /// The code the model writes (`S1`; the name where the format has no codes).
    pub code: String,
    pub name: String,
    /// Whether the model's own continuation after the label names it.
    pub flagged: bool,
    /// The model's probability that it names this category first, normalised over
    /// the protocol's categories; `None` when their tokens cannot be scored apart.
    pub score: Option<f64>,
}

/// The label words with the model's probability of each.
pub(super) fn label_probs(labels: &LabelTokens, probs: &[f64]) -> Vec<LabelProb> {
    labels
        .words
        .iter()
        .zip(probs)
        .map(|(&(word, label), &p)| LabelProb {
            word: word.to_string(),
            label,
            p,
        })
        .collect()
}

/// Most tokens generated after an unsafe label to read the categories a model names.
const CATEGORY_TOKENS: usize = 48;

/// What [`Judge::probe`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The template language used.
    pub lang: Lang,
    /// The model's own P(unsafe) from its label probabilities.
    pub p_unsafe: f64,
    /// The residual stream after each requested layer, at the label position.
    pub hidden: Vec<Vec<f32>>,
    /// How many tokens the verdict prompt has.
    pub prompt_tokens: usize,
}

/// The label scores of a verdict prompt and what continuing from a label needs.
struct LabelScores {
    lang: Lang,
    prompt_tokens: usize,
    cached: usize,
    /// The model's own P(unsafe).
    p_unsafe: f64,
    /// The model's own probability of each label word, in `labels`' order.
    probs: Vec<f64>,
    hidden: Vec<Vec<f32>>,
    labels: LabelTokens,
}

/// The label words a protocol allows after its answer prefix, each tokenized
/// together with the prefix so BPE merges across the boundary are honoured.
pub(super) struct LabelTokens {
    /// Each word and the label it counts as: safe, unsafe, then the protocol's extra
    /// words.
    pub words: Vec<(&'static str, Label)>,
    /// The answer prefix and each word, tokenized together.
    pub ids: Vec<Vec<u32>>,
    /// Tokens all of them share (in the session after scoring).
    pub common: usize,
}

impl LabelTokens {
    /// Each word's ids after the shared part: what is scored.
    pub fn continuations(&self) -> Vec<&[u32]> {
        self.ids.iter().map(|ids| &ids[self.common..]).collect()
    }

    /// The probability of each word (normalised over the words) from the log
    /// probabilities of [`LabelTokens::continuations`], and P(unsafe): the sum over
    /// the words that count as unsafe.
    pub fn probabilities(&self, log_probs: &[f64]) -> (Vec<f64>, f64) {
        let probs = normalise(log_probs);
        let p_unsafe = probs
            .iter()
            .zip(&self.words)
            .filter(|(_, (_, label))| *label == Label::Unsafe)
            .map(|(p, _)| p)
            .sum();
        (probs, p_unsafe)
    }

    /// The index of the likeliest word that counts as `label`.
    pub fn likeliest(&self, probs: &[f64], label: Label) -> usize {
        (0..self.words.len())
            .filter(|&i| self.words[i].1 == label)
            .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
            .expect("a protocol has a word for each label")
    }
}

/// exp(x_i) / Σ exp(x_j), computed without overflow.
fn normalise(log_probs: &[f64]) -> Vec<f64> {
    let top = log_probs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = log_probs.iter().map(|lp| (lp - top).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// The length of the prefix every one of `seqs` shares.
fn shared_prefix(seqs: &[Vec<u32>]) -> usize {
    let first = &seqs[0];
    seqs[1..].iter().fold(first.len(), |n, seq| {
        first
            .iter()
            .zip(seq)
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    })
}

/// Whether, after their shared `common` tokens, one of `seqs` is empty or a prefix of
/// another (they could not be scored apart).
fn ambiguous(seqs: &[Vec<u32>], common: usize) -> bool {
    seqs.iter().enumerate().any(|(i, a)| {
        a.len() == common
            || seqs
                .iter()
                .enumerate()
                .any(|(j, b)| i != j && b.starts_with(a))
    })
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
    /// Whether [`Judge::load`] attaches the verdict head a preset ships (the
    /// model's own label words decide otherwise).
    pub preset_head: bool,
    /// Whether dialogues go through the injection defence ([`defend`]) before
    /// templating: markers and control-token look-alikes escaped, and, when
    /// suspicious sentences were cut, the stripped response scored too with the
    /// higher P(unsafe) kept. The template's own text is never changed.
    pub defense: bool,
    /// Whether a verdict is unsafe whenever injection is suspected, whatever
    /// P(unsafe) says.
    pub suspected_unsafe: bool,
    /// How many earlier sentence ends of the response are scored too, the highest
    /// P(unsafe) kept ([`sentence_prefixes`]): text added after an unsafe sentence
    /// cannot lower the verdict, whatever it says. 0 scores the whole response only;
    /// default [`DEFAULT_SENTENCE_PREFIXES`].
    pub sentence_prefixes: usize,
    /// The protocol [`Judge::load`] speaks (one of [`super::PROTOCOL_NAMES`]);
    /// `None`: the preset's, else the one the model's name suggests
    /// ([`super::protocol_for_model`]), else Safety-J.
    pub protocol: Option<String>,
}

/// How many earlier sentence ends a judge scores by default
/// ([`JudgeOptions::sentence_prefixes`]). On by default because appended text
/// otherwise talks the judge out of unsafe verdicts (README, "Prompt injection");
/// 8 cuts cover every sentence end of most responses.
pub const DEFAULT_SENTENCE_PREFIXES: usize = 8;

impl Default for JudgeOptions {
    fn default() -> Self {
        JudgeOptions {
            threshold: 0.5,
            context: 4096,
            max_critique_tokens: 512,
            preset_head: true,
            defense: true,
            suspected_unsafe: false,
            sentence_prefixes: DEFAULT_SENTENCE_PREFIXES,
            protocol: None,
        }
    }
}

/// A judge model loaded on its engine, ready to evaluate dialogues.
pub struct Judge {
    engine: Engine,
    tokenizer: Tokenizer,
    protocol: Box<dyn JudgeProtocol>,
    pub(super) options: JudgeOptions,
    /// The verdict head that decides labels, when one is attached; swapped through
    /// `&self` (the browser attaches heads it trains while streams hold the judge),
    /// read once per evaluation.
    head: RwLock<Option<Arc<VerdictHead>>>,
    state: Mutex<JudgeState>,
}

/// The judge's KV cache and what it holds.
struct JudgeState {
    session: EngineSession,
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

/// Whether any turn of `dialogue` holds text the injection defence flags.
pub(super) fn dialogue_suspected(dialogue: &Dialogue) -> bool {
    dialogue
        .turns()
        .iter()
        .any(|turn| injection_suspected(&turn.content))
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
    /// A judge from a model on its engine, its tokenizer and the protocol it speaks.
    pub fn new(
        engine: Engine,
        tokenizer: Tokenizer,
        protocol: Box<dyn JudgeProtocol>,
        options: JudgeOptions,
    ) -> Result<Judge> {
        let capacity = options.context.min(engine.config().context);
        let session = engine.new_session(capacity)?;
        Ok(Judge {
            engine,
            tokenizer,
            protocol,
            options,
            head: RwLock::new(None),
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
    /// into the cache on first use), GGUF file or Hugging Face folder, speaking
    /// `options.protocol` (by default the preset's, or the one its name suggests),
    /// on the device `SAFETYJ_DEVICE` names (auto: the GPU when a hardware one
    /// exists, else the CPU). `progress` receives one-line status texts
    /// (downloads, then tensors loaded). Returns the judge and, when a stand-in
    /// preset was named, the notice to show with its verdicts. Native only: the
    /// browser streams a file by URL instead (`crate::web`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        model: &str,
        options: JudgeOptions,
        progress: impl FnMut(&str),
    ) -> Result<(Judge, Option<String>)> {
        Judge::load_on(model, crate::device::Device::from_env()?, options, progress)
    }

    /// [`Judge::load`] on a chosen device; a preset's verdict head is attached unless
    /// `options.preset_head` is false.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_on(
        model: &str,
        device: crate::device::Device,
        options: JudgeOptions,
        progress: impl FnMut(&str),
    ) -> Result<(Judge, Option<String>)> {
        let named = crate::device::open_named(model, device, progress)?;
        let protocol = options.protocol.as_deref().unwrap_or(&named.protocol);
        let protocol = super::protocol_named(protocol)?;
        // A preset's head was trained on its own protocol's features: another
        // protocol's prompt would feed it what it never saw.
        let use_head = options.preset_head && protocol.name() == named.protocol;
        let judge = Judge::new(named.engine, named.tokenizer, protocol, options)?;
        if let (Some((file, bytes)), true) = (named.head, use_head) {
            judge.set_head(Some(VerdictHead::from_bytes(file, bytes)?))?;
        }
        Ok((judge, named.stand_in))
    }

    /// Attaches `head` (checked against this model and protocol) to decide verdicts,
    /// or detaches the current one with `None`.
    pub async fn set_head_async(&self, head: Option<VerdictHead>) -> Result<()> {
        if let Some(head) = &head {
            let fingerprint = self.engine.fingerprint().await?;
            let arch = self.engine.config().arch.gguf_name();
            head.check_base(&fingerprint, arch, self.protocol.name())?;
        }
        // Only an assignment runs under the lock, so a poisoned lock holds a whole value.
        *self.head.write().unwrap_or_else(|p| p.into_inner()) = head.map(Arc::new);
        Ok(())
    }

    /// Blocking form of [`Judge::set_head_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn set_head(&self, head: Option<VerdictHead>) -> Result<()> {
        pollster::block_on(self.set_head_async(head))
    }

    /// The attached verdict head.
    pub fn head(&self) -> Option<Arc<VerdictHead>> {
        self.head.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The GPU context the judge runs on, when its engine is the GPU's.
    pub fn context(&self) -> Option<&Context> {
        self.engine.gpu_context()
    }

    /// The engine that runs the model.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.engine.config()
    }

    /// The protocol the judge speaks.
    pub fn protocol(&self) -> &dyn JudgeProtocol {
        self.protocol.as_ref()
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
    /// (critique mode); return `ControlFlow::Break` to stop it early. Awaits the
    /// engine for each read back (native and web). Holds the judge's state for the
    /// whole evaluation: natively a second caller waits; on the web, callers must not
    /// overlap (the JS API queues them). With a verdict head attached, the head's
    /// P(unsafe) decides and the critique continues from the head's label.
    #[allow(clippy::await_holding_lock)]
    pub async fn evaluate_async(
        &self,
        request: &JudgeRequest,
        mut on_critique: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Verdict> {
        let started = web_time::Instant::now();
        let mode = request.mode;
        let mut state = self.lock_state()?;
        let state = &mut *state;
        let reserve = match mode {
            Mode::Verdict if self.protocol.categories().is_empty() => 16,
            Mode::Verdict => 16 + CATEGORY_TOKENS,
            Mode::Critique => 16 + self.options.max_critique_tokens,
        };
        let head = self.head();
        let head = head.as_deref();
        let layers: Vec<usize> = head.iter().map(|h| h.meta.layer).collect();
        let suspected = dialogue_suspected(&request.dialogue);
        let (dialogue, sanitized, stripped_p) = if self.options.defense {
            let defended = defend(&request.dialogue);
            // The stripped dialogue is scored first, so that the session is left at
            // the judged (neutralised) dialogue's prompt for a critique.
            let stripped_p = match &defended.stripped {
                Some(stripped) => {
                    let scores = self
                        .score_labels(state, stripped, request.lang, mode, reserve, &layers)
                        .await?;
                    Some(self.decide(head, &scores)?.0)
                }
                None => None,
            };
            (defended.dialogue, defended.neutralized, stripped_p)
        } else {
            (request.dialogue.clone(), Vec::new(), None)
        };
        // Shortest first, so that each prefill reuses the last one's cache.
        let mut prefix_p: Option<f64> = None;
        for prefix in sentence_prefixes(&dialogue, self.options.sentence_prefixes) {
            let scores = self
                .score_labels(state, &prefix, request.lang, mode, reserve, &layers)
                .await?;
            let p = self.decide(head, &scores)?.0;
            prefix_p = Some(prefix_p.map_or(p, |best| best.max(p)));
        }
        let scored = self
            .score_labels(state, &dialogue, request.lang, mode, reserve, &layers)
            .await?;
        let (lang, prompt_tokens, cached) = (scored.lang, scored.prompt_tokens, scored.cached);
        let (p_unsafe, threshold) = self.decide(head, &scored)?;
        // Text cut out of the response (suspicious sentences, or everything after a
        // sentence end) can only raise P(unsafe): an appended or inserted
        // instruction does not talk the judge out of an unsafe verdict.
        let p_unsafe = [stripped_p, prefix_p]
            .into_iter()
            .flatten()
            .fold(p_unsafe, f64::max);
        let base = state.session.len();
        let answer = self.protocol.answer_prefix(lang);
        let label = if p_unsafe >= threshold || (suspected && self.options.suspected_unsafe) {
            Label::Unsafe
        } else {
            Label::Safe
        };
        let time_to_verdict = started.elapsed();

        // Continue from the likeliest word of the chosen label: its remaining tokens
        // go in as the model's own answer, then the analysis (critique mode) or the
        // category line (verdict mode, protocols that name categories) is generated.
        let labels = &scored.labels;
        let chosen = labels.likeliest(&scored.probs, label);
        let mut output = format!("{answer}{}", labels.words[chosen].0);
        let category_scores = match self.protocol.category_prefix(label) {
            Some(prefix) if !self.protocol.categories().is_empty() => {
                state.session.truncate(base)?;
                Some(
                    self.score_categories(state, labels, chosen, &output, prefix)
                        .await?,
                )
            }
            _ => None,
        };
        let continue_for = match mode {
            Mode::Critique => Some(self.options.max_critique_tokens),
            Mode::Verdict if category_scores.is_some() => Some(CATEGORY_TOKENS),
            Mode::Verdict => None,
        };
        let generation = match continue_for {
            None => None,
            Some(max_tokens) => {
                state.session.truncate(base)?;
                let options = greedy_until_end(&self.tokenizer, max_tokens);
                let on_text = |text: &str| match mode {
                    Mode::Critique => on_critique(text),
                    Mode::Verdict => ControlFlow::Continue(()),
                };
                let generation = self
                    .engine
                    .generate(
                        &mut state.session,
                        &self.tokenizer,
                        &labels.ids[chosen][labels.common..],
                        &options,
                        on_text,
                    )
                    .await?;
                output.push_str(&generation.text);
                Some(generation)
            }
        };
        let (critique, critique_stop) = match (mode, generation) {
            (Mode::Critique, Some(generation)) => {
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
            _ => (None, None),
        };
        let categories = match category_scores {
            Some(scores) => {
                let named = self.protocol.parse_categories(&output);
                self.protocol
                    .categories()
                    .iter()
                    .zip(scores)
                    .map(|(category, score)| CategoryScore {
                        code: category.code.to_string(),
                        name: category.name.to_string(),
                        flagged: named.contains(category),
                        score,
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(Verdict {
            label,
            protocol: self.protocol.name().to_string(),
            output,
            p_unsafe,
            threshold,
            model_p_unsafe: scored.p_unsafe,
            label_probs: label_probs(labels, &scored.probs),
            categories,
            head: head.map(|h| h.meta.name.clone()),
            sanitized,
            injection_suspected: suspected,
            lang,
            mode,
            critique,
            critique_stop,
            prompt_tokens,
            cached_tokens: cached,
            time_to_verdict_ms: time_to_verdict.as_secs_f64() * 1e3,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The model's probability of naming each of the protocol's categories first
    /// after `answer` (the answer prefix and the chosen label word, whose shared
    /// tokens the session holds) and the category `prefix`, normalised over the
    /// categories; each `None` when their tokens cannot be scored apart. Leaves the
    /// session longer than it found it: the caller truncates.
    async fn score_categories(
        &self,
        state: &mut JudgeState,
        labels: &LabelTokens,
        chosen: usize,
        answer: &str,
        prefix: &str,
    ) -> Result<Vec<Option<f64>>> {
        let categories = self.protocol.categories();
        let ids = categories
            .iter()
            .map(|c| {
                self.tokenizer
                    .encode_text(&format!("{answer}{prefix}{}", c.code))
            })
            .collect::<Result<Vec<_>>>()?;
        let common = shared_prefix(&ids);
        let held = &labels.ids[chosen][..labels.common];
        // The session holds the label words' shared tokens: the categories must
        // start with them to be scored from there.
        if common <= held.len() || !ids[0].starts_with(held) || ambiguous(&ids, common) {
            return Ok(vec![None; categories.len()]);
        }
        let continuations: Vec<&[u32]> = ids.iter().map(|c| &c[common..]).collect();
        let scored = self
            .engine
            .score(
                &mut state.session,
                &ids[0][held.len()..common],
                &continuations,
                &[],
            )
            .await?;
        Ok(normalise(&scored.log_probs).into_iter().map(Some).collect())
    }

    /// P(unsafe) and the threshold that decide a label from `scores`: `head`'s
    /// when one is attached, otherwise the model's own.
    fn decide(&self, head: Option<&VerdictHead>, scores: &LabelScores) -> Result<(f64, f64)> {
        Ok(match head {
            Some(head) => (head.p_unsafe(&scores.hidden[0])?, head.meta.threshold),
            None => (scores.p_unsafe, self.options.threshold),
        })
    }

    fn lock_state(&self) -> Result<std::sync::MutexGuard<'_, JudgeState>> {
        self.state
            .lock()
            .map_err(|_| Error::InvalidInput("the judge panicked earlier".into()))
    }

    /// The protocol's label words after its answer prefix, tokenized together.
    /// Fails when one word's tokens are a prefix of another's (they could not be
    /// scored apart).
    pub(super) fn label_tokens(&self, lang: Lang) -> Result<LabelTokens> {
        let answer = self.protocol.answer_prefix(lang);
        let mut words = vec![
            (self.protocol.label_text(lang, Label::Safe), Label::Safe),
            (self.protocol.label_text(lang, Label::Unsafe), Label::Unsafe),
        ];
        words.extend(self.protocol.extra_labels(lang));
        let ids = words
            .iter()
            .map(|(word, _)| self.tokenizer.encode_text(&format!("{answer}{word}")))
            .collect::<Result<Vec<_>>>()?;
        let common = shared_prefix(&ids);
        if ambiguous(&ids, common) {
            return Err(Error::Unsupported(format!(
                "this tokenizer encodes one label as a prefix of another ({ids:?}); they cannot be scored apart"
            )));
        }
        Ok(LabelTokens { words, ids, common })
    }

    /// Renders the verdict prompt, reuses the cached prefix, and scores both labels
    /// (and captures the residual stream at `layers`) at the label position. The
    /// session is left at the prompt plus the answer's common prefix; `reserve`
    /// positions must stay free after the prompt.
    async fn score_labels(
        &self,
        state: &mut JudgeState,
        dialogue: &Dialogue,
        lang: Option<Lang>,
        mode: Mode,
        reserve: usize,
        layers: &[usize],
    ) -> Result<LabelScores> {
        let lang = lang.unwrap_or_else(|| detect_language(&dialogue.all_text()));
        let prompt = self.protocol.prompt(dialogue, lang, mode);
        let ids = self.prompt_tokens(&prompt.parts)?;
        let capacity = state.session.capacity();
        if ids.len() + reserve > capacity {
            return Err(Error::InvalidInput(format!(
                "the dialogue needs {} prompt tokens plus {reserve} for the answer, more than the judge's context of {capacity} \
                 tokens; shorten the dialogue or raise the context",
                ids.len()
            )));
        }

        // Reuse what the cache shares with this prompt (at least the template).
        let cached = state.reuse_prefix(&ids)?;

        // Teacher-force the labels' common part after the prompt.
        let labels = self.label_tokens(lang)?;
        let mut first: Vec<u32> = ids[cached..].to_vec();
        first.extend_from_slice(&labels.ids[0][..labels.common]);
        let scored = self
            .engine
            .score(&mut state.session, &first, &labels.continuations(), layers)
            .await?;
        state.cached = ids.clone();
        let (probs, p_unsafe) = labels.probabilities(&scored.log_probs);
        Ok(LabelScores {
            lang,
            prompt_tokens: ids.len(),
            cached,
            p_unsafe,
            probs,
            hidden: scored.hidden,
            labels,
        })
    }

    /// Blocking form of [`Judge::probe_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn probe(
        &self,
        dialogue: &Dialogue,
        lang: Option<Lang>,
        layers: &[usize],
    ) -> Result<Probe> {
        pollster::block_on(self.probe_async(dialogue, lang, layers))
    }

    /// What a verdict head reads: the verdict prompt's label scores and the residual
    /// stream after each of `layers` blocks at the label position, from one pass
    /// (the features heads are trained on and applied to).
    #[allow(clippy::await_holding_lock)]
    pub async fn probe_async(
        &self,
        dialogue: &Dialogue,
        lang: Option<Lang>,
        layers: &[usize],
    ) -> Result<Probe> {
        let mut state = self.lock_state()?;
        let scored = self
            .score_labels(&mut state, dialogue, lang, Mode::Verdict, 16, layers)
            .await?;
        Ok(Probe {
            lang: scored.lang,
            p_unsafe: scored.p_unsafe,
            hidden: scored.hidden,
            prompt_tokens: scored.prompt_tokens,
        })
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
    pub async fn complete_prompt_async(
        &self,
        parts: &[PromptPart],
        max_tokens: usize,
    ) -> Result<String> {
        self.sample_prompt_async(parts, max_tokens, Sampling::Greedy)
            .await
    }

    /// Blocking form of [`Judge::sample_prompt_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sample_prompt(
        &self,
        parts: &[PromptPart],
        max_tokens: usize,
        sampling: Sampling,
    ) -> Result<String> {
        pollster::block_on(self.sample_prompt_async(parts, max_tokens, sampling))
    }

    /// Completion of any prompt with `sampling` (seeded temperature sampling draws the
    /// several critiques of preference learning) until the end of the turn or
    /// `max_tokens`, reusing the prefix the cache shares with it.
    #[allow(clippy::await_holding_lock)]
    pub async fn sample_prompt_async(
        &self,
        parts: &[PromptPart],
        max_tokens: usize,
        sampling: Sampling,
    ) -> Result<String> {
        let ids = self.prompt_tokens(parts)?;
        let mut state = self.lock_state()?;
        let cached = state.reuse_prefix(&ids)?;
        let room = state.session.capacity().saturating_sub(ids.len());
        let options = GenerateOptions {
            sampling,
            ..greedy_until_end(&self.tokenizer, max_tokens.min(room))
        };
        let generation = self
            .engine
            .generate(
                &mut state.session,
                &self.tokenizer,
                &ids[cached..],
                &options,
                |_| ControlFlow::Continue(()),
            )
            .await?;
        state.cached = ids;
        Ok(generation.text)
    }

    /// Blocking form of [`Judge::score_completions_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn score_completions(
        &self,
        parts: &[PromptPart],
        completions: &[&str],
    ) -> Result<Vec<f64>> {
        pollster::block_on(self.score_completions_async(parts, completions))
    }

    /// The log-probability (natural log, summed over tokens) of each of `completions`
    /// as the model's answer to the prompt `parts`: each completion is tokenized on
    /// its own as plain text (it follows the prompt's control tokens) and scored with
    /// full-vocabulary log-probabilities after the prompt. What preference training
    /// moves: its chosen completions up, its rejected ones down.
    #[allow(clippy::await_holding_lock)]
    pub async fn score_completions_async(
        &self,
        parts: &[PromptPart],
        completions: &[&str],
    ) -> Result<Vec<f64>> {
        let ids = self.prompt_tokens(parts)?;
        let continuations = completions
            .iter()
            .map(|c| {
                let ids = self.tokenizer.encode_text(c)?;
                if ids.is_empty() {
                    return Err(Error::InvalidInput(
                        "an empty completion has no log-probability to score".into(),
                    ));
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut state = self.lock_state()?;
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        let capacity = state.session.capacity();
        if ids.len() + longest > capacity {
            return Err(Error::InvalidInput(format!(
                "the prompt ({} tokens) and its longest completion ({longest} tokens) do not fit the judge's \
                 context of {capacity} tokens",
                ids.len()
            )));
        }
        let cached = state.reuse_prefix(&ids)?;
        let refs: Vec<&[u32]> = continuations.iter().map(Vec::as_slice).collect();
        let scored = self
            .engine
            .score(&mut state.session, &ids[cached..], &refs, &[])
            .await?;
        state.cached = ids;
        Ok(scored.log_probs)
    }
}
