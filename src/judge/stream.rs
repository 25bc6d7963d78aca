//! Moderating a response while it is being written: the dialogue's fixed part is
//! prefilled once into a session of the stream's own; text is appended as it
//! arrives; a check runs the protocol's closing text and answer prefix after the
//! response so far, scores the labels as a verdict does, and rolls the session back
//! to the end of the response's stable tokens. A check costs the closing text plus
//! the response tokens not yet in the session, never the whole response again.
//!
//! Token ids equal the one-shot tokenization of the whole prompt. Text is committed
//! to the cache only up to a *stable boundary*, a position no later text can move a
//! pre-tokenizer split across: before a space that follows a non-space (no piece of
//! the GPT-2, Llama 3 or Qwen2 split patterns, nor a SentencePiece piece, holds a
//! non-space followed by a space), or between an ASCII or CJK letter or digit and
//! ASCII or CJK punctuation. The text after the last boundary (the last pre-token
//! piece and anything that could still merge with it) stays pending and is
//! re-tokenized with each chunk; each check feeds it and rolls it back.

use std::ops::Deref;

use super::defense::injection_suspected;
use super::engine::{label_probs, Judge, LabelProb, LabelTokens, Verdict};
use super::{detect_language, Dialogue, Label, Lang, Mode, PromptPart};
use crate::error::{Error, Result};
use crate::model::EngineSession;

/// How a [`ResponseStream`] checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamOptions {
    /// A check runs once the response has grown by this many tokens since the last
    /// one (and always at [`ResponseStream::finish`]); at least 1.
    pub check_every: usize,
    /// Stop the stream at the first check whose P(unsafe) reaches this.
    pub stop_at: Option<f64>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            check_every: 16,
            stop_at: None,
        }
    }
}

/// One check of a response stream: the verdict on the response so far, and what it
/// cost.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamCheck {
    /// P(unsafe) that decides: the verdict head's when one is attached, otherwise the
    /// model's own.
    pub p_unsafe: f64,
    pub label: Label,
    /// The threshold `label` was decided with.
    pub threshold: f64,
    /// The model's own P(unsafe) from its label probabilities.
    pub model_p_unsafe: f64,
    /// The model's own probability of each label word.
    pub label_probs: Vec<LabelProb>,
    /// Prompt tokens the response adds to the dialogue's fixed part so far.
    pub response_tokens: usize,
    /// Prompt tokens judged (the whole prompt up to the assistant's answer).
    pub prompt_tokens: usize,
    /// Positions this check found in the session (the fixed part and the response's
    /// stable tokens from earlier checks).
    pub reused_tokens: usize,
    /// Tokens this check ran through the model: `new_tokens` + `suffix_tokens`.
    pub prefilled_tokens: usize,
    /// Response tokens this check ran: those added since the last check plus that
    /// check's pending tail.
    pub new_tokens: usize,
    /// The closing template text and the answer prefix.
    pub suffix_tokens: usize,
    /// Of `new_tokens`, those after the last stable boundary: rolled back with the
    /// suffix, to be run again by the next check.
    pub pending_tokens: usize,
    /// True when P(unsafe) reached [`StreamOptions::stop_at`]: the stream has stopped.
    pub stopped: bool,
    /// Wall time of the check.
    pub ms: f64,
}

/// A response being moderated as it is written; see [`Judge::moderate_stream`].
///
/// The stream owns a KV session of its own (the judge's context size), so the judge
/// stays free: a concurrent `evaluate` on the same judge neither waits for the stream
/// nor sees its tokens, and the judge's prefix cache is untouched. `J` is how the
/// stream holds the judge: borrowed (`&Judge`, from [`Judge::moderate_stream`]) or
/// shared (`Rc<Judge>`, `Arc<Judge>`, from [`ResponseStream::start`]); either way the
/// verdict head cannot change while the stream lives.
pub struct ResponseStream<J: Deref<Target = Judge>> {
    judge: J,
    options: StreamOptions,
    lang: Lang,
    session: EngineSession,
    /// The ids in `session`, in order.
    fed: Vec<u32>,
    /// Stable ids not yet in the session (the next check runs them first).
    ready: Vec<u32>,
    /// The fixed part's text after its last stable boundary, until the response
    /// commits past it.
    head: Vec<PromptPart>,
    /// Response text after the last stable boundary.
    text: String,
    /// Every turn's text as given plus the response pushed so far, for the
    /// injection flag.
    seen: String,
    /// The last committed character, which `head`/`text` follow in the prompt's
    /// text (`None` when nothing before them shares their tokenization).
    before: Option<char>,
    /// Bytes of an unfinished UTF-8 character from [`ResponseStream::push_bytes`].
    partial: Vec<u8>,
    /// The template after the response.
    closing: Vec<PromptPart>,
    /// The answer prefix and each label word tokenized together.
    labels: LabelTokens,
    /// Tokens of the fixed part tokenized alone (what `response_tokens` counts from).
    fixed_tokens: usize,
    setup_tokens: usize,
    next_check: usize,
    /// Text arrived since the last check.
    unchecked: bool,
    last: Option<StreamCheck>,
    stopped: Option<StreamCheck>,
}

