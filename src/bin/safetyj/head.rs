//! `safetyj head train|eval`: verdict heads from labelled dialogues.

use std::path::PathBuf;

use safetyj::eval::datasets::{load_label_file, LabelItem};
use safetyj::heads::extract::extract_examples;
use safetyj::heads::split::split;
use safetyj::heads::train::{candidate_layers, train_head, HeadBase, TrainOptions, TrainReport};
use safetyj::judge::engine::{Judge, JudgeOptions};
use safetyj::judge::head::VerdictHead;

use crate::models::ModelArg;
use crate::terminal::status_line;

/// The `head` subcommands.
#[derive(clap::Subcommand)]
pub enum HeadCommand {
    /// Train a head: extract features (cached, resumable), choose layer and C by
    /// cross-validation on the training part, calibrate, report on the held-out part.
    Train(TrainArgs),
    /// Judge labelled files with a head and report its accuracy on them.
    Eval(EvalArgs),
}

/// Arguments of `safetyj head train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Labelled files ({"query","response","label"} as a JSON array or JSONL), one
    /// dataset each (named after the file).
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// The layer to read (1..=layers), or auto: chosen by cross-validation among the
    /// upper half of the network.
    #[arg(long, default_value = "auto")]
    layer: String,
    /// Fraction of items held out (by a hash of query and response).
    #[arg(long, default_value_t = 0.3)]
    holdout: f64,
    /// Most training items per dataset and label (a stratified, content-hashed sample).
    #[arg(long, default_value_t = usize::MAX)]
    train_per_class: usize,
    /// Most held-out items per dataset and label.
    #[arg(long, default_value_t = usize::MAX)]
    heldout_per_class: usize,
    /// Seed of the cross-validation folds.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Feature cache folder (reused and extended by later runs on the same model).
    #[arg(long, default_value = "safetyj-features")]
    cache: PathBuf,
    /// Where to write the head.
    #[arg(long)]
    out: PathBuf,
    /// Also write the training report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Arguments of `safetyj head eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArg,
    /// The head file.
    #[arg(long)]
    head: PathBuf,
    /// Labelled files to judge.
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Judge only the items a head with this holdout fraction held out (0 = all).
    #[arg(long, default_value_t = 0.0)]
    holdout: f64,
    /// Most items per dataset and label.
    #[arg(long, default_value_t = usize::MAX)]
    per_class: usize,
}

/// Runs a `head` subcommand.
pub fn run(command: HeadCommand) -> safetyj::Result<()> {
    match command {
        HeadCommand::Train(args) => train(args),
        HeadCommand::Eval(args) => eval(args),
    }
}

fn load_items(files: &[PathBuf]) -> safetyj::Result<Vec<LabelItem>> {
    let mut items = Vec::new();
    for file in files {
        items.extend(load_label_file(file)?);
    }
    Ok(items)
}

fn load_judge(model: &ModelArg) -> safetyj::Result<(Judge, String)> {
    let options = JudgeOptions::default();
    let (judge, stand_in) = Judge::load_on(&model.model, model.device()?, options, status_line())?;
    eprintln!();
    if let Some(notice) = judge.context().and_then(|ctx| ctx.software_notice()) {
        eprintln!("{notice}");
    }
    eprintln!("running on {}", judge.engine().describe());
    if let Some(notice) = &stand_in {
        eprintln!("{notice}");
    }
    let fingerprint = pollster::block_on(judge.engine().fingerprint())?;
    Ok((judge, fingerprint))
}

