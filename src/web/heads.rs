//! Verdict heads in the browser: `judge.trainHead(examples)` teaches the loaded
//! model a policy from labelled dialogues (features from one verdict pass each, the
//! fit in wasm, figures on a held-out part), and `judge.useHead(bytes)` attaches a
//! head file (one it trained, or one `safetyj head train` wrote) to decide verdicts.

use std::rc::Rc;

use js_sys::{Function, Uint8Array};
use wasm_bindgen::prelude::*;

use super::{callback, from_js, in_range, js_error, to_js};
use crate::error::{Error, Result};
use crate::eval::datasets::LabelItem;
use crate::heads::split::split;
use crate::heads::train::{
    candidate_layers, train_head, Example, HeadBase, TrainOptions, TrainReport,
};
use crate::judge::engine::Judge as Engine;
use crate::judge::head::VerdictHead;
use crate::judge::{detect_language, Dialogue, Label, Lang};

/// One labelled dialogue of `judge.trainHead`.
#[derive(serde::Deserialize, tsify::Tsify)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeadExample {
    query: String,
    response: String,
    /// The policy's answer for this dialogue.
    label: Label,
    /// A group name (a source, a rule); figures are reported per group. Default
    /// "examples".
    #[serde(default)]
    #[tsify(optional)]
    dataset: Option<String>,
    /// The template language; default from the dialogue's text.
    #[serde(default)]
    #[tsify(type = "\"en\" | \"zh\"", optional)]
    lang: Option<Lang>,
}

/// Options of `judge.trainHead`; every field may be left out.
#[derive(Default, serde::Deserialize, tsify::Tsify)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct TrainHeadOptions {
    /// The fraction of examples held out (by a hash of their text, so the same
    /// dialogue always lands on the same side) to measure the head; default 0.3.
    #[tsify(optional)]
    holdout: Option<f64>,
    /// The layer whose residual stream the head reads; default: the one
    /// cross-validation picks from the upper half of the network.
    #[tsify(optional)]
    layer: Option<f64>,
    /// The seed of the cross-validation folds; default 0.
    #[tsify(optional)]
    seed: Option<f64>,
    /// The head's name, shown with verdicts (its layer is appended: " l19");
    /// default "<model> <protocol> taught".
    #[tsify(optional)]
    name: Option<String>,
    /// Called after each example's features: `(done, total)`.
    #[serde(with = "serde_wasm_bindgen::preserve")]
    #[tsify(type = "(done: number, total: number) => void", optional)]
    on_progress: JsValue,
}

#[wasm_bindgen(typescript_custom_section)]
const TRAINED_HEAD: &str = r#"
/** What `judge.trainHead` resolves to. */
export interface TrainedHead {
    /** The head's name, shown with verdicts. */
    name: string;
    /** The layer and regularisation chosen, and the figures on the held-out part. */
    report: TrainReport;
    /** The head file (safetensors): pass it to `useHead`, keep or download it. */
    file: Uint8Array;
}
"#;

/// A trained head: its name, report and file.
struct TrainedHead {
    name: String,
    report: TrainReport,
    file: Vec<u8>,
}

#[wasm_bindgen]
extern "C" {
    /// An array of `HeadExample` objects from JavaScript.
    #[wasm_bindgen(typescript_type = "HeadExample[]")]
    pub type HeadExamplesArg;
    /// A `TrainHeadOptions` object from JavaScript.
    #[wasm_bindgen(typescript_type = "TrainHeadOptions")]
    pub type TrainHeadOptionsArg;
    /// A promise of a `TrainedHead`.
    #[wasm_bindgen(typescript_type = "Promise<TrainedHead>")]
    pub type TrainedHeadPromise;
}

/// A training request, read and checked before anything is queued.
pub(super) struct TrainSettings {
    items: Vec<LabelItem>,
    holdout: f64,
    layer: Option<usize>,
    seed: u64,
    name: Option<String>,
    on_progress: Option<Function>,
}

