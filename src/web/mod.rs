//! The browser API (wasm-bindgen): `Judge.load(source, options)` streams a GGUF model
//! by HTTP `Range` into GPU buffers (cached in Cache Storage), and `evaluate` judges
//! a dialogue with the same engine and verdict as the native library. It uses only
//! the global scope (`fetch`, `caches`, `location`), so it runs in a Web Worker.

mod cache;
mod heads;
mod http;
mod stream;

use std::cell::RefCell;
use std::ops::ControlFlow;
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect};
use tsify::Ts;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

pub use cache::{CacheStore, CACHE_NAME};
pub use heads::{HeadExample, TrainHeadOptions};
pub use http::HttpRange;
pub use stream::{ModerateStreamRequest, ModerationStream};

use crate::cpu::CpuModel;
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::formats::remote::{read_gguf_header, CachedFetch};
use crate::gpu::{Context, ContextOptions};
use crate::judge::engine::{
    Judge as Engine, JudgeOptions, JudgeRequest, Verdict, DEFAULT_SENTENCE_PREFIXES,
};
use crate::judge::head::{builtin_head, VerdictHead};
use crate::judge::{protocol_for_model, protocol_named, Dialogue, Lang, LangChoice, Mode};
use crate::model::stream::{load_gguf_streamed, StreamProgress};
use crate::tokenizer::{GgufVocab, Tokenizer};

/// Options of `Judge.load`; every field may be left out.
#[derive(Default, serde::Deserialize, tsify::Tsify)]
#[serde(rename_all = "camelCase", default)]
pub struct LoadOptions {
    /// Called as the header and each tensor arrive.
    #[serde(with = "serde_wasm_bindgen::preserve")]
    #[tsify(type = "(p: LoadProgress) => void", optional)]
    on_progress: JsValue,
    /// Where preset names resolve: `${modelBaseUrl}${preset file}`; default "./models/".
    #[tsify(optional)]
    model_base_url: Option<String>,
    /// Keep fetched weights in Cache Storage ("safetyj-weights-v1"); default true.
    #[tsify(optional)]
    cache: Option<bool>,
    /// Attach the verdict head the model's preset ships (built in), when it has one;
    /// default true. A URL whose file name is a preset's file is that preset.
    #[tsify(optional)]
    head: Option<bool>,
    /// P(unsafe) at or above which the verdict is unsafe, without a head; default 0.5.
    #[tsify(optional)]
    threshold: Option<f64>,
    /// KV cache positions (prompt plus critique); default 2048, at most the model's.
    #[tsify(optional)]
    context: Option<f64>,
    /// Most tokens of a critique; default 256.
    #[tsify(optional)]
    max_critique_tokens: Option<f64>,
    /// Parallel range requests; default 4.
    #[tsify(optional)]
    in_flight: Option<f64>,
    /// Run dialogues through the injection defence (markers escaped, suspicious
    /// sentences also scored cut out); default true.
    #[tsify(optional)]
    defense: Option<bool>,
    /// Call a dialogue unsafe whenever injection is suspected; default false.
    #[tsify(optional)]
    suspected_unsafe: Option<bool>,
    /// Also score the response cut at up to this many earlier sentence ends, keeping
    /// the highest P(unsafe), so that appended text cannot lower the verdict; 0
    /// scores the whole response only; default 8.
    #[tsify(optional)]
    sentence_prefixes: Option<f64>,
    /// The judge protocol; default the preset's, else what the model's name
    /// suggests, else "safety-j".
    #[tsify(
        type = "\"safety-j\" | \"qwen3guard-gen\" | \"qwen3guard-gen-loose\" | \"llama-guard-3-1b\" | \"llama-guard-3-8b\"",
        optional
    )]
    protocol: Option<String>,
    /// Where the model runs: "gpu" (WebGPU, a software adapter included), "cpu"
    /// (WebAssembly SIMD, no GPU needed), or "auto" (WebGPU when the browser has a
    /// hardware adapter, else the CPU: a fallback adapter such as SwiftShader counts
    /// as none); default "auto".
    #[tsify(type = "\"auto\" | \"gpu\" | \"cpu\"", optional)]
    device: Option<String>,
}

