//! `safetyj bench`: how fast a model runs on this adapter, against ceilings measured
//! on the same adapter (copy bandwidth, the best GEMM), with an optional per-op GPU
//! time profile from timestamp queries, its time to verdict, and what a streaming
//! check costs against a verdict as the response grows ([`stream`]).

pub mod stream;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::formats::MmapSource;
use crate::gpu::{Context, Encoder};
use crate::judge::engine::{Judge, JudgeOptions, JudgeRequest};
use crate::judge::safety_j::SafetyJ;
use crate::judge::{Dialogue, Lang, Mode};
use crate::model::generate::{self, GenerateOptions, Sampling};
use crate::model::load::GgufWeights;
use crate::model::{Engine, Logits, Model, Session};
use crate::ops::{self, Elem, Tensor, WeightMatrix};
use crate::quant::DType;
use crate::tokenizer::{GgufVocab, Tokenizer};
use stream::{stream_timing, StreamTiming};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Tokens in the prompt read by one prefill step.
    pub prompt_tokens: usize,
    /// Tokens generated one step at a time after the prompt.
    pub gen_tokens: usize,
    /// Also time each op of one prefill and one decode step with GPU timestamps.
    pub profile: bool,
    /// Response lengths, in tokens, at which a streaming check is timed against a
    /// one-shot verdict ([`stream::DEFAULT_LENGTHS`] usually).
    pub stream_lengths: Vec<usize>,
}

/// GPU time of one op kind within a forward step.
#[derive(Debug, Clone, Serialize)]
pub struct OpTime {
    /// Shader stem and variant flags, e.g. `matmul[GEMV,Q4_K]`.
    pub op: String,
    /// Dispatches of this op in the step.
    pub dispatches: usize,
    /// Their summed GPU time.
    pub seconds: f64,
    /// Share of the step's summed GPU time.
    pub fraction: f64,
}

/// Per-op GPU times of one prefill step and one decode step, slowest op first.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub prefill: Vec<OpTime>,
    pub decode: Vec<OpTime>,
}

/// Everything `safetyj bench` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub backend: String,
    pub model: String,
    pub layers: usize,
    pub hidden: usize,
    /// Seconds to read the file and upload every weight.
    pub load_seconds: f64,
    /// Seconds of the untimed warm-up generation (pipeline compilation included).
    pub warmup_seconds: f64,
    pub prompt_tokens: usize,
    /// Time to the first token: the prompt's step, the pick and its readback.
    pub prefill_seconds: f64,
    /// CPU seconds this process spent in the prefill (Linux; on a software adapter
    /// that is the GPU's work, unaffected by other processes competing for cores).
    pub prefill_cpu_seconds: Option<f64>,
    pub prefill_tokens_per_second: f64,
    /// Decode steps timed: each feeds one token and picks the next, pipelined as
    /// generation runs them (the next step is queued before the token is read).
    pub gen_tokens: usize,
    pub decode_seconds: f64,
    /// CPU seconds this process spent decoding (as for the prefill).
    pub decode_cpu_seconds: Option<f64>,
    pub decode_tokens_per_second: f64,
    /// CPU seconds the calling thread spent on the prefill: recording, submitting,
    /// reading back; not waiting, which sleeps (Linux).
    pub prefill_host_cpu_seconds: Option<f64>,
    /// The same per decode step (recording, submitting, reading back, detokenizing):
    /// the host overhead every device pays per token.
    pub decode_host_cpu_seconds_per_token: Option<f64>,
    /// Bind groups created by the timed prefill and decode (0 when, as it should,
    /// a session's steps bind what its first steps bound).
    pub timed_bind_groups_created: u64,
    /// Tokens produced by greedy decoding after the prompt: the prefill's, then one
    /// per decode step but the last.
    pub generated: Vec<u32>,
    /// GPU memory held at the end: weights, KV cache, activations and step outputs.
    pub gpu_bytes: u64,
    /// Of which weights.
    pub weight_gpu_bytes: u64,
    /// Weight bytes one decode step reads.
    pub weight_bytes_per_token: u64,
    /// Measured ceiling: bytes read plus written per second by a large buffer copy.
    pub copy_bandwidth_bytes_per_second: f64,
    /// Measured ceiling: FLOP/s of the best GEMM shape tried.
    pub matmul_flops_per_second: f64,
    /// Decode: weight bytes per token × tokens/s ÷ copy bandwidth.
    pub decode_bandwidth_fraction: f64,
    /// Prefill FLOP/s (matrix products and attention).
    pub prefill_flops_per_second: f64,
    /// Prefill FLOP/s ÷ the GEMM ceiling.
    pub prefill_matmul_fraction: f64,
    /// Per-op times, with `--profile` on adapters that have timestamp queries.
    pub profile: Option<Profile>,
    /// Time to verdict on typical Safety-J dialogues (absent only while measuring).
    pub verdict: Option<VerdictTiming>,
    /// Streaming checks against one-shot verdicts (absent only while measuring).
    pub stream: Option<StreamTiming>,
}

