//! The HTTP routes: auth, readiness, and one handler per endpoint, each checking its
//! body, queueing its job and answering with JSON or an event stream.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::UnboundedReceiver;

use super::body::{self, parse};
use super::error::{json_body, ApiError};
use super::judge_api::{apply_threshold, verdict_json, JudgeBody, ModelInfo, ModerationBody};
use super::openai::{self, ChatBody};
use super::sse;
use super::stream_api::StreamCall;
use super::worker::{ChatJob, JudgeJob, StreamJob, Update, Worker};
use super::ServiceConfig;

/// The loaded judge: its worker and how responses name it.
pub struct Loaded {
    pub worker: Worker,
    pub model: Arc<ModelInfo>,
}

/// What every handler shares.
pub struct Shared {
    pub config: ServiceConfig,
    /// sha256 of the API key: compared in constant time, whatever the lengths.
    key_digest: Option<[u8; 32]>,
    /// Set once the model is loaded.
    pub loaded: OnceLock<Loaded>,
    /// Why loading failed, when it did.
    pub failed: OnceLock<String>,
}

impl Shared {
    /// Handler state for `config`, with no model loaded yet.
    pub fn new(config: ServiceConfig) -> Shared {
        let key_digest = config
            .api_key
            .as_ref()
            .map(|key| Sha256::digest(key.as_bytes()).into());
        Shared {
            config,
            key_digest,
            loaded: OnceLock::new(),
            failed: OnceLock::new(),
        }
    }

    /// The loaded judge, or 503 while it loads.
    fn loaded(&self) -> Result<&Loaded, ApiError> {
        self.loaded.get().ok_or_else(|| ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                match self.failed.get() {
                    Some(e) => format!("the model failed to load: {e}"),
                    None => "the model is still loading".to_string(),
                },
            )
        })
    }

    /// When a request queued now must be answered.
    fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }
}

/// The service's routes over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/v1/judge", post(judge))
        .route("/v1/judge/stream", post(judge_stream))
        .route("/v1/moderations", post(moderations))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(shared.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .route("/healthz", get(health))
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(shared.config.max_body))
        .with_state(shared)
}

/// Bearer auth when the server has a key: 401 without the right one.
async fn auth(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(digest) = &shared.key_digest {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let matches = given.is_some_and(|key| {
            let given: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
            bool::from(given.ct_eq(digest))
        });
        if !matches {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send `Authorization: Bearer <key>`",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

/// 200 once the model is loaded, 503 while it loads or after it failed to.
async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match shared.loaded() {
        Ok(loaded) => json_body(&serde_json::json!({
            "status": "ok",
            "model": loaded.model.name,
            "stand_in": loaded.model.stand_in.is_some(),
            "notice": loaded.model.stand_in,
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let loaded = shared.loaded()?;
    Ok(json_body(&openai::models(&loaded.model)).into_response())
}

/// The job's result, ignoring streamed pieces; 504 past `deadline`.
async fn finish<T: Send + 'static>(
    receiver: UnboundedReceiver<Update<T>>,
    deadline: Instant,
) -> Result<T, ApiError> {
    let last = async {
        let mut updates = std::pin::pin!(sse::updates(receiver));
        while let Some(update) = updates.next().await {
            if let Update::Done(result) = update {
                return result;
            }
        }
        Err(sse::worker_lost())
    };
    tokio::time::timeout_at(deadline.into(), last)
        .await
        .unwrap_or_else(|_| Err(ApiError::timeout()))
}

async fn judge(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let loaded = shared.loaded()?;
    let body: JudgeBody = parse(body)?;
    let stream = body.stream;
    let call = body.check(&loaded.model)?;
    let deadline = shared.deadline();
    let (receiver, guard) = loaded.worker.judge(
        JudgeJob {
            request: call.request,
            max_critique_tokens: call.max_critique_tokens,
        },
        deadline,
    )?;
    if stream {
        return Ok(
            sse::judge(receiver, guard, loaded.model.clone(), call.threshold).into_response(),
        );
    }
    let verdict = finish(receiver, deadline).await?;
    drop(guard);
    let verdict = apply_threshold(
        verdict,
        call.threshold,
        loaded.model.options.suspected_unsafe,
    );
    Ok(json_body(&verdict_json(&verdict, &loaded.model)).into_response())
}

/// `POST /v1/judge/stream?query=…`: B's response is the request body, judged as it
/// arrives; the answer is an event stream of checks, then the verdict.
async fn judge_stream(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let loaded = shared.loaded()?;
    let call = StreamCall::from_query(query.as_deref(), &loaded.model)?;
    // A body whose length is declared is refused before streaming when it is
    // empty or too large; a chunked one is counted as it arrives.
    if body.is_end_stream() {
        return Err(ApiError::field(
            "response",
            "the request body (B's response) is empty: there is no answer to judge",
        ));
    }
    let max_body = shared.config.max_body;
    if body.size_hint().lower() > max_body as u64 {
        return Err(body::too_large());
    }
    let deadline = shared.deadline();
    let (parts, received) = body::part_channel();
    let (receiver, guard) = loaded.worker.stream(
        StreamJob {
            dialogue: call.dialogue,
            lang: call.lang,
            options: call.options,
            body: received,
        },
        deadline,
    )?;
    let reading = body::forward(body, parts, max_body, deadline);
    Ok(sse::judge_stream(
        receiver,
        guard,
        reading,
        loaded.model.clone(),
        call.threshold,
    )
    .into_response())
}

async fn moderations(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let loaded = shared.loaded()?;
    let body: ModerationBody = parse(body)?;
    let call = body.check(&loaded.model)?;
    let deadline = shared.deadline();
    let mut verdicts = Vec::with_capacity(call.requests.len());
    for request in call.requests {
        let (receiver, guard) = loaded.worker.judge(
            JudgeJob {
                request,
                max_critique_tokens: loaded.model.options.max_critique_tokens,
            },
            deadline,
        )?;
        let verdict = finish(receiver, deadline).await?;
        drop(guard);
        verdicts.push(apply_threshold(
            verdict,
            call.threshold,
            loaded.model.options.suspected_unsafe,
        ));
    }
    Ok(json_body(&openai::moderation(&loaded.model, &verdicts)).into_response())
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let loaded = shared.loaded()?;
    let body: ChatBody = parse(body)?;
    let stream = body.stream;
    let call = body.check()?;
    let deadline = shared.deadline();
    let (receiver, guard) = loaded.worker.chat(
        ChatJob {
            messages: call.messages,
            params: call.params,
        },
        deadline,
    )?;
    let id = openai::new_id("chatcmpl");
    if stream {
        return Ok(sse::chat(
            receiver,
            guard,
            loaded.model.clone(),
            id,
            call.include_usage,
        )
        .into_response());
    }
    let completion = finish(receiver, deadline).await?;
    drop(guard);
    Ok(json_body(&openai::chat_completion(&id, &loaded.model, &completion)).into_response())
}