/// Where a load stands. Bytes count the GGUF header plus the tensors the model needs.
#[derive(serde::Serialize, tsify::Tsify)]
#[serde(rename_all = "camelCase")]
pub struct LoadProgress {
    #[tsify(type = "\"header\" | \"weights\" | \"ready\"")]
    phase: &'static str,
    bytes_done: u64,
    bytes_total: u64,
    bytes_from_cache: u64,
    tensors_done: usize,
    tensors_total: usize,
    /// Why the weights are not being cached (quota, no Cache Storage), once it happens.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_error: Option<String>,
    message: String,
}

/// One dialogue to judge.
#[derive(serde::Deserialize, tsify::Tsify)]
#[serde(rename_all = "camelCase")]
pub struct EvaluateRequest {
    query: String,
    response: String,
    /// The template language; default "auto" (from the dialogue's text).
    #[serde(default)]
    #[tsify(type = "\"en\" | \"zh\" | \"auto\"", optional)]
    lang: Option<String>,
    /// "verdict" stops at the label; "critique" also streams the analysis. Default "verdict".
    #[serde(default)]
    #[tsify(optional)]
    mode: Option<Mode>,
    /// Receives each new piece of the critique; return false to stop it.
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    #[tsify(type = "(text: string) => boolean | void", optional)]
    on_critique: JsValue,
}

/// What the judge runs on: the GPU adapter and the features and limits the judge
/// uses, or the CPU (`backend` "Cpu", no GPU features, limits 0). `gpuError` says
/// why a load with `device: "auto"` did not get the GPU.
#[derive(serde::Serialize, tsify::Tsify)]
#[serde(rename_all = "camelCase")]
#[tsify(missing_as_null)]
pub struct Capabilities {
    adapter: String,
    backend: String,
    shader_f16: bool,
    subgroups: bool,
    timestamps: bool,
    max_storage_binding_bytes: u64,
    max_buffer_bytes: u64,
    gpu_error: Option<String>,
}

/// The loaded model. `context` is the model's trained context length; `quant` the
/// file's quantization recipe as llama.cpp names it (`Q4_K_M`), or else the storage
/// type holding most of its weight bytes; `standIn` is null for a URL that names no
/// preset's file; `head` names the verdict head that decides verdicts, if any;
/// `languages` are those the protocol's judge was trained on (a verdict in another
/// may be unreliable).
#[derive(serde::Serialize, tsify::Tsify, Clone)]
#[serde(rename_all = "camelCase")]
#[tsify(missing_as_null)]
pub struct ModelInfo {
    name: String,
    arch: String,
    layers: usize,
    hidden: usize,
    vocab: usize,
    context: usize,
    quant: String,
    file_bytes: u64,
    stand_in: Option<bool>,
    head: Option<String>,
    /// The judge protocol spoken (`qwen3guard-gen`).
    protocol: String,
    languages: Vec<Lang>,
}

#[wasm_bindgen]
extern "C" {
    /// A `LoadOptions` object from JavaScript.
    #[wasm_bindgen(typescript_type = "LoadOptions")]
    pub type LoadOptionsArg;
    /// An `EvaluateRequest` object from JavaScript.
    #[wasm_bindgen(typescript_type = "EvaluateRequest")]
    pub type EvaluateRequestArg;
    /// A promise of a `Verdict`.
    #[wasm_bindgen(typescript_type = "Promise<Verdict>")]
    pub type VerdictPromise;
}

/// The presets file, as built in (the browser can load those with a GGUF `file`).
const PRESETS_JSON: &str = include_str!("../../models/presets.json");

/// The fields of a preset the browser uses.
#[derive(serde::Deserialize)]
struct Preset {
    name: String,
    stand_in: bool,
    source: PresetSource,
    /// The built-in verdict head that decides this preset's verdicts by default.
    #[serde(default)]
    head: Option<String>,
    /// The judge protocol the model speaks; Safety-J's when not given.
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(serde::Deserialize)]
struct PresetSource {
    file: Option<String>,
}

#[derive(serde::Deserialize)]
struct Presets {
    presets: Vec<Preset>,
}

/// What `source` names: the absolute URL of a GGUF file, and the preset if one was
/// named or the URL's file name is a preset's file.
struct Resolved {
    url: String,
    preset: Option<Preset>,
}

