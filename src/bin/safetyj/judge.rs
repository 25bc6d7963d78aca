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
    /// model's hidden state instead of its label words.
    #[arg(long)]
    head: Option<std::path::PathBuf>,
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
        ..Default::default()
    };
    let device = args.model.device()?;
    let (mut judge, stand_in) = Judge::load_on(&args.model.model, device, options, status_line())?;
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
