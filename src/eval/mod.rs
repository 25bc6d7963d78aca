//! Benchmarks of judging quality: the label-level benchmark (verdicts against gold
//! labels) and the paper's critique meta-evaluation (critiques measured through
//! atomic information units, AIUs, by an evaluator LLM).
//!
//! Models sit behind two traits, so the same evals run on the local engine or on any
//! OpenAI-compatible chat-completions endpoint ([`http`], native only):
//! [`JudgeBackend`] gives verdicts (and critiques), [`ChatBackend`] completes the
//! evaluator's prompts. Results are appended to `results.jsonl` as each item
//! completes, and a rerun resumes from them ([`runner`]); [`report`] turns them into
//! JSON, Markdown and a self-contained HTML page.
//!
//! From the command line, against OpenAI-compatible servers:
//!
//! ```text
//! safetyj eval label --judge-url http://gpu:8000 --judge-model safety-j \
//!     --sample 200 --seed 0 --out runs/label data/safety-j/label_level/*.json
//! safetyj eval critique --judge-url http://gpu:8000 --judge-model safety-j \
//!     --evaluator-url http://gpu:8001 --evaluator-model qwen --out runs/critique \
//!     data/safety-j/critique_level/en.json
//! ```
//!
//! Rerunning the same command resumes: items already in `results.jsonl` are skipped.

pub mod attacks;
pub mod critique;
pub mod datasets;
#[cfg(not(target_arch = "wasm32"))]
pub mod http;
pub mod injection;
#[cfg(not(target_arch = "wasm32"))]
pub mod local;
pub mod metrics;
pub mod records;
pub mod report;
pub mod runner;

use crate::error::Result;
use crate::judge::{Dialogue, JudgeProtocol, Label, Lang, Mode};

/// A chat model that completes one user message: the evaluator of the critique
/// meta-evaluation.
///
/// `content` is the user message (a filled meta-evaluation prompt). A chat-completions
/// endpoint sends it as the single user message; a local engine, which takes raw
/// text, renders it with [`local_chat_prompt`] as the reference code does.
pub trait ChatBackend: Send + Sync {
    /// The model's reply to `content`, greedy (temperature 0), at most `max_tokens`
    /// new tokens.
    fn complete(&self, content: &str, max_tokens: usize) -> Result<String>;
}

/// What a judge said about one dialogue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JudgeOutcome {
    /// The stated label; `None` when the output states none ("unparsed").
    pub label: Option<Label>,
    /// P(unsafe) from the label logits, when the backend can see them (the local
    /// engine can; a chat-completions endpoint cannot).
    pub p_unsafe: Option<f64>,
    /// The judge's raw output text.
    pub raw: String,
}

/// A safety judge: the local engine, or a judge model behind an HTTP endpoint.
pub trait JudgeBackend: Send + Sync {
    /// Judges `dialogue` with the `lang` template; `Mode::Critique` asks for the
    /// analysis as well as the label.
    fn judge(&self, dialogue: &Dialogue, lang: Lang, mode: Mode) -> Result<JudgeOutcome>;
    /// The protocol the judge speaks (how its raw output is read).
    fn protocol(&self) -> &dyn JudgeProtocol;
}

/// The raw prompt a local chat model is given for one user message, exactly as the
/// reference meta-evaluation code wraps its evaluator prompts.
pub fn local_chat_prompt(content: &str) -> String {
    format!(
        "You are a helpful assistant.\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// Fills `{name}` placeholders of `template` in one pass over the template, so a
/// value that itself contains `{claim}` or `{text}` is never substituted into.
pub fn fill_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    'scan: while let Some(open) = rest.find('{') {
        for (name, value) in values {
            let after = &rest[open + 1..];
            if let Some(tail) = after.strip_prefix(name).and_then(|t| t.strip_prefix('}')) {
                out.push_str(&rest[..open]);
                out.push_str(value);
                rest = tail;
                continue 'scan;
            }
        }
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_template_substitutes_each_placeholder_once_and_never_inside_values() {
        let filled = fill_template(
            "<Text>\n{text}\n\n<claim>\n{claim}{other}",
            &[
                ("text", "quotes {claim} literally"),
                ("claim", "B refused."),
            ],
        );
        assert_eq!(
            filled,
            "<Text>\nquotes {claim} literally\n\n<claim>\nB refused.{other}"
        );
    }

    #[test]
    fn local_prompt_wraps_content_like_the_reference_code() {
        assert_eq!(
            local_chat_prompt("hi"),
            "You are a helpful assistant.\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