/// Resolves `source` (a URL ending in `.gguf`, or a preset with a GGUF file under
/// `base`) against the page's or worker's location.
fn resolve_source(source: &str, base: &str) -> Result<Resolved> {
    let presets: Presets = serde_json::from_str(PRESETS_JSON).map_err(|e| Error::Format {
        file: "models/presets.json".into(),
        message: e.to_string(),
    })?;
    let path = source.split(['?', '#']).next().unwrap_or_default();
    if path.to_ascii_lowercase().ends_with(".gguf") {
        let file_name = path.rsplit('/').next().unwrap_or_default();
        return Ok(Resolved {
            url: absolute_url(source)?,
            preset: presets
                .presets
                .into_iter()
                .find(|p| p.source.file.as_deref() == Some(file_name)),
        });
    }
    let usable: Vec<&str> = presets
        .presets
        .iter()
        .filter(|p| p.source.file.is_some())
        .map(|p| p.name.as_str())
        .collect();
    let usable = usable.join(", ");
    let Some(preset) = presets.presets.into_iter().find(|p| p.name == source) else {
        return Err(Error::InvalidInput(format!(
            "\"{source}\" is neither the URL of a .gguf file nor a preset; presets that work in the browser: {usable}"
        )));
    };
    let Some(file) = &preset.source.file else {
        return Err(Error::Unsupported(format!(
            "preset \"{source}\" is a Hugging Face checkpoint that only the native tool can convert; \
             presets that work in the browser: {usable}"
        )));
    };
    Ok(Resolved {
        url: absolute_url(&format!("{base}{file}"))?,
        preset: Some(preset),
    })
}

/// `url` made absolute against the global scope's location.
fn absolute_url(url: &str) -> Result<String> {
    let base = Reflect::get(&js_sys::global(), &JsValue::from_str("location"))
        .ok()
        .and_then(|location| Reflect::get(&location, &JsValue::from_str("href")).ok())
        .and_then(|href| href.as_string());
    let parsed = match &base {
        Some(base) => web_sys::Url::new_with_base(url, base),
        None => web_sys::Url::new(url),
    };
    parsed.map(|u| u.href()).map_err(|e| {
        Error::InvalidInput(format!("\"{url}\" is not a URL: {}", http::js_message(&e)))
    })
}

/// Settings read from `LoadOptions`.
struct Settings {
    on_progress: Option<Function>,
    model_base_url: String,
    cache: bool,
    head: bool,
    judge: JudgeOptions,
    in_flight: usize,
    device: WebDevice,
}

/// Where a browser load runs the model (`options.device`).
#[derive(Clone, Copy, PartialEq)]
enum WebDevice {
    Auto,
    Gpu,
    Cpu,
}

/// The CPU engine's name in `capabilities().adapter`.
const CPU_ADAPTER: &str = "CPU (WebAssembly SIMD, one thread)";

/// A JS value read as `T`; errors name the field at fault (`options.threshold: …`).
fn from_js<T: serde::de::DeserializeOwned>(what: &str, value: JsValue) -> Result<T> {
    serde_path_to_error::deserialize(serde_wasm_bindgen::Deserializer::from(value)).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else if path.starts_with('[') {
            path
        } else {
            format!(".{path}")
        };
        // serde_wasm_bindgen's errors are JS `Error`s; their text starts "Error: ".
        let message = e.inner().to_string();
        let message = message.strip_prefix("Error: ").unwrap_or(&message);
        Error::InvalidInput(format!("{what}{at}: {message}"))
    })
}

/// A value as a plain JS object, as `safetyj judge --json` writes it (null for
/// `None`, numbers for 64-bit integers).
fn to_js(value: &impl serde::Serialize) -> Result<JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| Error::InvalidInput(format!("a result could not be converted: {e}")))
}

/// `value` as a function, or `None` when it is undefined or null.
fn callback(what: &str, value: JsValue) -> Result<Option<Function>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value
        .dyn_into::<Function>()
        .map(Some)
        .map_err(|_| Error::InvalidInput(format!("{what} must be a function")))
}

