//! `/v1/judge` and `/v1/moderations` requests: what a body may hold, checked field by
//! field into the judge's own request, and verdicts as `safetyj judge --json` prints
//! them.

use serde::Deserialize;

use super::error::ApiError;
use crate::judge::engine::{JudgeOptions, JudgeRequest, Verdict};
use crate::judge::protocol_named;
use crate::judge::{Dialogue, Label, Lang, Mode, Turn};

/// The loaded model as responses name it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The `--model` the server was started with.
    pub name: String,
    /// The notice shown with a stand-in preset's verdicts.
    pub stand_in: Option<String>,
    /// The options the judge was loaded with (its threshold and critique cap).
    pub options: JudgeOptions,
}

/// `lang`: a template language, or `auto` (from the dialogue's text).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LangChoice {
    Auto,
    En,
    Zh,
}

/// The body of `POST /v1/judge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeBody {
    query: Option<String>,
    response: Option<String>,
    conversation: Option<Vec<Turn>>,
    mode: Option<Mode>,
    lang: Option<LangChoice>,
    threshold: Option<f64>,
    max_critique_tokens: Option<usize>,
    /// Answer with Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
}

/// A checked judge request with the overrides the server applies to it.
#[derive(Debug)]
pub struct JudgeCall {
    pub request: JudgeRequest,
    /// The threshold the label is decided with.
    pub threshold: f64,
    pub max_critique_tokens: usize,
}

impl JudgeBody {
    /// The judge request this body asks for, or a 400 naming the field at fault.
    pub fn check(self, model: &ModelInfo) -> Result<JudgeCall, ApiError> {
        let dialogue = match (self.conversation, self.query, self.response) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(ApiError::field(
                    "conversation",
                    "give either query and response, or conversation, not both",
                ))
            }
            (Some(turns), None, None) => {
                if let Some(last) = turns.last() {
                    if last.content.trim().is_empty() {
                        return Err(ApiError::field(
                            format!("conversation[{}].content", turns.len() - 1),
                            "the assistant's answer under judgement is empty",
                        ));
                    }
                }
                Dialogue::conversation(turns)
                    .map_err(|e| ApiError::field("conversation", e.to_string()))?
            }
            (None, query, Some(response)) => {
                single(query.unwrap_or_default(), response, "response")?
            }
            (None, _, None) => {
                return Err(ApiError::field(
                    "response",
                    "missing field `response` (give query and response, or conversation)",
                ))
            }
        };
        let mode = self.mode.unwrap_or(Mode::Verdict);
        let threshold = check_threshold(self.threshold, mode, model)?;
        let cap = model.options.max_critique_tokens;
        let max_critique_tokens = match self.max_critique_tokens {
            None => cap,
            Some(n) if (1..=cap).contains(&n) => n,
            Some(n) => {
                return Err(ApiError::field(
                    "max_critique_tokens",
                    format!(
                        "max_critique_tokens must be between 1 and the server's {cap}, not {n}"
                    ),
                ))
            }
        };
        let lang = match self.lang.unwrap_or(LangChoice::Auto) {
            LangChoice::Auto => None,
            LangChoice::En => Some(Lang::En),
            LangChoice::Zh => Some(Lang::Zh),
        };
        Ok(JudgeCall {
            request: JudgeRequest {
                dialogue,
                lang,
                mode,
            },
            threshold,
            max_critique_tokens,
        })
    }
}

/// A single exchange, refusing an empty answer (`field` names it).
pub fn single(query: String, response: String, field: &str) -> Result<Dialogue, ApiError> {
    if response.trim().is_empty() {
        return Err(ApiError::field(
            field,
            format!("{field} is empty: there is no answer to judge"),
        ));
    }
    Ok(Dialogue::single(query, response))
}

/// The threshold a request asks for: in [0, 1]; in critique mode only the judge's
/// own, since the critique goes on from the label the judge chose.
pub fn check_threshold(
    threshold: Option<f64>,
    mode: Mode,
    model: &ModelInfo,
) -> Result<f64, ApiError> {
    let own = model.options.threshold;
    match threshold {
        None => Ok(own),
        Some(t) if !(0.0..=1.0).contains(&t) => Err(ApiError::field(
            "threshold",
            format!("threshold must be between 0 and 1, not {t}"),
        )),
        Some(t) if mode == Mode::Critique && t != own => Err(ApiError::field(
            "threshold",
            format!("in critique mode the threshold is the server's ({own}): the critique follows the label it decides"),
        )),
        Some(t) => Ok(t),
    }
}

