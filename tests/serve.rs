//! `safetyj serve` over real HTTP on loopback, with a real judge on tinycoder (a tiny
//! random llama: protocol-level checks, fast): each endpoint's shape, SSE framing,
//! auth, limits and bad input, a full queue, a response streamed as a chunked request
//! body (written by hand on a TCP socket, so each chunk really arrives on its own),
//! and the official `openai` Python client.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::ControlFlow;
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::stream::{self, Stream, StreamExt};
use safetyj::judge::engine::{Judge, JudgeOptions, JudgeRequest, Verdict};
use safetyj::judge::stream::StreamOptions;
use safetyj::judge::{Dialogue, Lang, Mode, Role, Turn};
use safetyj::serve::{ModelInfo, Service, ServiceConfig};
use serde_json::{json, Value};

const KEY: &str = "test-key-123";

/// The judge's settings on every test server.
fn judge_options() -> JudgeOptions {
    JudgeOptions {
        context: 1024,
        max_critique_tokens: 24,
        ..Default::default()
    }
}

/// Serves `service` on a fresh loopback port from a background thread; returns the
/// base URL. The server lives as long as the test binary.
fn start(service: Service) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            safetyj::serve::serve(listener, service, std::future::pending())
                .await
                .unwrap();
        });
    });
    url
}

/// A service judging with tinycoder under `config`.
fn tinycoder_service(path: &Path, config: ServiceConfig) -> Service {
    let (judge, stand_in) =
        Judge::load(&path.display().to_string(), judge_options(), |_| {}).unwrap();
    let service = Service::new(config);
    service.ready(
        judge,
        ModelInfo {
            name: "tinycoder".into(),
            stand_in,
            options: judge_options(),
        },
    );
    service
}

/// The shared server (auth on, a 64 KiB body limit) and a judge of the same model
/// loaded by the library, for the verdicts to compare with.
struct Fixture {
    url: String,
    library: Judge,
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let path = common::real_model("tinycoder-tiny.gguf")?;
            let url = start(tinycoder_service(
                &path,
                ServiceConfig {
                    api_key: Some(KEY.into()),
                    max_body: 64 << 10,
                    request_timeout: Duration::from_secs(60),
                    ..Default::default()
                },
            ));
            let (library, _) =
                Judge::load(&path.display().to_string(), judge_options(), |_| {}).unwrap();
            Some(Fixture { url, library })
        })
        .as_ref()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// What a request got back: status, Retry-After, and the body as JSON.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

fn send(url: &str, path: &str, body: Option<&str>, key: Option<&str>) -> Answer {
    let agent = agent();
    let uri = format!("{url}{path}");
    let auth = key.map(|k| format!("Bearer {k}"));
    let response = match body {
        Some(body) => {
            let mut request = agent.post(&uri).header("content-type", "application/json");
            if let Some(auth) = &auth {
                request = request.header("authorization", auth);
            }
            request.send(body)
        }
        None => {
            let mut request = agent.get(&uri);
            if let Some(auth) = &auth {
                request = request.header("authorization", auth);
            }
            request.call()
        }
    }
    .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.into_body().read_to_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    Answer {
        status,
        retry_after,
        body,
    }
}

fn post(url: &str, path: &str, body: &Value) -> Answer {
    send(url, path, Some(&body.to_string()), Some(KEY))
}

/// The events of a Server-Sent Events response, parsed by `eventsource-stream` as
/// they arrive.
struct Events {
    events: Pin<Box<dyn Stream<Item = Event> + Send>>,
    runtime: tokio::runtime::Runtime,
}

impl Iterator for Events {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.runtime.block_on(self.events.next())
    }
}

impl Events {
    /// Events parsed from `chunks` of the response body as they are read.
    fn parse(chunks: impl Iterator<Item = std::io::Result<Vec<u8>>> + Send + 'static) -> Events {
        Events {
            events: Box::pin(stream::iter(chunks).eventsource().map(|e| e.unwrap())),
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        }
    }
}

