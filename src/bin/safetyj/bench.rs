//! `safetyj bench`: load time, prefill and decode speed, time to verdict, streaming
//! checks against verdicts and GPU memory of a GGUF model, against ceilings measured
//! on the same adapter.

use safetyj::bench::stream::{StreamTiming, DEFAULT_LENGTHS};
use safetyj::bench::{BenchOptions, BenchReport, OpTime};

use crate::devices::gpu_context;
use crate::models::gguf_file;

/// Arguments of `safetyj bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A GGUF file, or a preset name with a GGUF file (downloaded on first use).
    #[arg(long, default_value = "qwen2.5-coder-0.5b")]
    model: String,
    /// Tokens in the prompt (one prefill step).
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    /// Tokens generated one at a time after the prompt.
    #[arg(long, default_value_t = 16)]
    gen_tokens: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also time each op of one prefill and one decode step (GPU timestamps).
    #[arg(long)]
    profile: bool,
    /// The engine to measure: gpu (the WGSL engine on the selected adapter, with
    /// ceilings measured there) or cpu (auto: cpu where there is no hardware GPU).
    #[arg(long, default_value = "gpu")]
    device: safetyj::device::Device,
    /// Response lengths in tokens at which a streaming check is timed against a
    /// one-shot verdict on the same text (comma-separated; lengths past the judge's
    /// context are skipped and listed).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_LENGTHS)]
    stream_lengths: Vec<usize>,
}

/// Runs the benchmark and prints its report as text or JSON.
pub fn run(args: BenchArgs) -> safetyj::Result<()> {
    let options = BenchOptions {
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        profile: args.profile,
        stream_lengths: args.stream_lengths,
    };
    let path = gguf_file(&args.model, "--model", "bench measures")?;
    if args.device.resolve() == safetyj::device::Device::Cpu {
        let report = safetyj::bench::run_cpu(&path.display().to_string(), &options)?;
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| safetyj::Error::InvalidInput(format!("report to JSON: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    let ctx = gpu_context()?;
    let report = safetyj::bench::run(ctx, &path.display().to_string(), &options)?;
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| safetyj::Error::InvalidInput(format!("report to JSON: {e}")))?;
        println!("{text}");
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(r: &BenchReport) {
    let gb = |bytes: f64| bytes / 1e9;
    println!("adapter   {} ({})", r.adapter, r.backend);
    println!(
        "model     {} ({} layers, hidden {})",
        r.model, r.layers, r.hidden
    );
    println!(
        "load      {:.2} s (warm-up with compilation {:.2} s)",
        r.load_seconds, r.warmup_seconds
    );
    println!(
        "prefill   {} tokens in {:.3} s: {:.2} tok/s, {:.3} GFLOP/s = {:.1}% of the GEMM ceiling",
        r.prompt_tokens,
        r.prefill_seconds,
        r.prefill_tokens_per_second,
        r.prefill_flops_per_second / 1e9,
        100.0 * r.prefill_matmul_fraction
    );
    println!(
        "decode    {} tokens in {:.3} s: {:.2} tok/s, {:.3} GB/s of weights = {:.1}% of copy bandwidth",
        r.gen_tokens,
        r.decode_seconds,
        r.decode_tokens_per_second,
        gb(r.weight_bytes_per_token as f64 * r.decode_tokens_per_second),
        100.0 * r.decode_bandwidth_fraction
    );
    println!(
        "memory    {:.3} GB on the GPU ({:.3} GB weights; {:.3} GB read per token)",
        gb(r.gpu_bytes as f64),
        gb(r.weight_gpu_bytes as f64),
        gb(r.weight_bytes_per_token as f64)
    );
    println!(
        "ceilings  copy {:.2} GB/s (read + write), GEMM {:.3} GFLOP/s",
        gb(r.copy_bandwidth_bytes_per_second),
        r.matmul_flops_per_second / 1e9
    );
    if let (Some(prefill), Some(decode)) = (r.prefill_cpu_seconds, r.decode_cpu_seconds) {
        println!(
            "cpu       prefill {prefill:.2} s, decode {decode:.2} s of this process's CPU time"
        );
    }
    if let (Some(prefill), Some(decode)) = (
        r.prefill_host_cpu_seconds,
        r.decode_host_cpu_seconds_per_token,
    ) {
        println!(
            "host      prefill {:.2} ms, decode {:.3} ms per token of the calling thread's CPU; {} bind groups made while timed",
            1e3 * prefill,
            1e3 * decode,
            r.timed_bind_groups_created
        );
    }
    if let Some(v) = &r.verdict {
        println!(
            "verdict   {:.0} ms cold ({} prompt tokens), {:.0} ms with the template cached ({} of {} tokens)",
            v.cold_ms, v.cold_prompt_tokens, v.warm_ms, v.warm_cached_tokens, v.warm_prompt_tokens
        );
    }
    if let Some(stream) = &r.stream {
        print_stream(stream);
    }
    if let Some(profile) = &r.profile {
        print_ops("prefill profile", &profile.prefill);
        print_ops("decode profile", &profile.decode);
    }
}

/// The stream section as a table: a check's cost against a cold verdict's.
fn print_stream(s: &StreamTiming) {
    println!(
        "stream    a check every {} response tokens against a cold one-shot verdict on the same text",
        s.check_every
    );
    println!(
        "  {:>8} {:>9} {:>10} {:>12} {:>11} {:>14}",
        "response", "check ms", "median ms", "check tokens", "verdict ms", "verdict tokens"
    );
    for row in &s.rows {
        println!(
            "  {:>8} {:>9.0} {:>10.0} {:>12} {:>11.0} {:>14}",
            row.response_tokens,
            row.check_ms,
            row.check_median_ms,
            row.check_prefilled_tokens,
            row.verdict_ms,
            row.verdict_prompt_tokens
        );
    }
    for skipped in &s.skipped {
        println!("  {:>8} skipped: {}", skipped.target_tokens, skipped.reason);
    }
}

fn print_ops(title: &str, ops: &[OpTime]) {
    let total: f64 = ops.iter().map(|o| o.seconds).sum();
    println!("{title} (GPU time {:.3} s)", total);
    for o in ops {
        println!(
            "  {:<36} {:>5} × {:>10.3} ms = {:>9.3} ms {:>5.1}%",
            o.op,
            o.dispatches,
            1e3 * o.seconds / o.dispatches as f64,
            1e3 * o.seconds,
            100.0 * o.fraction
        );
    }
}
