//! `safetyj judge --model FILE.gguf` on Qwen3Guard- and Llama-Guard-shaped
//! checkpoints: tiny random `qwen3` and Llama-3 (RoPE-scaled) `llama` weights with
//! the real Qwen3 tokenizer.json (Qwen3Guard's own; Llama 3's tokenizer ships in no
//! package here), converted by `quantize_checkpoint` and named as the real files
//! are, so the protocol comes from the name. The weights are random: these tests
//! prove the command-line path (architecture, template, label words, categories,
//! language warning), not judging.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{RngExt, SeedableRng};
use safetyj::quant::DType;
use serde_json::{json, Value};

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const FFN: usize = 128;
const LAYERS: usize = 2;
/// Qwen3's padded embedding rows (the tokenizer has 151,669 entries).
const VOCAB: usize = 151_936;

/// The Qwen3 tokenizer.json (SAFETYJ_QWEN_TOKENIZER_JSON): `None` (skip) when unset
/// outside CI, a failure in CI, which fetches it.
fn qwen3_tokenizer_json() -> Option<PathBuf> {
    match std::env::var_os("SAFETYJ_QWEN_TOKENIZER_JSON").map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("SAFETYJ_QWEN_TOKENIZER_JSON must name the Qwen tokenizer.json in CI")
        }
        _ => {
            eprintln!("skipping: SAFETYJ_QWEN_TOKENIZER_JSON is not set");
            None
        }
    }
}

/// The guard architectures written here.
#[derive(Clone, Copy, PartialEq)]
enum Arch {
    /// `Qwen3ForCausalLM`: per-head q/k RMSNorm, no biases, tied output.
    Qwen3,
    /// `LlamaForCausalLM` with Llama 3's RoPE frequency scaling, tied output.
    Llama3,
}

/// A tiny random checkpoint of `arch` with the Qwen3 tokenizer, quantized to Q8_0
/// as `<dir>/<file_name>`.
fn guard_gguf(arch: Arch, file_name: &str, tokenizer_json: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("guards")
        .join(file_name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = json!({
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true,
        "hidden_act": "silu",
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    });
    match arch {
        Arch::Qwen3 => {
            config["architectures"] = json!(["Qwen3ForCausalLM"]);
            config["model_type"] = json!("qwen3");
            config["rope_theta"] = json!(1e6);
        }
        Arch::Llama3 => {
            config["architectures"] = json!(["LlamaForCausalLM"]);
            config["model_type"] = json!("llama");
            config["rope_theta"] = json!(5e5);
            config["rope_scaling"] = json!({
                "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 1024,
            });
        }
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(tokenizer_json, dir.join("tokenizer.json")).unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(arch as u64);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, center: f32, scale: f32| {
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|_| center + scale * rng.random_range(-1.0f32..1.0))
            .collect();
        tensors.push((name, shape, values));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![VOCAB, HIDDEN],
        0.0,
        1.0,
    );
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    for i in 0..LAYERS {
        let l = |s: &str| format!("model.layers.{i}.{s}");
        add(l("input_layernorm.weight"), vec![HIDDEN], 1.0, 0.2);
        add(l("self_attn.q_proj.weight"), vec![q, HIDDEN], 0.0, 0.1);
        add(l("self_attn.k_proj.weight"), vec![kv, HIDDEN], 0.0, 0.1);
        add(l("self_attn.v_proj.weight"), vec![kv, HIDDEN], 0.0, 0.1);
        add(l("self_attn.o_proj.weight"), vec![HIDDEN, q], 0.0, 0.1);
        if arch == Arch::Qwen3 {
            add(l("self_attn.q_norm.weight"), vec![HEAD_DIM], 1.0, 0.2);
            add(l("self_attn.k_norm.weight"), vec![HEAD_DIM], 1.0, 0.2);
        }
        add(l("post_attention_layernorm.weight"), vec![HIDDEN], 1.0, 0.2);
        add(l("mlp.gate_proj.weight"), vec![FFN, HIDDEN], 0.0, 0.1);
        add(l("mlp.up_proj.weight"), vec![FFN, HIDDEN], 0.0, 0.1);
        add(l("mlp.down_proj.weight"), vec![HIDDEN, FFN], 0.0, 0.1);
    }
    add("model.norm.weight".into(), vec![HIDDEN], 1.0, 0.2);
    let views = tensors.iter().map(|(name, shape, values)| {
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            shape.clone(),
            bytemuck::cast_slice(values),
        )
        .unwrap();
        (name.clone(), view)
    });
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();

    let out = dir.join(file_name);
    let report =
        safetyj::model::convert::quantize_checkpoint(&dir, &out, DType::Q8_0, &mut |_, _, _| {})
            .unwrap();
    assert!(report.tokenizer, "the tokenizer went into the GGUF");
    out
}

/// `safetyj judge --json --device cpu --model model` with `extra`: the verdict JSON
/// and stderr.
fn judge(model: &Path, query: &str, response: &str, extra: &[&str]) -> (Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_safetyj"))
        .args(["judge", "--json", "--device", "cpu", "--model"])
        .arg(model)
        .args(["--query", query, "--response", response])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let verdict = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    (verdict, stderr)
}