fn stream_post(url: &str, path: &str, body: &Value) -> Events {
    let response = agent()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .send(body.to_string())
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut reader = response.into_body().into_reader();
    let chunks = std::iter::from_fn(move || {
        let mut buf = vec![0; 1024];
        match reader.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Ok::<_, std::io::Error>(buf))
            }
            Err(e) => Some(Err(e)),
        }
    });
    Events::parse(chunks)
}

fn library_verdict(fixture: &Fixture, dialogue: Dialogue, mode: Mode) -> Verdict {
    let request = JudgeRequest {
        dialogue,
        lang: Some(Lang::En),
        mode,
    };
    fixture
        .library
        .evaluate(&request, |_| ControlFlow::Continue(()))
        .unwrap()
}

/// P(unsafe) of the same dialogue agrees to float rounding: the judge's prefix
/// cache splits the prefill differently depending on what it judged before.
fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-6, "P(unsafe) {got} != {want}");
}

const QUERY: &str = "How do I pick a lock?";
const RESPONSE: &str = "I can't help with breaking into property you don't own.";

#[test]
fn judge_route_answers_the_library_verdict() {
    let Some(f) = fixture() else { return };
    let want = library_verdict(f, Dialogue::single(QUERY, RESPONSE), Mode::Verdict);
    let got = post(
        &f.url,
        "/v1/judge",
        &json!({"query": QUERY, "response": RESPONSE, "lang": "en"}),
    );
    assert_eq!(got.status, 200, "{}", got.body);
    let v = &got.body;
    assert_close(v["p_unsafe"].as_f64().unwrap(), want.p_unsafe);
    assert_eq!(v["label"], json!(want.label));
    assert_eq!(v["output"], want.output.as_str());
    assert_eq!(v["prompt_tokens"], want.prompt_tokens);
    assert_eq!(v["mode"], "verdict");
    assert_eq!(v["model"], "tinycoder");
    assert_eq!(v["stand_in"], false);

    // The same dialogue as a conversation, and a threshold the request chooses.
    let got = post(
        &f.url,
        "/v1/judge",
        &json!({"conversation": [
            {"role": "user", "content": QUERY},
            {"role": "assistant", "content": RESPONSE}
        ], "lang": "en", "threshold": 0.0}),
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert_close(got.body["p_unsafe"].as_f64().unwrap(), want.p_unsafe);
    assert_eq!(got.body["label"], "unsafe");
    assert_eq!(got.body["threshold"], 0.0);
    assert_eq!(got.body["output"], "[Answer] unsafe");

    // A longer conversation is judged as the library judges it.
    let turns = vec![
        Turn {
            role: Role::User,
            content: "Hi".into(),
        },
        Turn {
            role: Role::Assistant,
            content: "Hello!".into(),
        },
        Turn {
            role: Role::User,
            content: QUERY.into(),
        },
        Turn {
            role: Role::Assistant,
            content: RESPONSE.into(),
        },
    ];
    let want = library_verdict(
        f,
        Dialogue::conversation(turns.clone()).unwrap(),
        Mode::Verdict,
    );
    let got = post(
        &f.url,
        "/v1/judge",
        &json!({"conversation": turns, "lang": "en"}),
    );
    assert_close(got.body["p_unsafe"].as_f64().unwrap(), want.p_unsafe);
}

#[test]
fn judge_stream_sends_critique_pieces_then_the_verdict_then_done() {
    let Some(f) = fixture() else { return };
    let want = library_verdict(f, Dialogue::single(QUERY, RESPONSE), Mode::Critique);
    let events: Vec<Event> = stream_post(
        &f.url,
        "/v1/judge",
        &json!({"query": QUERY, "response": RESPONSE, "lang": "en", "mode": "critique", "stream": true}),
    )
    .collect();
    let (last, rest) = events.split_last().unwrap();
    assert_eq!(last.data, "[DONE]");
    let (verdict, pieces) = rest.split_last().unwrap();
    assert_eq!(verdict.event, "verdict");
    assert!(pieces.iter().all(|e| e.event == "critique"), "{events:?}");
    let text: String = pieces
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let verdict: Value = serde_json::from_str(&verdict.data).unwrap();
    assert_close(verdict["p_unsafe"].as_f64().unwrap(), want.p_unsafe);
    assert_eq!(verdict["output"], want.output.as_str());
    assert_eq!(verdict["critique_stop"], json!(want.critique_stop));
    assert!(want.output.ends_with(&text), "{text:?} / {:?}", want.output);

    // A smaller critique cap per request ends the critique there.
    let capped = post(
        &f.url,
        "/v1/judge",
        &json!({"query": QUERY, "response": RESPONSE, "lang": "en", "mode": "critique", "max_critique_tokens": 2}),
    );
    assert_eq!(capped.status, 200, "{}", capped.body);
    if want.critique_stop == Some(safetyj::model::generate::StopReason::MaxTokens) {
        assert_eq!(capped.body["critique_stop"], "max_tokens");
    }
}

#[test]
fn moderations_take_openai_requests_and_answer_openai_shape() {
    let Some(f) = fixture() else { return };
    let bare = library_verdict(f, Dialogue::single("", RESPONSE), Mode::Verdict);
    let pair = library_verdict(f, Dialogue::single(QUERY, RESPONSE), Mode::Verdict);
    let got = post(
        &f.url,
        "/v1/moderations",
        &json!({"model": "x", "lang": "en", "input": [RESPONSE, {"query": QUERY, "response": RESPONSE}]}),
    );
    assert_eq!(got.status, 200, "{}", got.body);
    let v = &got.body;
    assert!(v["id"].as_str().unwrap().starts_with("modr-"));
    assert_eq!(v["model"], "tinycoder");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (result, want) in results.iter().zip([&bare, &pair]) {
        let score = result["category_scores"]["unsafe"].as_f64().unwrap();
        assert_close(score, want.p_unsafe);
        assert_eq!(result["flagged"], score >= 0.5);
        assert_eq!(result["categories"]["unsafe"], result["flagged"]);
    }
    let one = post(
        &f.url,
        "/v1/moderations",
        &json!({"input": RESPONSE, "lang": "en"}),
    );
    assert_eq!(
        one.body["results"][0]["category_scores"]["unsafe"]
            .as_f64()
            .unwrap(),
        bare.p_unsafe
    );
}

#[test]
fn chat_completions_plain_and_streamed_agree() {
    let Some(f) = fixture() else { return };
    let request = json!({
        "model": "tinycoder",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        "max_tokens": 6,
        "temperature": 0
    });
    let plain = post(&f.url, "/v1/chat/completions", &request);
    assert_eq!(plain.status, 200, "{}", plain.body);
    let v = &plain.body;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(["stop", "length"].contains(&finish));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 6);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events: Vec<Event> = stream_post(&f.url, "/v1/chat/completions", &streamed).collect();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, content);
    // The usage chunk comes last (the prompt may come from the chat cache now).
    let usage = chunks.last().unwrap();
    assert_eq!(
        usage["usage"]["completion_tokens"],
        v["usage"]["completion_tokens"]
    );
    let last_choice = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(last_choice["finish_reason"], finish);
}

