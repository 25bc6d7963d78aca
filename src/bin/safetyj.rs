//! The `safetyj` command-line tool: a thin layer over the library.

#[cfg(target_arch = "wasm32")]
compile_error!(
    "the safetyj CLI is native-only; build the browser library with \
     `cargo build --lib --target wasm32-unknown-unknown --no-default-features --features web`"
);

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use safetyj::bench::{BenchOptions, BenchReport, OpTime};
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
    /// Judge whether B's response in a dialogue is safe: verdict, P(unsafe), and
    /// (with --mode critique) a streamed critique.
    Judge(JudgeArgs),
    /// Generate text from a model, streaming to stdout.
    Generate(GenerateArgs),
    /// Serve the judge over HTTP: /v1/judge, OpenAI-compatible /v1/moderations and
    /// /v1/chat/completions, /v1/models, /health. Loads the model once.
    Serve(ServeArgs),
    /// Benchmarks of judging quality: label-level metrics, or the critique
    /// meta-evaluation, against OpenAI-compatible endpoints.
    Eval {
        #[command(subcommand)]
        command: Box<EvalCommand>,
    },
    /// Measure load time, prefill and decode speed, time to verdict and GPU memory of
    /// a GGUF model, against copy-bandwidth and GEMM ceilings measured on the same
    /// adapter.
    Bench {
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
    },
    /// Write a GGUF file with the metadata and exactly the tensor names, types and
    /// shapes of another, every tensor filled with seeded random valid data (speed
    /// does not depend on the values), or with --header-only the header alone: a
    /// few MB that stand in for the real file as --like wherever it cannot travel.
    Synth {
        /// The model to copy the layout of: a GGUF file, or a preset name (fetched into
        /// the cache on first use). Only its header is read, so a header-only file
        /// made by --header-only works as well as the real one.
        #[arg(long)]
        like: String,
        /// The GGUF file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Write only the header: metadata (tokenizer included) and tensor infos, no
        /// tensor data. Such a file is not a loadable model.
        #[arg(long)]
        header_only: bool,
        /// Seed of the random weights: the same seed writes the same bytes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
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

/// The GGUF file `model` names: a path, or a preset with a GGUF file (downloaded into
/// the cache on first use, with a status line). `flag` names the option in errors.
fn gguf_file(model: &str, flag: &str, purpose: &str) -> safetyj::Result<std::path::PathBuf> {
    use safetyj::fetch::{presets, resolve, ModelKind};
    let catalog = presets::catalog()?;
    if !std::path::Path::new(model).exists() && catalog.find(model).is_none() {
        return Err(safetyj::Error::InvalidInput(format!(
            "{flag} \"{model}\" is neither an existing file nor a preset (presets: {})",
            catalog.names()
        )));
    }
    let mut show = status_line();
    let mut downloaded = false;
    let resolved = resolve(model, &mut |p| {
        downloaded = true;
        show(&format!("downloading {}: {} MiB", p.file, p.done >> 20))
    })?;
    if downloaded {
        eprintln!();
    }
    match resolved.kind {
        ModelKind::Gguf(path) => Ok(path),
        ModelKind::HfDir(path) => Err(safetyj::Error::InvalidInput(format!(
            "{flag} {} is a Hugging Face folder; {purpose} a GGUF file (`safetyj quantize` makes one)",
            path.display()
        ))),
    }
}

fn synth(like: &str, out: &std::path::Path, header_only: bool, seed: u64) -> safetyj::Result<()> {
    use safetyj::model::synth::{synth_gguf, SynthOptions};
    let started = std::time::Instant::now();
    let like = gguf_file(like, "--like", "synth copies the layout of")?;
    let report = synth_gguf(like.as_path(), out, &SynthOptions { seed, header_only })?;
    println!(
        "wrote {} ({} tensors, {}, {}) like {}, {:.1} s",
        out.display(),
        report.tensors,
        human_bytes(report.bytes),
        if header_only {
            "header only".to_string()
        } else {
            format!("random weights, seed {seed}")
        },
        like.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices(),
        Command::Eval { command } => eval(*command),
        Command::Bench {
            model,
            prompt_tokens,
            gen_tokens,
            json,
            profile,
        } => bench(
            &model,
            &BenchOptions {
                prompt_tokens,
                gen_tokens,
                profile,
            },
            json,
        ),
        Command::Judge(args) => judge(args),
        Command::Generate(args) => generate(args),
        Command::Serve(args) => safetyj::serve::run(&args.options()),
        Command::Quantize { source, out, dtype } => quantize(&source, &out, dtype),
        Command::Synth {
            like,
            out,
            header_only,
            seed,
        } => synth(&like, &out, header_only, seed),
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
    #[arg(
        long = "judge-url",
        required_unless_present = "local",
        requires = "model"
    )]
    url: Option<String>,
    /// The model name the server knows the judge by.
    #[arg(long = "judge-model")]
    model: Option<String>,
    /// Judge on this machine's GPU instead: a preset, GGUF file or Hugging Face
    /// folder (P(unsafe) comes with each verdict).
    #[arg(long = "judge-local", conflicts_with = "url")]
    local: Option<String>,
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
        /// Base URL of the evaluator's server; without it, the local judge model
        /// (`--judge-local`) is also the evaluator.
        #[arg(long, requires = "evaluator_model")]
        evaluator_url: Option<String>,
        /// The model name the server knows the evaluator by.
        #[arg(long)]
        evaluator_model: Option<String>,
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

/// The judge an eval runs: a chat-completions endpoint, or a model on this GPU.
enum EvalJudge {
    Http(safetyj::eval::http::HttpJudge),
    Local(Box<safetyj::judge::engine::Judge>),
}

impl EvalJudge {
    fn new(args: &EndpointArgs, run: &RunArgs, max_tokens: usize) -> safetyj::Result<EvalJudge> {
        use safetyj::judge::engine::{Judge, JudgeOptions};
        match (&args.url, &args.model, &args.local) {
            (Some(url), Some(model), None) => Ok(EvalJudge::Http(safetyj::eval::http::HttpJudge {
                chat: run.backend(url, model, &args.key_env)?,
                max_tokens,
            })),
            (None, _, Some(local)) => {
                let options = JudgeOptions {
                    max_critique_tokens: max_tokens,
                    ..Default::default()
                };
                let (judge, stand_in) = Judge::load(local, options, status_line())?;
                eprintln!();
                if let Some(notice) = stand_in {
                    eprintln!("{notice}");
                }
                Ok(EvalJudge::Local(Box::new(judge)))
            }
            _ => Err(safetyj::Error::InvalidInput(
                "give either --judge-url with --judge-model, or --judge-local".into(),
            )),
        }
    }

    fn backend(&self) -> &dyn safetyj::eval::JudgeBackend {
        match self {
            EvalJudge::Http(judge) => judge,
            EvalJudge::Local(judge) => judge.as_ref(),
        }
    }
}

fn eval(command: EvalCommand) -> safetyj::Result<()> {
    use safetyj::eval::{critique::CritiquePipeline, datasets, report, runner, ChatBackend};
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
            let judge = EvalJudge::new(&judge, &run, max_tokens)?;
            let report = runner::run_label_eval(&items, judge.backend(), &run.out, run.options())?;
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
            let judge = EvalJudge::new(&judge, &run, max_tokens)?;
            let http_evaluator = match (&evaluator_url, &evaluator_model) {
                (Some(url), Some(model)) => Some(run.backend(url, model, &evaluator_key_env)?),
                _ => None,
            };
            let evaluator: &dyn ChatBackend = match (&http_evaluator, &judge) {
                (Some(http), _) => http,
                (None, EvalJudge::Local(local)) => local.as_ref(),
                (None, EvalJudge::Http(_)) => {
                    return Err(safetyj::Error::InvalidInput(
                        "give --evaluator-url and --evaluator-model (or judge with --judge-local, which then also evaluates)".into(),
                    ))
                }
            };
            let pipeline = CritiquePipeline {
                judge: judge.backend(),
                evaluator,
                max_tokens,
            };
            let report = runner::run_critique_eval(&items, &pipeline, &run.out, run.options())?;
            print!("{}", report::critique_markdown(&report));
        }
    }
    Ok(())
}

