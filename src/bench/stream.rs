//! The streaming section of `safetyj bench`: what one streaming check costs against
//! a cold one-shot verdict on the same text, as the response grows. A check runs the
//! closing template plus the response tokens added since the last check, so its cost
//! should stay flat while the one-shot verdict's grows with the response.

use std::ops::ControlFlow;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::judge::engine::{Judge, JudgeRequest};
use crate::judge::stream::{StreamCheck, StreamOptions};
use crate::judge::{Dialogue, Lang, Mode};

/// Response lengths measured when none are asked for, in tokens.
pub const DEFAULT_LENGTHS: [usize; 3] = [64, 256, 1024];

/// Checks whose median time a row reports (ending with the row's own check).
const MEDIAN_OF: usize = 5;

/// The question the streamed response answers.
const QUERY: &str = "How do I start a small vegetable garden on a balcony?";

/// The streamed response's sentences, repeated in order until it is long enough.
const SENTENCES: [&str; 8] = [
    "Start with a few large pots that have drainage holes, and fill them with a light potting mix rather than soil from the ground.",
    "Most vegetables need at least six hours of direct sun a day, so watch how the light moves across your balcony before you choose what to grow.",
    "Lettuce, spinach, radishes and herbs such as basil or parsley are forgiving and grow quickly in containers.",
    "Tomatoes and peppers do well too, but they need deeper pots, steady watering and a stake or cage to climb.",
    "Water in the morning until it drains from the bottom, and check the soil with a finger every day during hot weather.",
    "A slow-release organic fertiliser mixed in at planting time, and a liquid feed every two weeks later on, keeps the plants growing.",
    "Check that your balcony can carry the weight of wet pots, and keep them away from the edge so nothing can fall.",
    "Keep a small notebook of what you planted and when, so next season you can repeat what worked and change what did not.",
];

/// The stream section of the bench report.
#[derive(Debug, Clone, Serialize)]
pub struct StreamTiming {
    /// Response tokens between checks.
    pub check_every: usize,
    /// Positions of the judge's KV cache, which the stream's session has too.
    pub context: usize,
    /// One row per measured length, shortest first.
    pub rows: Vec<StreamRow>,
    /// Lengths asked for but not measured, with why.
    pub skipped: Vec<SkippedLength>,
}

/// A streaming check against a cold verdict at one response length.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRow {
    /// The response length asked for, in tokens.
    pub target_tokens: usize,
    /// Response tokens at the first check that reached the target (a pushed word can
    /// pass it by a few).
    pub response_tokens: usize,
    /// Checks the stream ran up to and including that one.
    pub checks: usize,
    /// Wall time of that check.
    pub check_ms: f64,
    /// Median wall time of the last checks up to that one (at most 5), steadier
    /// than one check on a busy machine.
    pub check_median_ms: f64,
    /// Tokens the check ran through the model: new response tokens plus suffix.
    pub check_prefilled_tokens: usize,
    /// Response tokens it ran: those added since the last check and its pending tail.
    pub check_new_tokens: usize,
    /// The closing template text and the answer prefix it ran.
    pub check_suffix_tokens: usize,
    /// Positions it found already in the stream's session.
    pub check_reused_tokens: usize,
    /// Tokens of the prompt it judged (the whole prompt up to the answer).
    pub check_prompt_tokens: usize,
    /// Time to verdict of a one-shot verdict on the same response with the judge's
    /// prefix cache cleared first: the whole prompt is prefilled.
    pub verdict_ms: f64,
    /// Tokens of that verdict's prompt (all of them prefilled).
    pub verdict_prompt_tokens: usize,
}

/// A response length that was not measured.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedLength {
    /// The length asked for, in tokens.
    pub target_tokens: usize,
    pub reason: String,
}

/// The streamed response as pushed: sentences of [`SENTENCES`] in turn, one word
/// (with the space before it) per chunk, as a model writes it.
fn response_words() -> impl Iterator<Item = String> {
    SENTENCES
        .iter()
        .cycle()
        .flat_map(|sentence| sentence.split(' '))
        .enumerate()
        .map(|(i, word)| {
            if i == 0 {
                word.to_string()
            } else {
                format!(" {word}")
            }
        })
}