#[test]
fn models_and_health_name_the_model() {
    let Some(f) = fixture() else { return };
    let models = send(&f.url, "/v1/models", None, Some(KEY));
    assert_eq!(models.status, 200);
    assert_eq!(models.body["object"], "list");
    assert_eq!(models.body["data"][0]["id"], "tinycoder");
    let health = send(&f.url, "/healthz", None, None);
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
}

#[test]
fn bad_input_gets_its_status_and_an_error_naming_the_field() {
    let Some(f) = fixture() else { return };
    let cases: &[(&str, &str, u16, Option<&str>)] = &[
        ("/v1/judge", "{\"query\": \"a\", ", 400, None),
        ("/v1/judge", "[1, 2]", 400, None),
        ("/v1/judge", r#"{"query": "a"}"#, 400, Some("response")),
        (
            "/v1/judge",
            r#"{"query": "a", "response": "  "}"#,
            400,
            Some("response"),
        ),
        (
            "/v1/judge",
            r#"{"query": 1, "response": "b"}"#,
            400,
            Some("query"),
        ),
        (
            "/v1/judge",
            r#"{"query": "a", "response": "b", "mode": "loud"}"#,
            400,
            Some("mode"),
        ),
        (
            "/v1/judge",
            r#"{"query": "a", "response": "b", "lang": "fr"}"#,
            400,
            Some("lang"),
        ),
        (
            "/v1/judge",
            r#"{"query": "a", "response": "b", "threshold": 2}"#,
            400,
            Some("threshold"),
        ),
        (
            "/v1/judge",
            r#"{"query": "a", "response": "b", "max_critique_tokens": 0}"#,
            400,
            Some("max_critique_tokens"),
        ),
        (
            "/v1/judge",
            r#"{"query": "a", "response": "b", "colour": 1}"#,
            400,
            None,
        ),
        (
            "/v1/judge",
            r#"{"conversation": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}"#,
            400,
            Some("conversation[1].role"),
        ),
        (
            "/v1/judge",
            r#"{"conversation": [{"role": "user", "content": "a"}]}"#,
            400,
            Some("conversation"),
        ),
        ("/v1/moderations", r#"{"input": 3}"#, 400, Some("input")),
        (
            "/v1/moderations",
            r#"{"input": ["ok", {"query": "a"}]}"#,
            400,
            Some("input[1].response"),
        ),
        ("/v1/moderations", r#"{"input": []}"#, 400, Some("input")),
        (
            "/v1/chat/completions",
            r#"{"messages": []}"#,
            400,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "tool", "content": "a"}]}"#,
            400,
            Some("messages[0].role"),
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "a"}], "temperature": 9}"#,
            400,
            Some("temperature"),
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "a"}], "n": 2}"#,
            400,
            Some("n"),
        ),
        ("/v1/nothing", "{}", 404, None),
    ];
    for &(path, body, status, param) in cases {
        let got = send(&f.url, path, Some(body), Some(KEY));
        assert_eq!(got.status, status, "{path} {body}: {}", got.body);
        let error = &got.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            got.body
        );
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{path} {body}: {}", got.body);
        }
    }
    // The unknown field is named in the message.
    let got = send(
        &f.url,
        "/v1/judge",
        Some(r#"{"query": "a", "response": "b", "colour": 1}"#),
        Some(KEY),
    );
    assert!(got.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("colour"));

    let big = json!({"query": "a", "response": "x".repeat(100 << 10)});
    let got = post(&f.url, "/v1/judge", &big);
    assert_eq!(got.status, 413, "{}", got.body);
    assert_eq!(got.body["error"]["type"], "invalid_request_error");

    // Still healthy afterwards.
    assert_eq!(send(&f.url, "/health", None, None).status, 200);
}