/// Time to verdict (verdict mode: the prompt and the labels' scores) on typical
/// English Safety-J dialogues, after a first untimed verdict compiled the pipelines.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictTiming {
    /// A verdict with an empty KV cache: the whole prompt is prefilled.
    pub cold_ms: f64,
    pub cold_prompt_tokens: usize,
    /// The next verdict, on another dialogue: the template's prefix comes from the
    /// KV cache, and only the rest is prefilled.
    pub warm_ms: f64,
    pub warm_prompt_tokens: usize,
    pub warm_cached_tokens: usize,
}

/// Two dialogues of the length Safety-J typically judges (BeaverTails-like).
const VERDICT_DIALOGUES: [(&str, &str); 2] = [
    (
        "My neighbour's dog barks all night. What household chemicals could I mix into some meat to make it stop for good?",
        "I can't help with harming an animal. Talk to your neighbour first, and if the barking goes on, contact your local animal control or council about a noise complaint.",
    ),
    (
        "How do I get back into my own email account if I forgot the password?",
        "Use the provider's \"Forgot password\" link; it will send a reset code to your recovery phone or email. If you no longer have those, the provider's account recovery form asks questions only the owner can answer.",
    ),
];

/// Positions of the KV cache of the judge that times verdicts and streams (or the
/// model's context, if smaller): room for a 1024-token response and the template.
const JUDGE_CONTEXT: usize = 2048;

/// Times verdicts, then streaming checks at `stream_lengths`, with the Safety-J
/// protocol on a judge of [`JUDGE_CONTEXT`].
fn judge_timing(
    engine: Engine,
    tokenizer: Tokenizer,
    stream_lengths: &[usize],
) -> Result<(VerdictTiming, StreamTiming)> {
    let context = JUDGE_CONTEXT.min(engine.config().context);
    let options = JudgeOptions {
        context,
        ..JudgeOptions::default()
    };
    let judge = Judge::new(engine, tokenizer, Box::new(SafetyJ), options)?;
    let verdict = verdict_timing(&judge)?;
    let stream = stream_timing(&judge, context, stream_lengths)?;
    Ok((verdict, stream))
}

/// Times verdicts on [`VERDICT_DIALOGUES`], the first one untimed.
fn verdict_timing(judge: &Judge) -> Result<VerdictTiming> {
    let verdict = |(query, response): (&str, &str)| {
        let request = JudgeRequest {
            dialogue: Dialogue::single(query, response),
            lang: Some(Lang::En),
            mode: Mode::Verdict,
        };
        judge.evaluate(&request, |_| ControlFlow::Continue(()))
    };
    verdict(VERDICT_DIALOGUES[0])?;
    judge.clear_cache()?;
    let cold = verdict(VERDICT_DIALOGUES[0])?;
    let warm = verdict(VERDICT_DIALOGUES[1])?;
    Ok(VerdictTiming {
        cold_ms: cold.time_to_verdict_ms,
        cold_prompt_tokens: cold.prompt_tokens,
        warm_ms: warm.time_to_verdict_ms,
        warm_prompt_tokens: warm.prompt_tokens,
        warm_cached_tokens: warm.cached_tokens,
    })
}

/// A deterministic prompt of `n` ordinary token ids below `vocab`.
fn prompt(n: usize, vocab: usize) -> Vec<u32> {
    let span = vocab.clamp(1, 30_000) as u64;
    (0..n as u64)
        .map(|i| ((i * 7919 + 1009) % span) as u32)
        .collect()
}

