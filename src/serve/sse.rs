//! Server-Sent Events: a job's updates as the judge's event stream (`critique`
//! pieces or a response stream's `check`s, the `verdict`, `[DONE]`) or OpenAI's
//! chat-completion chunks. Dropping a stream (the client went away) drops its job's
//! guard, which cancels the job.

use std::convert::Infallible;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::body::StopReadingOnDrop;
use super::error::ApiError;
use super::judge_api::{apply_threshold, verdict_json, ModelInfo};
use super::openai::{chat_chunk, finish_reason, usage_chunk};
use super::stream_api::check_json;
use super::worker::{CancelOnDrop, Update};
use crate::judge::chat::ChatCompletion;
use crate::judge::engine::Verdict;
use crate::judge::stream::StreamCheck;

/// The error a job reports when its worker stopped without a result.
pub fn worker_lost() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the judge failed while running this request",
    )
}

/// A job's updates, ending with exactly one `Done` (a failure if the worker dropped
/// the job without one).
pub fn updates<T: Send + 'static, P: Send + 'static>(
    receiver: UnboundedReceiver<Update<T, P>>,
) -> impl Stream<Item = Update<T, P>> + Send {
    stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Some(Update::Piece(piece)) => Some((Update::Piece(piece), Some(receiver))),
            Some(Update::Done(result)) => Some((Update::Done(result), None)),
            None => Some((Update::Done(Err(worker_lost())), None)),
        }
    })
}

/// The `[DONE]` event that ends every stream.
fn done() -> Event {
    Event::default().data("[DONE]")
}

/// The events that end a judge stream: `verdict` with the verdict labelled at
/// `threshold` (or `error` with an error object), then `[DONE]`.
fn last_events(result: Result<Verdict, ApiError>, model: &ModelInfo, threshold: f64) -> Vec<Event> {
    let last = match result {
        Ok(verdict) => Event::default().event("verdict").data(
            verdict_json(
                &apply_threshold(verdict, threshold, model.options.suspected_unsafe),
                model,
            )
            .to_string(),
        ),
        Err(e) => Event::default().event("error").data(e.body().to_string()),
    };
    vec![last, done()]
}

/// The judge's event stream: `event: critique` with `{"text": piece}` as the
/// critique is generated, then `event: verdict` with the verdict object (or `event:
/// error` with an error object), then `data: [DONE]`.
pub fn judge(
    receiver: UnboundedReceiver<Update<Verdict>>,
    guard: CancelOnDrop,
    model: Arc<ModelInfo>,
    threshold: f64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = updates(receiver).flat_map(move |update| {
        let _cancel_when_dropped = &guard;
        let events = match update {
            Update::Piece(text) => vec![Event::default()
                .event("critique")
                .data(json!({ "text": text }).to_string())],
            Update::Done(result) => last_events(result, &model, threshold),
        };
        stream::iter(events.into_iter().map(Ok))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// A response stream's events: `event: check` with each check (the object of
/// `safetyj judge --response-stdin --json`, labelled at `threshold`), then `event:
/// verdict` with the verdict object (or `event: error` with an error object), then
/// `data: [DONE]`. Dropping it stops the job and the reading of the request body.
pub fn judge_stream(
    receiver: UnboundedReceiver<Update<Verdict, StreamCheck>>,
    guard: CancelOnDrop,
    reading: StopReadingOnDrop,
    model: Arc<ModelInfo>,
    threshold: f64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = updates(receiver).flat_map(move |update| {
        let _cancel_when_dropped = (&guard, &reading);
        let events = match update {
            Update::Piece(check) => vec![Event::default()
                .event("check")
                .data(check_json(&check, threshold).to_string())],
            Update::Done(result) => last_events(result, &model, threshold),
        };
        stream::iter(events.into_iter().map(Ok))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// OpenAI's chat stream: a first chunk with the role, one chunk per piece, a last
/// chunk with the finish reason (and a usage chunk when asked), then `[DONE]`. A
/// failure is sent as an error object, as OpenAI's API does.
pub fn chat(
    receiver: UnboundedReceiver<Update<ChatCompletion>>,
    guard: CancelOnDrop,
    model: Arc<ModelInfo>,
    id: String,
    include_usage: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let data = |value: serde_json::Value| Event::default().data(value.to_string());
    let first = data(chat_chunk(
        &id,
        &model,
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    let rest = updates(receiver).flat_map(move |update| {
        let _cancel_when_dropped = &guard;
        let events = match update {
            Update::Piece(text) => vec![data(chat_chunk(
                &id,
                &model,
                json!({ "content": text }),
                None,
            ))],
            Update::Done(Ok(completion)) => {
                let mut events = vec![data(chat_chunk(
                    &id,
                    &model,
                    json!({}),
                    Some(finish_reason(completion.stop)),
                ))];
                if include_usage {
                    events.push(data(usage_chunk(&id, &model, &completion)));
                }
                events.push(done());
                events
            }
            Update::Done(Err(e)) => vec![data(e.body()), done()],
        };
        stream::iter(events.into_iter().map(Ok))
    });
    Sse::new(stream::once(async { Ok(first) }).chain(rest)).keep_alive(KeepAlive::default())
}
