//! The forward pass against Hugging Face transformers on tiny random checkpoints
//! (tests/fixtures/models, made by make_fixtures.py): logits of a 20-token prompt for
//! the batched prefill and for token-by-token decode.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use safetyj::gpu::Context;
use safetyj::model::load::HfWeights;
use safetyj::model::{Logits, Model};
use safetyj::quant::DType;

fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new_blocking().expect("a GPU adapter (install mesa-vulkan-drivers)")
    })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

struct Expected {
    prompt: Vec<u32>,
    vocab: usize,
    logits: Vec<f32>,
}

fn expected(name: &str) -> Expected {
    let dir = fixture(name);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let prompt = meta["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let vocab = meta["logits_shape"][1].as_u64().unwrap() as usize;
    let bytes = std::fs::read(dir.join(meta["logits_file"].as_str().unwrap())).unwrap();
    let logits = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Expected {
        prompt,
        vocab,
        logits,
    }
}

/// Largest |a - b| over the two slices.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

// f32 on the GPU against f32 PyTorch (different summation order): logits of magnitude
// ~3 agree to about 1e-5; 2e-4 leaves room for a different reduction tree.
const TOLERANCE: f32 = 2e-4;

fn check_checkpoint(dir: &str, reference: &str) {
    let ctx = ctx();
    let weights = HfWeights::open(&fixture(dir), DType::F32).unwrap();
    let model = Model::load(ctx, &weights, |_, _| {}).unwrap();
    let want = expected(reference);
    assert_eq!(model.config.vocab, want.vocab);
    let n = want.prompt.len();

    // One batched prefill of the whole prompt (GEMM path), logits at every position.
    let mut session = model.new_session(ctx, 64).unwrap();
    let logits = model
        .forward(ctx, &mut session, &want.prompt, Logits::All)
        .unwrap();
    let got = logits.read_f32(ctx).unwrap();
    let diff = max_diff(&got, &want.logits);
    assert!(
        diff < TOLERANCE,
        "{dir}: prefill logits differ from {reference} by {diff}"
    );

    // Token by token (GEMV path and the decode attention kernel).
    let mut session = model.new_session(ctx, 64).unwrap();
    for (i, &token) in want.prompt.iter().enumerate() {
        let row = model
            .forward(ctx, &mut session, &[token], Logits::Last)
            .unwrap()
            .read_f32(ctx)
            .unwrap();
        let diff = max_diff(&row, &want.logits[i * want.vocab..(i + 1) * want.vocab]);
        assert!(
            diff < TOLERANCE,
            "{dir}: decode step {i} differs from {reference} by {diff}"
        );
    }
    assert_eq!(session.len(), n);
}

#[test]
fn tiny_llama_matches_transformers_in_prefill_and_decode() {
    check_checkpoint("tiny-llama", "tiny-llama");
}

#[test]
fn tiny_qwen2_with_qkv_bias_matches_transformers() {
    check_checkpoint("tiny-qwen2", "tiny-qwen2");
}

/// tiny-internlm2 is tiny-llama re-laid out in InternLM2's format (fused, per-KV-head
/// grouped wqkv; w1/w3/w2), so it must give tiny-llama's logits exactly as
/// transformers computed them.
#[test]
fn tiny_internlm2_is_the_llama_network_re_laid_out() {
    check_checkpoint("tiny-internlm2", "tiny-llama");
}
