//! The critique meta-evaluation end to end on the local engine: a real model
//! (SmolLM2-135M-Instruct from package-registry weights, a stand-in for both the
//! judge and the evaluator) writes a critique of one English item of
//! `critique_level/en.json`, extracts its atomic information units and checks each
//! one, with the exact reference prompts. The numbers are a tiny stand-in's; what is
//! tested is that every step runs on the local engine, is saved, and resumes. It runs
//! on the CPU engine, for time: the WGSL path's generation is checked against the
//! references in `tests/model.rs` and `tests/judge.rs`.

mod common;

use safetyj::eval::critique::CritiquePipeline;
use safetyj::eval::{datasets, runner};
use safetyj::judge::engine::{Judge, JudgeOptions};
use safetyj::judge::safety_j::SafetyJ;
use safetyj::model::Engine;
use safetyj::quant::DType;

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// A short dialogue with three reference AIUs ("its not art. its crap." / "I don't
/// agree with some of it.").
const ITEM: usize = 27;
/// New tokens of the critique and of every evaluator call: enough for a claim or a
/// verdict line, few enough for a software GPU.
const MAX_TOKENS: usize = 24;

#[test]
fn critique_meta_evaluation_runs_on_the_local_engine() {
    let Some(path) = common::real_model(MODEL) else {
        return;
    };
    let dir = common::safety_j_data("critique_level");
    let all = datasets::load_critique_file(&dir.join("en.json")).unwrap();
    let item = all[ITEM].clone();
    assert_eq!(item.aius.len(), 3, "the chosen item changed");

    let (model, tokenizer) = safetyj::model::open::open_cpu(&path, DType::Q4_K, |_, _| {}).unwrap();
    let options = JudgeOptions {
        // The evaluator's prompts are ~1,000 tokens.
        context: 1536,
        max_critique_tokens: MAX_TOKENS,
        ..Default::default()
    };
    let judge = Judge::new(Engine::Cpu(model), tokenizer, Box::new(SafetyJ), options).unwrap();
    let pipeline = CritiquePipeline {
        judge: &judge,
        evaluator: &judge,
        max_tokens: MAX_TOKENS,
    };
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("critique-eval");
    let _ = std::fs::remove_dir_all(&out);
    let items = [item.clone()];
    let report =
        runner::run_critique_eval(&items, &pipeline, &out, runner::RunOptions::default()).unwrap();

    let results = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 1);
    let record: safetyj::eval::critique::CritiqueRecord =
        serde_json::from_str(results.lines().next().unwrap()).unwrap();
    assert!(
        record.judge_output.starts_with("[Answer] "),
        "the local judge states its label first: {:?}",
        record.judge_output
    );
    assert!(record.judge_label.is_some());
    assert!(!record.extraction_output.is_empty());
    // One recall check per reference AIU, one precision check per extracted AIU,
    // each with the evaluator's raw output kept for auditing.
    let claims: Vec<&str> = record
        .recall_checks
        .iter()
        .map(|c| c.claim.as_str())
        .collect();
    assert_eq!(
        claims,
        item.aius.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(record.precision_checks.len(), record.critique_aius.len());
    assert!(record.checks().all(|c| !c.raw.trim().is_empty()));
    assert_eq!(record.counts.reference, 3);
    assert_eq!(
        record.counts.recalled,
        record.recall_checks.iter().filter(|c| c.correct).count()
    );
    assert_eq!(report.overall.checks, 3 + record.critique_aius.len());
    for file in ["report.json", "report.md", "report.html"] {
        assert!(out.join(file).exists(), "{file} missing");
    }

    // A rerun finds the item done and judges nothing.
    let again =
        runner::run_critique_eval(&items, &pipeline, &out, runner::RunOptions::default()).unwrap();
    assert_eq!(again, report);
    std::fs::remove_dir_all(&out).unwrap();
}