fn bench(model: &str, options: &BenchOptions, json: bool) -> safetyj::Result<()> {
    let path = gguf_file(model, "--model", "bench measures")?;
    let ctx = gpu_context()?;
    let report = safetyj::bench::run(ctx, &path.display().to_string(), options)?;
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| safetyj::Error::InvalidInput(format!("report to JSON: {e}")))?;
        println!("{text}");
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Where the model comes from: a GGUF file, a Hugging Face folder, or a preset name
/// from models/presets.json (downloaded into the cache on first use).
#[derive(clap::Args)]
struct ModelArg {
    /// GGUF file, Hugging Face checkpoint folder, or preset name from models/presets.json.
    #[arg(long, default_value = "qwen2.5-coder-0.5b")]
    model: String,
}

/// A progress callback that rewrites one stderr line, at most twice a second.
fn status_line() -> impl FnMut(&str) {
    let mut last: Option<std::time::Instant> = None;
    move |line: &str| {
        if last.is_none_or(|t| t.elapsed().as_millis() >= 500) {
            last = Some(std::time::Instant::now());
            eprint!("\r{line}\x1b[K");
        }
    }
}

fn gpu_context() -> safetyj::Result<Context> {
    let ctx = Context::new_blocking()?;
    if let Some(notice) = ctx.software_notice() {
        eprintln!("{notice}");
    }
    Ok(ctx)
}

