//! Real checkpoints from package-registry weights (tests/fixtures/fetch_models.sh)
//! against Hugging Face transformers loading the same GGUF files dequantized to f32
//! (tests/fixtures/models/real, made by make_fixtures.py): first-step logits and
//! greedy continuations.
//!
//! The GGUF files are looked up in `SAFETYJ_MODELS_DIR` (default
//! `~/.cache/safetyj/models`). Outside CI a missing file skips the test with a
//! message; under CI it fails.

mod common;

use std::sync::{Mutex, OnceLock};

use common::{ctx, ids, real_model};
use safetyj::formats::MmapSource;
use safetyj::model::load::GgufWeights;
use safetyj::model::{Logits, Model};

/// Loads a GGUF model once per test binary; `None` (skip) when the file is absent
/// outside CI.
fn model(file: &str) -> Option<&'static Model> {
    static MODELS: OnceLock<Mutex<Vec<(String, &'static Model)>>> = OnceLock::new();
    let models = MODELS.get_or_init(|| Mutex::new(Vec::new()));
    let mut models = models.lock().unwrap();
    if let Some((_, m)) = models.iter().find(|(f, _)| f == file) {
        return Some(m);
    }
    let path = real_model(file)?;
    let weights = GgufWeights::new(Box::new(MmapSource::open(&path).unwrap())).unwrap();
    let model: &'static Model =
        Box::leak(Box::new(Model::load(ctx(), &weights, |_, _| {}).unwrap()));
    models.push((file.to_string(), model));
    Some(model)
}

fn fixture(name: &str) -> serde_json::Value {
    common::json_fixture(&format!("models/real/{name}"))
}

fn argmax(row: &[f32]) -> (u32, f32) {
    row.iter().enumerate().fold(
        (0, f32::MIN),
        |best, (i, &v)| if v > best.1 { (i as u32, v) } else { best },
    )
}

/// Greedy steps compared with the reference (each decode step costs ~1 s per 0.5 GB
/// of weights on lavapipe).
const GREEDY_STEPS: usize = 32;
/// Below this top-2 logit margin the f32 reference's choice is within rounding noise
/// of ours (quantized weights, different summation order); comparison stops there.
const MARGIN: f32 = 0.05;
/// Logits at the first step: the reference is stored as f16 (up to 0.0078 of
/// rounding at |logit| ≈ 18) and was summed in a different order.
const LOGIT_TOLERANCE: f32 = 0.02;

fn check(model_file: &str, fixture_name: &str) {
    let Some(model) = model(model_file) else {
        return;
    };
    let ctx = ctx();
    let want = fixture(fixture_name);
    let prompt = ids(&want["prompt_ids"]);
    let logits_file = format!("models/real/{}", want["logits_file"].as_str().unwrap());
    let f16 = std::fs::read(common::fixture_path(&logits_file)).unwrap();
    let reference: Vec<f32> = f16
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();

    let mut session = model
        .new_session(ctx, prompt.len() + GREEDY_STEPS + 1)
        .unwrap();
    let logits = model
        .forward(ctx, &mut session, &prompt, Logits::Last)
        .unwrap()
        .read_f32(ctx)
        .unwrap();
    assert_eq!(logits.len(), reference.len());
    let diff = logits
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    eprintln!("{fixture_name}: first-step logits max |diff| {diff}");
    assert!(
        diff < LOGIT_TOLERANCE,
        "{fixture_name}: first-step logits differ by {diff}"
    );

    let greedy = ids(&want["greedy_tokens"]);
    let margins: Vec<f32> = want["greedy_top2_margins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let mut next = argmax(&logits).0;
    for step in 0..GREEDY_STEPS {
        if margins[step] < MARGIN {
            eprintln!(
                "{fixture_name}: stopping at step {step}, reference margin {} < {MARGIN}",
                margins[step]
            );
            return;
        }
        assert_eq!(next, greedy[step], "{fixture_name}: greedy token {step}");
        let row = model
            .forward(ctx, &mut session, &[next], Logits::Last)
            .unwrap()
            .read_f32(ctx)
            .unwrap();
        next = argmax(&row).0;
    }
}

#[test]
fn qwen_0_5b_english_chat_matches_transformers() {
    check(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b.en.json",
    );
}

#[test]
fn qwen_0_5b_chinese_chat_matches_transformers() {
    check(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b.zh.json",
    );
}

#[test]
fn smollm2_135m_llama_q4_1_matches_transformers() {
    check("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m.en.json");
}
