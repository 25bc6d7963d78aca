//! Streaming moderation in the browser: `judge.moderateStream({query, ...})` starts
//! a [`ResponseStream`] on the judge, and the `ModerationStream` it resolves to takes
//! B's response piece by piece (`push`), reporting each check, until `finish` gives
//! the verdict. Every call queues behind the judge's other work, in call order.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, JsString};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::{callback, from_js, in_range, js_error, to_js, Queue};
use crate::error::{Error, Result};
use crate::judge::engine::Judge as Engine;
use crate::judge::stream::{ResponseStream, StreamOptions};
use crate::judge::{Dialogue, LangChoice};

/// What `judge.moderateStream` takes: A's query, and how to check B's response.
#[derive(serde::Deserialize, tsify::Tsify)]
#[serde(rename_all = "camelCase")]
pub struct ModerateStreamRequest {
    query: String,
    /// The template language; default "auto" (from the query's text).
    #[serde(default)]
    #[tsify(type = "\"en\" | \"zh\" | \"auto\"", optional)]
    lang: Option<String>,
    /// A check runs each time the response has grown by this many tokens (and at
    /// `finish`); default 16.
    #[serde(default)]
    #[tsify(optional)]
    check_every: Option<f64>,
    /// Stop at the first check whose P(unsafe) reaches this (0 to 1); later pushes
    /// reject. Default: never stop.
    #[serde(default)]
    #[tsify(optional)]
    stop_at: Option<f64>,
    /// Receives each check as it is made.
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    #[tsify(type = "(check: StreamCheck) => void", optional)]
    on_check: JsValue,
}

#[wasm_bindgen]
extern "C" {
    /// A `ModerateStreamRequest` object from JavaScript.
    #[wasm_bindgen(typescript_type = "ModerateStreamRequest")]
    pub type ModerateStreamRequestArg;
    /// A promise of a `ModerationStream`.
    #[wasm_bindgen(typescript_type = "Promise<ModerationStream>")]
    pub type ModerationStreamPromise;
    /// A promise of the check a push ran, or null when it ran none.
    #[wasm_bindgen(typescript_type = "Promise<StreamCheck | null>")]
    pub type StreamCheckPromise;
}

/// A request's settings, read before anything is queued.
pub(super) struct StreamSettings {
    dialogue: Dialogue,
    lang: LangChoice,
    options: StreamOptions,
    on_check: Option<Function>,
}

/// Reads and checks a `ModerateStreamRequest`.
pub(super) fn stream_settings(request: JsValue) -> Result<StreamSettings> {
    let request: ModerateStreamRequest = from_js("request", request)?;
    if request.query.trim().is_empty() {
        return Err(Error::InvalidInput(
            "request.query is empty: there is nothing to judge".into(),
        ));
    }
    let lang = match request.lang {
        None => LangChoice::Auto,
        Some(text) => text
            .parse::<LangChoice>()
            .map_err(|e| Error::InvalidInput(format!("request.lang: {e}")))?,
    };
    let check_every = in_range(
        "request.checkEvery",
        request.check_every,
        16.0,
        1.0..=65536.0,
    )?;
    if check_every.fract() != 0.0 {
        return Err(Error::InvalidInput(
            "request.checkEvery must be a whole number of tokens".into(),
        ));
    }
    let stop_at = match request.stop_at {
        None => None,
        Some(p) => Some(in_range("request.stopAt", Some(p), 1.0, 0.0..=1.0)?),
    };
    Ok(StreamSettings {
        dialogue: Dialogue::single(request.query, ""),
        lang,
        options: StreamOptions {
            check_every: check_every as usize,
            stop_at,
        },
        on_check: callback("request.onCheck", request.on_check)?,
    })
}

