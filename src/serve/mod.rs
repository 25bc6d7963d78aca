//! `safetyj serve`: the judge as a local HTTP service (axum on tokio). One judge,
//! loaded once, owned by a worker thread that runs requests in arrival order from a
//! bounded queue; OpenAI-compatible moderation and chat endpoints beside the judge's
//! own, with SSE streaming, bearer auth, body and time limits, and graceful shutdown.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/judge` | a verdict, as `safetyj judge --json` prints it (`stream: true`: SSE) |
//! | `POST /v1/judge/stream?query=…` | B's response as a streamed body, checked as it arrives: SSE checks, then the verdict |
//! | `POST /v1/moderations` | OpenAI's moderation shape; a string is B's answer to an empty A turn |
//! | `POST /v1/chat/completions` | OpenAI-compatible chat on the loaded model (`stream: true`: SSE) |
//! | `GET /v1/models` | the loaded model |
//! | `GET /health`, `GET /healthz` | 200 when ready, 503 while loading |

mod body;
mod error;
mod judge_api;
mod openai;
mod routes;
mod sse;
mod stream_api;
mod worker;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use judge_api::ModelInfo;

use crate::error::{Error, Result};
use crate::judge::engine::{Judge, JudgeOptions};
use routes::{Loaded, Shared};
use worker::Worker;

/// The limits and credentials of a service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The bearer key clients must send; `None` serves without auth.
    pub api_key: Option<String>,
    /// Requests that may wait behind the running one; more are answered 429.
    pub max_queue: usize,
    /// Largest request body in bytes; larger ones are answered 413.
    pub max_body: usize,
    /// Time from arrival to answer; later requests are answered 504 and their
    /// generation stops at the next token.
    pub request_timeout: Duration,
    /// Positions of the chat endpoint's KV cache (at most the model's context).
    pub chat_context: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            api_key: None,
            max_queue: 64,
            max_body: 1 << 20,
            request_timeout: Duration::from_secs(300),
            chat_context: 4096,
        }
    }
}

/// A judge service: its routes, and the judge once [`Service::ready`] hands it over.
/// Clones share one service.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

impl Service {
    /// A service with no model yet: judge routes answer 503 until [`Service::ready`].
    pub fn new(config: ServiceConfig) -> Service {
        Service {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// Hands the loaded judge to the service's worker thread. A second call is
    /// ignored: the first judge keeps serving.
    pub fn ready(&self, judge: Judge, model: ModelInfo) {
        let config = &self.shared.config;
        let _ = self.shared.loaded.get_or_init(|| Loaded {
            worker: Worker::start(judge, config.max_queue, config.chat_context),
            model: Arc::new(model),
        });
    }

    /// Records that loading failed: the judge routes answer 503 with `message`.
    pub fn failed(&self, message: String) {
        let _ = self.shared.failed.set(message);
    }

    /// The service's routes.
    pub fn router(&self) -> axum::Router {
        routes::router(self.shared.clone())
    }

    /// Stops taking jobs and waits up to `grace` for queued ones; returns whether
    /// they all finished in time.
    pub fn close(&self, grace: Duration) -> bool {
        match self.shared.loaded.get() {
            Some(loaded) => loaded.worker.close(grace),
            None => true,
        }
    }
}

/// Serves `service` on `listener` until `shutdown` completes, then stops accepting,
/// lets requests in flight finish (each is bounded by the request timeout) and
/// drains the judge's queue.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, service.router())
        .with_graceful_shutdown(shutdown)
        .await?;
    let grace = service.shared.config.request_timeout;
    let closing = service.clone();
    tokio::task::spawn_blocking(move || closing.close(grace))
        .await
        .map_err(std::io::Error::other)?;
    Ok(())
}

/// What `safetyj serve` is asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The judge model: a preset, GGUF file or Hugging Face folder.
    pub model: String,
    pub host: String,
    pub port: u16,
    /// The environment variable holding the API key (bearer auth); `None`: no auth.
    pub api_key_env: Option<String>,
    pub max_queue: usize,
    pub max_body: usize,
    pub request_timeout: Duration,
    /// The judge's settings (threshold, critique cap, context).
    pub judge: JudgeOptions,
    /// Where the model runs.
    pub device: crate::device::Device,
}

/// Completes on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// Runs `safetyj serve`: binds, loads the model in the background (the health route
/// answers 503 meanwhile), serves until Ctrl-C or SIGTERM, and returns once the
/// requests in flight are answered. Fails if the address cannot be bound, the key
/// variable is unset, or the model cannot be loaded.
pub fn run(options: &ServeOptions) -> Result<()> {
    let api_key = match &options.api_key_env {
        None => None,
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|key| !key.trim().is_empty())
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "--api-key-env {var}: the environment variable is unset or empty"
                    ))
                })?,
        ),
    };
    if options.max_queue == 0 {
        return Err(Error::InvalidInput("--max-queue must be at least 1".into()));
    }
    let config = ServiceConfig {
        api_key,
        max_queue: options.max_queue,
        max_body: options.max_body,
        request_timeout: options.request_timeout,
        chat_context: options.judge.context,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidInput(format!("starting the async runtime: {e}")))?;
    runtime.block_on(async {
        let address = format!("{}:{}", options.host, options.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| Error::InvalidInput(format!("cannot listen on {address}: {e}")))?;
        let bound = listener.local_addr().map_or(address, |a| a.to_string());
        eprintln!("safetyj serve: listening on http://{bound}, loading {}", options.model);

        let service = Service::new(config);
        let load_error: Arc<Mutex<Option<Error>>> = Arc::default();
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
        {
            let service = service.clone();
            let load_error = load_error.clone();
            let model = options.model.clone();
            let judge_options = options.judge.clone();
            let device = options.device;
            std::thread::spawn(move || {
                // Progress lines, at most twice a second.
                let mut shown: Option<std::time::Instant> = None;
                let progress = |line: &str| {
                    if shown.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                        shown = Some(std::time::Instant::now());
                        eprintln!("{line}");
                    }
                };
                match Judge::load_on(&model, device, judge_options.clone(), progress) {
                    Ok((judge, stand_in)) => {
                        if let Some(notice) = judge.context().and_then(|ctx| ctx.software_notice()) {
                            eprintln!("{notice}");
                        }
                        if let Some(notice) = &stand_in {
                            eprintln!("{notice}");
                        }
                        eprintln!("safetyj serve: {model} loaded, ready");
                        service.ready(
                            judge,
                            ModelInfo {
                                name: model,
                                stand_in,
                                options: judge_options,
                            },
                        );
                    }
                    Err(e) => {
                        service.failed(e.to_string());
                        *load_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        let _ = failed_tx.send(());
                    }
                }
            });
        }
        let shutdown = async move {
            tokio::select! {
                _ = stop_signal() => eprintln!("safetyj serve: stopping, finishing requests in flight"),
                Ok(()) = failed_rx => {}
            }
        };
        serve(listener, service, shutdown)
            .await
            .map_err(|e| Error::InvalidInput(format!("serving: {e}")))?;
        let failure = load_error.lock().unwrap_or_else(|p| p.into_inner()).take();
        failure.map_or(Ok(()), Err)
    })
}
