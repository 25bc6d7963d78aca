//! HTTP `Range` requests with the global `fetch` (a page or a Web Worker alike).

use std::ops::Range;

use js_sys::{Function, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestCache, RequestInit, Response};

use crate::error::{Error, Result};
use crate::formats::remote::{RangeFetch, RemoteVersion};

/// The text of a JS exception or rejection (`name: message` for errors and
/// DOMExceptions).
pub(crate) fn js_message(value: &JsValue) -> String {
    let field = |name: &str| {
        Reflect::get(value, &JsValue::from_str(name))
            .ok()
            .and_then(|v| v.as_string())
    };
    match (field("name"), field("message")) {
        (Some(name), Some(message)) => format!("{name}: {message}"),
        (None, Some(message)) => message,
        _ => value.as_string().unwrap_or_else(|| format!("{value:?}")),
    }
}

/// Calls the global `fetch` (present in windows and workers alike).
pub(crate) async fn global_fetch(request: &Request) -> std::result::Result<Response, JsValue> {
    let global = js_sys::global();
    let fetch: Function = Reflect::get(&global, &JsValue::from_str("fetch"))?.dyn_into()?;
    let promise: Promise = fetch.call1(&global, request)?.dyn_into()?;
    JsFuture::from(promise).await?.dyn_into()
}

/// A remote file read with HTTP `Range` requests; the server must answer them with
/// `206 Partial Content`.
pub struct HttpRange {
    url: String,
    version: RemoteVersion,
}

impl HttpRange {
    /// Asks `url` (absolute) for its first byte, which gives the file's length and
    /// version (`Content-Range`, `ETag`, `Last-Modified`) without downloading it.
    pub async fn open(url: &str) -> Result<HttpRange> {
        let response = request(url, 0..1).await?;
        let headers = response.headers();
        let header = |name: &str| headers.get(name).ok().flatten();
        check_status(url, &response)?;
        if header("content-type").is_some_and(|t| t.contains("text/html")) {
            return Err(Error::Download {
                url: url.to_string(),
                message: "the server answered with an HTML page, not a model file; check the URL"
                    .into(),
            });
        }
        if response.status() == 200 {
            return Err(no_range_support(url));
        }
        let length = header("content-range")
            .and_then(|range| range.rsplit('/').next()?.trim().parse::<u64>().ok())
            .ok_or_else(|| Error::Download {
                url: url.to_string(),
                message: "the answer to a Range request gives no total length (Content-Range); \
                          a cross-origin server must list Content-Range in Access-Control-Expose-Headers"
                    .into(),
            })?;
        Ok(HttpRange {
            url: url.to_string(),
            version: RemoteVersion {
                length,
                etag: header("etag"),
                last_modified: header("last-modified"),
            },
        })
    }

    /// The file's length and version as the server gave them.
    pub fn version(&self) -> &RemoteVersion {
        &self.version
    }
}

impl RangeFetch for HttpRange {
    fn name(&self) -> &str {
        &self.url
    }

    fn len(&self) -> u64 {
        self.version.length
    }

    async fn fetch(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let whole_file = range.start == 0 && range.end == self.len();
        let response = request(&self.url, range.clone()).await?;
        if response.status() == 200 && !whole_file {
            return Err(no_range_support(&self.url));
        }
        check_status(&self.url, &response)?;
        self.check_same_version(&response, &range)?;
        let failed = |e: JsValue| Error::Download {
            url: self.url.clone(),
            message: format!(
                "reading bytes {}..{} failed: {}",
                range.start,
                range.end,
                js_message(&e)
            ),
        };
        let buffer = JsFuture::from(response.array_buffer().map_err(failed)?)
            .await
            .map_err(failed)?;
        Ok(Uint8Array::new(&buffer).to_vec())
    }
}

impl HttpRange {
    /// Refuses a part that is not the one asked for (a 206 whose `Content-Range`
    /// names other bytes or another length) or that comes from another version of
    /// the file than the load started with (its `ETag` or `Last-Modified` changed):
    /// a model assembled from two versions would load and judge wrongly.
    fn check_same_version(&self, response: &Response, range: &Range<u64>) -> Result<()> {
        let headers = response.headers();
        let header = |name: &str| headers.get(name).ok().flatten();
        let changed = |what: &str, was: &str, now: &str| Error::Download {
            url: self.url.clone(),
            message: format!(
                "the file changed on the server during the load ({what} {was} became {now}); \
                 load it again to start over (cached parts of the old version are dropped)"
            ),
        };
        for (what, pinned) in [
            ("etag", &self.version.etag),
            ("last-modified", &self.version.last_modified),
        ] {
            if let (Some(was), Some(now)) = (pinned, header(what)) {
                if *was != now {
                    return Err(changed(what, was, &now));
                }
            }
        }
        if response.status() != 206 {
            return Ok(());
        }
        let want = format!(
            "bytes {}-{}/{}",
            range.start,
            range.end - 1,
            self.version.length
        );
        match header("content-range") {
            Some(got) if got.trim() == want => Ok(()),
            Some(got) => Err(Error::Download {
                url: self.url.clone(),
                message: format!("asked for {want} but the server sent {got}"),
            }),
            // A cross-origin server may hide it (Access-Control-Expose-Headers); the
            // length is checked by the caller.
            None => Ok(()),
        }
    }
}

/// A GET of bytes `range` (end exclusive) of `url`, bypassing the HTTP cache (the
/// weights cache keeps what is worth keeping).
async fn request(url: &str, range: Range<u64>) -> Result<Response> {
    let failed = |e: JsValue| Error::Download {
        url: url.to_string(),
        message: js_message(&e),
    };
    let headers = Headers::new().map_err(failed)?;
    headers
        .set("Range", &format!("bytes={}-{}", range.start, range.end - 1))
        .map_err(failed)?;
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_cache(RequestCache::NoStore);
    init.set_headers(&headers);
    let request = Request::new_with_str_and_init(url, &init).map_err(failed)?;
    global_fetch(&request).await.map_err(failed)
}

fn check_status(url: &str, response: &Response) -> Result<()> {
    match response.status() {
        200 | 206 => Ok(()),
        status => Err(Error::Download {
            url: url.to_string(),
            message: format!(
                "the server answered HTTP {status} {}",
                response.status_text()
            ),
        }),
    }
}

fn no_range_support(url: &str) -> Error {
    Error::Download {
        url: url.to_string(),
        message: "the server does not support HTTP Range requests (it sent the whole file, \
                  status 200, when asked for part of it); serve the model from a server that \
                  answers Range requests with 206"
            .into(),
    }
}