fn train(args: TrainArgs) -> safetyj::Result<()> {
    if !(0.0..1.0).contains(&args.holdout) {
        return Err(safetyj::Error::InvalidInput(format!(
            "--holdout must be in [0, 1), got {}",
            args.holdout
        )));
    }
    let items = load_items(&args.data)?;
    let chosen = split(
        &items,
        args.holdout,
        args.train_per_class,
        args.heldout_per_class,
    );
    let (judge, fingerprint) = load_judge(&args.model)?;
    let config = judge.config().clone();
    let layers = match args.layer.as_str() {
        "auto" => candidate_layers(config.layers),
        n => match n.parse::<usize>() {
            Ok(n) if (1..=config.layers).contains(&n) => vec![n],
            _ => {
                return Err(safetyj::Error::InvalidInput(format!(
                    "--layer must be auto or a layer in 1..={}, got \"{n}\"",
                    config.layers
                )))
            }
        },
    };
    let heldout = chosen.iter().filter(|s| s.heldout).count();
    eprintln!(
        "{} items ({} training, {heldout} held out) from {} files; features at layers {:?}",
        chosen.len(),
        chosen.len() - heldout,
        args.data.len(),
        layers
    );
    let mut show = status_line();
    let started = std::time::Instant::now();
    let examples = extract_examples(
        &judge,
        &fingerprint,
        &layers,
        &chosen,
        &args.cache,
        |done, total, extracted| {
            let rate = extracted as f64 / started.elapsed().as_secs_f64().max(1e-9);
            show(&format!(
                "features {done}/{total} ({extracted} extracted this run, {rate:.2} items/s)"
            ))
        },
    )?;
    eprintln!();
    let options = TrainOptions {
        layers,
        seed: args.seed,
        ..TrainOptions::default()
    };
    let base = HeadBase {
        name: format!("{} {}", args.model.model, judge.protocol().name()),
        fingerprint,
        arch: config.arch.gguf_name().to_string(),
        layers: config.layers,
        hidden: config.hidden,
        protocol: judge.protocol().name().to_string(),
    };
    let (head, report) = train_head(&examples, &options, &base)?;
    head.save(&args.out)?;
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&report).expect("reports serialise");
        std::fs::write(path, text).map_err(|source| safetyj::Error::Io {
            file: path.display().to_string(),
            source,
        })?;
    }
    print_report(&report);
    println!("head written to {}", args.out.display());
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn print_report(report: &TrainReport) {
    println!(
        "layer {} and C {} chosen by {}-item cross-validation; {} held-out items",
        report.layer, report.c, report.train_items, report.heldout_items
    );
    println!("| dataset | held-out items | head accuracy | head F1 | head ROC-AUC | model's own accuracy | head trained on the other sets |");
    println!("|---|---|---|---|---|---|---|");
    for (dataset, head) in &report.heldout_head {
        let model = &report.heldout_model[dataset];
        let transfer = report
            .transfer
            .get(dataset)
            .map_or("—".to_string(), |f| pct(f.accuracy));
        println!(
            "| {dataset} | {} | {} | {} | {} | {} | {transfer} |",
            head.items,
            pct(head.accuracy),
            pct(head.f1_unsafe),
            head.roc_auc.map_or("—".into(), |a| format!("{a:.3}")),
            pct(model.accuracy),
        );
    }
    println!(
        "| mean of the sets | | {} | | | {} | |",
        pct(report.heldout_mean_accuracy_head),
        pct(report.heldout_mean_accuracy_model)
    );
}

fn eval(args: EvalArgs) -> safetyj::Result<()> {
    let head = VerdictHead::load(&args.head)?;
    let items = load_items(&args.data)?;
    let fraction = if args.holdout > 0.0 {
        args.holdout
    } else {
        1.0
    };
    let chosen: Vec<_> = split(&items, fraction, 0, args.per_class)
        .into_iter()
        .filter(|s| s.heldout)
        .collect();
    let (judge, fingerprint) = load_judge(&args.model)?;
    head.check_base(
        &fingerprint,
        judge.config().arch.gguf_name(),
        judge.protocol().name(),
    )?;
    let layer = head.meta.layer;
    judge.set_head(Some(head.clone()))?;
    let mut per_dataset: std::collections::BTreeMap<String, Vec<(safetyj::judge::Label, f64)>> =
        Default::default();
    let mut show = status_line();
    for (done, s) in chosen.iter().enumerate() {
        let dialogue =
            safetyj::judge::Dialogue::single(s.item.query.clone(), s.item.response.clone());
        let probe = judge.probe(&dialogue, Some(s.item.lang), &[layer])?;
        let p = head.p_unsafe(&probe.hidden[0])?;
        per_dataset
            .entry(s.item.dataset.clone())
            .or_default()
            .push((s.item.label, p));
        show(&format!("judged {}/{}", done + 1, chosen.len()));
    }
    eprintln!();
    println!("| dataset | items | accuracy | ROC-AUC |");
    println!("|---|---|---|---|");
    for (dataset, scored) in &per_dataset {
        let correct = scored
            .iter()
            .filter(|(gold, p)| {
                (*p >= head.meta.threshold) == (*gold == safetyj::judge::Label::Unsafe)
            })
            .count();
        println!(
            "| {dataset} | {} | {} | {} |",
            scored.len(),
            pct(correct as f64 / scored.len().max(1) as f64),
            safetyj::eval::metrics::roc_auc(scored).map_or("—".into(), |a| format!("{a:.3}"))
        );
    }
    Ok(())
}