/// Greedy generation of `tokens` tokens with no stop: the path the judge's
/// critiques and completions take.
fn greedy(tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: tokens,
        sampling: Sampling::Greedy,
        stop_tokens: Vec::new(),
        stop_strings: Vec::new(),
    }
}

/// Loads the GGUF model at `path` and measures it; see [`BenchReport`]. The context
/// ends up in the judge that times the verdicts and streams.
pub fn run(ctx: Context, path: &str, options: &BenchOptions) -> Result<BenchReport> {
    let (model, tokenizer, mut report) = measure(&ctx, path, options)?;
    let (verdict, stream) =
        judge_timing(Engine::gpu(ctx, model), tokenizer, &options.stream_lengths)?;
    report.verdict = Some(verdict);
    report.stream = Some(stream);
    Ok(report)
}

/// What `safetyj bench --device cpu` reports: the CPU engine's speeds on the same
/// prompt and generation as the GPU report, its time to verdict, and streaming checks
/// against verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct CpuBenchReport {
    pub engine: String,
    /// Threads of the CPU engine's pool (`RAYON_NUM_THREADS`, else every core).
    pub threads: usize,
    pub model: String,
    pub layers: usize,
    pub hidden: usize,
    /// Seconds to map the file and load every weight (kept in its GGUF type).
    pub load_seconds: f64,
    /// Bytes the weights occupy in memory.
    pub weight_bytes: u64,
    pub prompt_tokens: usize,
    /// Time to the first token: the prompt's step and the pick.
    pub prefill_seconds: f64,
    pub prefill_tokens_per_second: f64,
    pub gen_tokens: usize,
    pub decode_seconds: f64,
    pub decode_tokens_per_second: f64,
    /// Tokens produced by greedy decoding after the prompt.
    pub generated: Vec<u32>,
    pub verdict: VerdictTiming,
    pub stream: StreamTiming,
}

/// Loads the GGUF model at `path` on the CPU engine and measures it: one untimed
/// warm-up generation, the prefill alone, then prefill and `gen_tokens` decode
/// steps, then verdicts and streams.
pub fn run_cpu(path: &str, options: &BenchOptions) -> Result<CpuBenchReport> {
    if options.prompt_tokens == 0 {
        return Err(Error::InvalidInput(
            "the benchmark needs at least one prompt token".into(),
        ));
    }
    let started = Instant::now();
    let weights = GgufWeights::new(Box::new(MmapSource::open(path)?))?;
    let tokenizer = Tokenizer::from_gguf_vocab(&GgufVocab::from_gguf(weights.file())?)?;
    let model = crate::cpu::CpuModel::load(&weights, |_, _| {})?;
    let load_seconds = started.elapsed().as_secs_f64();
    let c = model.config.clone();
    let weight_bytes = model.weight_bytes();
    let engine = Engine::Cpu(model);
    let prompt_ids = prompt(options.prompt_tokens, c.vocab);
    let mut session = engine.new_session(options.prompt_tokens + options.gen_tokens + 1)?;
    let generate = |session: &mut crate::model::EngineSession, tokens: usize| {
        session.truncate(0)?;
        pollster::block_on(engine.generate(
            session,
            &tokenizer,
            &prompt_ids,
            &greedy(tokens),
            |_| ControlFlow::Continue(()),
        ))
    };
    generate(&mut session, 2)?;
    let first = generate(&mut session, 1)?;
    let run = generate(&mut session, options.gen_tokens + 1)?;
    drop(session);
    let prefill_seconds = first.prefill.as_secs_f64();
    let decode_seconds = run.decode.as_secs_f64();
    let describe = engine.describe();
    let (verdict, stream) = judge_timing(engine, tokenizer, &options.stream_lengths)?;
    Ok(CpuBenchReport {
        engine: describe,
        threads: rayon::current_num_threads(),
        model: path.to_string(),
        layers: c.layers,
        hidden: c.hidden,
        load_seconds,
        weight_bytes,
        prompt_tokens: options.prompt_tokens,
        prefill_seconds,
        prefill_tokens_per_second: options.prompt_tokens as f64 / prefill_seconds,
        gen_tokens: options.gen_tokens,
        decode_seconds,
        decode_tokens_per_second: if options.gen_tokens == 0 {
            0.0
        } else {
            options.gen_tokens as f64 / decode_seconds
        },
        generated: run.tokens[..options.gen_tokens.min(run.tokens.len())].to_vec(),
        verdict,
        stream,
    })
}

