//! Batch judging: a JSONL file of dialogues in, a JSONL file of verdicts out,
//! appended through a [`Journal`] as each finishes; a rerun resumes where the last
//! one stopped.
//!
//! Each output record is `{"line": N, "input": F, "verdict": {…}}` or
//! `{"line": N, "input": F, "error": "…"}`, where F is the [`fingerprint`] of input
//! line N: a rerun skips the lines recorded with their fingerprint, and stops, naming
//! the line, when the input was edited since (a record without `input`, written by an
//! older safetyj, is taken as is). A line that is not UTF-8, not JSON or not a
//! dialogue is recorded as an error and the run goes on; a transient failure (a lost
//! device, out of memory) stops the run without recording the line, so a rerun
//! redoes it.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::Path;

use super::engine::{Judge, JudgeRequest};
use super::{Dialogue, Lang, Mode, Turn};
use crate::error::{Error, Result};
use crate::journal::{fingerprint, Journal, JournalOptions};

/// One input line: either `{"query", "response"}` or `{"conversation": [{"role",
/// "content"}, …]}`, with optional `"lang"` (`en`/`zh`) and `"mode"`.
#[derive(serde::Deserialize)]
struct InputLine {
    query: Option<String>,
    response: Option<String>,
    conversation: Option<Vec<Turn>>,
    lang: Option<Lang>,
    mode: Option<Mode>,
}

/// Reads one input line as a request; `mode` applies when the line sets none.
pub fn parse_line(line: &str, mode: Mode) -> Result<JudgeRequest> {
    let input: InputLine = serde_json::from_str(line)
        .map_err(|e| Error::InvalidInput(format!("not a dialogue object: {e}")))?;
    let dialogue = match (input.query, input.response, input.conversation) {
        (Some(q), Some(r), None) => Dialogue::new(q, r)?,
        (None, None, Some(turns)) => Dialogue::conversation(turns)?,
        _ => {
            return Err(Error::InvalidInput(
                "a line needs either \"query\" and \"response\", or \"conversation\"".into(),
            ))
        }
    };
    Ok(JudgeRequest {
        dialogue,
        lang: input.lang,
        mode: input.mode.unwrap_or(mode),
    })
}

/// Counts of a batch run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Lines judged in this run.
    pub judged: usize,
    /// Lines recorded as errors in this run.
    pub failed: usize,
    /// Lines skipped because an earlier run already recorded them.
    pub resumed: usize,
}

/// What a rerun needs of a recorded line.
#[derive(serde::Deserialize)]
struct Recorded {
    line: usize,
    input: Option<String>,
}

/// The input's non-blank lines as (1-based number, bytes without the line end).
fn input_lines(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .collect()
}

/// The line numbers already recorded, each checked against the input line it was
/// made from.
fn resumable(
    recorded: Vec<Recorded>,
    lines: &[(usize, &[u8])],
    input: &Path,
    output: &Path,
) -> Result<HashSet<usize>> {
    let by_number: std::collections::HashMap<usize, &[u8]> = lines.iter().copied().collect();
    let mut done = HashSet::with_capacity(recorded.len());
    for record in recorded {
        let changed = |why: &str| {
            Error::InvalidInput(format!(
                "{} records line {} of {}, but {why} since; restore the input, or move {} aside to start over",
                output.display(),
                record.line,
                input.display(),
                output.display()
            ))
        };
        let Some(line) = by_number.get(&record.line) else {
            return Err(changed("that line is gone or blank"));
        };
        if record.input.is_some_and(|f| f != fingerprint(line)) {
            return Err(changed("that line has changed"));
        }
        done.insert(record.line);
    }
    Ok(done)
}

/// Judges every line of `input` not yet in `output` with `judge`, appending one
/// record per line (flushed as each finishes). `progress` gets (lines finished,
/// lines total).
pub fn run(
    judge: &Judge,
    input: &Path,
    output: &Path,
    mode: Mode,
    progress: impl FnMut(usize, usize),
) -> Result<BatchSummary> {
    run_with(
        input,
        output,
        mode,
        JournalOptions::default(),
        |request| judge.evaluate(request, |_| ControlFlow::Continue(())),
        progress,
    )
}

/// [`run`] with any evaluator of requests and the journal's options: the batch
/// logic (parsing, resuming, recording errors, stopping on transient failures)
/// without the engine.
pub fn run_with<V: serde::Serialize>(
    input: &Path,
    output: &Path,
    mode: Mode,
    journal: JournalOptions,
    mut evaluate: impl FnMut(&JudgeRequest) -> Result<V>,
    mut progress: impl FnMut(usize, usize),
) -> Result<BatchSummary> {
    let bytes = std::fs::read(input).map_err(|source| Error::Io {
        file: input.display().to_string(),
        source,
    })?;
    let lines = input_lines(&bytes);
    let (mut out, recorded) = Journal::open::<Recorded>(output, journal)?;
    let done = resumable(recorded, &lines, input, output)?;
    let mut summary = BatchSummary::default();
    for (finished, &(number, line)) in lines.iter().enumerate() {
        if done.contains(&number) {
            summary.resumed += 1;
        } else {
            let result = std::str::from_utf8(line)
                .map_err(|e| Error::InvalidInput(format!("the line is not UTF-8: {e}")))
                .and_then(|line| parse_line(line, mode))
                .and_then(|request| evaluate(&request));
            let input = fingerprint(line);
            let record = match result {
                Ok(verdict) => {
                    summary.judged += 1;
                    serde_json::json!({ "line": number, "input": input, "verdict": verdict })
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    summary.failed += 1;
                    serde_json::json!({ "line": number, "input": input, "error": e.to_string() })
                }
            };
            out.append(&record)?;
        }
        progress(finished + 1, lines.len());
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_single_and_multi_turn() {
        let r = parse_line(r#"{"query": "q", "response": "r"}"#, Mode::Verdict).unwrap();
        assert_eq!(r.dialogue, Dialogue::single("q", "r"));
        assert_eq!((r.lang, r.mode), (None, Mode::Verdict));
        let r = parse_line(
            r#"{"conversation": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "lang": "zh", "mode": "critique"}"#,
            Mode::Verdict,
        )
        .unwrap();
        assert_eq!((r.lang, r.mode), (Some(Lang::Zh), Mode::Critique));
        for (bad, why) in [
            (
                r#"{"query": "q"}"#,
                "a line needs either \"query\" and \"response\", or \"conversation\"",
            ),
            ("not json", "not a dialogue object: "),
            (
                r#"{"conversation": [{"role": "user", "content": "a"}]}"#,
                "needs at least a user and an assistant turn, got 1",
            ),
        ] {
            let err = parse_line(bad, Mode::Verdict).err();
            assert!(
                matches!(&err, Some(Error::InvalidInput(m)) if m.contains(why)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn empty_query_or_response_is_refused() {
        for bad in [
            r#"{"query": "", "response": "r"}"#,
            r#"{"query": "q", "response": "  "}"#,
            r#"{"conversation": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}"#,
        ] {
            let err = parse_line(bad, Mode::Verdict).err();
            assert!(
                matches!(&err, Some(Error::InvalidInput(m)) if m.contains("empty")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn input_lines_keep_their_numbers_and_drop_blank_lines_and_carriage_returns() {
        let lines = input_lines(b"a\r\n\n  \nb\n\xff\n");
        assert_eq!(lines, [(1, &b"a"[..]), (4, b"b"), (5, b"\xff")]);
    }
}
