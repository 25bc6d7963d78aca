//! Batch judging: a JSONL file of dialogues in, a JSONL file of verdicts out,
//! appended as each finishes; a rerun resumes where the last one stopped.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::Path;

use super::engine::{Judge, JudgeRequest};
use super::{Dialogue, Lang, Mode, Turn};
use crate::error::{Error, Result};

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
        (Some(q), Some(r), None) => Dialogue::single(q, r),
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

/// The line numbers (1-based) already recorded in `output`. A last line cut short by
/// a killed run is removed so it is redone.
fn recorded_lines(output: &Path) -> Result<HashSet<usize>> {
    let io = |source| Error::Write {
        file: output.display().to_string(),
        source,
    };
    let mut done = HashSet::new();
    let Ok(bytes) = std::fs::read(output) else {
        return Ok(done);
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(output)
            .map_err(io)?;
        file.set_len(complete as u64).map_err(io)?;
    }
    for line in bytes[..complete]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            Error::InvalidInput(format!(
                "{} holds a line that is not JSON ({e}); move it aside to start over",
                output.display()
            ))
        })?;
        if let Some(n) = value["line"].as_u64() {
            done.insert(n as usize);
        }
    }
    Ok(done)
}

/// Judges every line of `input` not yet in `output`, appending
/// `{"line": N, "verdict": {…}}` or `{"line": N, "error": "…"}` per line (flushed as
/// each finishes). `progress` gets (lines finished, lines total).
pub fn run(
    judge: &Judge,
    input: &Path,
    output: &Path,
    mode: Mode,
    mut progress: impl FnMut(usize, usize),
) -> Result<BatchSummary> {
    let read_err = |source| Error::Io {
        file: input.display().to_string(),
        source,
    };
    let lines: Vec<String> = std::io::BufReader::new(std::fs::File::open(input).map_err(read_err)?)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(read_err)?;
    let done = recorded_lines(output)?;
    let write_err = |source| Error::Write {
        file: output.display().to_string(),
        source,
    };
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(output)
        .map_err(write_err)?;
    let mut summary = BatchSummary::default();
    let total = lines.iter().filter(|l| !l.trim().is_empty()).count();
    let mut finished = 0;
    for (i, line) in lines.iter().enumerate() {
        let number = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if done.contains(&number) {
            summary.resumed += 1;
        } else {
            let result = parse_line(line, mode)
                .and_then(|request| judge.evaluate(&request, |_| ControlFlow::Continue(())));
            let record = match result {
                Ok(verdict) => {
                    summary.judged += 1;
                    serde_json::json!({ "line": number, "verdict": verdict })
                }
                Err(e) => {
                    summary.failed += 1;
                    serde_json::json!({ "line": number, "error": e.to_string() })
                }
            };
            writeln!(out, "{record}")
                .and_then(|_| out.flush())
                .map_err(write_err)?;
        }
        finished += 1;
        progress(finished, total);
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
        for bad in [
            r#"{"query": "q"}"#,
            "not json",
            r#"{"conversation": [{"role": "user", "content": "a"}]}"#,
        ] {
            assert!(parse_line(bad, Mode::Verdict).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cut_last_line_is_dropped_and_recorded_lines_are_found() {
        let dir = std::env::temp_dir().join(format!("safetyj-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("verdicts.jsonl");
        std::fs::write(
            &out,
            "{\"line\": 1, \"verdict\": {}}\n{\"line\": 3, \"error\": \"x\"}\n{\"line\": 4, \"ver",
        )
        .unwrap();
        let done = recorded_lines(&out).unwrap();
        assert_eq!(done, HashSet::from([1, 3]));
        assert!(
            std::fs::read_to_string(&out).unwrap().ends_with("\"x\"}\n"),
            "the cut line was removed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