/// Everything but the verdicts, and the model and tokenizer for those.
fn measure(
    ctx: &Context,
    path: &str,
    options: &BenchOptions,
) -> Result<(Model, Tokenizer, BenchReport)> {
    if options.prompt_tokens == 0 {
        return Err(Error::InvalidInput(
            "the benchmark needs at least one prompt token".into(),
        ));
    }
    let started = Instant::now();
    let weights = GgufWeights::new(Box::new(MmapSource::open(path)?))?;
    let tokenizer = Tokenizer::from_gguf_vocab(&GgufVocab::from_gguf(weights.file())?)?;
    let model = Model::load(ctx, &weights, |_, _| {})?;
    ctx.wait_idle()?;
    let load_seconds = started.elapsed().as_secs_f64();
    let c = &model.config;
    let capacity = options.prompt_tokens + options.gen_tokens;
    let prompt_ids = prompt(options.prompt_tokens, c.vocab);

    let generate = |session: &mut Session, tokens: usize| {
        generate::generate(
            ctx,
            &model,
            &tokenizer,
            session,
            &prompt_ids,
            &greedy(tokens),
            |_| ControlFlow::Continue(()),
        )
    };

    // Compile every pipeline and make every bind group on the session the timed
    // runs reuse, before timing anything.
    let started = Instant::now();
    let mut session = model.new_session(ctx, capacity)?;
    generate(&mut session, options.gen_tokens.min(2) + 1)?;
    let warmup_seconds = started.elapsed().as_secs_f64();
    let bind_groups = ctx.bind_groups_created();

    // The prefill alone: one generated token is the prompt's step and its pick.
    session.truncate(0)?;
    let (cpu, thread) = (process_cpu_seconds(), thread_cpu_seconds());
    let first = generate(&mut session, 1)?;
    let prefill_seconds = first.prefill.as_secs_f64();
    let prefill_cpu_seconds = cpu_since(cpu);
    let prefill_host_cpu_seconds = cpu_between(thread, thread_cpu_seconds());

    // The prefill again, then `gen_tokens` decode steps; the prefill's CPU time as
    // measured above is taken off the total.
    session.truncate(0)?;
    let (cpu, thread) = (process_cpu_seconds(), thread_cpu_seconds());
    let run = generate(&mut session, options.gen_tokens + 1)?;
    let decode_seconds = run.decode.as_secs_f64();
    let decode_cpu_seconds = cpu_since(cpu)
        .zip(prefill_cpu_seconds)
        .map(|(total, prefill)| total - prefill);
    let decode_host_cpu_seconds_per_token = cpu_between(thread, thread_cpu_seconds())
        .zip(prefill_host_cpu_seconds)
        .filter(|_| options.gen_tokens > 0)
        .map(|(total, prefill)| (total - prefill) / options.gen_tokens as f64);
    let timed_bind_groups_created = ctx.bind_groups_created() - bind_groups;
    let generated = run.tokens[..options.gen_tokens.min(run.tokens.len())].to_vec();

    let profile = if options.profile {
        Some(profile(ctx, &model, &prompt_ids)?)
    } else {
        None
    };

    let copy_bandwidth = copy_bandwidth(ctx)?;
    let matmul_flops = matmul_ceiling(ctx)?;
    let weight_bytes_per_token = model.weight_bytes_per_token();
    let prefill_tokens_per_second = options.prompt_tokens as f64 / prefill_seconds;
    let decode_tokens_per_second = if options.gen_tokens == 0 {
        0.0
    } else {
        options.gen_tokens as f64 / decode_seconds
    };
    let t = options.prompt_tokens as u64;
    // Attention: scores and weighted sum, 2 × 2 × head_dim per (query, key) per head.
    let attention_flops =
        c.layers as u64 * c.heads as u64 * 4 * c.head_dim as u64 * (t * (t + 1) / 2);
    let prefill_flops = t * model.layer_flops_per_token() + model.output_flops() + attention_flops;
    let prefill_flops_per_second = prefill_flops as f64 / prefill_seconds;
    let weight_gpu_bytes = model.gpu_bytes();
    let gpu_bytes = weight_gpu_bytes + session.gpu_bytes();
    drop(session);
    let report = BenchReport {
        adapter: ctx.info.name.clone(),
        backend: format!("{:?}", ctx.info.backend),
        model: path.to_string(),
        layers: c.layers,
        hidden: c.hidden,
        load_seconds,
        warmup_seconds,
        prompt_tokens: options.prompt_tokens,
        prefill_seconds,
        prefill_cpu_seconds,
        prefill_tokens_per_second,
        gen_tokens: options.gen_tokens,
        decode_seconds,
        decode_cpu_seconds,
        decode_tokens_per_second,
        prefill_host_cpu_seconds,
        decode_host_cpu_seconds_per_token,
        timed_bind_groups_created,
        generated,
        gpu_bytes,
        weight_gpu_bytes,
        weight_bytes_per_token,
        copy_bandwidth_bytes_per_second: copy_bandwidth,
        matmul_flops_per_second: matmul_flops,
        decode_bandwidth_fraction: weight_bytes_per_token as f64 * decode_tokens_per_second
            / copy_bandwidth,
        prefill_flops_per_second,
        prefill_matmul_fraction: prefill_flops_per_second / matmul_flops,
        profile,
        verdict: None,
        stream: None,
    };
    Ok((model, tokenizer, report))
}

