//! `safetyj eval`: label-level metrics and the critique meta-evaluation, judged by an
//! OpenAI-compatible endpoint or a model on this machine's GPU.

use clap::Subcommand;

use crate::terminal::status_line;

/// Where a model behind an OpenAI-compatible chat-completions endpoint is.
#[derive(clap::Args)]
pub struct EndpointArgs {
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
    /// Escape control-token look-alikes (`<|im_end|>`, …) and answer markers in the
    /// dialogues before sending them to --judge-url. The server tokenizes what it is
    /// sent, and many (vLLM, llama.cpp's server, TGI) parse special tokens in message
    /// text, so a judged response could otherwise close the judge's turn. Off by
    /// default: it changes the text a benchmark sends.
    #[arg(long = "judge-url-neutralize", requires = "url")]
    neutralize: bool,
    /// The judge protocol (prompt and answer format): safety-j, qwen3guard-gen (or
    /// -loose: Controversial counts as safe), llama-guard-3-1b, llama-guard-3-8b.
    /// Default: the preset's, else what the model's name suggests, else safety-j.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(safetyj::judge::PROTOCOL_NAMES))]
    protocol: Option<String>,
}

/// What every eval run shares.
#[derive(clap::Args)]
pub struct RunArgs {
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

/// The two benchmarks of `safetyj eval`.
#[derive(Subcommand)]
pub enum EvalCommand {
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
    /// Prompt-injection robustness of the local judge: flip rates per attack, family
    /// and language of committed attack lists, beside clean accuracy, with and
    /// without the defence (`--defense`).
    Injection(crate::injection::InjectionArgs),
}

/// The judge an eval runs: a chat-completions endpoint, or a model on this GPU.
enum EvalJudge {
    Http(Box<safetyj::eval::http::HttpJudge>),
    Local(Box<safetyj::judge::engine::Judge>),
}

impl EvalJudge {
    fn new(args: &EndpointArgs, run: &RunArgs, max_tokens: usize) -> safetyj::Result<EvalJudge> {
        use safetyj::judge::engine::{Judge, JudgeOptions};
        match (&args.url, &args.model, &args.local) {
            (Some(url), Some(model), None) => {
                Ok(EvalJudge::Http(Box::new(safetyj::eval::http::HttpJudge {
                    chat: run.backend(url, model, &args.key_env)?,
                    protocol: safetyj::judge::protocol_named(
                        args.protocol.as_deref().unwrap_or("safety-j"),
                    )?,
                    max_tokens,
                    neutralize: args.neutralize,
                })))
            }
            (None, _, Some(local)) => {
                let options = JudgeOptions {
                    max_critique_tokens: max_tokens,
                    protocol: args.protocol.clone(),
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
            EvalJudge::Http(judge) => judge.as_ref(),
            EvalJudge::Local(judge) => judge.as_ref(),
        }
    }
}

/// Runs one benchmark and prints its report as Markdown.
pub fn run(command: EvalCommand) -> safetyj::Result<()> {
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
        EvalCommand::Injection(args) => crate::injection::run(args)?,
    }
    Ok(())
}
