//! The `safetyj` command-line tool: a thin layer over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use safetyj::gpu::{Context, ContextOptions};

#[derive(Parser)]
#[command(
    name = "safetyj",
    version,
    about = "On-device bilingual LLM safety judge (Safety-J) on WebGPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List GPU adapters with their backend, limits and features, and show which one
    /// safetyj would use (override with SAFETYJ_BACKEND / SAFETYJ_ADAPTER).
    Devices,
    /// Benchmarks of judging quality: label-level metrics, or the critique
    /// meta-evaluation, against OpenAI-compatible endpoints.
    Eval {
        #[command(subcommand)]
        command: Box<EvalCommand>,
    },
    /// Convert a Hugging Face checkpoint (bf16/f16/f32 safetensors) into a quantized
    /// GGUF file with its config, tokenizer and chat template in the metadata.
    Quantize {
        /// A checkpoint directory (config.json + safetensors) or one .safetensors file
        /// with config.json beside it.
        source: std::path::PathBuf,
        /// The GGUF file to write.
        #[arg(short, long)]
        out: std::path::PathBuf,
        /// Block type of the matrices: q4_k, q4_0 or q8_0.
        #[arg(long = "type", default_value = "q4_k", value_parser = parse_quant_type)]
        dtype: safetyj::quant::DType,
    },
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

fn parse_quant_type(name: &str) -> Result<safetyj::quant::DType, String> {
    use safetyj::model::convert::QUANTIZE_TYPES;
    QUANTIZE_TYPES
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("\"{name}\" is not one of q4_k, q4_0, q8_0"))
}