/// `value` when it lies in `range`, else an error naming field `what` (`options.threshold`).
fn in_range(
    what: &str,
    value: Option<f64>,
    default: f64,
    range: std::ops::RangeInclusive<f64>,
) -> Result<f64> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(&v) => Ok(v),
        Some(_) => Err(Error::InvalidInput(format!(
            "{what} must be a number from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

fn settings(options: LoadOptions) -> Result<Settings> {
    let whole = 1.0..=u32::MAX as f64;
    Ok(Settings {
        on_progress: callback("options.onProgress", options.on_progress)?,
        model_base_url: options.model_base_url.unwrap_or_else(|| "./models/".into()),
        cache: options.cache.unwrap_or(true),
        head: options.head.unwrap_or(true),
        judge: JudgeOptions {
            threshold: in_range("options.threshold", options.threshold, 0.5, 0.0..=1.0)?,
            context: in_range("options.context", options.context, 2048.0, whole.clone())? as usize,
            max_critique_tokens: in_range(
                "options.maxCritiqueTokens",
                options.max_critique_tokens,
                256.0,
                whole,
            )? as usize,
            // The browser attaches a preset's head itself, after the streamed load.
            preset_head: false,
            defense: options.defense.unwrap_or(true),
            suspected_unsafe: options.suspected_unsafe.unwrap_or(false),
            sentence_prefixes: in_range(
                "options.sentencePrefixes",
                options.sentence_prefixes,
                DEFAULT_SENTENCE_PREFIXES as f64,
                0.0..=64.0,
            )? as usize,
            protocol: match options.protocol {
                Some(name) => Some(
                    protocol_named(&name)
                        .map_err(|e| Error::InvalidInput(format!("options.protocol: {e}")))?
                        .name()
                        .to_string(),
                ),
                None => None,
            },
        },
        in_flight: in_range("options.inFlight", options.in_flight, 4.0, 1.0..=64.0)? as usize,
        device: match options.device.as_deref() {
            None | Some("auto") => WebDevice::Auto,
            Some("gpu") => WebDevice::Gpu,
            Some("cpu") => WebDevice::Cpu,
            Some(other) => {
                return Err(Error::InvalidInput(format!(
                    "options.device must be \"auto\", \"gpu\" or \"cpu\", not \"{other}\""
                )))
            }
        },
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// The file's quantization recipe from `general.file_type` (`Q4_K_M`), or else the
/// storage type holding most of its tensor bytes.
fn quant_name(file: &GgufFile) -> String {
    if let Some(name) = file
        .get_u32("general.file_type")
        .ok()
        .and_then(crate::quant::file_type_name)
    {
        return name.to_string();
    }
    let mut bytes: Vec<(crate::quant::DType, u64)> = Vec::new();
    for info in file.tensors() {
        match bytes.iter_mut().find(|(t, _)| *t == info.dtype) {
            Some((_, total)) => *total += info.size,
            None => bytes.push((info.dtype, info.size)),
        }
    }
    bytes
        .into_iter()
        .max_by_key(|&(_, total)| total)
        .map(|(t, _)| t.name().to_string())
        .unwrap_or_default()
}

/// `value` as its declared TypeScript type, converted as [`to_js`] does.
fn ts<T: tsify::Tsify + serde::Serialize>(value: &T) -> Result<Ts<T>, JsError> {
    to_js(value)
        .map(Ts::new_unchecked)
        .map_err(|e| JsError::new(&e.to_string()))
}

/// A JS `Error` whose message is `error`'s Display.
fn js_error(error: &Error) -> JsValue {
    js_sys::Error::new(&error.to_string()).into()
}

/// Why `device: "auto"` passed over a WebGPU adapter that the browser marks as a
/// fallback (software) one, for `capabilities().gpuError`.
pub const SOFTWARE_ADAPTER: &str = "WebGPU's adapter is a software fallback (isFallbackAdapter, e.g. SwiftShader): the CPU engine is faster; pass device: \"gpu\" to use it anyway";

/// Loads a judge: resolves `source`, streams the model into a new GPU context (or,
/// per `settings.device`, into wasm memory for the CPU engine), and reports
/// progress through `settings.on_progress`.
async fn load(source: &str, settings: &Settings) -> Result<WebJudge> {
    let report = |progress: &LoadProgress| {
        if let (Some(callback), Ok(value)) = (&settings.on_progress, to_js(progress)) {
            let _ = callback.call1(&JsValue::NULL, &value);
        }
    };
    let resolved = resolve_source(source, &settings.model_base_url)?;
    let remote = HttpRange::open(&resolved.url).await?;
    // The GPU unless the CPU was asked for; with "auto", the CPU when WebGPU fails or
    // its adapter is a software one (the CPU engine is far faster than a rasteriser
    // emulating a GPU: 4.8 s against 304 s to a verdict on the 0.5B, README).
    let (ctx, gpu_error) = match settings.device {
        WebDevice::Cpu => (None, None),
        WebDevice::Gpu => (Some(Context::new(&ContextOptions::default()).await?), None),
        WebDevice::Auto => match Context::new(&ContextOptions::default()).await {
            Ok(ctx) if ctx.caps.software => (None, Some(SOFTWARE_ADAPTER.to_string())),
            Ok(ctx) => (Some(ctx), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let version = remote.version().clone();
    let http_url = resolved.url.starts_with("http:") || resolved.url.starts_with("https:");
    let (store, store_error) = if settings.cache && http_url {
        match CacheStore::open().await {
            Ok(store) => (Some(store), None),
            Err(e) => (None, Some(format!("the weights are not being cached: {e}"))),
        }
    } else {
        (None, None)
    };
    let fetch = CachedFetch::open(remote, store, &version).await;
    let cache_error = || fetch.cache_error().or_else(|| store_error.clone());

    let header = read_gguf_header(&fetch, |bytes| {
        report(&LoadProgress {
            phase: "header",
            bytes_done: bytes,
            bytes_total: version.length,
            bytes_from_cache: fetch.bytes_from_cache(),
            tensors_done: 0,
            tensors_total: 0,
            cache_error: cache_error(),
            message: format!("reading the model header: {:.1} MiB", mib(bytes)),
        })
    })
    .await?;
    let header_bytes = fetch.bytes_from_cache() + fetch.bytes_fetched();
    let tokenizer = Tokenizer::from_gguf_vocab(&GgufVocab::from_gguf(&header)?)?;
    let last = std::cell::Cell::new(StreamProgress::default());
    let mut on_weights = |p: StreamProgress| {
        last.set(p);
        let cached = fetch.bytes_from_cache();
        report(&LoadProgress {
            phase: "weights",
            bytes_done: header_bytes + p.bytes_done,
            bytes_total: header_bytes + p.bytes_total,
            bytes_from_cache: cached,
            tensors_done: p.tensors_done,
            tensors_total: p.tensors_total,
            cache_error: cache_error(),
            message: format!(
                "loading weights: {}/{} tensors, {:.0}/{:.0} MiB ({:.0} MiB from the cache)",
                p.tensors_done,
                p.tensors_total,
                mib(p.bytes_done),
                mib(p.bytes_total),
                mib(cached)
            ),
        })
    };
    let model = match ctx {
        Some(ctx) => {
            let model =
                load_gguf_streamed(&ctx, &header, &fetch, settings.in_flight, &mut on_weights)
                    .await?;
            crate::model::Engine::gpu(ctx, model)
        }
        None => crate::model::Engine::Cpu(
            CpuModel::load_streamed(&header, &fetch, settings.in_flight, &mut on_weights).await?,
        ),
    };

    let c = model.config();
    let info = ModelInfo {
        name: match &resolved.preset {
            Some(preset) => preset.name.clone(),
            None => header
                .get_str("general.name")
                .map(str::to_string)
                .unwrap_or_else(|_| resolved.url.rsplit('/').next().unwrap_or_default().into()),
        },
        arch: c.arch.gguf_name().to_string(),
        layers: c.layers,
        hidden: c.hidden,
        vocab: c.vocab,
        context: c.context,
        quant: quant_name(&header),
        file_bytes: version.length,
        stand_in: resolved.preset.as_ref().map(|p| p.stand_in),
        head: None,
        protocol: String::new(),
        languages: Vec::new(),
    };
    let adapter = match model.gpu_context() {
        Some(ctx) if ctx.info.name.is_empty() => browser_adapter_name().await,
        Some(ctx) => ctx.info.name.clone(),
        None => CPU_ADAPTER.to_string(),
    };
    let last = last.get();
    report(&LoadProgress {
        phase: "ready",
        bytes_done: header_bytes + last.bytes_done,
        bytes_total: header_bytes + last.bytes_total,
        bytes_from_cache: fetch.bytes_from_cache(),
        tensors_done: last.tensors_done,
        tensors_total: last.tensors_total,
        cache_error: cache_error(),
        message: format!(
            "ready: {} ({}, {} layers, {}) on {}",
            info.name, info.arch, info.layers, info.quant, adapter
        ),
    });
    let model_protocol = match &resolved.preset {
        Some(preset) => preset.protocol.as_deref().unwrap_or("safety-j"),
        None => protocol_for_model(&format!("{} {}", info.name, resolved.url)),
    };
    let protocol = protocol_named(settings.judge.protocol.as_deref().unwrap_or(model_protocol))?;
    let mut info = info;
    info.protocol = protocol.name().to_string();
    info.languages = [Lang::En, Lang::Zh]
        .into_iter()
        .filter(|&lang| protocol.covers(lang))
        .collect();
    // A preset's head was trained on its own protocol's prompts.
    let use_head = settings.head && info.protocol == model_protocol;
    let engine = Engine::new(model, tokenizer, protocol, settings.judge.clone())?;
    let preset_head = resolved.preset.as_ref().and_then(|p| p.head.as_deref());
    if let (true, Some(file)) = (use_head, preset_head) {
        let (file, bytes) = builtin_head(file).ok_or_else(|| {
            Error::Unsupported(format!("the head \"{file}\" is not built into this build"))
        })?;
        let head = VerdictHead::from_bytes(file, bytes)?;
        info.head = Some(head.meta.name.clone());
        engine.set_head_async(Some(head)).await.map_err(|e| {
            Error::InvalidInput(format!(
                "{e}; the file at {} is named like preset \"{}\" but is not its model: load it with head: false",
                resolved.url, info.name
            ))
        })?;
    }
    Ok(WebJudge {
        engine: RefCell::new(Some(Rc::new(engine))),
        info,
        adapter,
        gpu_error,
        queue: Queue::default(),
    })
}

/// The browser's description of its default WebGPU adapter (`GPUAdapterInfo`'s
/// vendor, architecture and description, e.g. "google swiftshader"), for where wgpu
/// gives no name: browsers leave the description it reads empty. Empty when the
/// browser says nothing.
async fn browser_adapter_name() -> String {
    async fn query() -> std::result::Result<String, JsValue> {
        let navigator = Reflect::get(&js_sys::global(), &"navigator".into())?;
        let gpu = Reflect::get(&navigator, &"gpu".into())?;
        let request: Function = Reflect::get(&gpu, &"requestAdapter".into())?.dyn_into()?;
        let adapter = JsFuture::from(request.call0(&gpu)?.dyn_into::<Promise>()?).await?;
        let info = Reflect::get(&adapter, &"info".into())?;
        let field = |name: &str| {
            Reflect::get(&info, &name.into())
                .ok()
                .and_then(|v| v.as_string())
                .unwrap_or_default()
        };
        let parts: Vec<String> = ["vendor", "architecture", "description"]
            .into_iter()
            .map(field)
            .filter(|part| !part.is_empty())
            .collect();
        Ok(parts.join(" "))
    }
    query().await.unwrap_or_default()
}

/// A dialogue and its callback, read from an `EvaluateRequest`.
fn parse_request(request: JsValue) -> Result<(JudgeRequest, Option<Function>)> {
    let request: EvaluateRequest = from_js("request", request)?;
    let lang = match request.lang {
        None => LangChoice::Auto,
        Some(text) => text
            .parse::<LangChoice>()
            .map_err(|e| Error::InvalidInput(format!("request.lang: {e}")))?,
    };
    Ok((
        JudgeRequest {
            dialogue: Dialogue::new(request.query, request.response)?,
            lang: lang.fixed(),
            mode: request.mode.unwrap_or(Mode::Verdict),
        },
        callback("request.onCritique", request.on_critique)?,
    ))
}

/// Runs one evaluation; an exception thrown by `on_critique` stops the critique and
/// rejects with that exception.
async fn evaluate(engine: &Engine, request: JsValue) -> std::result::Result<JsValue, JsValue> {
    let (request, on_critique) = parse_request(request).map_err(|e| js_error(&e))?;
    let mut thrown = None;
    let result = engine
        .evaluate_async(&request, |text| match &on_critique {
            None => ControlFlow::Continue(()),
            Some(callback) => match callback.call1(&JsValue::NULL, &JsValue::from_str(text)) {
                Ok(answer) if answer.as_bool() == Some(false) => ControlFlow::Break(()),
                Ok(_) => ControlFlow::Continue(()),
                Err(exception) => {
                    thrown = Some(exception);
                    ControlFlow::Break(())
                }
            },
        })
        .await;
    if let Some(exception) = thrown {
        return Err(exception);
    }
    let verdict: Verdict = result.map_err(|e| {
        // A lost device surfaces first as a failed readback: say what really happened.
        let lost = engine.context().and_then(|ctx| ctx.check_alive().err());
        js_error(&lost.unwrap_or(e))
    })?;
    to_js(&verdict).map_err(|e| js_error(&e))
}

/// Work on one judge (evaluations, stream steps), run one after another in call
/// order: each waits for the promise of the work queued before it.
#[derive(Clone, Default)]
struct Queue(Rc<RefCell<Option<Promise>>>);

impl Queue {
    /// Queues `work`; the promise settles as it does.
    fn run(
        &self,
        work: impl std::future::Future<Output = std::result::Result<JsValue, JsValue>> + 'static,
    ) -> Promise {
        let previous = self.0.borrow_mut().take();
        let promise = future_to_promise(async move {
            if let Some(previous) = previous {
                let _ = JsFuture::from(previous).await;
            }
            work.await
        });
        *self.0.borrow_mut() = Some(promise.clone());
        promise
    }
}

/// A safety judge loaded in the browser.
#[wasm_bindgen(js_name = Judge)]
pub struct WebJudge {
    engine: RefCell<Option<Rc<Engine>>>,
    info: ModelInfo,
    /// What the adapter is called, for `capabilities()`.
    adapter: String,
    /// Why `device: "auto"` did not get the GPU, for `capabilities()`.
    gpu_error: Option<String>,
    queue: Queue,
}

#[wasm_bindgen(js_class = Judge)]
impl WebJudge {
    /// Loads a judge from `source`: the URL of a `.gguf` file (absolute or relative),
    /// or a preset name with a GGUF file (resolved under `options.modelBaseUrl`).
    /// The file is read with HTTP Range requests, tensor by tensor, straight into GPU
    /// buffers (on the CPU: kept in its block types in wasm memory, about the file's
    /// size), and cached in Cache Storage unless `options.cache` is false.
    pub async fn load(
        source: String,
        options: Option<LoadOptionsArg>,
    ) -> Result<WebJudge, JsError> {
        let options = match options.map(JsValue::from) {
            Some(value) if !value.is_undefined() && !value.is_null() => from_js("options", value),
            _ => Ok(LoadOptions::default()),
        };
        let settings = options
            .and_then(settings)
            .map_err(|e| JsError::new(&e.to_string()))?;
        load(&source, &settings)
            .await
            .map_err(|e| JsError::new(&e.to_string()))
    }

    /// Judges one dialogue. Evaluations queue behind one another; a rejected
    /// promise carries an `Error` naming what went wrong.
    pub fn evaluate(&self, request: EvaluateRequestArg) -> Result<VerdictPromise, JsError> {
        let engine = self.engine()?;
        let request: JsValue = request.into();
        let promise = self
            .queue
            .run(async move { evaluate(&engine, request).await });
        Ok(promise.unchecked_into())
    }

    /// Starts moderating B's response to `request.query` as it is written: resolves
    /// to a `ModerationStream` once the dialogue's fixed part is prefilled. The
    /// stream has a KV cache of its own; its steps queue with evaluations.
    #[wasm_bindgen(js_name = moderateStream)]
    pub fn moderate_stream(
        &self,
        request: stream::ModerateStreamRequestArg,
    ) -> Result<stream::ModerationStreamPromise, JsError> {
        let engine = self.engine()?;
        let settings =
            stream::stream_settings(request.into()).map_err(|e| JsError::new(&e.to_string()))?;
        let queue = self.queue.clone();
        let promise = self.queue.run(stream::open(engine, settings, queue));
        Ok(promise.unchecked_into())
    }

    /// Teaches the loaded model a policy: a verdict head trained on `examples`
    /// (labelled dialogues) in the page. Each example costs one verdict pass (its
    /// features); a held-out part (`options.holdout`, by a hash of the text) is kept
    /// out of the fit and measures it. Resolves to the head's name, its report and
    /// its file; `useHead(file)` makes it decide verdicts. Queues with evaluations.
    #[wasm_bindgen(js_name = trainHead)]
    pub fn train_head(
        &self,
        examples: heads::HeadExamplesArg,
        options: Option<heads::TrainHeadOptionsArg>,
    ) -> Result<heads::TrainedHeadPromise, JsError> {
        let engine = self.engine()?;
        let settings = heads::train_settings(
            examples.into(),
            options.map_or(JsValue::UNDEFINED, JsValue::from),
        )
        .map_err(|e| JsError::new(&e.to_string()))?;
        let promise = self
            .queue
            .run(heads::train(engine, self.info.name.clone(), settings));
        Ok(promise.unchecked_into())
    }

    /// Decides verdicts with the head in `file` (a head file from `trainHead` or
    /// `safetyj head train`), refused unless it was trained on this model and
    /// protocol; `null` goes back to the model's own verdict. Resolves to the
    /// head's name (or null). Queues behind evaluations already asked for.
    #[wasm_bindgen(js_name = useHead)]
    pub fn use_head(&self, file: Option<js_sys::Uint8Array>) -> Result<js_sys::Promise, JsError> {
        let engine = self.engine()?;
        Ok(self.queue.run(heads::attach(engine, file)))
    }

    /// What the judge runs on: the GPU adapter with the features and limits the
    /// judge uses, or the CPU.
    pub fn capabilities(&self) -> Result<Ts<Capabilities>, JsError> {
        let engine = self.engine()?;
        let info = match engine.context() {
            Some(ctx) => Capabilities {
                adapter: self.adapter.clone(),
                backend: format!("{:?}", ctx.info.backend),
                shader_f16: ctx.caps.shader_f16,
                subgroups: ctx.caps.subgroups,
                timestamps: ctx.caps.timestamp_query,
                max_storage_binding_bytes: ctx.caps.max_storage_binding_bytes,
                max_buffer_bytes: ctx.caps.max_buffer_bytes,
                gpu_error: None,
            },
            None => Capabilities {
                adapter: self.adapter.clone(),
                backend: "Cpu".to_string(),
                shader_f16: false,
                subgroups: false,
                timestamps: false,
                max_storage_binding_bytes: 0,
                max_buffer_bytes: 0,
                gpu_error: self.gpu_error.clone(),
            },
        };
        ts(&info)
    }

    /// What was loaded: name, architecture, sizes, storage type, file size, whether
    /// a stand-in preset (not Safety-J) was named, and the verdict head attached.
    #[wasm_bindgen(js_name = modelInfo)]
    pub fn model_info(&self) -> Result<Ts<ModelInfo>, JsError> {
        let engine = self.engine()?;
        let mut info = self.info.clone();
        info.head = engine.head().map(|h| h.meta.name.clone());
        ts(&info)
    }

    /// Frees the GPU memory (after an evaluation in progress ends; streams not
    /// finished or closed keep it); later calls throw.
    pub fn dispose(&self) {
        if let Some(engine) = self.engine.borrow_mut().take() {
            if let Ok(engine) = Rc::try_unwrap(engine) {
                if let Some(ctx) = engine.context() {
                    ctx.device.destroy();
                }
            }
        }
        self.queue.0.borrow_mut().take();
    }

    fn engine(&self) -> Result<Rc<Engine>, JsError> {
        self.engine.borrow().clone().ok_or_else(|| {
            JsError::new(
                "disposed: this Judge was disposed and its GPU memory freed; call Judge.load again",
            )
        })
    }
}
