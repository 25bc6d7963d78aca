//! OpenAI's shapes: chat-completion requests checked into the judge's chat, and the
//! chat completion, chunk, moderation and model-list objects the service answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::judge_api::ModelInfo;
use crate::judge::chat::{ChatCompletion, ChatMessage, ChatParams, ChatRole};
use crate::judge::engine::Verdict;
use crate::judge::Label;
use crate::model::generate::{Sampling, StopReason};

/// Seconds since the Unix epoch (`created`).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh id with `prefix` (`chatcmpl-…`): the server's start time and a counter.
pub fn new_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(now);
    format!(
        "{prefix}-{start:x}{:06x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// One message of a chat-completion request.
#[derive(Debug, Deserialize)]
struct MessageBody {
    role: String,
    content: Value,
}

/// The body of `POST /v1/chat/completions`. Fields OpenAI defines that do not apply
/// here (penalties, logprobs, user) are accepted and ignored, as other servers do.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    messages: Vec<MessageBody>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<StopField>,
    n: Option<u32>,
    /// Answer with Server-Sent Events (`chat.completion.chunk` objects).
    #[serde(default)]
    pub stream: bool,
    stream_options: Option<StreamOptions>,
}

/// A checked chat request.
#[derive(Debug)]
pub struct ChatCall {
    pub messages: Vec<ChatMessage>,
    pub params: ChatParams,
    /// Send a last chunk with token counts (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// Most stop strings (OpenAI's limit).
const MAX_STOPS: usize = 4;

impl ChatBody {
    /// The chat this body asks for, or a 400 naming the field at fault.
    pub fn check(self) -> Result<ChatCall, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::field("messages", "messages must not be empty"));
        }
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| message(m, i))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::field(
                "n",
                format!("only n = 1 is served, not {n}"),
            ));
        }
        let max_tokens = match self.max_completion_tokens.or(self.max_tokens) {
            Some(0) => {
                return Err(ApiError::field(
                    "max_tokens",
                    "max_tokens must be at least 1",
                ))
            }
            Some(n) => n,
            None => usize::MAX,
        };
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::field(
                "temperature",
                format!("temperature must be between 0 and 2, not {temperature}"),
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::field(
                "top_p",
                format!("top_p must be above 0 and at most 1, not {top_p}"),
            ));
        }
        let sampling = if temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Random {
                temperature,
                top_k: 0,
                top_p,
                seed: self.seed.map(|s| s as u64).unwrap_or_else(|| {
                    std::hash::BuildHasher::hash_one(
                        &std::collections::hash_map::RandomState::new(),
                        now(),
                    )
                }),
            }
        };
        let stop = match self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s],
            Some(StopField::Many(list)) => list,
        };
        if stop.len() > MAX_STOPS || stop.iter().any(|s| s.is_empty()) {
            return Err(ApiError::field(
                "stop",
                format!("stop holds at most {MAX_STOPS} non-empty strings"),
            ));
        }
        Ok(ChatCall {
            messages,
            params: ChatParams {
                max_tokens,
                sampling,
                stop,
            },
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// One message: a known role and text content (a string, or text parts).
fn message(m: MessageBody, i: usize) -> Result<ChatMessage, ApiError> {
    let role = match m.role.as_str() {
        "system" | "developer" => ChatRole::System,
        "user" => ChatRole::User,
        "assistant" => ChatRole::Assistant,
        other => {
            return Err(ApiError::field(
                format!("messages[{i}].role"),
                format!("role \"{other}\" is not served; use system, developer, user or assistant"),
            ))
        }
    };
    let at = format!("messages[{i}].content");
    let content = match m.content {
        Value::String(s) => s,
        Value::Array(parts) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::field(
                            format!("{at}[{j}]"),
                            "only text parts ({\"type\": \"text\", \"text\": …}) are served",
                        ))
                    }
                }
            }
            text
        }
        other => {
            return Err(ApiError::field(
                at,
                format!("content must be a string or a list of text parts, not {other}"),
            ))
        }
    };
    Ok(ChatMessage { role, content })
}

/// OpenAI's `finish_reason` for why a reply ended.
pub fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::StopToken | StopReason::StopString | StopReason::Cancelled => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
    }
}

/// The `usage` object of a reply.
fn usage(completion: &ChatCompletion) -> Value {
    json!({
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": completion.cached_tokens},
    })
}

/// A `chat.completion` object.
pub fn chat_completion(id: &str, model: &ModelInfo, completion: &ChatCompletion) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": now(),
        "model": model.name,
        "stand_in": model.stand_in.is_some(),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.text},
            "finish_reason": finish_reason(completion.stop),
            "logprobs": null,
        }],
        "usage": usage(completion),
    })
}

/// A `chat.completion.chunk` with `delta` and, on the last, the finish reason.
pub fn chat_chunk(id: &str, model: &ModelInfo, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": now(),
        "model": model.name,
        "stand_in": model.stand_in.is_some(),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

/// The chunk after the last choice, carrying `usage` (`stream_options.include_usage`).
pub fn usage_chunk(id: &str, model: &ModelInfo, completion: &ChatCompletion) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": now(),
        "model": model.name,
        "choices": [],
        "usage": usage(completion),
    })
}

/// The moderation object: one result per input. Safety-J states one category,
/// `unsafe`, whose score is P(unsafe).
pub fn moderation(model: &ModelInfo, verdicts: &[Verdict]) -> Value {
    let results: Vec<Value> = verdicts
        .iter()
        .map(|v| {
            let flagged = v.label == Label::Unsafe;
            json!({
                "flagged": flagged,
                "categories": {"unsafe": flagged},
                "category_scores": {"unsafe": v.p_unsafe},
                "threshold": v.threshold,
                "lang": v.lang,
            })
        })
        .collect();
    json!({
        "id": new_id("modr"),
        "model": model.name,
        "stand_in": model.stand_in.is_some(),
        "results": results,
    })
}

/// The model list: the one loaded model.
pub fn models(model: &ModelInfo) -> Value {
    json!({
        "object": "list",
        "data": [{
            "id": model.name,
            "object": "model",
            "created": now(),
            "owned_by": "safetyj",
            "stand_in": model.stand_in.is_some(),
        }],
    })
}