fn quantize(
    source: &std::path::Path,
    out: &std::path::Path,
    dtype: safetyj::quant::DType,
) -> safetyj::Result<()> {
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tensors {elapsed_precise} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = safetyj::model::convert::quantize_checkpoint(
        source,
        out,
        dtype,
        &mut |done, total, tensor| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(tensor.to_string());
        },
    );
    bar.finish_and_clear();
    let report = report?;
    println!(
        "wrote {} ({}, {dtype}): {} tensors, {} in → {} out, {:.1} s{}",
        out.display(),
        report.arch.gguf_name(),
        report.tensors,
        human_bytes(report.bytes_in),
        human_bytes(report.bytes_out),
        started.elapsed().as_secs_f64(),
        if report.tokenizer {
            ""
        } else {
            " (no tokenizer found beside the checkpoint)"
        }
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices(),
        Command::Eval { command } => eval(*command),
        Command::Quantize { source, out, dtype } => quantize(&source, &out, dtype),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

fn devices() -> safetyj::Result<()> {
    let options = ContextOptions::from_env();
    let adapters = Context::adapters(&options);
    if adapters.is_empty() {
        println!("no GPU adapters found (on Linux without a GPU, install mesa-vulkan-drivers for lavapipe)");
    }
    for (i, a) in adapters.iter().enumerate() {
        println!("[{i}] {} ({}, {})", a.name, a.backend, a.device_type);
        if !a.driver.is_empty() {
            println!("    driver: {}", a.driver);
        }
        let l = &a.limits;
        println!(
            "    limits: storage binding {}, buffer {}, workgroup storage {} KiB, {} invocations/workgroup, {} workgroups/dimension, {} storage buffers/stage",
            mib(l.max_storage_buffer_binding_size),
            mib(l.max_buffer_size),
            l.max_compute_workgroup_storage_size / 1024,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
        );
        let wanted = [
            (wgpu::Features::SHADER_F16, "shader-f16"),
            (wgpu::Features::SUBGROUP, "subgroups"),
            (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
        ];
        let features: Vec<String> = wanted
            .iter()
            .map(|(f, name)| {
                format!(
                    "{name} {}",
                    if a.features.contains(*f) { "yes" } else { "no" }
                )
            })
            .collect();
        println!("    features: {}", features.join(", "));
    }
    let ctx = pollster::block_on(Context::new(&options))?;
    println!("selected: {} ({:?})", ctx.info.name, ctx.info.backend);
    if let Some(notice) = ctx.software_notice() {
        println!("{notice}");
    }
    Ok(())
}

/// Where a model behind an OpenAI-compatible chat-completions endpoint is.
#[derive(clap::Args)]
struct EndpointArgs {
    /// Base URL of the server (`http://host:8000`, `…/v1`, or the full
    /// `…/v1/chat/completions`).
    #[arg(long = "judge-url")]
    url: String,
    /// The model name the server knows the judge by.
    #[arg(long = "judge-model")]
    model: String,
    /// Environment variable holding the judge endpoint's API key.
    #[arg(long = "judge-key-env")]
    key_env: Option<String>,
}

/// What every eval run shares.
#[derive(clap::Args)]
struct RunArgs {
    /// Dataset files: JSON arrays or JSONL.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// Output folder: results.jsonl (resumed when present) and the reports.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Take only the first N items of each file.
    #[arg(long, conflicts_with = "sample")]
    limit: Option<usize>,
    /// Take N items of each file drawn with `--seed` (in file order).
    #[arg(long)]
    sample: Option<usize>,
    /// Seed of `--sample`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Items in flight at once.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds allowed for one request.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Retries of a request after 429, 5xx, timeouts and connection failures.
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// A system message sent before every prompt (e.g. "You are a helpful
    /// assistant.", the reference prompts' first line); without one, some servers
    /// apply their chat template's default system message.
    #[arg(long)]
    system_prompt: Option<String>,
    /// Log a failed item to errors.jsonl and go on (a rerun retries it), instead of
    /// stopping at the first failure.
    #[arg(long)]
    keep_going: bool,
}

impl RunArgs {
    fn selection(&self) -> safetyj::eval::datasets::Selection {
        use safetyj::eval::datasets::Selection;
        match (self.limit, self.sample) {
            (Some(n), _) => Selection::First(n),
            (None, Some(n)) => Selection::Sample { n, seed: self.seed },
            (None, None) => Selection::All,
        }
    }

    fn backend(
        &self,
        url: &str,
        model: &str,
        key_env: &Option<String>,
    ) -> safetyj::Result<safetyj::eval::http::OpenAiBackend> {
        use safetyj::eval::http::{OpenAiBackend, OpenAiConfig};
        OpenAiBackend::new(OpenAiConfig {
            api_key_env: key_env.clone(),
            timeout: std::time::Duration::from_secs(self.timeout_s),
            max_retries: self.retries,
            system_prompt: self.system_prompt.clone(),
            ..OpenAiConfig::new(url, model)
        })
    }

    fn options(&self) -> safetyj::eval::runner::RunOptions {
        safetyj::eval::runner::RunOptions {
            workers: self.workers.max(1),
            keep_going: self.keep_going,
        }
    }
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Label-level benchmark: accuracy, precision/recall (unsafe), recall (safe), F1,
    /// confusion matrix and unparsed count per dataset and overall.
    Label {
        #[command(flatten)]
        judge: EndpointArgs,
        #[command(flatten)]
        run: RunArgs,
        /// New-token cap of each verdict. Safety-J states its label first, so a few
        /// dozen suffice; raise it to keep whole analyses in the results.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
    },
    /// Critique meta-evaluation: the judge writes critiques, the evaluator extracts
    /// and checks their atomic information units; macro and micro P/R/F1.
    Critique {
        #[command(flatten)]
        judge: EndpointArgs,
        /// Base URL of the evaluator's server.
        #[arg(long)]
        evaluator_url: String,
        /// The model name the server knows the evaluator by.
        #[arg(long)]
        evaluator_model: String,
        /// Environment variable holding the evaluator endpoint's API key.
        #[arg(long)]
        evaluator_key_env: Option<String>,
        #[command(flatten)]
        run: RunArgs,
        /// New-token cap of each critique and each evaluator call (the reference
        /// code allows 4096).
        #[arg(long, default_value_t = 4096)]
        max_tokens: usize,
    },
}

fn eval(command: EvalCommand) -> safetyj::Result<()> {
    use safetyj::eval::{critique::CritiquePipeline, datasets, http::HttpJudge, report, runner};
    match command {
        EvalCommand::Label {
            judge,
            run,
            max_tokens,
        } => {
            let mut items = Vec::new();
            for file in &run.files {
                items.extend(datasets::select(
                    &datasets::load_label_file(file)?,
                    run.selection(),
                ));
            }
            let judge = HttpJudge {
                chat: run.backend(&judge.url, &judge.model, &judge.key_env)?,
                max_tokens,
            };
            let report = runner::run_label_eval(&items, &judge, &run.out, run.options())?;
            print!("{}", report::label_markdown(&report));
        }
        EvalCommand::Critique {
            judge,
            evaluator_url,
            evaluator_model,
            evaluator_key_env,
            run,
            max_tokens,
        } => {
            let mut items = Vec::new();
            for file in &run.files {
                items.extend(datasets::select(
                    &datasets::load_critique_file(file)?,
                    run.selection(),
                ));
            }
            let judge = HttpJudge {
                chat: run.backend(&judge.url, &judge.model, &judge.key_env)?,
                max_tokens,
            };
            let evaluator = run.backend(&evaluator_url, &evaluator_model, &evaluator_key_env)?;
            let pipeline = CritiquePipeline {
                judge: &judge,
                evaluator: &evaluator,
                max_tokens,
            };
            let report = runner::run_critique_eval(&items, &pipeline, &run.out, run.options())?;
            print!("{}", report::critique_markdown(&report));
        }
    }
    Ok(())
}