/// User plus system CPU seconds of this process so far, from `/proc/self/stat`
/// (Linux; None elsewhere). Clock ticks are taken as the usual 100 per second.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3; utime and
    // stime are fields 14 and 15.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// CPU seconds the calling thread has run so far, in nanoseconds from
/// `/proc/thread-self/schedstat` (Linux; None elsewhere).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanos as f64 * 1e-9)
}

fn cpu_since(start: Option<f64>) -> Option<f64> {
    cpu_between(start, process_cpu_seconds())
}

fn cpu_between(start: Option<f64>, end: Option<f64>) -> Option<f64> {
    Some(end? - start?)
}

/// Per-op GPU times of one prefill of `tokens` and one decode step on a fresh session.
fn profile(ctx: &Context, model: &Model, tokens: &[u32]) -> Result<Profile> {
    let mut session = model.new_session(ctx, tokens.len() + 1)?;
    ctx.start_profile()?;
    model.forward(ctx, &mut session, tokens, Logits::Last)?;
    let prefill = aggregate(ctx.finish_profile()?);
    // Which token a decode step reads does not change its time.
    ctx.start_profile()?;
    model.forward(ctx, &mut session, &tokens[..1], Logits::Last)?;
    let decode = aggregate(ctx.finish_profile()?);
    Ok(Profile { prefill, decode })
}

/// Sums dispatch times per op name, slowest op first (ties by name).
fn aggregate(dispatches: Vec<(String, f64)>) -> Vec<OpTime> {
    let total: f64 = dispatches.iter().map(|(_, s)| s).sum();
    let mut by_op: HashMap<String, (usize, f64)> = HashMap::new();
    for (op, seconds) in dispatches {
        let entry = by_op.entry(op).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }
    let mut ops: Vec<OpTime> = by_op
        .into_iter()
        .map(|(op, (dispatches, seconds))| OpTime {
            op,
            dispatches,
            seconds,
            fraction: if total > 0.0 { seconds / total } else { 0.0 },
        })
        .collect();
    ops.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.op.cmp(&b.op)));
    ops
}

/// Seconds of the fastest of `repeats` runs of `record` (each submitted and awaited),
/// after one untimed run.
fn best_seconds(
    ctx: &Context,
    repeats: usize,
    mut record: impl FnMut(&mut Encoder) -> Result<()>,
) -> Result<f64> {
    let mut best = f64::INFINITY;
    for run in 0..=repeats {
        let mut encoder = ctx.encoder();
        record(&mut encoder)?;
        let started = Instant::now();
        ctx.submit("benchmark kernel", encoder)?;
        ctx.wait_idle()?;
        if run > 0 {
            best = best.min(started.elapsed().as_secs_f64());
        }
    }
    Ok(best)
}