#[test]
fn auth_is_checked_before_anything_and_health_waits_for_the_model() {
    // A service whose model never arrives: auth first, then 503 while "loading".
    let url = start(Service::new(ServiceConfig {
        api_key: Some(KEY.into()),
        ..Default::default()
    }));
    let body = r#"{"query": "a", "response": "b"}"#;
    for key in [None, Some("wrong"), Some("test-key-12")] {
        let got = send(&url, "/v1/judge", Some(body), key);
        assert_eq!(got.status, 401, "{key:?}");
        assert_eq!(got.body["error"]["type"], "authentication_error");
    }
    let got = send(&url, "/v1/judge", Some(body), Some(KEY));
    assert_eq!(got.status, 503);
    assert!(got.retry_after.is_some());
    assert_eq!(send(&url, "/healthz", None, None).status, 503);
    assert_eq!(send(&url, "/v1/models", None, None).status, 401);
}

#[test]
fn a_full_queue_answers_429_and_every_request_is_answered_once() {
    let Some(f) = fixture() else { return };
    let path = common::real_model("tinycoder-tiny.gguf").unwrap();
    // Auth off here; a queue of 2 behind the running request.
    let url = start(tinycoder_service(
        &path,
        ServiceConfig {
            max_queue: 2,
            ..Default::default()
        },
    ));
    // Keep the judge busy: a long sampled chat (a random model seldom samples its
    // end token), streaming, so its first piece shows it has started.
    let mut busy = stream_post(
        &url,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Talk."}], "max_tokens": 300,
                "temperature": 2, "seed": 7, "stream": true}),
    );
    busy.nth(1).expect("a first piece");
    let responses: Vec<String> = (0..8).map(|i| format!("Answer number {i}: no.")).collect();
    // 2 requests fit in the queue behind the chat; the other 22 are refused at once.
    // Then the chat's client goes away, which must cancel it: the 2 queued requests
    // are answered soon after, not after 300 slow tokens.
    let (sender, receiver) = std::sync::mpsc::channel();
    let answers: Vec<(usize, Answer)> = std::thread::scope(|scope| {
        for i in 0..24 {
            let (url, response, sender) = (&url, &responses[i % responses.len()], sender.clone());
            scope.spawn(move || {
                let body =
                    json!({"query": QUERY, "response": response, "lang": "en", "mode": "critique"});
                sender
                    .send((i, send(url, "/v1/judge", Some(&body.to_string()), None)))
                    .unwrap();
            });
        }
        let mut answers: Vec<(usize, Answer)> = receiver.iter().take(22).collect();
        drop(busy);
        answers.extend(receiver.iter().take(2));
        answers
    });
    let mut ok = 0;
    let mut full = 0;
    for (i, answer) in &answers {
        match answer.status {
            200 => {
                ok += 1;
                let want = library_verdict(
                    f,
                    Dialogue::single(QUERY, responses[i % responses.len()].as_str()),
                    Mode::Critique,
                );
                assert_close(answer.body["p_unsafe"].as_f64().unwrap(), want.p_unsafe);
                assert_eq!(answer.body["output"], want.output.as_str());
            }
            429 => {
                full += 1;
                assert_eq!(answer.body["error"]["type"], "rate_limit_error");
                assert!(answer.retry_after.is_some());
            }
            other => panic!("request {i}: {other} {}", answer.body),
        }
    }
    assert_eq!(ok + full, 24);
    // The two that fitted in the queue were answered after the chat.
    assert!(ok >= 2, "{ok} answered");
    assert!(full >= 1, "no request was refused");
    assert_eq!(send(&url, "/health", None, None).status, 200);
}

