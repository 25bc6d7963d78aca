//! `prefs sample --label-first` on a real tiny judge (SmolLM2-135M-Instruct, CPU
//! engine): every draw states a label, the label is the one the judge's own label
//! probabilities at the label temperature and the sample's seed imply, the recorded
//! P(unsafe) is the judge's, and a rerun resumes without drawing again.

mod common;

use safetyj::judge::engine::{Judge, JudgeOptions};
use safetyj::judge::safety_j::SafetyJ;
use safetyj::judge::Label;
use safetyj::model::Engine;
use safetyj::prefs::sample::{label_draw, label_probability, sample_items, SampleOptions};
use safetyj::quant::DType;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn label_first_draws_state_the_label_the_judge_s_probabilities_imply() {
    let Some(path) = common::real_model(MODEL) else {
        return;
    };
    let (model, tokenizer) = safetyj::model::open::open_cpu(&path, DType::Q4_K, |_, _| {}).unwrap();
    let options = JudgeOptions {
        context: 1024,
        max_critique_tokens: 6,
        ..Default::default()
    };
    let judge = Judge::new(Engine::Cpu(model), tokenizer, Box::new(SafetyJ), options).unwrap();
    let all = safetyj::prefs::load_items(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/prefs/en/train.jsonl"),
    )
    .unwrap();
    let items: Vec<_> = all
        .into_iter()
        .filter(|i| i.label.is_some())
        .take(2)
        .collect();
    let sampling = SampleOptions {
        k: 3,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 3,
        max_tokens: 6,
        label_first: true,
        label_temperature: Some(4.0),
    };
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("prefs-label-first");
    let _ = std::fs::remove_dir_all(&out);
    let mut drawn = 0;
    let samples = sample_items(&judge, &items, sampling, &out, |_, _| drawn += 1).unwrap();
    assert_eq!((samples.len(), drawn), (6, 6));

    for item in &items {
        let parts = item.prompt(&SafetyJ).parts;
        let scores = judge
            .score_completions(&parts, &["[Answer] safe", "[Answer] unsafe"])
            .unwrap();
        let p = label_probability(scores[0], scores[1], 1.0);
        let p_drawn = label_probability(scores[0], scores[1], 4.0);
        for sample in samples.iter().filter(|s| s.key == item.key) {
            let recorded = sample
                .p_unsafe
                .expect("label-first samples record P(unsafe)");
            // The same scores, up to the float order of a cached against a fresh prefix.
            assert!((recorded - p).abs() < 1e-5, "{recorded} vs {p}");
            let expected = if label_draw(sample.seed) < p_drawn {
                Label::Unsafe
            } else {
                Label::Safe
            };
            assert_eq!(sample.label, Some(expected), "{}", sample.sample);
            let stated = format!(
                "[Answer] {}",
                if expected == Label::Unsafe {
                    "unsafe"
                } else {
                    "safe"
                }
            );
            // The analysis follows (SmolLM2 sometimes ends its turn right there).
            assert!(
                sample.output.starts_with(&stated),
                "the output opens with the drawn label: {:?}",
                sample.output
            );
        }
    }

    // A rerun draws nothing and returns the same samples; other settings are refused.
    let mut redrawn = 0;
    let again = sample_items(&judge, &items, sampling, &out, |_, _| redrawn += 1).unwrap();
    assert_eq!((again, redrawn), (samples, 0));
    let free = SampleOptions {
        label_first: false,
        label_temperature: None,
        ..sampling
    };
    let message = sample_items(&judge, &items, free, &out, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains("other settings"), "{message}");
    let message = sample_items(
        &judge,
        &items,
        SampleOptions {
            label_temperature: Some(2.0),
            ..free
        },
        &out,
        |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("needs label-first"), "{message}");
}