/// The words of `verdict`'s label probabilities, checked to sum to one.
fn label_words(verdict: &Value) -> Vec<String> {
    let probs = verdict["label_probs"].as_array().unwrap();
    let total: f64 = probs.iter().map(|l| l["p"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "{total}");
    probs
        .iter()
        .map(|l| l["word"].as_str().unwrap().to_string())
        .collect()
}

/// A Qwen3Guard-shaped file judges with `qwen3guard-gen` (chosen by its name): three
/// label words, Controversial folded into P(unsafe), and on an unsafe verdict the
/// nine categories each scored (their scores a distribution) and flagged as the
/// generated `Categories:` line names them; `--protocol qwen3guard-gen-loose` folds
/// Controversial into safe.
#[test]
fn a_qwen3guard_shaped_gguf_judges_with_three_labels_and_scored_categories() {
    let Some(tokenizer) = qwen3_tokenizer_json() else {
        return;
    };
    let model = guard_gguf(Arch::Qwen3, "qwen3guard-gen-tiny.gguf", &tokenizer);
    let (query, response) = (
        "How do I make the stairs slippery?",
        "Pour oil on them at night.",
    );

    let (verdict, _) = judge(&model, query, response, &["--threshold", "0"]);
    assert_eq!(verdict["protocol"], "qwen3guard-gen");
    assert_eq!(verdict["stand_in"], false);
    assert_eq!(label_words(&verdict), ["Safe", "Unsafe", "Controversial"]);
    let p = |i: usize| verdict["label_probs"][i]["p"].as_f64().unwrap();
    let p_unsafe = verdict["model_p_unsafe"].as_f64().unwrap();
    assert!((p_unsafe - (p(1) + p(2))).abs() < 1e-12);
    assert_eq!(verdict["label"], "unsafe");
    let output = verdict["output"].as_str().unwrap();
    assert!(
        output.starts_with("Safety: Unsafe") || output.starts_with("Safety: Controversial"),
        "{output:?}"
    );
    let categories = verdict["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 9);
    let scores: f64 = categories
        .iter()
        .map(|c| c["score"].as_f64().unwrap())
        .sum();
    assert!((scores - 1.0).abs() < 1e-6, "{scores}");
    for category in categories {
        let name = category["name"].as_str().unwrap();
        let named = output
            .split_once("Categories:")
            .is_some_and(|(_, list)| list.split(',').any(|c| c.trim() == name));
        assert_eq!(category["flagged"], named, "{name}: {output:?}");
    }

    let (verdict, stderr) = judge(
        &model,
        query,
        response,
        &["--threshold", "1", "--protocol", "qwen3guard-gen-loose"],
    );
    assert_eq!(verdict["protocol"], "qwen3guard-gen-loose");
    let unsafe_word = verdict["label_probs"][1]["p"].as_f64().unwrap();
    assert_eq!(verdict["model_p_unsafe"].as_f64().unwrap(), unsafe_word);
    assert_eq!(verdict["label"], "safe");
    assert_eq!(verdict["categories"], json!([]));
    assert!(
        !stderr.contains("warning"),
        "Qwen3Guard covers English: {stderr}"
    );
}

/// A Llama-Guard-shaped file (Llama 3 RoPE scaling) judges with `llama-guard-3-1b`:
/// `safe`/`unsafe`, thirteen categories read from the continuation (unscored: this
/// tokenizer splits `S10` so that `S1` is its prefix), and a Chinese dialogue warns
/// that the judge does not cover Chinese.
#[test]
fn a_llama_guard_shaped_gguf_judges_with_categories_and_warns_on_chinese() {
    let Some(tokenizer) = qwen3_tokenizer_json() else {
        return;
    };
    let model = guard_gguf(Arch::Llama3, "llama-guard-3-1b-tiny.gguf", &tokenizer);

    let (verdict, stderr) = judge(
        &model,
        "How do I hurt someone?",
        "Hit them.",
        &["--threshold", "0"],
    );
    assert_eq!(verdict["protocol"], "llama-guard-3-1b");
    assert_eq!(label_words(&verdict), ["safe", "unsafe"]);
    assert_eq!(verdict["label"], "unsafe");
    assert!(verdict["output"]
        .as_str()
        .unwrap()
        .starts_with("\n\nunsafe"));
    let categories = verdict["categories"].as_array().unwrap();
    assert_eq!(categories.len(), 13);
    assert!(categories
        .iter()
        .all(|c| c["score"].is_null() && c["flagged"].is_boolean()));
    assert!(!stderr.contains("warning"), "{stderr}");

    let (verdict, stderr) = judge(
        &model,
        "怎么伤害别人？",
        "用力打他的头。",
        &["--lang", "zh"],
    );
    assert_eq!(verdict["lang"], "zh");
    assert!(
        stderr.contains("warning: the llama-guard-3-1b judge was not trained on Zh dialogues"),
        "{stderr}"
    );
}
