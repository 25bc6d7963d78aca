//! Resumable HTTP downloads: bytes go to `<file>.part`, a broken transfer continues
//! with a `Range` request, and the file gets its final name only once its size and
//! sha256 check out.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::config::RedirectAuthHeaders;
use ureq::tls::{RootCerts, TlsConfig};
use ureq::Agent;

use crate::{Error, Result};

/// How far a download has come; handed to the progress callback after every read
/// from the network (often: a display should throttle itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The file being fetched (its name, for display).
    pub file: &'a str,
    /// Bytes on disk so far, including any resumed prefix.
    pub done: u64,
    /// The file's full size, when the server or the caller knows it.
    pub total: Option<u64>,
}

/// What a download must turn out to be; unknown fields are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// sha256 of the whole file, 64 lowercase hex digits.
    pub sha256: Option<String>,
    /// Size of the whole file in bytes.
    pub size: Option<u64>,
}

/// A blocking HTTP client that downloads files with resume, retries and checks.
#[derive(Clone)]
pub struct Downloader {
    agent: Agent,
    headers: Vec<(String, String)>,
    retries: u32,
    backoff: Duration,
}

/// Why one attempt at a download stopped.
enum Failure {
    /// The server says the file does not exist (404, 410).
    NotFound,
    /// Trying again will not help (other 4xx, bad URL, disk errors, bad bytes).
    Fatal(Error),
    /// A network hiccup or a server error: try again, resuming from what is on disk.
    Transient(String),
}

/// Bytes read from the network between writes and progress reports.
const CHUNK_BYTES: usize = 1 << 20;

