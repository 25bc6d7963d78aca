//! The forward pass against Hugging Face transformers on tiny random checkpoints
//! (tests/fixtures/models, made by make_fixtures.py): logits of a 20-token prompt for
//! the batched prefill and for token-by-token decode.

mod common;

use std::path::{Path, PathBuf};

use safetyj::model::load::HfWeights;
use safetyj::model::{Logits, Model};
use safetyj::quant::DType;

use common::ctx;

fn fixture(name: &str) -> PathBuf {
    common::fixture_path(&format!("models/{name}"))
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

/// Qwen3: per-head q/k RMS norm before RoPE, head_dim 12 apart from hidden / heads
/// (48 / 6), tied output.
#[test]
fn tiny_qwen3_with_qk_norm_matches_transformers() {
    check_checkpoint("tiny-qwen3", "tiny-qwen3");
}

/// Llama with Llama 3's RoPE frequency scaling (rope_scaling llama3, every band of it
/// used), tied output: ignoring the scaling moves these logits by 0.047.
#[test]
fn tiny_llama3_with_rope_scaling_matches_transformers() {
    check_checkpoint("tiny-llama3", "tiny-llama3");
}

/// tiny-internlm2 is tiny-llama re-laid out in InternLM2's format (fused, per-KV-head
/// grouped wqkv; w1/w3/w2), so it must give tiny-llama's logits exactly as
/// transformers computed them.
#[test]
fn tiny_internlm2_is_the_llama_network_re_laid_out() {
    check_checkpoint("tiny-internlm2", "tiny-llama");
}

/// A step's logits come from the session's scratch: the next step of the same size
/// and kind reuses (overwrites) them, other steps leave them be, and a session keeps
/// the activations of its four most recent step sizes only.
#[test]
fn step_outputs_are_reused_without_disturbing_other_steps() {
    let ctx = ctx();
    let weights = HfWeights::open(&fixture("tiny-llama"), DType::F32).unwrap();
    let model = Model::load(ctx, &weights, |_, _| {}).unwrap();
    let want = expected("tiny-llama");
    let row = |i: usize| &want.logits[i * want.vocab..(i + 1) * want.vocab];
    let check = |what: &str, got: &[f32], want: &[f32]| {
        let diff = max_diff(got, want);
        assert!(
            diff < TOLERANCE,
            "{what} differs from transformers by {diff}"
        );
    };

    // The judge's pattern: the last logits of a prefill are read after a step of
    // all logits for a few more tokens.
    let mut session = model.new_session(ctx, 64).unwrap();
    let prefill = model
        .forward(ctx, &mut session, &want.prompt[..10], Logits::Last)
        .unwrap();
    let more = model
        .forward(ctx, &mut session, &want.prompt[10..13], Logits::All)
        .unwrap();
    check(
        "the prefill's last row",
        &prefill.read_f32(ctx).unwrap(),
        row(9),
    );
    check(
        "three more rows",
        &more.read_f32(ctx).unwrap(),
        &want.logits[10 * want.vocab..13 * want.vocab],
    );

    // Decode steps write the same buffer, each with its own correct logits.
    let mut first = None;
    for i in 13..want.prompt.len() {
        let logits = model
            .forward(ctx, &mut session, &want.prompt[i..i + 1], Logits::Last)
            .unwrap();
        check(
            &format!("decode step {i}"),
            &logits.read_f32(ctx).unwrap(),
            row(i),
        );
        let first = first.get_or_insert_with(|| logits.buffer.clone());
        assert_eq!(
            *first, logits.buffer,
            "decode step {i} allocated its logits"
        );
    }

    // Steps of five sizes keep the activations of the last four only.
    let run = |sizes: &[usize]| {
        let mut session = model.new_session(ctx, 64).unwrap();
        let mut at = 0;
        for &size in sizes {
            let logits = model
                .forward(ctx, &mut session, &want.prompt[at..at + size], Logits::Last)
                .unwrap();
            at += size;
            check(
                &format!("a step of {size}"),
                &logits.read_f32(ctx).unwrap(),
                row(at - 1),
            );
        }
        session.gpu_bytes()
    };
    assert_eq!(run(&[5, 4, 3, 2, 1]), run(&[4, 3, 2, 1]));
}

/// Once a session has decoded one token, later decode steps bind only what it bound:
/// no bind group (and so no parameter block) is made per token, whatever the position.
#[test]
fn decode_steps_create_no_bind_groups() {
    // A context of its own: tests running beside this one create bind groups too.
    let ctx = safetyj::gpu::Context::new_blocking().unwrap();
    let weights = HfWeights::open(&fixture("tiny-llama"), DType::F32).unwrap();
    let model = Model::load(&ctx, &weights, |_, _| {}).unwrap();
    let want = expected("tiny-llama");
    let mut session = model.new_session(&ctx, 64).unwrap();
    model
        .forward(&ctx, &mut session, &want.prompt[..10], Logits::Last)
        .unwrap();
    model
        .forward(&ctx, &mut session, &want.prompt[10..11], Logits::Last)
        .unwrap();
    let before = ctx.bind_groups_created();
    for i in 11..want.prompt.len() {
        let logits = model
            .forward(&ctx, &mut session, &want.prompt[i..i + 1], Logits::Last)
            .unwrap();
        let got = logits.read_f32(&ctx).unwrap();
        let diff = max_diff(&got, &want.logits[i * want.vocab..(i + 1) * want.vocab]);
        assert!(diff < TOLERANCE, "decode step {i} differs by {diff}");
    }
    assert_eq!(
        ctx.bind_groups_created() - before,
        0,
        "decode steps at positions 11..{} created bind groups",
        want.prompt.len()
    );
}

mod bad_input {
    //! Checkpoints that must be refused with an error naming the file and what is
    //! wrong: GGUF files derived from tiny-llama with one thing broken.

    use super::*;
    use safetyj::formats::{GgufFile, GgufPlan, GgufWriter, MetadataValue, MmapSource};
    use safetyj::model::load::GgufWeights;

    /// tiny-llama as a GGUF file (written once per test binary by `safetyj quantize`'s
    /// library function).
    pub fn tiny_gguf() -> PathBuf {
        common::fixture_gguf("tiny-llama")
    }

    /// A copy of tiny-llama's GGUF with `metadata` overrides applied and each tensor
    /// passed through `tensor` (return `None` to drop it).
    pub fn broken(
        name: &str,
        metadata: &[(&str, MetadataValue)],
        tensor: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>,
    ) -> PathBuf {
        let src = MmapSource::open(tiny_gguf()).unwrap();
        let file = GgufFile::read(&src).unwrap();
        let mut plan = GgufPlan::new();
        for (key, value) in file.metadata() {
            let value = metadata
                .iter()
                .find(|(k, _)| k == key)
                .map_or(value.clone(), |(_, v)| v.clone());
            plan.add_metadata(key.clone(), value).unwrap();
        }
        let mut kept = Vec::new();
        for info in file.tensors() {
            if let Some(bytes) = tensor(&info.name, file.read_tensor(&src, &info.name).unwrap()) {
                plan.add_tensor(info.name.clone(), &info.dims, info.dtype)
                    .unwrap();
                kept.push((info.name.clone(), bytes));
            }
        }
        let out = tiny_gguf().with_file_name(format!("{name}.gguf"));
        let mut writer =
            GgufWriter::start(std::fs::File::create(&out).unwrap(), name, &plan).unwrap();
        for (tensor_name, bytes) in &kept {
            writer.write_tensor(tensor_name, bytes).unwrap();
        }
        writer.finish().unwrap();
        out
    }

    fn load_error(path: &Path) -> String {
        let ctx = ctx();
        let weights = match GgufWeights::new(Box::new(MmapSource::open(path).unwrap())) {
            Ok(w) => w,
            Err(e) => return e.to_string(),
        };
        match Model::load(ctx, &weights, |_, _| {}) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_unbroken_file_loads_and_matches_the_checkpoint() {
        let ctx = ctx();
        let weights = GgufWeights::new(Box::new(MmapSource::open(tiny_gguf()).unwrap())).unwrap();
        let model = Model::load(ctx, &weights, |_, _| {}).unwrap();
        let want = expected("tiny-llama");
        let mut session = model.new_session(ctx, 32).unwrap();
        let logits = model
            .forward(ctx, &mut session, &want.prompt, Logits::All)
            .unwrap()
            .read_f32(ctx)
            .unwrap();
        // tiny-llama's widths (72) are not whole Q8_0 blocks, so it stays F32: the GGUF
        // (Q/K rows permuted for interleaved rope) must give transformers' logits.
        let diff = max_diff(&logits, &want.logits);
        assert!(diff < TOLERANCE, "GGUF of tiny-llama differs by {diff}");
    }

    #[test]
    fn unknown_architecture() {
        let path = broken(
            "arch",
            &[(
                "general.architecture",
                MetadataValue::String("gpt-neox".into()),
            )],
            |_, b| Some(b),
        );
        let err = load_error(&path);
        assert!(err.contains("\"gpt-neox\" is not supported"), "{err}");
    }

    #[test]
    fn missing_tensor() {
        let path = broken("missing", &[], |name, b| {
            (name != "blk.1.ffn_up.weight").then_some(b)
        });
        let err = load_error(&path);
        assert!(err.contains("blk.1.ffn_up.weight"), "{err}");
    }

    #[test]
    fn shapes_that_disagree_with_the_config() {
        let path = broken(
            "shapes",
            &[("llama.feed_forward_length", MetadataValue::U32(140))],
            |_, b| Some(b),
        );
        let err = load_error(&path);
        assert!(
            err.contains("ffn_gate.weight") && err.contains("140"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_weights() {
        let path = broken("nan", &[], |name, mut b| {
            if name == "blk.0.attn_q.weight" {
                b[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            Some(b)
        });
        let err = load_error(&path);
        assert!(
            err.contains("blk.0.attn_q.weight") && err.contains("non-finite"),
            "{err}"
        );
    }

    #[test]
    fn prompt_longer_than_the_context() {
        let ctx = ctx();
        let weights = GgufWeights::new(Box::new(MmapSource::open(tiny_gguf()).unwrap())).unwrap();
        let model = Model::load(ctx, &weights, |_, _| {}).unwrap();
        let refused = model
            .new_session(ctx, model.config.context + 1)
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("does not fit the model's context"),
            "{refused}"
        );
        let mut session = model.new_session(ctx, 8).unwrap();
        let err = model
            .forward(ctx, &mut session, &[1; 9], Logits::Last)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("exceed its capacity of 8"), "{err}");
        let err = model
            .forward(ctx, &mut session, &[100_000], Logits::Last)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("100000"), "{err}");
    }
}

mod streamed {
    //! The byte-range loader (the browser's path) on an in-memory file: the same
    //! model as the file loader, only the header and the needed tensors fetched, and
    //! bad files refused from the header alone.

    use super::bad_input::{broken, tiny_gguf};
    use super::*;
    use safetyj::formats::remote::read_gguf_header;
    use safetyj::formats::{GgufFile, MemoryFetch, MetadataValue, MmapSource};
    use safetyj::model::load::GgufWeights;
    use safetyj::model::stream::{load_gguf_streamed, StreamProgress};

    fn fetch_of(path: &Path) -> MemoryFetch {
        MemoryFetch::new(path.display().to_string(), std::fs::read(path).unwrap())
    }

    fn logits_of(model: &Model, prompt: &[u32]) -> Vec<f32> {
        let ctx = ctx();
        let mut session = model.new_session(ctx, 32).unwrap();
        model
            .forward(ctx, &mut session, prompt, Logits::All)
            .unwrap()
            .read_f32(ctx)
            .unwrap()
    }

    #[test]
    fn streams_the_same_model_as_the_file_loader() {
        let ctx = ctx();
        let path = tiny_gguf();
        let fetch = fetch_of(&path);
        let header = pollster::block_on(read_gguf_header(&fetch, |_| {})).unwrap();
        let header_requests = fetch.requests().len();
        let mut seen: Vec<StreamProgress> = Vec::new();
        let model = pollster::block_on(load_gguf_streamed(ctx, &header, &fetch, 3, |p| {
            seen.push(p)
        }))
        .unwrap();

        let want = expected("tiny-llama");
        let streamed = logits_of(&model, &want.prompt);
        let diff = max_diff(&streamed, &want.logits);
        assert!(diff < TOLERANCE, "streamed tiny-llama differs by {diff}");
        let weights = GgufWeights::new(Box::new(MmapSource::open(&path).unwrap())).unwrap();
        let from_file = Model::load(ctx, &weights, |_, _| {}).unwrap();
        assert_eq!(streamed, logits_of(&from_file, &want.prompt));

        // One request per tensor (the file has no rope_freqs), each exactly its range.
        let file = GgufFile::read(&MmapSource::open(&path).unwrap()).unwrap();
        let mut ranges: Vec<_> = fetch.requests()[header_requests..].to_vec();
        ranges.sort_by_key(|r| r.start);
        let mut tensor_ranges: Vec<_> = file.tensors().iter().map(|t| t.file_range()).collect();
        tensor_ranges.sort_by_key(|r| r.start);
        assert_eq!(ranges, tensor_ranges);

        let last = *seen.last().unwrap();
        assert_eq!(last.tensors_done, file.tensors().len());
        assert_eq!(last.tensors_total, file.tensors().len());
        assert_eq!(last.bytes_done, last.bytes_total);
        assert_eq!(
            last.bytes_total,
            file.tensors().iter().map(|t| t.size).sum::<u64>()
        );
        assert_eq!(seen.len(), file.tensors().len() + 1);
        assert!(seen.windows(2).all(|w| w[0].bytes_done < w[1].bytes_done));
    }

    /// The streamed loader's error for `path`, and how many tensor-data requests it
    /// made before failing.
    fn stream_error(path: &Path) -> (String, usize) {
        let fetch = fetch_of(path);
        let header = pollster::block_on(read_gguf_header(&fetch, |_| {})).unwrap();
        let before = fetch.requests().len();
        match pollster::block_on(load_gguf_streamed(ctx(), &header, &fetch, 4, |_| {})) {
            Ok(_) => panic!("{} loaded", path.display()),
            Err(e) => (e.to_string(), fetch.requests().len() - before),
        }
    }

    #[test]
    fn a_missing_tensor_or_wrong_shape_fails_before_any_download() {
        let path = broken("stream-missing", &[], |name, b| {
            (name != "blk.1.ffn_up.weight").then_some(b)
        });
        let (err, requests) = stream_error(&path);
        assert!(err.contains("blk.1.ffn_up.weight"), "{err}");
        assert_eq!(requests, 0);

        let path = broken(
            "stream-shapes",
            &[("llama.feed_forward_length", MetadataValue::U32(140))],
            |_, b| Some(b),
        );
        let (err, requests) = stream_error(&path);
        assert!(
            err.contains("ffn_gate.weight") && err.contains("140"),
            "{err}"
        );
        assert_eq!(requests, 0);
    }

    #[test]
    fn non_finite_weights_are_refused_as_they_arrive() {
        let path = broken("stream-nan", &[], |name, mut b| {
            if name == "blk.0.attn_q.weight" {
                b[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            Some(b)
        });
        let (err, _) = stream_error(&path);
        assert!(
            err.contains("blk.0.attn_q.weight") && err.contains("non-finite"),
            "{err}"
        );
    }
}

/// Generation queues each step on the GPU before reading the token it feeds, and
/// undoes the queued step when it stops: the tokens equal a plain step-by-step greedy
/// loop (logits read back, argmax on the CPU), and the cache holds the prompt and
/// every token but the last, whatever ended the generation.
#[test]
fn pipelined_generation_equals_step_by_step_greedy_decoding() {
    use safetyj::model::generate::{generate, GenerateOptions, Sampling, StopReason};
    use std::ops::ControlFlow;

    let Some(path) = common::real_model("tinycoder-tiny.gguf") else {
        return;
    };
    let ctx = ctx();
    let (model, tokenizer) =
        safetyj::model::open::open(ctx, &path, DType::Q4_K, |_, _| {}).unwrap();
    let prompt: Vec<u32> = (0..12).map(|i| 100 + 37 * i).collect();
    let options = |max_tokens| GenerateOptions {
        max_tokens,
        sampling: Sampling::Greedy,
        stop_tokens: Vec::new(),
        stop_strings: Vec::new(),
    };

    let mut want = Vec::new();
    let mut session = model.new_session(ctx, 64).unwrap();
    let mut input = prompt.clone();
    for _ in 0..8 {
        let logits = model
            .forward(ctx, &mut session, &input, Logits::Last)
            .unwrap()
            .read_f32(ctx)
            .unwrap();
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap() as u32;
        want.push(best);
        input = vec![best];
    }

    // A generation on a fresh session of `capacity`, and the positions it leaves filled.
    let run = |capacity: usize,
               options: &GenerateOptions,
               on_text: &mut dyn FnMut(&str) -> ControlFlow<()>| {
        let mut session = model.new_session(ctx, capacity).unwrap();
        let run = generate(
            ctx,
            &model,
            &tokenizer,
            &mut session,
            &prompt,
            options,
            on_text,
        );
        (run.unwrap(), session.len())
    };
    let mut go_on = |_: &str| ControlFlow::Continue(());

    let (all, filled) = run(64, &options(8), &mut go_on);
    assert_eq!(all.stop, StopReason::MaxTokens);
    assert_eq!(all.tokens, want);
    assert_eq!(filled, prompt.len() + want.len() - 1);

    // Stopped by the caller after the second piece of text.
    let mut pieces = 0;
    let mut stop_second = |_: &str| {
        pieces += 1;
        if pieces == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let (cancelled, filled) = run(64, &options(8), &mut stop_second);
    assert_eq!(cancelled.stop, StopReason::Cancelled);
    assert_eq!(cancelled.tokens, want[..cancelled.tokens.len()]);
    assert_eq!(filled, prompt.len() + cancelled.tokens.len() - 1);

    // A stop token is not taken; the tokens before it are in the cache.
    let stop_at = GenerateOptions {
        stop_tokens: vec![want[3]],
        ..options(8)
    };
    let (stopped, filled) = run(64, &stop_at, &mut go_on);
    let first = want.iter().position(|&t| t == want[3]).unwrap();
    assert_eq!(stopped.stop, StopReason::StopToken);
    assert_eq!(stopped.tokens, want[..first]);
    assert_eq!(filled, prompt.len() + first);

    // The context's end: a session with room for the prompt and three tokens.
    let (full, filled) = run(prompt.len() + 3, &options(8), &mut go_on);
    assert_eq!(full.stop, StopReason::ContextFull);
    assert_eq!(full.tokens, want[..4]);
    assert_eq!(filled, prompt.len() + 3);
}
