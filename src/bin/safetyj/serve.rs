//! `safetyj serve`: the judge as a local HTTP service (`safetyj::serve`).

use crate::models::ModelArg;

/// Arguments of `safetyj serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
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
    /// Largest request body in bytes (413 above; a streamed body of /v1/judge/stream
    /// is cut off there).
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
    /// Judge dialogues as given, without the prompt-injection defence.
    #[arg(long)]
    no_defense: bool,
    /// Call a verdict unsafe whenever injection aimed at the judge is suspected.
    #[arg(long)]
    suspected_unsafe: bool,
    /// Also score responses cut at up to N earlier sentence ends, keeping the
    /// highest P(unsafe) (as `safetyj judge --sentence-prefixes`; 0: off).
    #[arg(long, value_name = "N", default_value_t = safetyj::judge::engine::DEFAULT_SENTENCE_PREFIXES)]
    sentence_prefixes: usize,
    /// The judge protocol (prompt and answer format): safety-j, qwen3guard-gen (or
    /// -loose: Controversial counts as safe), llama-guard-3-1b, llama-guard-3-8b.
    /// Default: the preset's, else what the model's name suggests, else safety-j.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(safetyj::judge::PROTOCOL_NAMES))]
    protocol: Option<String>,
}

impl ServeArgs {
    /// The service options these flags ask for.
    pub fn options(&self) -> safetyj::Result<safetyj::serve::ServeOptions> {
        Ok(safetyj::serve::ServeOptions {
            model: self.model.model.clone(),
            host: self.host.clone(),
            port: self.port,
            api_key_env: self.api_key_env.clone(),
            max_queue: self.max_queue,
            max_body: self.max_body,
            request_timeout: std::time::Duration::from_secs(self.request_timeout_s),
            device: self.model.device()?,
            judge: safetyj::judge::engine::JudgeOptions {
                threshold: self.threshold,
                max_critique_tokens: self.max_critique_tokens,
                defense: !self.no_defense,
                suspected_unsafe: self.suspected_unsafe,
                sentence_prefixes: self.sentence_prefixes,
                protocol: self.protocol.clone(),
                ..Default::default()
            },
        })
    }
}

/// Loads the model once and serves until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> safetyj::Result<()> {
    safetyj::serve::run(&args.options()?)
}