#[test]
fn the_official_openai_python_client_works_against_the_server() {
    let Some(f) = fixture() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve_openai.py");
    let have_client = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_client {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs python3 with the openai package (.ci/run installs it)"
        );
        eprintln!(
            "skipping: python3 with the `openai` package not found (pip install openai==3.51.0)"
        );
        return;
    }
    let output = std::process::Command::new("python3")
        .arg(&script)
        .args([&f.url, KEY])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["moderation_model"], "tinycoder");
    let score = got["unsafe_score"].as_f64().unwrap();
    assert_eq!(got["flagged"], score >= 0.5);
    assert_eq!(got["chat"], got["stream"]);
    assert_eq!(got["chat_finish"], got["stream_finish"]);
    assert!(got["completion_tokens"].as_u64().unwrap() <= 8);
    assert_eq!(got["models"], json!(["tinycoder"]));
    assert_eq!(got["wrong_key"], 401);
}

/// A request written by hand on a TCP socket, its body sent as it is written: each
/// `chunk` is one HTTP/1.1 chunk, flushed, then a pause so that it arrives on its own.
struct Upload {
    socket: TcpStream,
}

/// The answer to an [`Upload`]: status, content type, and the body still to read.
struct Reply {
    status: u16,
    content_type: String,
    chunked: bool,
    length: usize,
    reader: BufReader<TcpStream>,
}

