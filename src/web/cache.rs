//! Fetched weight ranges kept in Cache Storage (`caches.open("safetyj-weights-v1")`),
//! one entry per range under a synthetic URL, so a reload downloads nothing.

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, CacheStorage, Request, Response};

use super::http::js_message;
use crate::formats::remote::RangeStore;

/// The Cache Storage cache that holds the weights (bump the version when the entry
/// layout changes).
pub const CACHE_NAME: &str = "safetyj-weights-v1";

/// The weights cache of this origin.
pub struct CacheStore {
    cache: Cache,
}

impl CacheStore {
    /// Opens [`CACHE_NAME`]; fails with the reason where Cache Storage is missing
    /// (an insecure context) or refused.
    pub async fn open() -> Result<CacheStore, String> {
        let caches = Reflect::get(&js_sys::global(), &JsValue::from_str("caches"))
            .ok()
            .and_then(|c| c.dyn_into::<CacheStorage>().ok())
            .ok_or_else(|| {
                "Cache Storage is not available here (it needs a secure context: https or localhost)"
                    .to_string()
            })?;
        let cache = JsFuture::from(caches.open(CACHE_NAME))
            .await
            .map_err(|e| js_message(&e))?;
        Ok(CacheStore {
            cache: cache.unchecked_into(),
        })
    }
}

impl RangeStore for CacheStore {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let found = JsFuture::from(self.cache.match_with_str(key)).await.ok()?;
        let response: Response = found.dyn_into().ok()?;
        let buffer = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
        Some(Uint8Array::new(&buffer).to_vec())
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), String> {
        let body = Uint8Array::from(bytes);
        let response =
            Response::new_with_opt_buffer_source(Some(&body)).map_err(|e| js_message(&e))?;
        JsFuture::from(self.cache.put_with_str(key, &response))
            .await
            .map(|_| ())
            .map_err(|e| js_message(&e))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), String> {
        let keys: Array = JsFuture::from(self.cache.keys())
            .await
            .map_err(|e| js_message(&e))?
            .unchecked_into();
        for request in keys.iter() {
            let request: Request = request.unchecked_into();
            if request.url().starts_with(prefix) {
                JsFuture::from(self.cache.delete_with_request(&request))
                    .await
                    .map_err(|e| js_message(&e))?;
            }
        }
        Ok(())
    }
}