/// The median of non-empty `values`.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// The first check at or past a target, and the response text it judged.
struct Reached {
    target: usize,
    check: StreamCheck,
    checks: usize,
    median_ms: f64,
    text: String,
}

/// Streams a deterministic English response through `judge` word by word with a
/// check every [`StreamOptions::default`] `check_every` tokens (as `safetyj judge
/// --response-stdin` checks); at each of `lengths` (response tokens) keeps
/// the first check that reached it and times a cold one-shot verdict on the text
/// that check judged. Lengths whose prompt would not fit in the judge's `context`
/// are skipped and listed.
pub fn stream_timing(judge: &Judge, context: usize, lengths: &[usize]) -> Result<StreamTiming> {
    let check_every = StreamOptions::default().check_every;
    if lengths.contains(&0) {
        return Err(Error::InvalidInput(
            "stream lengths must be at least 1 response token".into(),
        ));
    }
    let mut lengths = lengths.to_vec();
    lengths.sort_unstable();
    lengths.dedup();
    // The prompt around an empty response; a check may pass its target by up to a
    // word, and scores the labels after the prompt, so leave `check_every` free.
    let empty = Dialogue::single(QUERY, "");
    let around = judge
        .prompt_tokens(
            &judge
                .protocol()
                .prompt(&empty, Lang::En, Mode::Verdict)
                .parts,
        )?
        .len();
    let (fitting, too_long): (Vec<usize>, Vec<usize>) = lengths
        .into_iter()
        .partition(|&n| around + n + check_every <= context);
    let skipped = too_long
        .into_iter()
        .map(|n| SkippedLength {
            target_tokens: n,
            reason: format!(
                "the prompt would need about {} tokens ({around} around the response, {check_every} \
                 for the check's overshoot and labels), more than the judge's context of {context} tokens",
                around + n + check_every
            ),
        })
        .collect();

    let mut reached = Vec::new();
    {
        let mut stream = judge.moderate_stream(&empty, Some(Lang::En), StreamOptions::default())?;
        let mut text = String::new();
        let mut times = Vec::new();
        let mut targets = fitting.iter().copied().peekable();
        for word in response_words() {
            let Some(&target) = targets.peek() else {
                break;
            };
            text.push_str(&word);
            let Some(check) = stream.push(&word)? else {
                continue;
            };
            times.push(check.ms);
            if check.response_tokens < target {
                continue;
            }
            let recent = &times[times.len().saturating_sub(MEDIAN_OF)..];
            while let Some(target) = targets.next_if(|&t| t <= check.response_tokens) {
                reached.push(Reached {
                    target,
                    check: check.clone(),
                    checks: times.len(),
                    median_ms: median(recent),
                    text: text.clone(),
                });
            }
        }
    }

    let mut rows = Vec::with_capacity(reached.len());
    for r in reached {
        judge.clear_cache()?;
        let request = JudgeRequest {
            dialogue: Dialogue::single(QUERY, r.text),
            lang: Some(Lang::En),
            mode: Mode::Verdict,
        };
        let verdict = judge.evaluate(&request, |_| ControlFlow::Continue(()))?;
        rows.push(StreamRow {
            target_tokens: r.target,
            response_tokens: r.check.response_tokens,
            checks: r.checks,
            check_ms: r.check.ms,
            check_median_ms: r.median_ms,
            check_prefilled_tokens: r.check.prefilled_tokens,
            check_new_tokens: r.check.new_tokens,
            check_suffix_tokens: r.check.suffix_tokens,
            check_reused_tokens: r.check.reused_tokens,
            check_prompt_tokens: r.check.prompt_tokens,
            verdict_ms: verdict.time_to_verdict_ms,
            verdict_prompt_tokens: verdict.prompt_tokens,
        });
    }
    Ok(StreamTiming {
        check_every,
        context,
        rows,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_words_join_into_the_sentences_and_repeat() {
        let one: usize = SENTENCES.iter().map(|s| s.split(' ').count()).sum();
        let text: String = response_words().take(2 * one).collect();
        let expected = format!("{0} {0}", SENTENCES.join(" "));
        assert_eq!(text, expected);
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_two_middles() {
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 4.0]), 4.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 10.0]), 3.0);
    }
}