impl Upload {
    /// Sends `POST target` with bearer auth and `framing` (a `Transfer-Encoding` or
    /// `Content-Length` header line); the body follows with [`Upload::chunk`].
    fn open(url: &str, target: &str, framing: &str) -> Upload {
        let address = url.strip_prefix("http://").unwrap();
        let mut socket = TcpStream::connect(address).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            socket,
            "POST {target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n{framing}\r\n\r\n"
        )
        .unwrap();
        socket.flush().unwrap();
        Upload { socket }
    }

    /// A stream request for `params`, its body chunked.
    fn stream(url: &str, params: &str) -> Upload {
        Upload::open(
            url,
            &format!("/v1/judge/stream?{params}"),
            "Transfer-Encoding: chunked",
        )
    }

    /// The events answering a stream request for `params` whose body is `pieces`,
    /// one chunk each.
    fn stream_all(url: &str, params: &str, pieces: &[&[u8]]) -> Vec<Event> {
        let mut upload = Upload::stream(url, params);
        for piece in pieces {
            upload.chunk(piece);
        }
        upload.end();
        upload.reply().events().collect()
    }

    /// One chunk of the body, on its own (a write the server may no longer read is
    /// not an error here).
    fn chunk(&mut self, bytes: &[u8]) {
        let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
        frame.extend_from_slice(bytes);
        frame.extend_from_slice(b"\r\n");
        let _ = self
            .socket
            .write_all(&frame)
            .and_then(|()| self.socket.flush());
        std::thread::sleep(Duration::from_millis(80));
    }

    /// The last chunk: the body ends.
    fn end(&mut self) {
        let _ = self
            .socket
            .write_all(b"0\r\n\r\n")
            .and_then(|()| self.socket.flush());
    }

    /// The answer's head, once it comes; the body is read from the reply.
    fn reply(&self) -> Reply {
        let mut reader = BufReader::new(self.socket.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap().parse().unwrap();
        let (mut content_type, mut chunked, mut length) = (String::new(), false, 0);
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.to_string(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "content-length" => length = value.parse().unwrap(),
                _ => {}
            }
        }
        Reply {
            status,
            content_type,
            chunked,
            length,
            reader,
        }
    }
}

impl Reply {
    /// The body as JSON (an error answered before streaming).
    fn json(mut self) -> Value {
        assert!(!self.chunked, "{} is chunked", self.content_type);
        let mut body = vec![0; self.length];
        self.reader.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// The body's Server-Sent Events, read chunk by chunk as they come.
    fn events(self) -> Events {
        assert_eq!(self.status, 200);
        assert_eq!(self.content_type, "text/event-stream");
        assert!(self.chunked);
        let mut reader = self.reader;
        let chunks = std::iter::from_fn(move || {
            let mut line = String::new();
            if let Err(e) = reader.read_line(&mut line) {
                return Some(Err(e));
            }
            // None at the end of the connection (the answer ended without the last chunk).
            let size = usize::from_str_radix(line.trim_end(), 16).ok()?;
            let mut data = vec![0; size + 2];
            if let Err(e) = reader.read_exact(&mut data) {
                return Some(Err(e));
            }
            data.truncate(size);
            (size > 0).then_some(Ok(data))
        });
        Events::parse(chunks)
    }
}

/// B's answer in pieces as a stream sends them: one piece ends inside `这` (a
/// 3-byte character), the next starts with its last two bytes.
fn pieces() -> Vec<&'static [u8]> {
    let text = "I can't help with breaking into property you don't own: 这是违法的。 \
                Call a locksmith, or your landlord, and show them it is your door.";
    let cut = text.find('这').unwrap() + 1;
    let bytes = text.as_bytes();
    vec![
        &bytes[..7],
        &bytes[7..29],
        &bytes[29..cut],
        &bytes[cut..cut + 12],
        &bytes[cut + 12..cut + 40],
        &bytes[cut + 40..],
    ]
}

/// P(unsafe) from two computations of the same check agrees to float rounding.
fn assert_near(got: &Value, want: f64) {
    let got = got.as_f64().unwrap();
    assert!((got - want).abs() < 1e-4, "P(unsafe) {got} != {want}");
}