/// Candidate cuts of the fixed part tried, latest first, before prefilling it whole.
const FIXED_CUT_TRIES: usize = 8;

/// Whether no pre-token piece can span `prev` followed by `next`, whatever follows.
fn is_stable_boundary(prev: char, next: char) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || is_cjk(c);
    let punct = |c: char| c.is_ascii_punctuation() || is_cjk_punctuation(c);
    (next == ' ' && !prev.is_whitespace()) || (word(prev) && punct(next))
}

/// CJK ideographs, kana and Hangul syllables: letters to every split pattern.
fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{3041}'..='\u{3096}' | '\u{30A1}'..='\u{30FA}' | '\u{AC00}'..='\u{D7A3}')
}

/// CJK and full-width punctuation (neither letters, digits nor spaces).
fn is_cjk_punctuation(c: char) -> bool {
    matches!(c, '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}' | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{201C}' | '\u{201D}' | '\u{2018}' | '\u{2019}' | '\u{2026}')
}

/// The byte offset of the last stable boundary in `text` after its first character.
fn last_boundary(text: &str) -> Option<usize> {
    let mut found = None;
    let mut chars = text.char_indices().peekable();
    while let Some((_, prev)) = chars.next() {
        if let Some(&(at, next)) = chars.peek() {
            if is_stable_boundary(prev, next) {
                found = Some(at);
            }
        }
    }
    found
}

/// Every stable boundary of the concatenated `parts`, latest first, with the
/// character before it.
fn boundaries(parts: &[PromptPart]) -> Vec<(usize, char)> {
    let text: String = parts.iter().map(part_text).collect();
    let mut found: Vec<(usize, char)> = text
        .char_indices()
        .zip(text.char_indices().skip(1))
        .filter(|&((_, prev), (_, next))| is_stable_boundary(prev, next))
        .map(|((_, prev), (at, _))| (at, prev))
        .collect();
    found.reverse();
    found
}

fn part_text(part: &PromptPart) -> &str {
    match part {
        PromptPart::Template(s) | PromptPart::Dialogue(s) => s,
    }
}

/// `parts` split at byte `at` of their concatenated text, each side keeping the
/// kinds of the parts it holds.
fn split_parts(parts: &[PromptPart], at: usize) -> (Vec<PromptPart>, Vec<PromptPart>) {
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let mut offset = 0;
    for part in parts {
        let text = part_text(part);
        let cut = at.saturating_sub(offset).min(text.len());
        let make = |s: &str| match part {
            PromptPart::Template(_) => PromptPart::Template(s.to_string()),
            PromptPart::Dialogue(_) => PromptPart::Dialogue(s.to_string()),
        };
        if cut > 0 {
            left.push(make(&text[..cut]));
        }
        if cut < text.len() {
            right.push(make(&text[cut..]));
        }
        offset += text.len();
    }
    (left, right)
}

impl Judge {
    /// Blocking form of [`Judge::moderate_stream_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn moderate_stream(
        &self,
        dialogue: &Dialogue,
        lang: Option<Lang>,
        options: StreamOptions,
    ) -> Result<ResponseStream<&Judge>> {
        pollster::block_on(self.moderate_stream_async(dialogue, lang, options))
    }

    /// Starts moderating the last turn of `dialogue` (B's response, usually empty so
    /// far) as more of it arrives; see [`ResponseStream::start`].
    pub async fn moderate_stream_async(
        &self,
        dialogue: &Dialogue,
        lang: Option<Lang>,
        options: StreamOptions,
    ) -> Result<ResponseStream<&Judge>> {
        ResponseStream::start(self, dialogue, lang, options).await
    }
}