/// Decides `verdict`'s label at `threshold` from its P(unsafe) (unsafe too when
/// injection is suspected and `suspected_unsafe`), rewriting the label in its output
/// (verdict mode, where the output is the prefix and the label).
pub fn apply_threshold(mut verdict: Verdict, threshold: f64, suspected_unsafe: bool) -> Verdict {
    let label =
        if verdict.p_unsafe >= threshold || (suspected_unsafe && verdict.injection_suspected) {
            Label::Unsafe
        } else {
            Label::Safe
        };
    if label != verdict.label && verdict.mode == Mode::Verdict {
        // The answer becomes the prefix and the likeliest word of the new label; a
        // category line read after the old label no longer applies.
        if let Ok(protocol) = protocol_named(&verdict.protocol) {
            let word = verdict
                .label_probs
                .iter()
                .filter(|l| l.label == label)
                .max_by(|a, b| a.p.total_cmp(&b.p))
                .map_or_else(
                    || protocol.label_text(verdict.lang, label).to_string(),
                    |l| l.word.clone(),
                );
            verdict.output = format!("{}{word}", protocol.answer_prefix(verdict.lang));
        }
        verdict.categories.clear();
    }
    verdict.label = label;
    verdict.threshold = threshold;
    verdict
}

/// The verdict as `safetyj judge --json` prints it: the verdict's fields, the model
/// and whether it is a stand-in.
pub fn verdict_json(verdict: &Verdict, model: &ModelInfo) -> serde_json::Value {
    let mut value = serde_json::to_value(verdict).expect("verdicts serialize");
    value["model"] = serde_json::Value::String(model.name.clone());
    value["stand_in"] = serde_json::Value::Bool(model.stand_in.is_some());
    value
}

/// The body of `POST /v1/moderations` (OpenAI's, plus `threshold` and `lang`).
#[derive(Debug, Deserialize)]
pub struct ModerationBody {
    input: serde_json::Value,
    threshold: Option<f64>,
    lang: Option<LangChoice>,
}

/// A checked moderation request: one dialogue per input.
#[derive(Debug)]
pub struct ModerationCall {
    pub requests: Vec<JudgeRequest>,
    pub threshold: f64,
}

/// Most inputs of one moderation request.
pub const MAX_MODERATION_INPUTS: usize = 64;

impl ModerationBody {
    /// One verdict-mode request per input: a string is B's answer to an empty A
    /// turn; an object `{query, response}` is an exchange.
    pub fn check(self, model: &ModelInfo) -> Result<ModerationCall, ApiError> {
        let threshold = check_threshold(self.threshold, Mode::Verdict, model)?;
        let lang = match self.lang.unwrap_or(LangChoice::Auto) {
            LangChoice::Auto => None,
            LangChoice::En => Some(Lang::En),
            LangChoice::Zh => Some(Lang::Zh),
        };
        let dialogues = match self.input {
            serde_json::Value::Array(items) => {
                if items.is_empty() || items.len() > MAX_MODERATION_INPUTS {
                    return Err(ApiError::field(
                        "input",
                        format!(
                            "input must hold 1 to {MAX_MODERATION_INPUTS} items, not {}",
                            items.len()
                        ),
                    ));
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| moderation_item(item, &format!("input[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?
            }
            item => vec![moderation_item(item, "input")?],
        };
        Ok(ModerationCall {
            requests: dialogues
                .into_iter()
                .map(|dialogue| JudgeRequest {
                    dialogue,
                    lang,
                    mode: Mode::Verdict,
                })
                .collect(),
            threshold,
        })
    }
}

/// One moderation input: a string, or `{query, response}`.
fn moderation_item(item: serde_json::Value, at: &str) -> Result<Dialogue, ApiError> {
    match item {
        serde_json::Value::String(text) => single(String::new(), text, at),
        serde_json::Value::Object(mut fields) => {
            let mut text = |name: &str| match fields.remove(name) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(ApiError::field(
                    format!("{at}.{name}"),
                    format!("{at}.{name} must be a string, not {other}"),
                )),
            };
            let query = text("query")?.unwrap_or_default();
            let response = text("response")?.ok_or_else(|| {
                ApiError::field(
                    format!("{at}.response"),
                    format!("missing field `{at}.response`"),
                )
            })?;
            if let Some(name) = fields.keys().next() {
                return Err(ApiError::field(
                    format!("{at}.{name}"),
                    format!("unknown field `{name}` in {at}, expected `query` or `response`"),
                ));
            }
            single(query, response, &format!("{at}.response"))
        }
        other => Err(ApiError::field(
            at,
            format!("{at} must be a string or an object {{query, response}}, not {other}"),
        )),
    }
}