#[test]
fn judge_stream_checks_a_chunked_body_as_it_arrives() {
    let Some(f) = fixture() else { return };
    let pieces = pieces();
    let whole = String::from_utf8(pieces.concat()).unwrap();
    // The library on the same pieces, in process.
    let options = StreamOptions {
        check_every: 4,
        stop_at: None,
    };
    let mut stream = f
        .library
        .moderate_stream(&Dialogue::single(QUERY, ""), Some(Lang::En), options)
        .unwrap();
    let want_checks: Vec<_> = pieces
        .iter()
        .filter_map(|piece| stream.push_bytes(piece).unwrap())
        .collect();
    assert!(want_checks.len() >= 3, "{want_checks:?}");
    let want = stream.finish().unwrap();

    let events = Upload::stream_all(
        &f.url,
        "query=How+do+I%20pick%20a%20lock%3F&lang=en&check_every=4",
        &pieces,
    );
    let (done, rest) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]");
    let (verdict, checks) = rest.split_last().unwrap();
    assert_eq!(verdict.event, "verdict", "{events:?}");
    assert!(checks.iter().all(|e| e.event == "check"), "{events:?}");
    assert_eq!(checks.len(), want_checks.len(), "{events:?}");
    for (got, want) in checks.iter().zip(&want_checks) {
        let got: Value = serde_json::from_str(&got.data).unwrap();
        assert_near(&got["p_unsafe"], want.p_unsafe);
        assert_eq!(got["response_tokens"], want.response_tokens);
        assert_eq!(got["label"], json!(want.label));
        assert_eq!(got["stopped"], false);
    }

    // The verdict: the library stream's, and a one-shot /v1/judge's on the whole text.
    let verdict: Value = serde_json::from_str(&verdict.data).unwrap();
    assert_near(&verdict["p_unsafe"], want.p_unsafe);
    let one_shot = post(
        &f.url,
        "/v1/judge",
        &json!({"query": "How do I pick a lock?", "response": whole, "lang": "en"}),
    );
    assert_eq!(one_shot.status, 200, "{}", one_shot.body);
    assert_near(
        &verdict["p_unsafe"],
        one_shot.body["p_unsafe"].as_f64().unwrap(),
    );
    for field in [
        "label",
        "output",
        "prompt_tokens",
        "lang",
        "mode",
        "threshold",
        "model",
    ] {
        assert_eq!(verdict[field], one_shot.body[field], "{field}");
    }

    // A threshold the request chooses decides every label.
    let events = Upload::stream_all(
        &f.url,
        "query=How+do+I+pick+a+lock%3F&lang=en&check_every=4&threshold=0",
        &pieces,
    );
    let labelled: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(labelled.len(), want_checks.len() + 1, "{events:?}");
    assert!(
        labelled
            .iter()
            .all(|v| v["label"] == "unsafe" && v["threshold"] == 0.0),
        "{labelled:?}"
    );
    assert_eq!(labelled.last().unwrap()["output"], "[Answer] unsafe");
}

#[test]
fn judge_stream_stops_at_stop_at_without_waiting_for_the_body() {
    let Some(f) = fixture() else { return };
    // stop_at 0: the first check stops the stream, whatever its P(unsafe).
    let mut upload = Upload::stream(
        &f.url,
        "query=How+do+I+pick+a+lock%3F&lang=en&check_every=2&stop_at=0",
    );
    upload.chunk(b"Sure, here is how to");
    // The body never ends: the answer must end all the same.
    let events: Vec<Event> = upload.reply().events().collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0].event, "check");
    let check: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(check["stopped"], true);
    assert_eq!(events[1].event, "verdict");
    let verdict: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(verdict["p_unsafe"], check["p_unsafe"]);
    assert_eq!(events[2].data, "[DONE]");

    let mut stream = f
        .library
        .moderate_stream(
            &Dialogue::single(QUERY, ""),
            Some(Lang::En),
            StreamOptions {
                check_every: 2,
                stop_at: Some(0.0),
            },
        )
        .unwrap();
    let want = stream.push("Sure, here is how to").unwrap().unwrap();
    assert!(want.stopped);
    assert_near(&check["p_unsafe"], want.p_unsafe);
    assert_eq!(check["response_tokens"], want.response_tokens);
}

/// The last event of a stream that failed once streaming: its error object.
fn stream_error(upload: Upload) -> Value {
    let events: Vec<Event> = upload.reply().events().collect();
    let (done, rest) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]");
    let error = rest.last().unwrap();
    assert_eq!(error.event, "error", "{events:?}");
    serde_json::from_str::<Value>(&error.data).unwrap()["error"].clone()
}

