//! The CPU engine (safetyj::cpu) against the GPU forward pass and Hugging Face
//! transformers on the tiny fixture checkpoints of each architecture, against the
//! stored greedy continuations of the real checkpoints, and its picks against the
//! GPU's argmax and sample ops.

mod common;

use std::path::PathBuf;

use common::{ctx, ids, real_model};
use safetyj::cpu::{pick, CpuModel};
use safetyj::formats::MmapSource;
use safetyj::model::arch::Weight;
use safetyj::model::generate::Sampling;
use safetyj::model::load::{GgufWeights, HfWeights, StoredMatrix, WeightSource};
use safetyj::model::{Logits, Model, ModelConfig};
use safetyj::ops::sample::SampleParams;
use safetyj::ops::{self, Elem, Tensor};
use safetyj::quant::DType;

const ARCHS: [&str; 5] = [
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-llama3",
    "tiny-internlm2",
];

fn fixture(name: &str) -> PathBuf {
    common::fixture_path(&format!("models/{name}"))
}

fn weights(name: &str) -> HfWeights {
    HfWeights::open(&fixture(name), DType::F32).unwrap()
}

/// Largest |a - b| over the two slices.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// f32 weights, activations and sums on both sides, in different orders: logits of
/// magnitude ~3 agree to about 1e-5 (the GPU's own tolerance against PyTorch is 2e-4).
const TOLERANCE: f32 = 2e-4;

/// The prompt and the logits at every position that transformers computed for
/// checkpoint `name` (tiny-internlm2 is tiny-llama re-laid out, so it has
/// tiny-llama's).
fn expected(name: &str) -> (Vec<u32>, Vec<f32>) {
    let name = if name == "tiny-internlm2" {
        "tiny-llama"
    } else {
        name
    };
    let dir = fixture(name);
    let meta = common::json_fixture(&format!("models/{name}/expected.json"));
    let bytes = std::fs::read(dir.join(meta["logits_file"].as_str().unwrap())).unwrap();
    let logits = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (ids(&meta["prompt_ids"]), logits)
}

/// Each architecture from its Hugging Face folder (f32, rotate-half RoPE) and from
/// the GGUF file `safetyj quantize` makes of it (Q8_0 where the widths allow, llama
/// and internlm2 with llama.cpp's interleaved RoPE and permuted Q/K rows).
#[test]
fn tiny_checkpoints_match_the_gpu_and_transformers_at_every_position() {
    let ctx = ctx();
    for (name, gguf) in ARCHS.iter().flat_map(|&n| [(n, false), (n, true)]) {
        let source: Box<dyn WeightSource> = if gguf {
            let path = common::fixture_gguf(name);
            Box::new(GgufWeights::new(Box::new(MmapSource::open(&path).unwrap())).unwrap())
        } else {
            Box::new(weights(name))
        };
        let source = source.as_ref();
        let name = format!("{name}{}", if gguf { " (GGUF)" } else { "" });
        let cpu = CpuModel::load(source, |_, _| {}).unwrap();
        let gpu = Model::load(ctx, source, |_, _| {}).unwrap();
        let (prompt, reference) = expected(name.trim_end_matches(" (GGUF)"));
        let mut session = cpu.new_session(64).unwrap();
        let got = cpu
            .forward(&mut session, &prompt, Logits::All, &[])
            .unwrap();
        let mut gpu_session = gpu.new_session(ctx, 64).unwrap();
        let want = gpu
            .forward(ctx, &mut gpu_session, &prompt, Logits::All)
            .unwrap()
            .read_f32(ctx)
            .unwrap();
        let diff = max_diff(&got.logits, &want);
        assert!(
            diff < TOLERANCE,
            "{name}: CPU and GPU logits differ by {diff}"
        );
        let diff = max_diff(&got.logits, &reference);
        assert!(
            diff < TOLERANCE,
            "{name}: CPU and transformers differ by {diff}"
        );
        assert_eq!(session.len(), prompt.len());
        assert!(got.hidden.is_empty());
    }
}