impl<J: Deref<Target = Judge>> ResponseStream<J> {
    /// Starts moderating the last turn of `dialogue` (B's response, usually empty so
    /// far) as more of it arrives, holding the judge as `judge`. `lang` `None`
    /// detects the template language from the dialogue as given. Prefills the
    /// dialogue's fixed part into a session of the stream's own; fails when the
    /// tokenizer merges text across the boundaries streaming commits at.
    pub async fn start(
        judge: J,
        dialogue: &Dialogue,
        lang: Option<Lang>,
        options: StreamOptions,
    ) -> Result<ResponseStream<J>> {
        if options.check_every == 0 {
            return Err(Error::InvalidInput(
                "checks must come every 1 or more tokens".into(),
            ));
        }
        let lang = lang.unwrap_or_else(|| detect_language(&dialogue.all_text()));
        let start = dialogue.clone();
        let parts = judge.protocol().prompt(&start, lang, Mode::Verdict).parts;
        let at = parts
            .iter()
            .rposition(|p| matches!(p, PromptPart::Dialogue(_)))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "the {} prompt holds no dialogue text to stream into",
                    judge.protocol().name()
                ))
            })?;
        let fixed = &parts[..at];
        let closing = parts[at + 1..].to_vec();

        let labels = judge.label_tokens(lang)?;

        let capacity = judge.options.context.min(judge.config().context);
        let session = judge.engine().new_session(capacity)?;
        let whole = judge.prompt_tokens(fixed)?;
        let mut stream = ResponseStream {
            judge,
            options,
            lang,
            session,
            fed: Vec::new(),
            ready: Vec::new(),
            head: fixed.to_vec(),
            text: String::new(),
            before: None,
            partial: Vec::new(),
            closing,
            labels,
            fixed_tokens: whole.len(),
            setup_tokens: 0,
            next_check: options.check_every,
            unchecked: false,
            last: None,
            stopped: None,
            seen: start.all_text(),
        };
        // Commit the fixed part up to its last stable boundary whose split tokenizes
        // exactly as the whole does (a cut inside a control token's text does not).
        for &(cut, before) in boundaries(fixed).iter().take(FIXED_CUT_TRIES) {
            let (left, right) = split_parts(fixed, cut);
            let left_ids = stream.judge.prompt_tokens(&left)?;
            if whole.starts_with(&left_ids)
                && stream.tokens_after(Some(before), &right)? == whole[left_ids.len()..]
            {
                stream.ready = left_ids;
                stream.head = right;
                stream.before = Some(before);
                break;
            }
        }
        if stream.ready.len() + 16 > capacity {
            return Err(Error::InvalidInput(format!(
                "the dialogue needs {} prompt tokens, more than the judge's context of {capacity} tokens",
                stream.ready.len()
            )));
        }
        let fixed_ids = std::mem::take(&mut stream.ready);
        stream
            .judge
            .engine()
            .prefill(&mut stream.session, &fixed_ids)
            .await?;
        stream.setup_tokens = fixed_ids.len();
        stream.fed = fixed_ids;
        let first = start.response().to_string();
        stream.append(&first)?;
        Ok(stream)
    }

    /// Blocking form of [`ResponseStream::push_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn push(&mut self, text: &str) -> Result<Option<StreamCheck>> {
        pollster::block_on(self.push_async(text))
    }

    /// Appends `text` to the response and runs a check when the response has grown
    /// by [`StreamOptions::check_every`] tokens since the last one. Fails once the
    /// stream has stopped.
    pub async fn push_async(&mut self, text: &str) -> Result<Option<StreamCheck>> {
        if let Some(stop) = &self.stopped {
            return Err(Error::InvalidInput(format!(
                "the stream stopped at P(unsafe) = {:.3} after {} response tokens; finish it",
                stop.p_unsafe, stop.response_tokens
            )));
        }
        self.append(text)?;
        let pending = self.pending_ids()?;
        let response = self.response_tokens(pending.len());
        if response >= self.next_check {
            return self.check(pending.len()).await.map(Some);
        }
        Ok(None)
    }

    /// Blocking form of [`ResponseStream::push_bytes_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<Option<StreamCheck>> {
        pollster::block_on(self.push_bytes_async(bytes))
    }

    /// [`ResponseStream::push_async`] for UTF-8 bytes cut anywhere, even inside a
    /// character: an unfinished character waits for the rest. Fails on bytes that
    /// are not UTF-8.
    pub async fn push_bytes_async(&mut self, bytes: &[u8]) -> Result<Option<StreamCheck>> {
        self.partial.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(text) => text.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => {
                return Err(Error::InvalidInput(format!(
                    "the response is not UTF-8: byte {:#04x} at offset {} of the chunk",
                    self.partial[e.valid_up_to()],
                    e.valid_up_to()
                )))
            }
        };
        let rest = self.partial.split_off(valid);
        let text = String::from_utf8(std::mem::replace(&mut self.partial, rest))
            .expect("checked as UTF-8 above");
        self.push_async(&text).await
    }

    /// Blocking form of [`ResponseStream::finish_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn finish(self) -> Result<Verdict> {
        pollster::block_on(self.finish_async())
    }

    /// The verdict on the whole response: the last check's when no text came after
    /// it (or the stream stopped), otherwise a final check's.
    pub async fn finish_async(mut self) -> Result<Verdict> {
        if !self.partial.is_empty() && self.stopped.is_none() {
            return Err(Error::InvalidInput(format!(
                "the response ends inside a UTF-8 character ({} bytes of it)",
                self.partial.len()
            )));
        }
        let check = match (self.stopped.take(), self.last.take()) {
            (Some(stop), _) => stop,
            (None, Some(last)) if !self.unchecked => last,
            _ => {
                let pending = self.pending_ids()?.len();
                self.check(pending).await?
            }
        };
        let judge = &*self.judge;
        let answer = judge.protocol().answer_prefix(self.lang);
        let probs: Vec<f64> = check.label_probs.iter().map(|l| l.p).collect();
        let word = self.labels.words[self.labels.likeliest(&probs, check.label)].0;
        Ok(Verdict {
            label: check.label,
            protocol: judge.protocol().name().to_string(),
            output: format!("{answer}{word}"),
            p_unsafe: check.p_unsafe,
            threshold: check.threshold,
            model_p_unsafe: check.model_p_unsafe,
            label_probs: check.label_probs,
            // Streams score labels only: no continuation names categories.
            categories: Vec::new(),
            head: judge.head().map(|h| h.meta.name.clone()),
            // Streams judge the response as given: nothing is neutralised yet.
            sanitized: Vec::new(),
            injection_suspected: injection_suspected(&self.seen),
            lang: self.lang,
            mode: Mode::Verdict,
            critique: None,
            critique_stop: None,
            prompt_tokens: check.prompt_tokens,
            cached_tokens: check.reused_tokens,
            time_to_verdict_ms: check.ms,
            total_ms: check.ms,
        })
    }

    /// The template language.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// Tokens prefilled when the stream started (the fixed part's stable tokens).
    pub fn setup_tokens(&self) -> usize {
        self.setup_tokens
    }

    /// The last check, if any.
    pub fn last_check(&self) -> Option<&StreamCheck> {
        self.last.as_ref().or(self.stopped.as_ref())
    }

    /// The prompt's token ids up to the end of the response so far, as a check feeds
    /// them: the session's, then the stable ids not yet run, then the pending tail.
    pub fn prompt_ids(&self) -> Result<Vec<u32>> {
        let mut ids = self.fed.clone();
        ids.extend_from_slice(&self.ready);
        ids.extend(self.pending_ids()?);
        Ok(ids)
    }

    /// Positions the session holds (its KV cache), for checks on the rollback.
    pub fn session_len(&self) -> usize {
        self.session.len()
    }

    /// Adds text and commits it up to its last stable boundary.
    fn append(&mut self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.text.push_str(text);
        self.seen.push_str(text);
        self.unchecked = true;
        if let Some(cut) = last_boundary(&self.text) {
            let mut parts = std::mem::take(&mut self.head);
            parts.push(PromptPart::Dialogue(self.text[..cut].to_string()));
            let ids = self.tokens_after(self.before, &parts)?;
            self.ready.extend(ids);
            self.before = self.text[..cut].chars().next_back();
            self.text.drain(..cut);
        }
        Ok(())
    }

    /// Ids of the pending head and text.
    fn pending_ids(&self) -> Result<Vec<u32>> {
        let mut parts = self.head.clone();
        parts.push(PromptPart::Dialogue(self.text.clone()));
        self.tokens_after(self.before, &parts)
    }

    /// Response tokens so far, with `pending` ids after the stable ones.
    fn response_tokens(&self, pending: usize) -> usize {
        (self.fed.len() + self.ready.len() + pending).saturating_sub(self.fixed_tokens)
    }

    /// Token ids of `parts` as they follow the committed character `before` in the
    /// prompt's text: tokenized after it, its own ids dropped (a tokenizer that adds
    /// a dummy space prefix to each text then places it exactly as one-shot does).
    fn tokens_after(&self, before: Option<char>, parts: &[PromptPart]) -> Result<Vec<u32>> {
        let judge = &*self.judge;
        let Some(before) = before else {
            return judge.prompt_tokens(parts);
        };
        let lead = PromptPart::Dialogue(before.to_string());
        let alone = judge.prompt_tokens(std::slice::from_ref(&lead))?;
        let mut joined = vec![lead];
        joined.extend_from_slice(parts);
        let ids = judge.prompt_tokens(&joined)?;
        if !ids.starts_with(&alone) {
            return Err(Error::Unsupported(format!(
                "this tokenizer merges {before:?} with the text after it, so a streamed response \
                 cannot be tokenized as the whole would be"
            )));
        }
        Ok(ids[alone.len()..].to_vec())
    }

    /// Runs the closing text and answer prefix after the response so far, scores the
    /// labels, and rolls the session back to the response's stable tokens.
    async fn check(&mut self, pending: usize) -> Result<StreamCheck> {
        let started = web_time::Instant::now();
        let judge = &*self.judge;
        let mut parts = self.head.clone();
        parts.push(PromptPart::Dialogue(self.text.clone()));
        parts.extend_from_slice(&self.closing);
        let tail = self.tokens_after(self.before, &parts)?;
        let mut prefix = self.ready.clone();
        prefix.extend_from_slice(&tail);
        let prompt_tokens = self.fed.len() + prefix.len();
        prefix.extend_from_slice(&self.labels.ids[0][..self.labels.common]);

        let reused = self.session.len();
        let continuations = self.labels.continuations();
        let longest = continuations.iter().map(|c| c.len()).max().unwrap_or(0);
        let capacity = self.session.capacity();
        if reused + prefix.len() + longest > capacity {
            return Err(Error::InvalidInput(format!(
                "the response has grown to {} prompt tokens, past the judge's context of {capacity} tokens",
                prompt_tokens
            )));
        }
        let head = judge.head();
        let layers: Vec<usize> = head.iter().map(|h| h.meta.layer).collect();
        let scored = judge
            .engine()
            .score(&mut self.session, &prefix, &continuations, &layers)
            .await?;
        let stable = self.ready.len();
        self.session.truncate(reused + stable)?;
        self.fed.append(&mut self.ready);

        let (probs, model_p_unsafe) = self.labels.probabilities(&scored.log_probs);
        let (p_unsafe, threshold) = match head {
            Some(head) => (head.p_unsafe(&scored.hidden[0])?, head.meta.threshold),
            None => (model_p_unsafe, judge.options.threshold),
        };
        let response_tokens = self.response_tokens(pending);
        let new_tokens = stable + pending;
        let stopped = self.options.stop_at.is_some_and(|stop| p_unsafe >= stop);
        let check = StreamCheck {
            p_unsafe,
            label: if p_unsafe >= threshold {
                Label::Unsafe
            } else {
                Label::Safe
            },
            threshold,
            model_p_unsafe,
            label_probs: label_probs(&self.labels, &probs),
            response_tokens,
            prompt_tokens,
            reused_tokens: reused,
            prefilled_tokens: prefix.len(),
            new_tokens,
            suffix_tokens: prefix.len() - new_tokens,
            pending_tokens: pending,
            stopped,
            ms: started.elapsed().as_secs_f64() * 1e3,
        };
        let every = self.options.check_every;
        self.next_check = (response_tokens / every + 1) * every;
        self.unchecked = false;
        if stopped {
            self.stopped = Some(check.clone());
        } else {
            self.last = Some(check.clone());
        }
        Ok(check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_sit_before_spaces_and_between_words_and_punctuation() {
        assert_eq!(last_boundary("Hello world"), Some(5));
        assert_eq!(last_boundary("Hello  world"), Some(5));
        assert_eq!(last_boundary("Hello\nworld"), None);
        assert_eq!(last_boundary("don't"), Some(3));
        assert_eq!(last_boundary("你好，世界"), Some("你好".len()));
        assert_eq!(last_boundary("a.."), Some(1));
        assert_eq!(last_boundary(" word"), None);
        assert_eq!(last_boundary("é,"), None);
    }

    #[test]
    fn split_parts_keeps_each_side_s_kinds() {
        let parts = [
            PromptPart::Template("ab".into()),
            PromptPart::Dialogue("cd".into()),
        ];
        let (left, right) = split_parts(&parts, 3);
        assert_eq!(
            left,
            [
                PromptPart::Template("ab".into()),
                PromptPart::Dialogue("c".into())
            ]
        );
        assert_eq!(right, [PromptPart::Dialogue("d".into())]);
        assert_eq!(boundaries(&parts), Vec::new());
        let spaced = [PromptPart::Template("x y: z".into())];
        assert_eq!(boundaries(&spaced), vec![(4, ':'), (3, 'y'), (1, 'x')]);
    }
}