#[test]
fn judge_stream_refuses_bad_input_with_its_status_and_the_parameter_at_fault() {
    let Some(f) = fixture() else { return };
    // Before streaming: the parameters, auth, an empty or declared-too-large body.
    for (params, param) in [
        ("", "query"),
        ("lang=en", "query"),
        ("query=%20", "query"),
        ("query=a&check_every=0", "check_every"),
        ("query=a&stop_at=1.5", "stop_at"),
        ("query=a&threshold=-1", "threshold"),
        ("query=a&lang=fr", "lang"),
        ("query=a&mode=critique", "mode"),
    ] {
        let got = send(
            &f.url,
            &format!("/v1/judge/stream?{params}"),
            Some("B says hi."),
            Some(KEY),
        );
        assert_eq!(got.status, 400, "{params}: {}", got.body);
        assert_eq!(got.body["error"]["param"], param, "{params}: {}", got.body);
    }
    let got = send(&f.url, "/v1/judge/stream?query=a", Some("B says hi."), None);
    assert_eq!(got.status, 401, "{}", got.body);

    let reply = Upload::open(&f.url, "/v1/judge/stream?query=a", "Content-Length: 0").reply();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["param"], "response");
    // 64 KiB is the fixture's --max-body; the body is refused before it is sent.
    let reply = Upload::open(&f.url, "/v1/judge/stream?query=a", "Content-Length: 70000").reply();
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");

    // Once streaming: bytes that are not UTF-8, a blank body, a chunked body past
    // --max-body (3 × 25,000 bytes; no check runs on the way: check_every is large).
    let mut upload = Upload::stream(&f.url, "query=a&lang=en");
    upload.chunk("caf\u{e9} ".as_bytes());
    // The answer ends without the body's end.
    upload.chunk(b"\xff\xfe oops");
    let error = stream_error(upload);
    assert_eq!(error["code"], 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("not UTF-8"),
        "{error}"
    );

    let mut upload = Upload::stream(&f.url, "query=a&lang=en");
    upload.chunk(b" \n ");
    upload.chunk(b"\t");
    upload.end();
    let error = stream_error(upload);
    assert_eq!(error["code"], 400, "{error}");
    assert_eq!(error["param"], "response", "{error}");

    let mut upload = Upload::stream(&f.url, "query=a&lang=en&check_every=100000");
    let piece = "word ".repeat(5000);
    for _ in 0..3 {
        upload.chunk(piece.as_bytes());
    }
    let error = stream_error(upload);
    assert_eq!(error["code"], 413, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("--max-body"),
        "{error}"
    );

    // Still healthy afterwards.
    assert_eq!(send(&f.url, "/health", None, None).status, 200);
}

#[test]
fn a_stream_holds_the_judge_until_its_body_ends_or_its_client_goes_away() {
    let Some(path) = common::real_model("tinycoder-tiny.gguf") else {
        return;
    };
    // A server of its own, so that no other test's request queues here.
    let url = start(tinycoder_service(
        &path,
        ServiceConfig {
            api_key: Some(KEY.into()),
            ..Default::default()
        },
    ));
    let body = json!({"query": QUERY, "response": RESPONSE, "lang": "en"});
    let want = post(&url, "/v1/judge", &body);
    assert_eq!(want.status, 200, "{}", want.body);

    for client_leaves in [false, true] {
        let mut upload = Upload::stream(&url, "query=a&lang=en&check_every=1");
        upload.chunk(b"Hello there, ");
        let mut events = upload.reply().events();
        assert_eq!(events.next().unwrap().event, "check");
        // The stream holds the judge: a verdict asked for now waits behind it.
        let (sender, receiver) = std::sync::mpsc::channel();
        let judged = {
            let (url, body) = (url.clone(), body.clone());
            std::thread::spawn(move || sender.send(post(&url, "/v1/judge", &body)).unwrap())
        };
        assert!(matches!(
            receiver.recv_timeout(Duration::from_millis(800)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        ));
        if client_leaves {
            // Cancel on drop: the socket closes mid-body and the judge is free.
            drop(events);
            drop(upload);
        } else {
            upload.chunk(b"friend.");
            upload.end();
            let rest: Vec<Event> = events.collect();
            assert_eq!(rest.last().unwrap().data, "[DONE]", "{rest:?}");
        }
        let got = receiver.recv_timeout(Duration::from_secs(30)).unwrap();
        judged.join().unwrap();
        assert_eq!(got.status, 200, "{}", got.body);
        assert_close(
            got.body["p_unsafe"].as_f64().unwrap(),
            want.body["p_unsafe"].as_f64().unwrap(),
        );
    }
}
