//! The judge's queue: one thread owns the judge (it is not re-entrant) and runs jobs
//! in arrival order from a bounded queue. A handler gets the job's updates (streamed
//! pieces, then the result) over a channel and a guard whose drop cancels the job,
//! so a client that goes away stops its generation at the next token. A response
//! stream's job holds the judge while its body arrives, chunk by chunk, over a
//! channel from the handler.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::body::BodyPart;
use super::error::ApiError;
use crate::judge::chat::{ChatCompletion, ChatMessage, ChatParams, ChatSession};
use crate::judge::engine::{Judge, JudgeRequest, Verdict};
use crate::judge::stream::{StreamCheck, StreamOptions};
use crate::judge::{Dialogue, Lang};
use crate::model::generate::StopReason;

/// What a running job reports: pieces as they are made (text as it is generated, or
/// a response stream's checks), then its result.
#[derive(Debug)]
pub enum Update<T, P = String> {
    Piece(P),
    Done(Result<T, ApiError>),
}

/// A dialogue to judge, with the request's critique cap.
pub struct JudgeJob {
    pub request: JudgeRequest,
    /// Most critique pieces (about one per token); at most the judge's own cap.
    pub max_critique_tokens: usize,
}

/// A chat to continue.
pub struct ChatJob {
    pub messages: Vec<ChatMessage>,
    pub params: ChatParams,
}

/// A response to moderate as its bytes arrive.
pub struct StreamJob {
    /// A's query, with B's response empty so far.
    pub dialogue: Dialogue,
    pub lang: Option<Lang>,
    pub options: StreamOptions,
    /// B's response, as the handler reads it from the request body.
    pub body: tokio::sync::mpsc::Receiver<BodyPart>,
}

enum Work {
    Judge(JudgeJob, UnboundedSender<Update<Verdict>>),
    Chat(ChatJob, UnboundedSender<Update<ChatCompletion>>),
    Stream(StreamJob, UnboundedSender<Update<Verdict, StreamCheck>>),
}

/// What a handler and its queued job share.
struct Ticket {
    cancelled: AtomicBool,
    deadline: Instant,
}

impl Ticket {
    fn timed_out(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn should_stop(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.timed_out()
    }
}

/// Cancels its job when dropped: held by the handler, or by the SSE stream, for as
/// long as someone waits for the job's updates.
pub struct CancelOnDrop(Arc<Ticket>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }
}

struct Job {
    work: Work,
    ticket: Arc<Ticket>,
}

/// The thread that owns the judge and the sending end of its queue.
pub struct Worker {
    queue: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// Starts the thread owning `judge`, with room for `max_queue` waiting jobs
    /// (besides the one running) and a chat cache of `chat_context` positions made
    /// on the first chat request.
    pub fn start(judge: Judge, max_queue: usize, chat_context: usize) -> Worker {
        let (sender, receiver) = sync_channel::<Job>(max_queue.max(1));
        let thread = std::thread::Builder::new()
            .name("safetyj-judge".into())
            .spawn(move || {
                let mut chat: Option<ChatSession> = None;
                for job in receiver {
                    if job.ticket.cancelled.load(Ordering::Relaxed) {
                        continue;
                    }
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        run(&judge, &mut chat, chat_context, job.work, &job.ticket)
                    }));
                    if outcome.is_err() {
                        // The job's sender was dropped with it: its handler sees a
                        // closed channel and answers 500. The chat cache is suspect.
                        chat = None;
                    }
                }
            })
            .expect("spawning a thread");
        Worker {
            queue: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues a dialogue to judge.
    pub fn judge(
        &self,
        job: JudgeJob,
        deadline: Instant,
    ) -> Result<(UnboundedReceiver<Update<Verdict>>, CancelOnDrop), ApiError> {
        let (sender, receiver) = unbounded_channel();
        let guard = self.submit(|| Work::Judge(job, sender), deadline)?;
        Ok((receiver, guard))
    }

    /// Queues a chat to continue.
    pub fn chat(
        &self,
        job: ChatJob,
        deadline: Instant,
    ) -> Result<(UnboundedReceiver<Update<ChatCompletion>>, CancelOnDrop), ApiError> {
        let (sender, receiver) = unbounded_channel();
        let guard = self.submit(|| Work::Chat(job, sender), deadline)?;
        Ok((receiver, guard))
    }

    /// Queues a response stream. It holds the judge from when it starts until its
    /// body ends (or it stops); jobs queued behind it wait.
    pub fn stream(
        &self,
        job: StreamJob,
        deadline: Instant,
    ) -> Result<
        (
            UnboundedReceiver<Update<Verdict, StreamCheck>>,
            CancelOnDrop,
        ),
        ApiError,
    > {
        let (sender, receiver) = unbounded_channel();
        let guard = self.submit(|| Work::Stream(job, sender), deadline)?;
        Ok((receiver, guard))
    }

    fn submit(
        &self,
        work: impl FnOnce() -> Work,
        deadline: Instant,
    ) -> Result<CancelOnDrop, ApiError> {
        let ticket = Arc::new(Ticket {
            cancelled: AtomicBool::new(false),
            deadline,
        });
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let Some(queue) = queue.as_ref() else {
            return Err(shutting_down());
        };
        match queue.try_send(Job {
            work: work(),
            ticket: ticket.clone(),
        }) {
            Ok(()) => Ok(CancelOnDrop(ticket)),
            Err(TrySendError::Full(_)) => Err(ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "the judge's queue is full (--max-queue); retry shortly",
                )
            }),
            Err(TrySendError::Disconnected(_)) => Err(shutting_down()),
        }
    }

    /// Stops taking jobs and waits up to `grace` for the queued ones to finish.
    /// Returns whether the thread ended in time.
    pub fn close(&self, grace: Duration) -> bool {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return true;
        };
        let until = Instant::now() + grace;
        while !thread.is_finished() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        thread.join().is_ok()
    }
}