#[test]
fn prefill_then_decode_and_truncate_then_rerun_equal_one_prefill() {
    for name in ARCHS {
        let cpu = CpuModel::load(&weights(name), |_, _| {}).unwrap();
        let vocab = cpu.config.vocab;
        let (prompt, _) = expected(name);
        let mut session = cpu.new_session(prompt.len()).unwrap();
        let all = cpu
            .forward(&mut session, &prompt, Logits::All, &[])
            .unwrap()
            .logits;
        let row = |i: usize| &all[i * vocab..(i + 1) * vocab];

        // Prefill of 12 (its last row), then one token at a time.
        let mut session = cpu.new_session(prompt.len()).unwrap();
        let last = cpu
            .forward(&mut session, &prompt[..12], Logits::Last, &[])
            .unwrap();
        assert!(
            max_diff(&last.logits, row(11)) < TOLERANCE,
            "{name}: prefill"
        );
        for (i, &token) in prompt.iter().enumerate().skip(12) {
            let step = cpu
                .forward(&mut session, &[token], Logits::Last, &[])
                .unwrap();
            let diff = max_diff(&step.logits, row(i));
            assert!(
                diff < TOLERANCE,
                "{name}: decode step {i} differs by {diff}"
            );
        }
        assert_eq!(session.len(), prompt.len());

        // Back to 7 positions, then the rest again as one step.
        session.truncate(7).unwrap();
        assert_eq!(session.len(), 7);
        let rerun = cpu
            .forward(&mut session, &prompt[7..], Logits::All, &[])
            .unwrap();
        let diff = max_diff(&rerun.logits, &all[7 * vocab..]);
        assert!(
            diff < TOLERANCE,
            "{name}: rerun after truncate differs by {diff}"
        );
    }
}

/// A checkpoint cut after its first `layers` blocks: the same weights, fewer layers.
struct FirstLayers<'a> {
    inner: &'a dyn WeightSource,
    layers: usize,
}

impl WeightSource for FirstLayers<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn config(&self) -> safetyj::Result<ModelConfig> {
        Ok(ModelConfig {
            layers: self.layers,
            ..self.inner.config()?
        })
    }
    fn has(&self, weight: Weight) -> bool {
        self.inner.has(weight)
    }
    fn matrix(&self, weight: Weight) -> safetyj::Result<StoredMatrix> {
        self.inner.matrix(weight)
    }
    fn vector(&self, weight: Weight) -> safetyj::Result<Vec<f32>> {
        self.inner.vector(weight)
    }
}