/// Starts a stream on `engine` as the queued work of `judge.moderateStream`.
pub(super) async fn open(
    engine: Rc<Engine>,
    settings: StreamSettings,
    queue: Queue,
) -> std::result::Result<JsValue, JsValue> {
    let stream = ResponseStream::start(
        engine,
        &settings.dialogue,
        settings.lang.fixed(),
        settings.options,
    )
    .await
    .map_err(|e| js_error(&e))?;
    Ok(ModerationStream {
        state: Rc::new(RefCell::new(State {
            stream: Some(stream),
            high_surrogate: None,
        })),
        on_check: settings.on_check,
        queue,
    }
    .into())
}

struct State {
    /// `None` once finished or closed.
    stream: Option<ResponseStream<Rc<Engine>>>,
    /// A UTF-16 high surrogate that ended the last push, waiting for its low half.
    high_surrogate: Option<u16>,
}

/// A response being moderated as it is written (`judge.moderateStream`).
#[wasm_bindgen]
pub struct ModerationStream {
    state: Rc<RefCell<State>>,
    on_check: Option<Function>,
    queue: Queue,
}

#[wasm_bindgen]
impl ModerationStream {
    /// Appends `text` to B's response; resolves to the check it ran (each time the
    /// response has grown by `checkEvery` tokens), or null. Text may be cut
    /// anywhere, even between the two halves of a surrogate pair. Rejects once the
    /// stream stopped at `stopAt`, or was finished or closed.
    pub fn push(&self, text: JsString) -> StreamCheckPromise {
        let text = self.join_surrogates(&text);
        let state = self.state.clone();
        let on_check = self.on_check.clone();
        self.queue
            .run(async move {
                let mut stream = take(&state)?;
                let result = stream.push_async(&text).await;
                state.borrow_mut().stream = Some(stream);
                let Some(check) = result.map_err(|e| js_error(&e))? else {
                    return Ok(JsValue::NULL);
                };
                let value = to_js(&check).map_err(|e| js_error(&e))?;
                if let Some(on_check) = on_check {
                    on_check.call1(&JsValue::NULL, &value)?;
                }
                Ok(value)
            })
            .unchecked_into()
    }

    /// The verdict on the whole response (the stopping check's, when it stopped);
    /// ends the stream and frees its KV cache.
    pub fn finish(&self) -> super::VerdictPromise {
        let state = self.state.clone();
        let dangling = self.state.borrow_mut().high_surrogate.take();
        self.queue
            .run(async move {
                let stream = take(&state)?;
                if dangling.is_some() {
                    return Err(js_error(&Error::InvalidInput(
                        "the response ends with half of a surrogate pair".into(),
                    )));
                }
                let verdict = stream.finish_async().await.map_err(|e| js_error(&e))?;
                to_js(&verdict).map_err(|e| js_error(&e))
            })
            .unchecked_into()
    }

    /// Ends the stream without a verdict and frees its KV cache (after work already
    /// queued); later calls reject.
    pub fn close(&self) {
        let state = self.state.clone();
        let _ = self.queue.run(async move {
            let _ = state.borrow_mut().stream.take();
            Ok(JsValue::UNDEFINED)
        });
    }

    /// `text` as Rust text, its last unit held back when it is a high surrogate and
    /// the one held back from the last push put in front.
    fn join_surrogates(&self, text: &JsString) -> String {
        let mut units: Vec<u16> = Vec::with_capacity(text.length() as usize + 1);
        let mut state = self.state.borrow_mut();
        units.extend(state.high_surrogate.take());
        units.extend(text.iter());
        if let Some(&last) = units.last() {
            if (0xD800..0xDC00).contains(&last) {
                state.high_surrogate = units.pop();
            }
        }
        String::from_utf16_lossy(&units)
    }
}

/// The stream, taken out of `state` while an operation runs.
fn take(state: &RefCell<State>) -> std::result::Result<ResponseStream<Rc<Engine>>, JsValue> {
    state.borrow_mut().stream.take().ok_or_else(|| {
        js_error(&Error::InvalidInput(
            "this stream was finished or closed: start another with judge.moderateStream".into(),
        ))
    })
}
