//! `safetyj prefs`: iterative preference learning's steps — draw the split, sample
//! critiques, score them, build DPO pairs, and measure a model's preference margin.

use std::path::PathBuf;

use clap::Subcommand;
use safetyj::judge::engine::{Judge, JudgeOptions};
use safetyj::prefs::{self, margin, pairs, sample, score, split};

use crate::terminal::status_line;

/// The steps of a preference-learning round.
#[derive(Subcommand)]
pub enum PrefsCommand {
    /// Draw the committed train / held-out split of label-level and critique-level
    /// files by content hash into a folder (train.jsonl, heldout/, split.json).
    Split {
        /// Label-level files (query, response, label).
        #[arg(long = "label", num_args = 1..)]
        label: Vec<PathBuf>,
        /// Critique-level files (prompt, response, aius).
        #[arg(long = "critique", num_args = 1..)]
        critique: Vec<PathBuf>,
        /// Fraction held out.
        #[arg(long, default_value_t = 0.3)]
        holdout: f64,
        /// Training dialogues per dataset and label (per dataset for critique files).
        #[arg(long, default_value_t = 8)]
        train_per_class: usize,
        /// Held-out dialogues per dataset and label (per dataset for critique files).
        #[arg(long, default_value_t = 4)]
        heldout_per_class: usize,
        /// The split folder to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sample K critiques per training dialogue at a temperature (seeded, resumable)
    /// into OUT/samples.jsonl.
    Sample {
        /// The judge: a preset, GGUF file or Hugging Face folder.
        #[arg(long)]
        model: String,
        /// A split's train.jsonl.
        #[arg(long)]
        items: PathBuf,
        /// The round's folder.
        #[arg(long)]
        out: PathBuf,
        /// Critiques per dialogue.
        #[arg(short, long, default_value_t = 4)]
        k: usize,
        /// Sampling temperature (above 0).
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        /// Top-k for sampling (0: off).
        #[arg(long, default_value_t = 0)]
        top_k: u32,
        /// Top-p for sampling, in (0, 1] (1: off).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// The run's seed; each sample's seed derives from it, its dialogue and its index.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Most new tokens of one critique.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// Draw the label first, from the judge's probabilities of `[Answer] safe` and
        /// `[Answer] unsafe` at the temperature, then sample the analysis after it, so
        /// that every sample states a label (small judges often write none when free).
        #[arg(long)]
        label_first: bool,
        /// The temperature of the label draw with --label-first (default: --temperature);
        /// a judge sure of one label draws the other only when this is high.
        #[arg(long, requires = "label_first")]
        label_temperature: Option<f32>,
    },
    /// Score each sample of OUT/samples.jsonl (label right? AIU precision, recall,
    /// F1 by the meta-evaluation) into OUT/scores.jsonl (resumable).
    Score {
        /// The split's train.jsonl the samples were drawn from.
        #[arg(long)]
        items: PathBuf,
        /// The round's folder.
        #[arg(long)]
        out: PathBuf,
        /// The evaluator behind an OpenAI-compatible endpoint.
        #[arg(long, requires = "evaluator_model", conflicts_with_all = ["evaluator_local", "label_only"])]
        evaluator_url: Option<String>,
        /// The model name the endpoint knows the evaluator by.
        #[arg(long)]
        evaluator_model: Option<String>,
        /// Environment variable holding the endpoint's API key.
        #[arg(long)]
        evaluator_key_env: Option<String>,
        /// The evaluator on this machine: a preset, GGUF file or Hugging Face folder.
        #[arg(long, conflicts_with = "label_only")]
        evaluator_local: Option<String>,
        /// Score the labels only (no meta-evaluation).
        #[arg(long)]
        label_only: bool,
        /// New-token cap of each evaluator call.
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
    },
    /// Build DPO pairs from OUT/samples.jsonl and OUT/scores.jsonl into
    /// OUT/pairs.jsonl and OUT/pairs_report.json.
    Pairs {
        /// The split's train.jsonl.
        #[arg(long)]
        items: PathBuf,
        /// The round's folder.
        #[arg(long)]
        out: PathBuf,
        /// Least quality gap of a pair whose labels are both right.
        #[arg(long, default_value_t = 0.2)]
        margin: f64,
        /// Keep as many wrong-label pairs choosing `safe` as choosing `unsafe` (the
        /// lowest content keys of the larger side stay), so that DPO does not learn
        /// the pairs' base rate.
        #[arg(long)]
        balance_labels: bool,
    },
    /// log P(chosen) − log P(rejected) of each pair under a model, as JSON.
    Margin {
        /// The model: a preset, GGUF file or Hugging Face folder.
        #[arg(long)]
        model: String,
        /// A pairs.jsonl.
        #[arg(long)]
        pairs: PathBuf,
    },
}

fn load_judge(model: &str, max_tokens: usize) -> safetyj::Result<Judge> {
    let options = JudgeOptions {
        max_critique_tokens: max_tokens,
        preset_head: false,
        ..Default::default()
    };
    let (judge, stand_in) = Judge::load(model, options, status_line())?;
    eprintln!();
    if let Some(notice) = stand_in {
        eprintln!("{notice}");
    }
    Ok(judge)
}

fn progress(what: &'static str) -> impl FnMut(usize, usize) {
    move |done, total| eprint!("\r{what} {done}/{total}\x1b[K")
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> safetyj::Result<()> {
    let text = serde_json::to_string_pretty(value).expect("plain data serializes") + "\n";
    std::fs::write(path, text).map_err(|source| safetyj::Error::Write {
        file: path.display().to_string(),
        source,
    })
}

/// Runs one step.
pub fn run(command: PrefsCommand) -> safetyj::Result<()> {
    use safetyj::eval::datasets;
    match command {
        PrefsCommand::Split {
            label,
            critique,
            holdout,
            train_per_class,
            heldout_per_class,
            out,
        } => {
            let mut label_items = Vec::new();
            for file in &label {
                label_items.extend(datasets::load_label_file(file)?);
            }
            let mut critique_items = Vec::new();
            for file in &critique {
                critique_items.extend(datasets::load_critique_file(file)?);
            }
            let options = split::SplitOptions {
                holdout,
                train_per_class,
                heldout_per_class,
            };
            let drawn = split::split_items(&label_items, &critique_items, options);
            let summary = split::write_split(&out, &drawn, options)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).expect("serializes")
            );
        }
        PrefsCommand::Sample {
            model,
            items,
            out,
            k,
            temperature,
            top_k,
            top_p,
            seed,
            max_tokens,
            label_first,
            label_temperature,
        } => {
            let items = prefs::load_items(&items)?;
            let judge = load_judge(&model, max_tokens)?;
            let options = sample::SampleOptions {
                k,
                temperature,
                top_k,
                top_p,
                seed,
                max_tokens,
                label_first,
                label_temperature,
            };
            let samples = sample::sample_items(&judge, &items, options, &out, progress("sampled"))?;
            eprintln!();
            println!(
                "{} samples of {} dialogues in {}",
                samples.len(),
                items.len(),
                out.join(sample::SAMPLES_FILE).display()
            );
        }
        PrefsCommand::Score {
            items,
            out,
            evaluator_url,
            evaluator_model,
            evaluator_key_env,
            evaluator_local,
            label_only,
            max_tokens,
        } => {
            use safetyj::eval::critique::MetaEvaluator;
            use safetyj::eval::http::{OpenAiBackend, OpenAiConfig};
            use safetyj::eval::ChatBackend;
            let items = prefs::load_items(&items)?;
            let samples: Vec<sample::SampleRecord> =
                score::read_journal(&out.join(sample::SAMPLES_FILE))?;
            let http = match (&evaluator_url, &evaluator_model) {
                (Some(url), Some(model)) => Some(OpenAiBackend::new(OpenAiConfig {
                    api_key_env: evaluator_key_env.clone(),
                    ..OpenAiConfig::new(url, model)
                })?),
                _ => None,
            };
            let local = match &evaluator_local {
                Some(model) => Some(load_judge(model, max_tokens)?),
                None => None,
            };
            let backend: Option<&dyn ChatBackend> = match (&http, &local) {
                (Some(h), _) => Some(h),
                (None, Some(l)) => Some(l),
                (None, None) if label_only => None,
                (None, None) => {
                    return Err(safetyj::Error::InvalidInput(
                        "give an evaluator (--evaluator-url with --evaluator-model, or --evaluator-local), or --label-only".into(),
                    ))
                }
            };
            let evaluator = backend.map(|evaluator| MetaEvaluator {
                evaluator,
                max_tokens,
            });
            let scores = score::score_samples(
                &items,
                &samples,
                &safetyj::judge::safety_j::SafetyJ,
                evaluator.as_ref(),
                &out,
                progress("scored"),
            )?;
            eprintln!();
            println!(
                "{} samples scored in {}",
                scores.len(),
                out.join(score::SCORES_FILE).display()
            );
        }
        PrefsCommand::Pairs {
            items,
            out,
            margin,
            balance_labels,
        } => {
            let items = prefs::load_items(&items)?;
            let samples: Vec<sample::SampleRecord> =
                score::read_journal(&out.join(sample::SAMPLES_FILE))?;
            let scores: Vec<score::SampleScore> =
                score::read_journal(&out.join(score::SCORES_FILE))?;
            let (made, report) =
                pairs::build_pairs(&items, &samples, &scores, margin, balance_labels);
            let text: String = made
                .iter()
                .map(|p| serde_json::to_string(p).expect("serializes") + "\n")
                .collect();
            let path = out.join(pairs::PAIRS_FILE);
            std::fs::write(&path, text).map_err(|source| safetyj::Error::Write {
                file: path.display().to_string(),
                source,
            })?;
            write_json(&out.join(pairs::PAIRS_REPORT_FILE), &report)?;
            print!("{}", pairs::report_markdown(&report));
        }
        PrefsCommand::Margin { model, pairs } => {
            let pairs = margin::load_pairs(&pairs)?;
            let judge = load_judge(&model, 16)?;
            let report = margin::pair_margins(&judge, &pairs)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serializes")
            );
        }
    }
    Ok(())
}