impl std::fmt::Debug for Downloader {
    /// Header names only: values may hold tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Downloader")
            .field("headers", &header_names)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl Default for Downloader {
    fn default() -> Self {
        Self::new()
    }
}

impl Downloader {
    /// A downloader with 30 s connect and 60 s per-read timeouts, 5 retries and a
    /// backoff starting at 1 s (doubling each time), honouring `HTTPS_PROXY` and
    /// `NO_PROXY`, and trusting the operating system's certificate store (as
    /// curl and pip do, so a corporate TLS proxy's CA works where it is installed).
    pub fn new() -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .redirect_auth_headers(RedirectAuthHeaders::SameHost)
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::PlatformVerifier)
                    .build(),
            )
            .user_agent(concat!("safetyj/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            headers: Vec::new(),
            retries: 5,
            backoff: Duration::from_secs(1),
        }
    }

    /// The same downloader with `retries` further attempts after a transient
    /// failure, waiting `backoff`, then twice that, and so on, between them.
    pub fn with_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// The same downloader sending `name: value` with every request (for example
    /// a bearer token).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Downloads `url` to `dest`, resuming from `<dest>.part` if an earlier attempt
    /// left one, retrying transient failures, and checking `expected` before the
    /// file gets its final name. On a size or checksum mismatch the partial file is
    /// deleted and nothing is left at `dest`.
    pub fn fetch(
        &self,
        url: &str,
        dest: &Path,
        expected: &Expected,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        if self.fetch_if_exists(url, dest, expected, progress)? {
            Ok(())
        } else {
            Err(Error::Download {
                url: url.to_owned(),
                message: "HTTP 404: no such file on the server".into(),
            })
        }
    }

    /// Like [`Downloader::fetch`], but a file the server does not have (404 or
    /// 410) gives `Ok(false)` instead of an error.
    pub fn fetch_if_exists(
        &self,
        url: &str,
        dest: &Path,
        expected: &Expected,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<bool> {
        if let Some(parent) = dest.parent() {
            create_dir_all(parent)?;
        }
        let part = part_path(dest);
        let label = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| url.to_owned());
        let mut waits = 0;
        loop {
            match self.attempt(url, &part, &label, expected, progress) {
                Ok(()) => break,
                Err(Failure::NotFound) => return Ok(false),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(message)) => {
                    if waits >= self.retries {
                        return Err(Error::Download {
                            url: url.to_owned(),
                            message: format!(
                                "{message} (gave up after {} attempts; run again to resume)",
                                waits + 1
                            ),
                        });
                    }
                    thread::sleep(self.backoff * 2u32.saturating_pow(waits));
                    waits += 1;
                }
            }
        }
        verify(url, &part, expected)?;
        fs::rename(&part, dest).map_err(|e| io_error(dest, e))?;
        remove_if_present(&validator_path(&part))?;
        Ok(true)
    }

    /// GETs `url` and returns its body as text (for small JSON documents), with
    /// the same retries as file downloads.
    pub fn get_text(&self, url: &str) -> Result<String> {
        self.get_text_if_exists(url)?
            .ok_or_else(|| Error::Download {
                url: url.to_owned(),
                message: "HTTP 404: no such file on the server".into(),
            })
    }

    /// Like [`Downloader::get_text`], but a document the server does not have
    /// (404 or 410) gives `Ok(None)`.
    pub fn get_text_if_exists(&self, url: &str) -> Result<Option<String>> {
        let mut waits = 0;
        loop {
            let failure = match self.request(url, None, None) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if status == 200 {
                        match response.body_mut().read_to_string() {
                            Ok(text) => return Ok(Some(text)),
                            Err(e) => Failure::Transient(e.to_string()),
                        }
                    } else {
                        classify_status(url, status)
                    }
                }
                Err(failure) => failure,
            };
            match failure {
                Failure::NotFound => return Ok(None),
                Failure::Fatal(e) => return Err(e),
                Failure::Transient(message) if waits >= self.retries => {
                    return Err(Error::Download {
                        url: url.to_owned(),
                        message: format!("{message} (gave up after {} attempts)", waits + 1),
                    })
                }
                Failure::Transient(_) => {
                    thread::sleep(self.backoff * 2u32.saturating_pow(waits));
                    waits += 1;
                }
            }
        }
    }

    /// Sends a GET, with a `Range` header when resuming from `offset`, made
    /// conditional on `validator` (`If-Range`): a server whose file changed since
    /// the part was started sends the whole new file instead of the rest of it.
    fn request(
        &self,
        url: &str,
        offset: Option<u64>,
        validator: Option<&str>,
    ) -> std::result::Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut request = self.agent.get(url);
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(offset) = offset {
            request = request.header("Range", format!("bytes={offset}-"));
            if let Some(validator) = validator {
                request = request.header("If-Range", validator);
            }
        }
        request.call().map_err(|e| match e {
            ureq::Error::BadUri(_)
            | ureq::Error::Http(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::TooManyRedirects
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_) => Failure::Fatal(Error::Download {
                url: url.to_owned(),
                message: e.to_string(),
            }),
            other => Failure::Transient(other.to_string()),
        })
    }

    /// One GET: appends to `part` (or restarts it), returning once the body ended
    /// with every byte the server announced.
    fn attempt(
        &self,
        url: &str,
        part: &Path,
        label: &str,
        expected: &Expected,
        progress: &mut dyn FnMut(Progress),
    ) -> std::result::Result<(), Failure> {
        let on_disk = match fs::metadata(part) {
            Ok(meta) => meta.len(),
            Err(_) => 0,
        };
        if on_disk > 0 && expected.size == Some(on_disk) {
            return Ok(());
        }
        let validator_file = validator_path(part);
        let validator = if on_disk > 0 {
            fs::read_to_string(&validator_file).ok()
        } else {
            None
        };
        let response = self.request(url, (on_disk > 0).then_some(on_disk), validator.as_deref())?;
        let status = response.status().as_u16();
        // A strong ETag (a weak one may not be used in If-Range) identifies the
        // version the part holds, for the next resume.
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.starts_with("W/"))
            .map(str::to_owned);
        let content_range = response
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (start, total) = match status {
            200 => (0, response.body().content_length()),
            206 => {
                let (start, total) = content_range
                    .as_deref()
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        Failure::Transient(format!(
                            "HTTP 206 with an unreadable Content-Range {content_range:?}"
                        ))
                    })?;
                if start != on_disk {
                    discard_part(part).map_err(Failure::Fatal)?;
                    return Err(Failure::Transient(format!(
                        "asked to resume at byte {on_disk}, the server sent from byte {start}"
                    )));
                }
                (start, total)
            }
            416 => {
                let total = content_range
                    .as_deref()
                    .and_then(|v| v.strip_prefix("bytes */"))
                    .and_then(|t| t.trim().parse::<u64>().ok());
                if total == Some(on_disk) {
                    return Ok(());
                }
                discard_part(part).map_err(Failure::Fatal)?;
                return Err(Failure::Transient(format!(
                    "the server refused to resume at byte {on_disk}; starting over"
                )));
            }
            _ => return Err(classify_status(url, status)),
        };
        let total = expected.size.or(total);
        if start == 0 {
            match &etag {
                Some(etag) => {
                    fs::write(&validator_file, etag).map_err(|e| io_error(&validator_file, e))
                }
                None => remove_if_present(&validator_file),
            }
            .map_err(Failure::Fatal)?;
        }
        let mut file = if start == 0 {
            File::create(part)
        } else {
            OpenOptions::new().append(true).open(part)
        }
        .map_err(|e| Failure::Fatal(io_error(part, e)))?;
        let mut done = start;
        progress(Progress {
            file: label,
            done,
            total,
        });
        let mut body = response.into_body().into_reader();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            let read = match body.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    file.flush()
                        .map_err(|e| Failure::Fatal(io_error(part, e)))?;
                    return Err(Failure::Transient(format!(
                        "the connection broke after {done} bytes: {e}"
                    )));
                }
            };
            file.write_all(&buffer[..read])
                .map_err(|e| Failure::Fatal(io_error(part, e)))?;
            done += read as u64;
            progress(Progress {
                file: label,
                done,
                total,
            });
        }
        file.sync_all()
            .map_err(|e| Failure::Fatal(io_error(part, e)))?;
        match total {
            Some(total) if done < total => Err(Failure::Transient(format!(
                "the body ended after {done} of {total} bytes"
            ))),
            _ => Ok(()),
        }
    }
}