/// 503 once the server is stopping.
fn shutting_down() -> ApiError {
    ApiError {
        retry_after: Some(5),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
    }
}

/// Runs one job on the worker thread, reporting to its channel.
fn run(
    judge: &Judge,
    chat: &mut Option<ChatSession>,
    chat_context: usize,
    work: Work,
    ticket: &Ticket,
) {
    match work {
        Work::Judge(job, updates) => {
            report(ticket, &updates, || run_judge(judge, job, &updates, ticket))
        }
        Work::Chat(job, updates) => report(ticket, &updates, || {
            run_chat(judge, chat, chat_context, job, &updates, ticket)
        }),
        Work::Stream(job, updates) => report(ticket, &updates, || {
            run_stream(judge, job, &updates, ticket)
        }),
    }
}

/// Runs `job` unless its ticket timed out in the queue, and sends its result as the
/// last update.
fn report<T, P>(
    ticket: &Ticket,
    updates: &UnboundedSender<Update<T, P>>,
    job: impl FnOnce() -> Result<T, ApiError>,
) {
    let result = if ticket.timed_out() {
        Err(ApiError::timeout())
    } else {
        job()
    };
    let _ = updates.send(Update::Done(result));
}

/// Forwards pieces while someone listens and the deadline holds.
fn forward(
    updates: &UnboundedSender<Update<impl Sized>>,
    ticket: &Ticket,
    piece: &str,
) -> ControlFlow<()> {
    if ticket.should_stop() || updates.send(Update::Piece(piece.to_string())).is_err() {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

fn run_judge(
    judge: &Judge,
    job: JudgeJob,
    updates: &UnboundedSender<Update<Verdict>>,
    ticket: &Ticket,
) -> Result<Verdict, ApiError> {
    let mut pieces = 0;
    let mut capped = false;
    let mut verdict = judge.evaluate(&job.request, |piece| {
        forward(updates, ticket, piece)?;
        pieces += 1;
        if pieces >= job.max_critique_tokens {
            capped = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if verdict.critique_stop == Some(StopReason::Cancelled) {
        if capped {
            verdict.critique_stop = Some(StopReason::MaxTokens);
        } else if ticket.timed_out() {
            return Err(ApiError::timeout());
        }
    }
    Ok(verdict)
}

fn run_chat(
    judge: &Judge,
    chat: &mut Option<ChatSession>,
    chat_context: usize,
    job: ChatJob,
    updates: &UnboundedSender<Update<ChatCompletion>>,
    ticket: &Ticket,
) -> Result<ChatCompletion, ApiError> {
    let session = match chat {
        Some(session) => session,
        None => chat.insert(judge.chat_session(chat_context)?),
    };
    let completion = judge.chat(session, &job.messages, &job.params, |piece| {
        forward(updates, ticket, piece)
    })?;
    if completion.stop == StopReason::Cancelled && ticket.timed_out() {
        return Err(ApiError::timeout());
    }
    Ok(completion)
}

/// Feeds the body's chunks to a response stream as they arrive, sending each check;
/// stops at a check that reaches `stop_at` (the rest of the body is not read), and
/// gives the verdict on the response so far.
fn run_stream(
    judge: &Judge,
    job: StreamJob,
    updates: &UnboundedSender<Update<Verdict, StreamCheck>>,
    ticket: &Ticket,
) -> Result<Verdict, ApiError> {
    let StreamJob {
        dialogue,
        lang,
        options,
        mut body,
    } = job;
    let mut stream = judge.moderate_stream(&dialogue, lang, options)?;
    // Whether the response holds more than whitespace, and the bytes of a character
    // cut between chunks.
    let mut has_text = false;
    let mut cut = Vec::new();
    loop {
        let part = body.blocking_recv();
        if ticket.timed_out() {
            return Err(ApiError::timeout());
        }
        if ticket.should_stop() {
            return Err(client_gone());
        }
        match part {
            Some(BodyPart::Data(bytes)) => {
                let check = stream.push_bytes(&bytes)?;
                if !has_text {
                    // `push_bytes` refused bytes that are not UTF-8: only a cut
                    // character's bytes stay in `cut`.
                    cut.extend_from_slice(&bytes);
                    let whole = match std::str::from_utf8(&cut) {
                        Ok(text) => text,
                        Err(e) => {
                            std::str::from_utf8(&cut[..e.valid_up_to()]).expect("valid up to here")
                        }
                    };
                    has_text = whole.chars().any(|c| !c.is_whitespace());
                    let done = whole.len();
                    cut.drain(..done);
                }
                if let Some(check) = check {
                    let stopped = check.stopped;
                    if updates.send(Update::Piece(check)).is_err() {
                        return Err(client_gone());
                    }
                    if stopped {
                        break;
                    }
                }
            }
            Some(BodyPart::End) => break,
            Some(BodyPart::Failed(e)) => return Err(e),
            None => return Err(client_gone()),
        }
    }
    if !has_text {
        return Err(ApiError::field(
            "response",
            "the request body (B's response) is empty: there is no answer to judge",
        ));
    }
    Ok(stream.finish()?)
}

/// What a stream whose client went away ends with (no one reads it).
fn client_gone() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "the client went away before the response body ended",
    )
}
