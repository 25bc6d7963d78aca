//! `safetyj eval injection`: how often attacks in the judged text flip the local
//! judge's verdicts, with and without the defence.

use crate::models::ModelArg;
use crate::terminal::status_line;

/// Arguments of `safetyj eval injection`.
#[derive(clap::Args)]
pub struct InjectionArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Labelled dataset files (JSON arrays or JSONL), as `eval label` takes.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// Attack lists (repeatable); each list is reported on its own.
    #[arg(long = "attacks", default_values = ["data/attacks/injection.json", "data/attacks/injection_heldout.json", "data/attacks/injection_heldout2.json"])]
    attacks: Vec<std::path::PathBuf>,
    /// Only these attack ids (repeatable); all by default.
    #[arg(long = "attack")]
    only: Vec<String>,
    /// Output folder: results.jsonl (resumed when present), report.json, report.md.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Take N unsafe and N safe items of each file, drawn with `--seed`.
    #[arg(long)]
    per_label: Option<usize>,
    /// Seed of `--per-label`.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Judge through the defence: markers and control-token look-alikes escaped, and
    /// the response with suspicious sentences cut scored too (unsafe if either is).
    #[arg(long)]
    defense: bool,
    /// Score every verdict also at up to N earlier sentence ends of the response,
    /// keeping the highest P(unsafe) (`safetyj judge --sentence-prefixes`). Off
    /// here unless asked; the judge's default configuration is `--defense
    /// --sentence-prefixes 8`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    sentence_prefixes: usize,
    /// Log a failed case to errors.jsonl and go on, instead of stopping.
    #[arg(long)]
    keep_going: bool,
}

/// Runs the benchmark and prints its report as Markdown.
pub fn run(args: InjectionArgs) -> safetyj::Result<()> {
    use safetyj::eval::{attacks, datasets, injection, runner::RunOptions};
    use safetyj::judge::engine::{Judge, JudgeOptions};
    let mut lists = Vec::new();
    for path in &args.attacks {
        let mut list = attacks::load_attack_list(path)?;
        if !args.only.is_empty() {
            list.attacks.retain(|a| args.only.contains(&a.id));
        }
        lists.push(list);
    }
    if let Some(unknown) = args
        .only
        .iter()
        .find(|id| !lists.iter().any(|l| l.attacks.iter().any(|a| &&a.id == id)))
    {
        return Err(safetyj::Error::InvalidInput(format!(
            "--attack {unknown} is in none of the attack lists"
        )));
    }
    let mut items = Vec::new();
    for file in &args.files {
        let all = datasets::load_label_file(file)?;
        match args.per_label {
            None => items.extend(all),
            Some(n) => {
                for label in [safetyj::judge::Label::Unsafe, safetyj::judge::Label::Safe] {
                    let of_label: Vec<_> =
                        all.iter().filter(|i| i.label == label).cloned().collect();
                    let selection = datasets::Selection::Sample { n, seed: args.seed };
                    items.extend(datasets::select(&of_label, selection));
                }
            }
        }
    }
    let (judge, stand_in) = Judge::load_on(
        &args.model.model,
        args.model.device()?,
        // The run applies the defence itself (`--defense`), so that it can be off.
        JudgeOptions {
            defense: false,
            sentence_prefixes: args.sentence_prefixes,
            ..JudgeOptions::default()
        },
        status_line(),
    )?;
    eprintln!();
    if let Some(notice) = stand_in {
        eprintln!("{notice}");
    }
    let options = RunOptions {
        workers: 1,
        keep_going: args.keep_going,
    };
    let report =
        injection::run_injection_eval(&items, &lists, &judge, args.defense, &args.out, options)?;
    print!("{}", injection::injection_markdown(&report));
    Ok(())
}
