//! `prefs sample`: K critiques per training dialogue, drawn from the judge's
//! critique-mode prompt at a temperature. Each sample's seed comes from the run's seed,
//! the dialogue and the sample's number, so a resumed or reordered run draws the same
//! critiques. Samples are appended to `samples.jsonl` as they finish.
//!
//! Free sampling leaves the output format to the model, and a small judge often
//! writes no label at all (SmolLM2-135M in none of 16 draws, the 0.5B stand-in in 1
//! of 6), which gives label-scored pairs nothing to compare. With `label_first` a
//! draw is made the way a verdict is: the label is drawn from the judge's own
//! probabilities of the two label completions (`[Answer] safe` / `[Answer] unsafe`)
//! at the temperature (or a label temperature of its own), written as the model's
//! answer, and the analysis is sampled after it.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::heads::fit::sigmoid;
use crate::journal::{Journal, JournalOptions};
use crate::judge::engine::Judge;
use crate::judge::{Label, Lang, PromptPart};
use crate::model::generate::Sampling;

use super::{sample_id, PrefItem};

/// The samples journal in a round's folder.
pub const SAMPLES_FILE: &str = "samples.jsonl";

/// How critiques are drawn.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleOptions {
    /// Critiques per dialogue (at least 2, or no pair can be made).
    pub k: usize,
    /// Softmax temperature (above 0).
    pub temperature: f32,
    /// Top-k cut (0 = off).
    pub top_k: u32,
    /// Nucleus cut (1 = off).
    pub top_p: f32,
    /// The run's seed.
    pub seed: u64,
    /// Most new tokens of one critique.
    pub max_tokens: usize,
    /// Draw the label from the judge's label probabilities first, then sample the
    /// analysis after it (every sample states a label).
    #[serde(default)]
    pub label_first: bool,
    /// The temperature of the label draw when it differs from `temperature` (a
    /// judge sure of one label draws the other only when this is high).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_temperature: Option<f32>,
}

/// One sampled critique.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleRecord {
    /// `key#i`: the dialogue's content key and the sample's number.
    pub sample: String,
    /// The dialogue's id.
    pub id: String,
    /// The dialogue's content key.
    pub key: String,
    /// The sample's number, 0-based.
    pub index: usize,
    /// The settings it was drawn with.
    pub options: SampleOptions,
    /// The seed of this sample's draw.
    pub seed: u64,
    /// The template language.
    pub lang: Lang,
    /// The prompt, as one string.
    pub prompt: String,
    /// What the judge wrote (`[Answer] … [Analysis] …`).
    pub output: String,
    /// The label the output states, if any.
    pub label: Option<Label>,
    /// The judge's P(unsafe) between the two label completions at temperature 1
    /// (label-first draws only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_unsafe: Option<f64>,
}

/// The seed of sample `index` of the dialogue `key` in a run seeded `seed`.
pub fn sample_seed(seed: u64, key: &str, index: usize) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(key.as_bytes());
    hasher.update((index as u64).to_le_bytes());
    first_u64(hasher)
}

/// The first 8 bytes of the hasher's digest, as a little-endian number.
fn first_u64(hasher: Sha256) -> u64 {
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// A uniform number in [0, 1) for the label draw of a sample seeded `seed`, apart
/// from the token draws that use the seed itself.
pub fn label_draw(seed: u64) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(b"label");
    (first_u64(hasher) >> 11) as f64 / (1u64 << 53) as f64
}

/// P(unsafe) at `temperature` from the log-probabilities of the safe and unsafe
/// label completions: the two-way softmax of their scaled log-probabilities.
pub fn label_probability(log_p_safe: f64, log_p_unsafe: f64, temperature: f64) -> f64 {
    sigmoid((log_p_unsafe - log_p_safe) / temperature)
}

/// One label-first draw: the label from the judge's label completions at the
/// temperature (drawn with `label_draw(seed)`), then the analysis sampled after
/// it. Returns the output, its label and the judge's P(unsafe) at temperature 1.
fn sample_label_first(
    judge: &Judge,
    parts: &[PromptPart],
    lang: Lang,
    options: SampleOptions,
    sampling: Sampling,
    seed: u64,
) -> Result<(String, Label, f64)> {
    let protocol = judge.protocol();
    let answer = protocol.answer_prefix(lang);
    let completion = |label| format!("{answer}{}", protocol.label_text(lang, label));
    let (safe, unsafe_) = (completion(Label::Safe), completion(Label::Unsafe));
    let scores = judge.score_completions(parts, &[&safe, &unsafe_])?;
    let p_unsafe = label_probability(scores[0], scores[1], 1.0);
    let temperature = options.label_temperature.unwrap_or(options.temperature);
    let drawn = label_probability(scores[0], scores[1], f64::from(temperature));
    let (label, mut output) = if label_draw(seed) < drawn {
        (Label::Unsafe, unsafe_)
    } else {
        (Label::Safe, safe)
    };
    let mut continued = parts.to_vec();
    continued.push(PromptPart::Dialogue(output.clone()));
    output.push_str(&judge.sample_prompt(&continued, options.max_tokens, sampling)?);
    Ok((output, label, p_unsafe))
}

