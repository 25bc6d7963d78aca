//! `/v1/judge/stream` requests: the URL's query parameters (`query`, `lang`,
//! `threshold`, `check_every`, `stop_at`; named as `/v1/judge`'s JSON fields and the
//! CLI's `--response-stdin` flags) checked into a streaming moderation, and checks as
//! `safetyj judge --response-stdin --json` prints them.

use percent_encoding::percent_decode_str;

use super::error::ApiError;
use super::judge_api::{check_threshold, ModelInfo};
use crate::judge::stream::{StreamCheck, StreamOptions};
use crate::judge::{Dialogue, Label, Lang, LangChoice, Mode};

/// A checked stream request: A's query (B's response is the request body), and how
/// the stream checks.
#[derive(Debug)]
pub struct StreamCall {
    /// A's query, with an empty answer that the body fills.
    pub dialogue: Dialogue,
    /// `None`: detected from the query.
    pub lang: Option<Lang>,
    pub options: StreamOptions,
    /// The threshold each check's and the verdict's label are decided with.
    pub threshold: f64,
}

/// The parameters of a query string, percent-decoded (`+` is a space), in order.
fn decode(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let text = |raw: &str, what: &str| {
        percent_decode_str(&raw.replace('+', " "))
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| {
                ApiError::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("the query string's {what} {raw:?} is not UTF-8 once percent-decoded"),
                )
            })
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((text(name, "name")?, text(value, "value")?))
        })
        .collect()
}

/// A number parameter, or a 400 naming it.
fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value
        .trim()
        .parse()
        .map_err(|_| ApiError::field(name, format!("{name} must be a number, not {value:?}")))
}

impl StreamCall {
    /// The stream the URL's query string asks for, or a 400 naming the parameter at
    /// fault: `query` is required and not blank, `check_every` at least 1 (default
    /// 16), `stop_at` and `threshold` in [0, 1], `lang` `en`, `zh` or `auto`.
    pub fn from_query(query: Option<&str>, model: &ModelInfo) -> Result<StreamCall, ApiError> {
        let mut text = None;
        let mut lang = LangChoice::Auto;
        let mut threshold = None;
        let mut options = StreamOptions::default();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in decode(query.unwrap_or_default())? {
            if seen.contains(&name) {
                return Err(ApiError::field(
                    &name,
                    format!("the parameter {name} is given more than once"),
                ));
            }
            match name.as_str() {
                "query" => text = Some(value),
                "lang" => {
                    lang = value
                        .parse()
                        .map_err(|e: crate::Error| ApiError::field("lang", e.to_string()))?
                }
                "threshold" => threshold = Some(number("threshold", &value)?),
                "check_every" => {
                    options.check_every = number("check_every", &value)?;
                    if options.check_every == 0 {
                        return Err(ApiError::field(
                            "check_every",
                            "check_every must be at least 1 (response tokens between checks)",
                        ));
                    }
                }
                "stop_at" => {
                    let stop: f64 = number("stop_at", &value)?;
                    if !(0.0..=1.0).contains(&stop) {
                        return Err(ApiError::field(
                            "stop_at",
                            format!("stop_at must be between 0 and 1, not {stop}"),
                        ));
                    }
                    options.stop_at = Some(stop);
                }
                other => {
                    return Err(ApiError::field(
                        other,
                        format!(
                            "unknown parameter `{other}`, expected one of `query`, `lang`, \
                             `threshold`, `check_every`, `stop_at` (B's response is the request body)"
                        ),
                    ))
                }
            }
            seen.push(name);
        }
        let query = text.ok_or_else(|| {
            ApiError::field(
                "query",
                "missing parameter `query` (A's query, in the URL: /v1/judge/stream?query=…)",
            )
        })?;
        if query.trim().is_empty() {
            return Err(ApiError::field(
                "query",
                "query is empty: there is nothing to judge",
            ));
        }
        Ok(StreamCall {
            dialogue: Dialogue::single(query, ""),
            lang: lang.fixed(),
            options,
            threshold: check_threshold(threshold, Mode::Verdict, model)?,
        })
    }
}

/// A check as `safetyj judge --response-stdin --json` prints it, its label decided at
/// `threshold` (as `/v1/judge` decides a verdict's).
pub fn check_json(check: &StreamCheck, threshold: f64) -> serde_json::Value {
    let check = StreamCheck {
        label: if check.p_unsafe >= threshold {
            Label::Unsafe
        } else {
            Label::Safe
        },
        threshold,
        ..check.clone()
    };
    serde_json::to_value(&check).expect("checks serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::engine::JudgeOptions;

    fn model() -> ModelInfo {
        ModelInfo {
            name: "m".into(),
            stand_in: None,
            options: JudgeOptions::default(),
        }
    }

    #[test]
    fn parameters_are_decoded_and_checked() {
        let call = StreamCall::from_query(
            Some("query=How+do%20I%3F%E4%BD%A0&lang=zh&check_every=4&stop_at=0.9&threshold=0.25"),
            &model(),
        )
        .unwrap();
        assert_eq!(call.dialogue.turns()[0].content, "How do I?你");
        assert_eq!(call.dialogue.turns()[1].content, "");
        assert_eq!(call.lang, Some(Lang::Zh));
        assert_eq!(
            call.options,
            StreamOptions {
                check_every: 4,
                stop_at: Some(0.9)
            }
        );
        assert_eq!(call.threshold, 0.25);
        let call = StreamCall::from_query(Some("query=a"), &model()).unwrap();
        assert_eq!(call.lang, None);
        assert_eq!(call.options, StreamOptions::default());
        assert_eq!(call.threshold, JudgeOptions::default().threshold);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, param) in [
            (None, "query"),
            (Some("lang=en"), "query"),
            (Some("query=+%20"), "query"),
            (Some("query=a&check_every=0"), "check_every"),
            (Some("query=a&check_every=-1"), "check_every"),
            (Some("query=a&stop_at=1.5"), "stop_at"),
            (Some("query=a&stop_at=x"), "stop_at"),
            (Some("query=a&threshold=-0.1"), "threshold"),
            (Some("query=a&lang=fr"), "lang"),
            (Some("query=a&colour=red"), "colour"),
            (Some("query=a&query=b"), "query"),
        ] {
            let e = StreamCall::from_query(query, &model()).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{query:?}");
            assert_eq!(e.param.as_deref(), Some(param), "{query:?}: {}", e.message);
        }
        let e = StreamCall::from_query(Some("query=%FF"), &model()).unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }
}
