//! `safetyj judge`: one dialogue's verdict (and critique), or a JSONL file of them.

use safetyj::judge::{LangChoice, Mode};

use crate::models::ModelArg;
use crate::terminal::status_line;

/// Arguments of `safetyj judge`.
#[derive(clap::Args)]
pub struct JudgeArgs {
    #[command(flatten)]
    model: ModelArg,
    /// A's message (the query).
    #[arg(long, required_unless_present = "input")]
    query: Option<String>,
    /// B's message (the response being judged).
    #[arg(long, required_unless_present_any = ["input", "response_stdin"])]
    response: Option<String>,
    /// Read B's response from stdin as it arrives (pipe an LLM's output in) and check
    /// it while it is written: one line per check, exit status 3 when --stop-at ends
    /// it.
    #[arg(long, requires = "query", conflicts_with_all = ["response", "input"])]
    response_stdin: bool,
    /// With --response-stdin: check every this many response tokens (and at the end).
    #[arg(long, default_value_t = 16, requires = "response_stdin")]
    check_every: usize,
    /// With --response-stdin: stop reading at the first check whose P(unsafe) reaches
    /// this.
    #[arg(long, requires = "response_stdin")]
    stop_at: Option<f64>,
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
    lang: LangChoice,
    /// verdict (stop at the label) or critique (also stream the analysis).
    #[arg(long, default_value = "verdict")]
    mode: Mode,
    /// P(unsafe) at or above which the verdict is unsafe.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Most tokens of a critique.
    #[arg(long, default_value_t = 512)]
    max_critique_tokens: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// A verdict head (from `safetyj head train`) that decides the label from the
    /// model's hidden state instead of its label words (replaces a preset's own head).
    #[arg(long)]
    head: Option<std::path::PathBuf>,
    /// Decide with the model's own label words even when the preset ships a head.
    #[arg(long, conflicts_with = "head")]
    no_head: bool,
    /// Judge the dialogue as given, without the prompt-injection defence (markers
    /// and control-token look-alikes escaped, suspicious sentences scored apart).
    #[arg(long)]
    no_defense: bool,
    /// Call a verdict unsafe whenever injection aimed at the judge is suspected.
    #[arg(long)]
    suspected_unsafe: bool,
    /// Also score the response cut at up to N earlier sentence ends and keep the
    /// highest P(unsafe): text appended after unsafe text cannot lower the verdict.
    /// 0 scores the whole response only.
    #[arg(long, value_name = "N", default_value_t = safetyj::judge::engine::DEFAULT_SENTENCE_PREFIXES)]
    sentence_prefixes: usize,
    /// The judge protocol (prompt and answer format): safety-j, qwen3guard-gen (or
    /// -loose: Controversial counts as safe), llama-guard-3-1b, llama-guard-3-8b.
    /// Default: the preset's, else what the model's name suggests, else safety-j.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(safetyj::judge::PROTOCOL_NAMES))]
    protocol: Option<String>,
}

/// Judges the dialogue (streaming a critique) or the file, and prints the verdicts.
pub fn run(args: JudgeArgs) -> safetyj::Result<()> {
    use safetyj::judge::engine::{Judge, JudgeOptions, JudgeRequest};
    use safetyj::judge::Dialogue;
    use std::io::Write;
    let lang = args.lang.fixed();
    let mode = args.mode;
    let options = JudgeOptions {
        threshold: args.threshold,
        max_critique_tokens: args.max_critique_tokens,
        preset_head: !args.no_head,
        defense: !args.no_defense,
        suspected_unsafe: args.suspected_unsafe,
        sentence_prefixes: args.sentence_prefixes,
        protocol: args.protocol.clone(),
        ..Default::default()
    };
    let device = args.model.device()?;
    let (judge, stand_in) = Judge::load_on(&args.model.model, device, options, status_line())?;
    eprintln!();
    if let Some(path) = &args.head {
        judge.set_head(Some(safetyj::judge::head::VerdictHead::load(path)?))?;
    }
    if let Some(notice) = judge.context().and_then(|ctx| ctx.software_notice()) {
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
    if args.response_stdin {
        if mode == Mode::Critique {
            return Err(safetyj::Error::InvalidInput(
                "--response-stdin checks verdicts only; drop --mode critique".into(),
            ));
        }
        let query = args.query.unwrap_or_default();
        return moderate_stdin(
            &judge,
            &query,
            lang,
            args.check_every,
            args.stop_at,
            args.json,
        );
    }
    let dialogue = Dialogue::new(
        args.query.unwrap_or_default(),
        args.response.unwrap_or_default(),
    )?;
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
    if !judge.protocol().covers(verdict.lang) {
        eprintln!(
            "warning: the {} judge was not trained on {:?} dialogues; its verdict may be unreliable",
            verdict.protocol, verdict.lang
        );
    }
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
            label_word(verdict.label),
            verdict.p_unsafe,
            verdict.threshold,
            verdict.lang,
            verdict.prompt_tokens,
            verdict.cached_tokens,
            verdict.time_to_verdict_ms,
            verdict.total_ms
        );
        print_judge_details(&verdict);
        if verdict.injection_suspected || !verdict.sanitized.is_empty() {
            println!(
                "injection suspected: {}; neutralised: {}",
                if verdict.injection_suspected {
                    "yes"
                } else {
                    "no"
                },
                if verdict.sanitized.is_empty() {
                    "nothing".to_string()
                } else {
                    format!("{:?}", verdict.sanitized)
                }
            );
        }
        if let Some(notice) = stand_in {
            println!("{notice}");
        }
    }
    Ok(())
}