/// Draws `options.k` critiques of each of `items` with `judge`, resuming from
/// `out_dir/samples.jsonl`, and returns all samples of `items` in item order.
/// `progress` hears of each new sample (done, total). Refuses a journal made with
/// other settings.
pub fn sample_items(
    judge: &Judge,
    items: &[PrefItem],
    options: SampleOptions,
    out_dir: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<SampleRecord>> {
    if options.k < 2 {
        return Err(Error::InvalidInput(format!(
            "sample at least 2 critiques per dialogue (asked for {}): a pair needs two",
            options.k
        )));
    }
    // Written so that NaN fails too.
    let valid = options.temperature > 0.0 && options.top_p > 0.0 && options.top_p <= 1.0;
    if !valid {
        return Err(Error::InvalidInput(format!(
            "the temperature must be above 0 and top-p in (0, 1] (got {} and {})",
            options.temperature, options.top_p
        )));
    }
    match options.label_temperature {
        Some(t) if t.is_nan() || t <= 0.0 => {
            return Err(Error::InvalidInput(format!(
                "the label temperature must be above 0 (got {t})"
            )))
        }
        Some(_) if !options.label_first => {
            return Err(Error::InvalidInput(
                "a label temperature needs label-first sampling".into(),
            ))
        }
        _ => {}
    }
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Write {
        file: out_dir.display().to_string(),
        source,
    })?;
    let path = out_dir.join(SAMPLES_FILE);
    let (mut journal, done) = Journal::open::<SampleRecord>(&path, JournalOptions::default())?;
    if let Some(other) = done.iter().find(|r| r.options != options) {
        return Err(Error::InvalidInput(format!(
            "{} holds samples drawn with other settings ({:?}, now {:?}); use another folder",
            path.display(),
            other.options,
            options
        )));
    }
    let mut by_id: std::collections::HashMap<String, SampleRecord> =
        done.into_iter().map(|r| (r.sample.clone(), r)).collect();
    let total = items.len() * options.k;
    let mut finished = by_id.len().min(total);
    for item in items {
        let prompt = item.prompt(judge.protocol());
        for index in 0..options.k {
            let sample = sample_id(&item.key, index);
            if by_id.contains_key(&sample) {
                continue;
            }
            let seed = sample_seed(options.seed, &item.key, index);
            let sampling = Sampling::Random {
                temperature: options.temperature,
                top_k: options.top_k,
                top_p: options.top_p,
                seed,
            };
            let (output, label, p_unsafe) = if options.label_first {
                let (output, label, p) =
                    sample_label_first(judge, &prompt.parts, item.lang, options, sampling, seed)?;
                (output, Some(label), Some(p))
            } else {
                let output = judge.sample_prompt(&prompt.parts, options.max_tokens, sampling)?;
                let label = judge.protocol().parse(&output, item.lang).label;
                (output, label, None)
            };
            let record = SampleRecord {
                sample: sample.clone(),
                id: item.id.clone(),
                key: item.key.clone(),
                index,
                options,
                seed,
                lang: item.lang,
                prompt: prompt.text(),
                output,
                label,
                p_unsafe,
            };
            journal.append(&record)?;
            by_id.insert(sample, record);
            finished += 1;
            progress(finished, total);
        }
    }
    Ok(items
        .iter()
        .flat_map(|item| (0..options.k).map(move |i| sample_id(&item.key, i)))
        .filter_map(|s| by_id.remove(&s))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_seeds_depend_on_run_dialogue_and_number_only() {
        let a = sample_seed(0, "abc", 0);
        assert_eq!(a, sample_seed(0, "abc", 0));
        assert_ne!(a, sample_seed(1, "abc", 0));
        assert_ne!(a, sample_seed(0, "abd", 0));
        assert_ne!(a, sample_seed(0, "abc", 1));
    }

    #[test]
    fn label_probability_is_the_tempered_two_way_softmax() {
        let (safe, unsafe_) = (-2.0_f64, -0.5_f64);
        let plain = label_probability(safe, unsafe_, 1.0);
        let exact = unsafe_.exp() / (safe.exp() + unsafe_.exp());
        assert!((plain - exact).abs() < 1e-12, "{plain} vs {exact}");
        // A higher temperature pulls toward 1/2, a lower one away from it.
        let hot = label_probability(safe, unsafe_, 2.0);
        let cold = label_probability(safe, unsafe_, 0.5);
        assert!(0.5 < hot && hot < plain && plain < cold && cold < 1.0);
        assert!((label_probability(-1.0, -1.0, 0.7) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn label_draws_are_uniform_in_the_unit_interval_and_apart_from_the_seed() {
        let draws: Vec<f64> = (0..4000).map(label_draw).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        let below = draws.iter().filter(|u| **u < 0.25).count();
        assert!((900..1100).contains(&below), "{below} of 4000 below 1/4");
        assert_eq!(label_draw(7), label_draw(7));
    }
}
