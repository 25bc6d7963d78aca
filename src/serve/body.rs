//! Request bodies: the size limit's rejection and JSON that fails to parse, as
//! OpenAI-style errors that name the field at fault; and a streamed body read chunk
//! by chunk as it arrives, for the judge's worker, under the same size limit.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::{channel, Receiver, Sender};
use tokio::task::AbortHandle;

use super::error::ApiError;

/// The body of a request as `T`: 413 past `--max-body`, 400 for malformed JSON or a
/// field of the wrong type or name (the field's path is the error's `param`).
pub fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(status, rejection.body_text())
        }
    })?;
    let mut json = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {inner}"),
            )
        } else {
            ApiError::field(path.clone(), format!("{path}: {inner}"))
        }
    })?;
    json.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })?;
    Ok(value)
}

/// A piece of a streamed request body, as the judge's worker receives it.
#[derive(Debug)]
pub enum BodyPart {
    /// Bytes as they arrived (cut anywhere, even inside a UTF-8 character).
    Data(Bytes),
    /// The body ended.
    End,
    /// The body cannot be read on: past `--max-body` or the deadline, or the
    /// connection broke.
    Failed(ApiError),
}

/// Chunks read ahead of the worker; past this the body waits (and with it the
/// client, by TCP flow control).
const PARTS_AHEAD: usize = 16;

/// A channel for a streamed body's parts: [`forward`] sends, the job receives.
pub fn part_channel() -> (Sender<BodyPart>, Receiver<BodyPart>) {
    channel(PARTS_AHEAD)
}

/// Stops reading a streamed body when dropped (the response it feeds is gone).
pub struct StopReadingOnDrop(AbortHandle);

impl Drop for StopReadingOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads `body` chunk by chunk as it arrives and sends each to `parts`, then `End`;
/// or `Failed` once more than `max_body` bytes came, `deadline` passed or the
/// connection broke. Stops reading as soon as the receiver is gone (the job ended
/// early), and when the returned guard is dropped.
pub fn forward(
    body: Body,
    parts: Sender<BodyPart>,
    max_body: usize,
    deadline: Instant,
) -> StopReadingOnDrop {
    let task = tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut total = 0usize;
        loop {
            let next = tokio::select! {
                _ = parts.closed() => return,
                next = tokio::time::timeout_at(deadline.into(), chunks.next()) => next,
            };
            let part = match next {
                Err(_) => BodyPart::Failed(ApiError::timeout()),
                Ok(None) => BodyPart::End,
                Ok(Some(Err(e))) => BodyPart::Failed(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                )),
                Ok(Some(Ok(bytes))) => {
                    total += bytes.len();
                    if total > max_body {
                        BodyPart::Failed(too_large())
                    } else {
                        BodyPart::Data(bytes)
                    }
                }
            };
            let last = !matches!(part, BodyPart::Data(_));
            if parts.send(part).await.is_err() || last {
                return;
            }
        }
    });
    StopReadingOnDrop(task.abort_handle())
}

/// 413 for a body past `--max-body`.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the request body is larger than the server's --max-body",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        turns: Vec<Turn>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Turn {
        role: String,
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let ok = parse::<Body>(Ok(Bytes::from_static(br#"{"turns":[{"role":"a"}]}"#))).unwrap();
        assert_eq!(ok.turns[0].role, "a");
        let e = parse::<Body>(Ok(Bytes::from_static(
            br#"{"turns":[{"role":"a"},{"role":1}]}"#,
        )))
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("turns[1].role"));
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse::<Body>(Ok(Bytes::from_static(b"{\"turns\": ["))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("EOF"), "{}", e.message);
    }
}