/// Reads `judge.trainHead`'s arguments.
pub(super) fn train_settings(examples: JsValue, options: JsValue) -> Result<TrainSettings> {
    let examples: Vec<HeadExample> = from_js("examples", examples)?;
    if examples.is_empty() {
        return Err(Error::InvalidInput(
            "examples is empty: a head is trained from labelled dialogues".into(),
        ));
    }
    let options: TrainHeadOptions = if options.is_undefined() || options.is_null() {
        TrainHeadOptions::default()
    } else {
        from_js("options", options)?
    };
    let items = examples
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            if e.query.trim().is_empty() || e.response.trim().is_empty() {
                return Err(Error::InvalidInput(format!(
                    "examples[{index}]: the query and the response must both be non-empty"
                )));
            }
            Ok(LabelItem {
                dataset: e.dataset.unwrap_or_else(|| "examples".into()),
                index,
                lang: e
                    .lang
                    .unwrap_or_else(|| detect_language(&format!("{}\n{}", e.query, e.response))),
                query: e.query,
                response: e.response,
                label: e.label,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let whole = |what: &str, v: Option<f64>| -> Result<Option<f64>> {
        match v {
            Some(x) if x.fract() != 0.0 || x < 0.0 => Err(Error::InvalidInput(format!(
                "{what} must be a whole number, not {x}"
            ))),
            other => Ok(other),
        }
    };
    Ok(TrainSettings {
        items,
        holdout: in_range("options.holdout", options.holdout, 0.3, 0.05..=0.95)?,
        layer: whole("options.layer", options.layer)?.map(|l| l as usize),
        seed: whole("options.seed", options.seed)?.unwrap_or(0.0) as u64,
        name: options.name,
        on_progress: callback("options.onProgress", options.on_progress)?,
    })
}

/// Trains a head on `engine` as the queued work of `judge.trainHead`.
pub(super) async fn train(
    engine: Rc<Engine>,
    model_name: String,
    settings: TrainSettings,
) -> std::result::Result<JsValue, JsValue> {
    let trained = train_on(&engine, &model_name, settings)
        .await
        .map_err(|e| js_error(&e))?;
    let object = js_sys::Object::new();
    let set = |key: &str, value: &JsValue| js_sys::Reflect::set(&object, &key.into(), value);
    set("name", &JsValue::from_str(&trained.name))?;
    set("report", &to_js(&trained.report).map_err(|e| js_error(&e))?)?;
    set("file", &Uint8Array::from(trained.file.as_slice()))?;
    Ok(object.into())
}

/// Extracts every example's features on `engine`, trains, and reports.
async fn train_on(
    engine: &Engine,
    model_name: &str,
    settings: TrainSettings,
) -> Result<TrainedHead> {
    let config = engine.config().clone();
    let layers = match settings.layer {
        None => candidate_layers(config.layers),
        Some(n) if (1..=config.layers).contains(&n) => vec![n],
        Some(n) => {
            return Err(Error::InvalidInput(format!(
                "options.layer must be a layer from 1 to {}, not {n}",
                config.layers
            )))
        }
    };
    let chosen = split(&settings.items, settings.holdout, usize::MAX, usize::MAX);
    let mut examples = Vec::with_capacity(chosen.len());
    for (done, item) in chosen.iter().enumerate() {
        let dialogue = Dialogue::single(item.item.query.clone(), item.item.response.clone());
        let probe = engine
            .probe_async(&dialogue, Some(item.item.lang), &layers)
            .await?;
        examples.push(Example {
            dataset: item.item.dataset.clone(),
            lang: item.item.lang,
            label: item.item.label,
            heldout: item.heldout,
            p_model: probe.p_unsafe,
            hidden: probe.hidden,
        });
        if let Some(progress) = &settings.on_progress {
            let _ = progress.call2(
                &JsValue::NULL,
                &((done + 1) as f64).into(),
                &(chosen.len() as f64).into(),
            );
        }
    }
    if !examples.iter().any(|e| e.heldout) {
        return Err(Error::InvalidInput(format!(
            "none of the {} examples fell in the held-out part: give more examples or a larger options.holdout",
            examples.len()
        )));
    }
    let protocol = engine.protocol().name().to_string();
    let name = settings
        .name
        .unwrap_or_else(|| format!("{model_name} {protocol} taught"));
    let base = HeadBase {
        name,
        fingerprint: engine.engine().fingerprint().await?,
        arch: config.arch.gguf_name().to_string(),
        layers: config.layers,
        hidden: config.hidden,
        protocol,
    };
    let options = TrainOptions {
        layers,
        seed: settings.seed,
        ..TrainOptions::default()
    };
    let (head, report) = train_head(&examples, &options, &base)?;
    Ok(TrainedHead {
        name: head.meta.name.clone(),
        report,
        file: head.to_bytes()?,
    })
}

/// Attaches the head in `file` to `engine` (checked against its model and
/// protocol), or detaches the current one when `file` is `None`: the queued work of
/// `judge.useHead`.
pub(super) async fn attach(
    engine: Rc<Engine>,
    file: Option<Uint8Array>,
) -> std::result::Result<JsValue, JsValue> {
    let head = match file {
        Some(bytes) => {
            Some(VerdictHead::from_bytes("head", &bytes.to_vec()).map_err(|e| js_error(&e))?)
        }
        None => None,
    };
    let name = head.as_ref().map(|h| h.meta.name.clone());
    engine
        .set_head_async(head)
        .await
        .map_err(|e| js_error(&e))?;
    Ok(name.map_or(JsValue::NULL, |n| JsValue::from_str(&n)))
}
