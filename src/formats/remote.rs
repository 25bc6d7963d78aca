//! Model files read by byte range over an asynchronous transport (HTTP `Range`
//! requests in the browser), and a store that keeps fetched ranges between loads
//! (Cache Storage in the browser) so a reload downloads nothing.
//!
//! Everything here is transport-neutral: [`RangeFetch`] and [`RangeStore`] are the
//! two things a platform supplies; [`MemoryFetch`] is an in-memory file for tests.

use std::cell::{Cell, RefCell};
use std::ops::Range;

use super::gguf::{GgufFile, HeaderParse, FIRST_PREFIX_BYTES};
use crate::error::{Error, Result};

/// Byte ranges of one remote file, fetched asynchronously.
#[allow(async_fn_in_trait)]
pub trait RangeFetch {
    /// The URL or name: used in errors and as the base of cache keys.
    fn name(&self) -> &str;

    /// The file's length in bytes.
    fn len(&self) -> u64;

    /// Whether the file holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes at `range` (never empty, never past the end). [`fetch_exact`]
    /// checks the length of what comes back.
    async fn fetch(&self, range: Range<u64>) -> Result<Vec<u8>>;
}

/// The bytes at `range` of `source`, failing unless exactly that many arrived (a
/// truncated body) or the range runs past the end of the file.
pub async fn fetch_exact(source: &impl RangeFetch, range: Range<u64>) -> Result<Vec<u8>> {
    if range.start > range.end || range.end > source.len() {
        return Err(Error::Format {
            file: source.name().to_string(),
            message: format!(
                "bytes {}..{} lie past the end of the file ({} bytes)",
                range.start,
                range.end,
                source.len()
            ),
        });
    }
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let bytes = source.fetch(range.clone()).await?;
    let wanted = range.end - range.start;
    if bytes.len() as u64 != wanted {
        return Err(Error::Download {
            url: source.name().to_string(),
            message: format!(
                "bytes {}..{}: {} bytes arrived of {wanted} (the body was truncated)",
                range.start,
                range.end,
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// Reads the GGUF header of `source`: a first prefix of [`FIRST_PREFIX_BYTES`], grown
/// (at least doubling) until [`GgufFile::parse`] has all of it. Never fetches tensor
/// data. `on_bytes` gets the header bytes fetched so far after each request.
pub async fn read_gguf_header(
    source: &impl RangeFetch,
    mut on_bytes: impl FnMut(u64),
) -> Result<GgufFile> {
    let file_len = source.len();
    let mut prefix = fetch_exact(source, 0..FIRST_PREFIX_BYTES.min(file_len)).await?;
    on_bytes(prefix.len() as u64);
    loop {
        match GgufFile::parse(source.name(), file_len, &prefix)? {
            HeaderParse::Done(file) => return Ok(file),
            HeaderParse::NeedBytes(needed) => {
                let have = prefix.len() as u64;
                let want = needed.max(have.saturating_mul(2)).min(file_len);
                if want <= have {
                    return Err(Error::Format {
                        file: source.name().to_string(),
                        message: format!(
                            "the GGUF header needs {needed} bytes but the file has {file_len}"
                        ),
                    });
                }
                prefix.extend_from_slice(&fetch_exact(source, have..want).await?);
                on_bytes(prefix.len() as u64);
            }
        }
    }
}

/// A file held in memory, served by range: for tests, and for bytes the page already
/// has. It records every range asked of it.
pub struct MemoryFetch {
    name: String,
    bytes: Vec<u8>,
    requests: RefCell<Vec<Range<u64>>>,
}

impl MemoryFetch {
    /// Serves `bytes`, called `name`.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> MemoryFetch {
        MemoryFetch {
            name: name.into(),
            bytes,
            requests: RefCell::new(Vec::new()),
        }
    }

    /// Every range fetched so far, in order.
    pub fn requests(&self) -> Vec<Range<u64>> {
        self.requests.borrow().clone()
    }
}

impl RangeFetch for MemoryFetch {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    async fn fetch(&self, range: Range<u64>) -> Result<Vec<u8>> {
        self.requests.borrow_mut().push(range.clone());
        let end = range.end.min(self.len()) as usize;
        Ok(self.bytes[(range.start as usize).min(end)..end].to_vec())
    }
}

/// What identifies one version of a remote file: its length and, when the server
/// sends them, its `ETag` and `Last-Modified`. A cache made for another version is
/// thrown away.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteVersion {
    pub length: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A key-value store of fetched bytes kept between loads (Cache Storage in the
/// browser). Keys are URLs.
#[allow(async_fn_in_trait)]
pub trait RangeStore {
    /// The bytes stored under `key`; `None` when absent or unreadable.
    async fn get(&self, key: &str) -> Option<Vec<u8>>;

    /// Stores `bytes` under `key`; the error says why it could not (a full quota).
    async fn put(&self, key: &str, bytes: &[u8]) -> std::result::Result<(), String>;

    /// Deletes every entry whose key starts with `prefix`.
    async fn delete_prefix(&self, prefix: &str) -> std::result::Result<(), String>;
}

/// A [`RangeFetch`] that answers from a [`RangeStore`] when it can and stores what it
/// fetches. An entry whose length is not its range's (partial or corrupt) is fetched
/// again. A store that fails (quota) is not fatal: caching stops, the load goes on,
/// and [`CachedFetch::cache_error`] says why.
pub struct CachedFetch<F, S> {
    inner: F,
    store: Option<S>,
    bytes_from_cache: Cell<u64>,
    bytes_fetched: Cell<u64>,
    cache_error: RefCell<Option<String>>,
}

impl<F: RangeFetch, S: RangeStore> CachedFetch<F, S> {
    /// Reads `inner` through `store` (`None`: no caching). The store's manifest for
    /// this file must record `version`; otherwise every range stored for the file is
    /// dropped first and the new version recorded.
    pub async fn open(inner: F, store: Option<S>, version: &RemoteVersion) -> CachedFetch<F, S> {
        let cached = CachedFetch {
            inner,
            store,
            bytes_from_cache: Cell::new(0),
            bytes_fetched: Cell::new(0),
            cache_error: RefCell::new(None),
        };
        if let Some(store) = &cached.store {
            let manifest = cached.manifest_key();
            let recorded = store
                .get(&manifest)
                .await
                .and_then(|bytes| serde_json::from_slice::<RemoteVersion>(&bytes).ok());
            if recorded.as_ref() != Some(version) {
                let fresh = match store.delete_prefix(&cached.key_base()).await {
                    Ok(()) => {
                        let json = serde_json::to_vec(version).expect("plain struct");
                        store.put(&manifest, &json).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = fresh {
                    cached.stop_caching(e);
                }
            }
        }
        cached
    }

    /// The key prefix shared by every entry of this file.
    fn key_base(&self) -> String {
        let name = self.inner.name();
        let separator = if name.contains('?') { '&' } else { '?' };
        format!("{name}{separator}safetyj-")
    }

    /// The key of the manifest entry (the [`RemoteVersion`] the entries belong to).
    pub fn manifest_key(&self) -> String {
        format!("{}manifest", self.key_base())
    }

    /// The key of the entry holding `range` (`<url>?safetyj-range=<start>-<end>`,
    /// end exclusive).
    pub fn range_key(&self, range: &Range<u64>) -> String {
        format!("{}range={}-{}", self.key_base(), range.start, range.end)
    }

    /// Bytes served from the store so far.
    pub fn bytes_from_cache(&self) -> u64 {
        self.bytes_from_cache.get()
    }

    /// Bytes fetched from the transport so far.
    pub fn bytes_fetched(&self) -> u64 {
        self.bytes_fetched.get()
    }

    /// Why caching stopped, if it did.
    pub fn cache_error(&self) -> Option<String> {
        self.cache_error.borrow().clone()
    }

    fn caching(&self) -> Option<&S> {
        self.store
            .as_ref()
            .filter(|_| self.cache_error.borrow().is_none())
    }

    fn stop_caching(&self, reason: String) {
        self.cache_error
            .borrow_mut()
            .get_or_insert(format!("the weights are not being cached: {reason}"));
    }
}

impl<F: RangeFetch, S: RangeStore> RangeFetch for CachedFetch<F, S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }

    async fn fetch(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let key = self.range_key(&range);
        let wanted = range.end - range.start;
        if let Some(store) = self.caching() {
            if let Some(bytes) = store.get(&key).await {
                if bytes.len() as u64 == wanted {
                    self.bytes_from_cache
                        .set(self.bytes_from_cache.get() + wanted);
                    return Ok(bytes);
                }
            }
        }
        let bytes = fetch_exact(&self.inner, range).await?;
        self.bytes_fetched.set(self.bytes_fetched.get() + wanted);
        if let Some(store) = self.caching() {
            if let Err(e) = store.put(&key, &bytes).await {
                self.stop_caching(e);
            }
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::gguf::{GgufPlan, GgufWriter, MetadataValue};
    use crate::formats::MemorySource;
    use crate::quant::DType;
    use std::collections::BTreeMap;

    /// An in-memory [`RangeStore`] that can be told to refuse writes (a full quota).
    #[derive(Default)]
    struct MemoryStore {
        entries: RefCell<BTreeMap<String, Vec<u8>>>,
        full: Cell<bool>,
    }

    impl RangeStore for &MemoryStore {
        async fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.entries.borrow().get(key).cloned()
        }

        async fn put(&self, key: &str, bytes: &[u8]) -> std::result::Result<(), String> {
            if self.full.get() {
                return Err("QuotaExceededError: the quota has been exceeded".into());
            }
            self.entries
                .borrow_mut()
                .insert(key.to_string(), bytes.to_vec());
            Ok(())
        }

        async fn delete_prefix(&self, prefix: &str) -> std::result::Result<(), String> {
            self.entries
                .borrow_mut()
                .retain(|k, _| !k.starts_with(prefix));
            Ok(())
        }
    }

    fn version(length: u64, etag: &str) -> RemoteVersion {
        RemoteVersion {
            length,
            etag: Some(etag.into()),
            last_modified: None,
        }
    }

    fn file(len: usize) -> MemoryFetch {
        MemoryFetch::new(
            "https://x.test/m.gguf",
            (0..len).map(|i| (i * 7) as u8).collect(),
        )
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        pollster::block_on(f)
    }

    #[test]
    fn a_second_load_is_served_from_the_store() {
        let store = MemoryStore::default();
        let v = version(100, "a");
        let first = block_on(CachedFetch::open(file(100), Some(&store), &v));
        let bytes = block_on(first.fetch(10..30)).unwrap();
        assert_eq!(bytes, file(100).bytes[10..30]);
        assert_eq!((first.bytes_fetched(), first.bytes_from_cache()), (20, 0));
        assert!(store
            .entries
            .borrow()
            .contains_key("https://x.test/m.gguf?safetyj-range=10-30"));

        let second = block_on(CachedFetch::open(file(100), Some(&store), &v));
        assert_eq!(block_on(second.fetch(10..30)).unwrap(), bytes);
        assert_eq!((second.bytes_fetched(), second.bytes_from_cache()), (0, 20));
        assert!(second.inner.requests().is_empty());
        assert_eq!(second.cache_error(), None);
    }

    #[test]
    fn a_changed_remote_file_drops_the_stored_ranges() {
        let store = MemoryStore::default();
        let old = block_on(CachedFetch::open(
            file(100),
            Some(&store),
            &version(100, "a"),
        ));
        block_on(old.fetch(0..8)).unwrap();
        let new = block_on(CachedFetch::open(
            file(100),
            Some(&store),
            &version(100, "b"),
        ));
        assert_eq!(
            store.entries.borrow().len(),
            1,
            "only the new manifest is left"
        );
        block_on(new.fetch(0..8)).unwrap();
        assert_eq!((new.bytes_fetched(), new.bytes_from_cache()), (8, 0));
    }

    #[test]
    fn a_partial_entry_is_fetched_again_and_replaced() {
        let store = MemoryStore::default();
        let v = version(100, "a");
        let first = block_on(CachedFetch::open(file(100), Some(&store), &v));
        let key = first.range_key(&(40..60));
        block_on(first.fetch(40..60)).unwrap();
        store
            .entries
            .borrow_mut()
            .get_mut(&key)
            .unwrap()
            .truncate(5);
        let second = block_on(CachedFetch::open(file(100), Some(&store), &v));
        assert_eq!(
            block_on(second.fetch(40..60)).unwrap(),
            file(100).bytes[40..60]
        );
        assert_eq!(second.inner.requests(), vec![40..60]);
        assert_eq!(store.entries.borrow()[&key].len(), 20);
    }

    #[test]
    fn a_full_quota_stops_caching_but_not_the_load() {
        let store = MemoryStore::default();
        let cached = block_on(CachedFetch::open(
            file(100),
            Some(&store),
            &version(100, "a"),
        ));
        store.full.set(true);
        assert_eq!(
            block_on(cached.fetch(0..10)).unwrap(),
            file(100).bytes[..10]
        );
        assert_eq!(
            block_on(cached.fetch(10..20)).unwrap(),
            file(100).bytes[10..20]
        );
        let error = cached.cache_error().expect("the quota error is reported");
        assert!(error.contains("QuotaExceededError"), "{error}");
        assert_eq!(cached.bytes_fetched(), 20);
    }

    #[test]
    fn without_a_store_everything_is_fetched() {
        let cached: CachedFetch<_, &MemoryStore> =
            block_on(CachedFetch::open(file(50), None, &version(50, "a")));
        block_on(cached.fetch(0..10)).unwrap();
        block_on(cached.fetch(0..10)).unwrap();
        assert_eq!(cached.bytes_fetched(), 20);
        assert_eq!(cached.inner.requests().len(), 2);
    }

    #[test]
    fn a_short_body_is_a_truncation_error() {
        assert_eq!(block_on(fetch_exact(&file(10), 5..10)).unwrap().len(), 5);
        struct Short(MemoryFetch);
        impl RangeFetch for Short {
            fn name(&self) -> &str {
                self.0.name()
            }
            fn len(&self) -> u64 {
                100
            }
            async fn fetch(&self, range: Range<u64>) -> Result<Vec<u8>> {
                self.0.fetch(range).await
            }
        }
        let err = block_on(fetch_exact(&Short(file(10)), 5..20))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("5 bytes arrived of 15") && err.contains("truncated"),
            "{err}"
        );
        let err = block_on(fetch_exact(&file(10), 5..20))
            .unwrap_err()
            .to_string();
        assert!(err.contains("past the end"), "{err}");
    }

    /// A GGUF whose header (a long string array) is larger than the first prefix.
    fn big_header_gguf() -> Vec<u8> {
        let mut plan = GgufPlan::new();
        plan.add_metadata(
            "general.architecture",
            MetadataValue::String("llama".into()),
        )
        .unwrap();
        let words: Vec<String> = (0..200_000).map(|i| format!("token{i}")).collect();
        plan.add_metadata(
            "tokenizer.ggml.tokens",
            MetadataValue::Array(crate::formats::MetadataArray::strings(words)),
        )
        .unwrap();
        plan.add_tensor("t", &[64], DType::F32).unwrap();
        let mut writer = GgufWriter::start(Vec::new(), "big", &plan).unwrap();
        writer.write_tensor("t", &[1u8; 256]).unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn the_header_is_read_in_growing_ranges_without_the_tensor_data() {
        let bytes = big_header_gguf();
        let want = GgufFile::read(&MemorySource::new("big", bytes.clone())).unwrap();
        let fetch = MemoryFetch::new("big", bytes);
        let mut seen = Vec::new();
        let got = block_on(read_gguf_header(&fetch, |n| seen.push(n))).unwrap();
        assert_eq!(got.tensors(), want.tensors());
        assert_eq!(got.metadata(), want.metadata());
        let requests = fetch.requests();
        assert!(requests.len() >= 2, "{requests:?}");
        assert_eq!(requests[0], 0..FIRST_PREFIX_BYTES);
        for pair in requests.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "contiguous: {requests:?}");
        }
        let data = want.tensor("t").unwrap().file_range();
        assert!(requests.last().unwrap().end <= data.end);
        assert_eq!(*seen.last().unwrap(), requests.last().unwrap().end);
    }

    #[test]
    fn a_file_that_is_not_gguf_is_refused() {
        let fetch = MemoryFetch::new("page.html", b"<!doctype html><html></html>".to_vec());
        let err = block_on(read_gguf_header(&fetch, |_| {}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("page.html") && err.contains("GGUF"), "{err}");
        let empty = MemoryFetch::new("empty.gguf", Vec::new());
        let err = block_on(read_gguf_header(&empty, |_| {}))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("empty.gguf: truncated: the magic number needs 4 bytes")
                && err.contains("the file ends at 0"),
            "{err}"
        );
    }
}
