//! `prefs sample`: K critiques per training dialogue, drawn from the judge's
//! critique-mode prompt at a temperature. Each sample's seed comes from the run's seed,
//! the dialogue and the sample's number, so a resumed or reordered run draws the same
//! critiques. Samples are appended to `samples.jsonl` as they finish.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::journal::{Journal, JournalOptions};
use crate::judge::engine::Judge;
use crate::judge::{Label, Lang};
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
}

/// The seed of sample `index` of the dialogue `key` in a run seeded `seed`.
pub fn sample_seed(seed: u64, key: &str, index: usize) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(key.as_bytes());
    hasher.update((index as u64).to_le_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
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
            let output = judge.sample_prompt(&prompt.parts, options.max_tokens, sampling)?;
            let label = judge.protocol().parse(&output, item.lang).label;
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
}