/// The hidden state after block n is what a model of the first n blocks ends with:
/// its output norm and projection (the f64 references of the GPU ops) give the
/// logits that the n-block model computes on the GPU.
#[test]
fn hidden_state_after_each_layer_gives_the_logits_of_that_many_layers_on_the_gpu() {
    let ctx = ctx();
    for name in ARCHS {
        let source = weights(name);
        let cpu = CpuModel::load(&source, |_, _| {}).unwrap();
        let c = cpu.config.clone();
        let (prompt, _) = expected(name);
        let norm = source.vector(Weight::OutputNorm).unwrap();
        let output = if source.has(Weight::Output) {
            source.matrix(Weight::Output).unwrap()
        } else {
            source.matrix(Weight::TokenEmbedding).unwrap()
        };
        for n in 1..=c.layers {
            let mut session = cpu.new_session(32).unwrap();
            let step = cpu
                .forward(&mut session, &prompt, Logits::Last, &[n])
                .unwrap();
            let hidden = step
                .hidden
                .into_iter()
                .next()
                .expect("asked for a hidden state");
            assert_eq!(hidden.len(), c.hidden);
            let normed = ops::rms_norm::reference(&hidden, &norm, c.hidden, c.rms_eps);
            let logits = ops::matmul::reference(
                &normed,
                1,
                c.hidden,
                output.dtype,
                &output.bytes,
                output.rows,
                None,
            )
            .unwrap();
            let cut = FirstLayers {
                inner: &source,
                layers: n,
            };
            let gpu = Model::load(ctx, &cut, |_, _| {}).unwrap();
            let mut gpu_session = gpu.new_session(ctx, 32).unwrap();
            let want = gpu
                .forward(ctx, &mut gpu_session, &prompt, Logits::Last)
                .unwrap()
                .read_f32(ctx)
                .unwrap();
            let diff = max_diff(&logits, &want);
            assert!(
                diff < TOLERANCE,
                "{name}: hidden state after {n} blocks: {diff}"
            );
            if n == c.layers {
                assert!(max_diff(&step.logits, &want) < TOLERANCE, "{name}: logits");
            }
        }
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let cpu = CpuModel::load(&weights("tiny-llama"), |_, _| {}).unwrap();
    let c = cpu.config.clone();
    let message = |e: safetyj::Error| e.to_string();
    assert!(message(cpu.new_session(0).err().unwrap()).contains("context"));
    assert!(message(cpu.new_session(c.context + 1).err().unwrap())
        .contains("does not fit the model's context"));
    let mut session = cpu.new_session(4).unwrap();
    let err = cpu
        .forward(&mut session, &[1, c.vocab as u32], Logits::Last, &[])
        .err()
        .unwrap();
    assert!(message(err).contains("outside the vocabulary"));
    let err = cpu
        .forward(&mut session, &[], Logits::Last, &[])
        .err()
        .unwrap();
    assert!(message(err).contains("at least one token"));
    for layer in [0, c.layers + 1] {
        let err = cpu
            .forward(&mut session, &[1], Logits::Last, &[layer])
            .err()
            .unwrap();
        assert!(message(err).contains("layer"), "hidden layer {layer}");
    }
    assert_eq!(session.len(), 0, "failed steps leave the session as it was");
    cpu.forward(&mut session, &[1, 2, 3], Logits::Last, &[])
        .unwrap();
    let err = cpu
        .forward(&mut session, &[4, 5], Logits::Last, &[])
        .err()
        .unwrap();
    assert!(message(err).contains("exceed its capacity"));
    assert!(message(session.truncate(4).err().unwrap()).contains("cannot keep 4 positions"));
    assert_eq!(session.len(), 3);
    session.truncate(0).unwrap();
    assert!(session.is_empty());
}

/// The CPU pick and the GPU's argmax and sample ops choose the same token.
#[test]
fn picks_equal_the_gpu_ops() {
    let ctx = ctx();
    let vocab = 1000;
    let mut rows: Vec<Vec<f32>> = (0..6u32)
        .map(|r| {
            (0..vocab)
                .map(|i| {
                    ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(r * 97) % 1013) as f32
                        / 100.0
                })
                .collect()
        })
        .collect();
    rows[1][10] = 20.0;
    rows[1][500] = 20.0; // a tie: the lowest id wins
    rows[2][3] = f32::NAN;
    let samplings = [
        Sampling::Greedy,
        Sampling::Random {
            temperature: 0.7,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        },
        Sampling::Random {
            temperature: 1.3,
            top_k: 40,
            top_p: 0.9,
            seed: 0,
        },
    ];
    for (r, row) in rows.iter().enumerate() {
        let logits = Tensor::from_f32(ctx, "logits", &[1, vocab], row).unwrap();
        let out = Tensor::new(ctx, "token", &[1], Elem::U32).unwrap();
        for sampling in samplings {
            for u in [0.0, 0.31, 0.77, 0.999] {
                let mut enc = ctx.encoder();
                match sampling {
                    Sampling::Greedy => {
                        ops::argmax::encode(ctx, &mut enc, &logits, 0, &out, 0).unwrap()
                    }
                    Sampling::Random {
                        temperature,
                        top_k,
                        top_p,
                        ..
                    } => {
                        let params = SampleParams {
                            temperature,
                            top_k,
                            top_p,
                        };
                        ops::sample::encode(ctx, &mut enc, &logits, 0, &out, 0, &params, u).unwrap()
                    }
                }
                ctx.submit("pick test", enc).unwrap();
                let want = out.read_u32(ctx).unwrap()[0];
                let got = pick(row, sampling, u).unwrap();
                assert_eq!(got, want, "row {r}, {sampling:?}, u {u}");
            }
        }
    }
    assert_eq!(pick(&rows[1], Sampling::Greedy, 0.0).unwrap(), 10);

    let refused = |row: &[f32], sampling, u, why: &str| {
        let message = pick(row, sampling, u).unwrap_err().to_string();
        assert!(message.contains(why), "{message} (expected: {why})");
    };
    let nan = vec![f32::NAN; 8];
    refused(&nan, Sampling::Greedy, 0.0, "no token can be picked");
    refused(&[], Sampling::Greedy, 0.0, "empty row of logits");
    let hot = |temperature, top_p| Sampling::Random {
        temperature,
        top_k: 0,
        top_p,
        seed: 1,
    };
    refused(&rows[0], hot(0.0, 1.0), 0.5, "temperature must be finite");
    refused(&rows[0], hot(1.0, 0.0), 0.5, "top_p must lie in (0, 1]");
    refused(
        &rows[0],
        hot(1.0, 1.0),
        1.0,
        "the uniform number u must lie in [0, 1)",
    );
    refused(
        &[f32::NEG_INFINITY; 4],
        hot(1.0, 1.0),
        0.5,
        "no token can be picked",
    );
}