/// Sorts an HTTP status that is not a success into "missing", "retry" or "give up".
fn classify_status(url: &str, status: u16) -> Failure {
    match status {
        404 | 410 => Failure::NotFound,
        408 | 429 | 500..=599 => Failure::Transient(format!("HTTP {status}")),
        401 | 403 => Failure::Fatal(Error::Download {
            url: url.to_owned(),
            message: format!(
                "HTTP {status}: access denied (a gated Hugging Face repository needs its \
                 terms accepted and a token in HF_TOKEN)"
            ),
        }),
        _ => Failure::Fatal(Error::Download {
            url: url.to_owned(),
            message: format!("HTTP {status}"),
        }),
    }
}

/// Parses `bytes START-END/TOTAL` (TOTAL may be `*`) into (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// Checks a finished `.part` file against `expected`, deleting it (and its
/// validator) on a mismatch.
fn verify(url: &str, part: &Path, expected: &Expected) -> Result<()> {
    let mismatch = |message: String| -> Result<()> {
        discard_part(part)?;
        Err(Error::Download {
            url: url.to_owned(),
            message,
        })
    };
    if let Some(size) = expected.size {
        let got = fs::metadata(part).map_err(|e| io_error(part, e))?.len();
        if got != size {
            return mismatch(format!("expected {size} bytes, got {got}"));
        }
    }
    if let Some(want) = &expected.sha256 {
        let got = sha256_file(part)?;
        if &got != want {
            return mismatch(format!(
                "sha256 mismatch: expected {want}, got {got}; the partial file was deleted"
            ));
        }
    }
    Ok(())
}

/// The sha256 of a file, as 64 lowercase hex digits.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = file.read(&mut buffer).map_err(|e| io_error(path, e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the bytes of `dest` collect until the download is complete and checked.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Where the `ETag` of the version a part file holds is kept, for `If-Range`.
fn validator_path(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".etag");
    PathBuf::from(name)
}

/// Deletes a part file that cannot be resumed, with its validator: an ETag left
/// behind would describe bytes that are gone.
fn discard_part(part: &Path) -> Result<()> {
    remove_if_present(part)?;
    remove_if_present(&validator_path(part))
}

/// An [`Error::Io`] naming `path`.
pub(crate) fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::CacheIo {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// `fs::create_dir_all` with the folder named in the error.
pub(crate) fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| io_error(path, e))
}

/// Deletes `path`; a file that is already gone is fine.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_start_and_total() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 0-9/10"), None);
    }

    #[test]
    fn part_path_appends_a_suffix() {
        assert_eq!(
            part_path(Path::new("/cache/a.gguf")),
            PathBuf::from("/cache/a.gguf.part")
        );
    }

    #[test]
    fn sha256_of_a_known_text() {
        let dir = std::env::temp_dir().join(format!("safetyj-sha-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("abc.txt");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