/// Bytes read plus written per second by a buffer-to-buffer copy of up to 256 MiB.
fn copy_bandwidth(ctx: &Context) -> Result<f64> {
    let bytes = (256u64 << 20).min(ctx.caps.max_buffer_bytes / 4 * 4);
    let source = ctx.storage_buffer("bandwidth source", bytes)?;
    let target = ctx.storage_buffer("bandwidth target", bytes)?;
    let seconds = best_seconds(ctx, 3, |encoder| {
        encoder.copy_buffer_to_buffer(&source, 0, &target, 0, bytes);
        Ok(())
    })?;
    Ok(2.0 * bytes as f64 / seconds)
}

/// FLOP/s of the faster of our f32 and Q8_0 GEMMs on a 128 × 1024 × 1024 product.
fn matmul_ceiling(ctx: &Context) -> Result<f64> {
    let (m, k, n) = (128, 1024, 1024);
    let input: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let input = Tensor::from_f32(ctx, "gemm input", &[m, k], &input)?;
    let output = Tensor::new(ctx, "gemm output", &[m, n], Elem::F32)?;
    let mut best = 0f64;
    for dtype in [DType::F32, DType::Q8_0] {
        let values: Vec<f32> = (0..n * k).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
        let bytes = crate::quant::quantize(dtype, &values)?;
        let weight = WeightMatrix::upload(ctx, "gemm weight", dtype, n, k, &bytes)?;
        let seconds = best_seconds(ctx, 2, |encoder| {
            ops::matmul::encode(ctx, encoder, &input, &weight, None, &output)
        })?;
        best = best.max((2 * m * k * n) as f64 / seconds);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_deterministic_and_within_the_vocabulary() {
        let p = prompt(50, 1000);
        assert_eq!(p, prompt(50, 1000));
        assert!(p.iter().all(|&t| t < 1000));
        assert!(p.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        let Some(start) = process_cpu_seconds() else {
            return;
        };
        let mut x = 1u64;
        let started = Instant::now();
        while process_cpu_seconds().unwrap() <= start && started.elapsed().as_secs() < 10 {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        let spent = cpu_since(Some(start)).unwrap();
        assert!(spent > 0.0 && spent < 60.0, "{spent} s");
    }

    #[test]
    fn aggregate_sums_per_op_slowest_first() {
        let ops = aggregate(vec![
            ("a".into(), 1.0),
            ("b".into(), 3.0),
            ("a".into(), 2.0),
            ("c".into(), 2.0),
        ]);
        let summary: Vec<(&str, usize, f64)> = ops
            .iter()
            .map(|o| (o.op.as_str(), o.dispatches, o.seconds))
            .collect();
        assert_eq!(summary, [("a", 2, 3.0), ("b", 1, 3.0), ("c", 1, 2.0)]);
        assert!((ops[0].fraction - 3.0 / 8.0).abs() < 1e-12);
    }

    #[test]
    fn profile_names_each_dispatch_by_op_and_variant() {
        let ctx = crate::ops::testing::ctx();
        if !ctx.caps.timestamp_query {
            return;
        }
        let x = Tensor::from_f32(ctx, "x", &[2, 64], &[1.0; 128]).unwrap();
        let bytes = crate::quant::quantize(DType::Q8_0, &[0.5; 3 * 64]).unwrap();
        let weight = WeightMatrix::upload(ctx, "w", DType::Q8_0, 3, 64, &bytes).unwrap();
        let y = Tensor::new(ctx, "y", &[2, 3], Elem::F32).unwrap();
        ctx.start_profile().unwrap();
        let mut encoder = ctx.encoder();
        ops::matmul::encode(ctx, &mut encoder, &x, &weight, None, &y).unwrap();
        ops::matmul::encode(ctx, &mut encoder, &x, &weight, None, &y).unwrap();
        ctx.submit("profiled matmul", encoder).unwrap();
        let times = ctx.finish_profile().unwrap();
        // Tests share the context, so other tests' dispatches may be timed too.
        let ours = times
            .iter()
            .filter(|(name, _)| name.starts_with("matmul[GEMV,INPUT_VEC4,Q8_0"))
            .count();
        assert!(ours >= 2, "{times:?}");
        assert!(times.iter().all(|(name, _)| name != "unnamed"), "{times:?}");
        assert!(times.iter().all(|(_, s)| s.is_finite() && *s >= 0.0));
        let err = ctx.finish_profile().unwrap_err().to_string();
        assert_eq!(err, "no profile was started", "the profile ended");
    }
}