/// Greedy steps compared with the stored reference (the CPU engine is fast, but
/// a few suffice to show the quantized kernels right on real weights).
const GREEDY_STEPS: usize = 8;
/// Below this top-2 logit margin the reference's choice is within rounding noise.
const MARGIN: f32 = 0.05;
/// First-step logits against transformers on the dequantized weights: a prefill
/// multiplies in f32 as the GPU does, so the GPU's tolerance (the reference is
/// stored as f16, up to 0.0078 of rounding at |logit| ≈ 18).
const LOGIT_TOLERANCE: f32 = 0.02;

fn check_real(model_file: &str, fixture_name: &str) {
    let Some(path) = real_model(model_file) else {
        return;
    };
    let source = GgufWeights::new(Box::new(MmapSource::open(&path).unwrap())).unwrap();
    let cpu = CpuModel::load(&source, |_, _| {}).unwrap();
    let want = common::json_fixture(&format!("models/real/{fixture_name}"));
    let prompt = ids(&want["prompt_ids"]);
    let logits_file = format!("models/real/{}", want["logits_file"].as_str().unwrap());
    let reference: Vec<f32> = std::fs::read(common::fixture_path(&logits_file))
        .unwrap()
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    let mut session = cpu.new_session(prompt.len() + GREEDY_STEPS).unwrap();
    let mut step = cpu
        .forward(&mut session, &prompt, Logits::Last, &[])
        .unwrap();
    let diff = max_diff(&step.logits, &reference);
    eprintln!("{fixture_name}: first-step logits max |diff| {diff}");
    assert!(
        diff < LOGIT_TOLERANCE,
        "{fixture_name}: first-step logits differ by {diff}"
    );
    let greedy = ids(&want["greedy_tokens"]);
    let margins = want["greedy_top2_margins"].as_array().unwrap();
    for (i, expected) in greedy.iter().take(GREEDY_STEPS).enumerate() {
        if (margins[i].as_f64().unwrap() as f32) < MARGIN {
            eprintln!("{fixture_name}: stopping at step {i}, reference margin below {MARGIN}");
            return;
        }
        let next = pick(&step.logits, Sampling::Greedy, 0.0).unwrap();
        assert_eq!(next, *expected, "{fixture_name}: greedy token {i}");
        if i + 1 < GREEDY_STEPS {
            step = cpu
                .forward(&mut session, &[next], Logits::Last, &[])
                .unwrap();
        }
    }
}

#[test]
fn qwen_0_5b_q4_k_m_greedy_tokens_match_transformers() {
    check_real(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b.zh.json",
    );
}

#[test]
fn smollm2_135m_q4_1_greedy_tokens_match_transformers() {
    check_real("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m.en.json");
}

/// The CPU model loaded by byte range (as the browser without WebGPU loads it) from
/// each architecture's GGUF gives exactly the logits of the file load, one request
/// per tensor (the checks before fetching are the GPU loader's, tested in model.rs).
#[test]
fn a_streamed_load_equals_the_file_load() {
    use safetyj::formats::remote::read_gguf_header;
    use safetyj::formats::MemoryFetch;
    for name in ARCHS {
        let path = common::fixture_gguf(name);
        let fetch = MemoryFetch::new(name, std::fs::read(&path).unwrap());
        let header = pollster::block_on(read_gguf_header(&fetch, |_| {})).unwrap();
        let before = fetch.requests().len();
        let mut last = None;
        let streamed = pollster::block_on(CpuModel::load_streamed(&header, &fetch, 3, |p| {
            last = Some(p)
        }))
        .unwrap();
        let last = last.unwrap();
        assert_eq!(last.tensors_done, last.tensors_total, "{name}");
        assert_eq!(
            fetch.requests().len() - before,
            header.tensors().len(),
            "{name}"
        );

        let weights = GgufWeights::new(Box::new(MmapSource::open(&path).unwrap())).unwrap();
        let from_file = CpuModel::load(&weights, |_, _| {}).unwrap();
        let (prompt, _) = expected(name);
        let logits = |model: &CpuModel| {
            let mut session = model.new_session(64).unwrap();
            model
                .forward(&mut session, &prompt, Logits::All, &[])
                .unwrap()
                .logits
        };
        assert_eq!(logits(&streamed), logits(&from_file), "{name}");
    }
}