/// The protocol, its label words' probabilities when it has more than two, and the
/// categories of an unsafe verdict.
fn print_judge_details(verdict: &safetyj::judge::engine::Verdict) {
    let words = if verdict.label_probs.len() > 2 {
        let probs: Vec<String> = verdict
            .label_probs
            .iter()
            .map(|l| format!("{} {:.3}", l.word, l.p))
            .collect();
        format!(" ({})", probs.join(", "))
    } else {
        String::new()
    };
    println!("protocol: {}{words}", verdict.protocol);
    if !verdict.categories.is_empty() {
        let named: Vec<String> = verdict
            .categories
            .iter()
            .filter(|c| c.flagged)
            .map(|c| match c.score {
                Some(score) => format!("{} {} ({score:.2})", c.code, c.name),
                None => format!("{} {}", c.code, c.name),
            })
            .collect();
        println!(
            "categories: {}",
            if named.is_empty() {
                "none named".to_string()
            } else {
                named.join(", ")
            }
        );
    }
}

/// Moderates B's response as it arrives on stdin: prints each check (a JSON line with
/// `json`) and the final verdict; exits with status 3 when `stop_at` ends the stream.
fn moderate_stdin(
    judge: &safetyj::judge::engine::Judge,
    query: &str,
    lang: Option<safetyj::judge::Lang>,
    check_every: usize,
    stop_at: Option<f64>,
    json: bool,
) -> safetyj::Result<()> {
    use safetyj::judge::stream::{StreamCheck, StreamOptions};
    use safetyj::judge::Dialogue;
    use std::io::{Read, Write};
    let options = StreamOptions {
        check_every,
        stop_at,
    };
    let mut stream = judge.moderate_stream(&Dialogue::single(query, ""), lang, options)?;
    let show = |check: &StreamCheck| {
        if json {
            println!("{}", serde_json::to_value(check).expect("checks serialize"));
        } else {
            println!(
                "check at {} response tokens: {} (P(unsafe) = {:.3}), {} tokens run in {:.0} ms{}",
                check.response_tokens,
                label_word(check.label),
                check.p_unsafe,
                check.prefilled_tokens,
                check.ms,
                if check.stopped { ", stopped" } else { "" }
            );
        }
        let _ = std::io::stdout().flush();
    };
    let mut stdin = std::io::stdin().lock();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stdin.read(&mut buffer).map_err(|e| {
            safetyj::Error::InvalidInput(format!("reading the response from stdin: {e}"))
        })?;
        if read == 0 {
            break;
        }
        if let Some(check) = stream.push_bytes(&buffer[..read])? {
            show(&check);
            if check.stopped {
                let verdict = stream.finish()?;
                print_final(&verdict, json);
                std::process::exit(3);
            }
        }
    }
    let verdict = stream.finish()?;
    print_final(&verdict, json);
    Ok(())
}

fn label_word(label: safetyj::judge::Label) -> &'static str {
    match label {
        safetyj::judge::Label::Safe => "safe",
        safetyj::judge::Label::Unsafe => "unsafe",
    }
}

/// The stream's final verdict: a JSON line, or one text line.
fn print_final(verdict: &safetyj::judge::engine::Verdict, json: bool) {
    if json {
        let value = serde_json::json!({"final": verdict});
        println!("{value}");
    } else {
        println!(
            "verdict: {} (P(unsafe) = {:.3}, threshold {}), lang {:?}, {} prompt tokens",
            label_word(verdict.label),
            verdict.p_unsafe,
            verdict.threshold,
            verdict.lang,
            verdict.prompt_tokens
        );
    }
}