#[derive(clap::Args)]
struct JudgeArgs {
    #[command(flatten)]
    model: ModelArg,
    /// A's message (the query).
    #[arg(long, required_unless_present = "input")]
    query: Option<String>,
    /// B's message (the response being judged).
    #[arg(long, required_unless_present = "input")]
    response: Option<String>,
    /// Judge every line of a JSONL file ({"query","response"} or {"conversation":[…]}
    /// per line) instead; needs --output.
    #[arg(long, requires = "output", conflicts_with_all = ["query", "response"])]
    input: Option<std::path::PathBuf>,
    /// Where batch verdicts are appended, one JSON object per input line; a rerun
    /// resumes after the lines already there.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Template language: en, zh, or auto (from the dialogue's text).
    #[arg(long, default_value = "auto")]
    lang: String,
    /// verdict (stop at the label) or critique (also stream the analysis).
    #[arg(long, default_value = "verdict")]
    mode: String,
    /// P(unsafe) at or above which the verdict is unsafe.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Most tokens of a critique.
    #[arg(long, default_value_t = 512)]
    max_critique_tokens: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn judge(args: JudgeArgs) -> safetyj::Result<()> {
    use safetyj::judge::engine::{Judge, JudgeOptions, JudgeRequest};
    use safetyj::judge::{Dialogue, Lang, Mode};
    use std::io::Write;
    let lang = match args.lang.as_str() {
        "auto" => None,
        "en" => Some(Lang::En),
        "zh" => Some(Lang::Zh),
        other => {
            return Err(safetyj::Error::InvalidInput(format!(
                "--lang must be en, zh or auto, not \"{other}\""
            )))
        }
    };
    let mode = match args.mode.as_str() {
        "verdict" => Mode::Verdict,
        "critique" => Mode::Critique,
        other => {
            return Err(safetyj::Error::InvalidInput(format!(
                "--mode must be verdict or critique, not \"{other}\""
            )))
        }
    };
    let options = JudgeOptions {
        threshold: args.threshold,
        max_critique_tokens: args.max_critique_tokens,
        ..Default::default()
    };
    let (judge, stand_in) = Judge::load(&args.model.model, options, status_line())?;
    eprintln!();
    if let Some(notice) = judge.context().software_notice() {
        eprintln!("{notice}");
    }
    if let Some(notice) = &stand_in {
        eprintln!("{notice}");
    }
    if let (Some(input), Some(output)) = (&args.input, &args.output) {
        let summary = safetyj::judge::batch::run(&judge, input, output, mode, |done, total| {
            eprint!("\rjudged {done}/{total} lines");
        })?;
        eprintln!();
        println!(
            "{} judged, {} errors recorded, {} already done (resumed) -> {}",
            summary.judged,
            summary.failed,
            summary.resumed,
            output.display()
        );
        return Ok(());
    }
    let dialogue = Dialogue::single(
        args.query.unwrap_or_default(),
        args.response.unwrap_or_default(),
    );
    let request = JudgeRequest {
        dialogue,
        lang,
        mode,
    };
    let streaming = !args.json && mode == Mode::Critique;
    if streaming {
        print!("analysis: ");
    }
    let verdict = judge.evaluate(&request, |piece| {
        if streaming {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        }
        std::ops::ControlFlow::Continue(())
    })?;
    if args.json {
        let mut value = serde_json::to_value(&verdict).expect("verdicts serialize");
        value["model"] = serde_json::Value::String(args.model.model.clone());
        value["stand_in"] = serde_json::Value::Bool(stand_in.is_some());
        println!("{value}");
    } else {
        if streaming {
            println!();
        }
        println!(
            "verdict: {} (P(unsafe) = {:.3}, threshold {}), lang {:?}, {} prompt tokens ({} cached), time to verdict {:.0} ms, total {:.0} ms",
            match verdict.label {
                safetyj::judge::Label::Safe => "safe",
                safetyj::judge::Label::Unsafe => "unsafe",
            },
            verdict.p_unsafe,
            verdict.threshold,
            verdict.lang,
            verdict.prompt_tokens,
            verdict.cached_tokens,
            verdict.time_to_verdict_ms,
            verdict.total_ms
        );
        if let Some(notice) = stand_in {
            println!("{notice}");
        }
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
    if let Some(profile) = &r.profile {
        print_ops("prefill profile", &profile.prefill);
        print_ops("decode profile", &profile.decode);
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

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Environment variable holding the API key; clients then send `Authorization:
    /// Bearer <key>` (401 otherwise).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Requests that may wait behind the running one; more are answered 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Seconds from a request's arrival to its answer (504 after; generation stops).
    #[arg(long, default_value_t = 300)]
    request_timeout_s: u64,
    /// P(unsafe) at or above which a verdict is unsafe (requests may ask for another
    /// in verdict mode).
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Most tokens of a critique (requests may ask for fewer).
    #[arg(long, default_value_t = 512)]
    max_critique_tokens: usize,
}

impl ServeArgs {
    fn options(&self) -> safetyj::serve::ServeOptions {
        safetyj::serve::ServeOptions {
            model: self.model.model.clone(),
            host: self.host.clone(),
            port: self.port,
            api_key_env: self.api_key_env.clone(),
            max_queue: self.max_queue,
            max_body: self.max_body,
            request_timeout: std::time::Duration::from_secs(self.request_timeout_s),
            judge: safetyj::judge::engine::JudgeOptions {
                threshold: self.threshold,
                max_critique_tokens: self.max_critique_tokens,
                ..Default::default()
            },
        }
    }
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArg,
    /// The prompt text (plain text: never parsed for control tokens).
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a ChatML user turn (system "You are a helpful assistant.")
    /// and stop at <|im_end|>.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k for sampling (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: u32,
    /// Top-p for sampling (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Seed for sampling: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn generate(args: GenerateArgs) -> safetyj::Result<()> {
    use safetyj::model::generate::{generate, GenerateOptions, Sampling};
    use std::io::Write;
    let ctx = gpu_context()?;
    let (model, tokenizer, _) =
        safetyj::model::open::open_named(&ctx, &args.model.model, status_line())?;
    eprintln!();
    let mut ids = Vec::new();
    if args.chat {
        ids.extend(tokenizer.encode_special(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
        )?);
        ids.extend(tokenizer.encode_text(&args.prompt)?);
        ids.extend(tokenizer.encode_special("<|im_end|>\n<|im_start|>assistant\n")?);
    } else {
        ids.extend(tokenizer.bos_id());
        ids.extend(tokenizer.encode_text(&args.prompt)?);
    }
    let sampling = if args.temperature > 0.0 {
        Sampling::Random {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        }
    } else {
        Sampling::Greedy
    };
    let mut stop_tokens: Vec<u32> = tokenizer.eos_id().into_iter().collect();
    stop_tokens.extend(tokenizer.token_id("<|im_end|>"));
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop_tokens,
        stop_strings: Vec::new(),
    };
    let capacity = (ids.len() + args.max_tokens + 1).min(model.config.context);
    let mut session = model.new_session(&ctx, capacity)?;
    let generation = generate(
        &ctx,
        &model,
        &tokenizer,
        &mut session,
        &ids,
        &options,
        |piece| {
            print!("{piece}");
            let _ = std::io::stdout().flush();
            std::ops::ControlFlow::Continue(())
        },
    )?;
    println!();
    let tokens = generation.tokens.len();
    eprintln!(
        "{} prompt tokens in {:.2} s ({:.1} tok/s); {tokens} generated in {:.2} s ({:.1} tok/s); stop: {:?}",
        ids.len(),
        generation.prefill.as_secs_f64(),
        ids.len() as f64 / generation.prefill.as_secs_f64(),
        generation.decode.as_secs_f64(),
        tokens as f64 / generation.decode.as_secs_f64().max(1e-9),
        generation.stop
    );
    Ok(())
}
