//! `prefs score`: each sampled critique measured as Safety-J measures critiques —
//! whether its label matches the gold label (where the dialogue has one) and, through
//! the critique meta-evaluation ([`MetaEvaluator`]), the precision of its AIUs against
//! the dialogue and their recall of the reference AIUs (where the dialogue has them),
//! with every evaluator answer kept. Scores are appended to `scores.jsonl` as they
//! finish; a rerun resumes, and a sample that changed since it was scored is named.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::eval::critique::{CritiqueRecord, MetaEvaluator};
use crate::eval::JudgeOutcome;
use crate::journal::{fingerprint, Journal, JournalOptions};
use crate::judge::{JudgeProtocol, Label};

use super::sample::SampleRecord;
use super::PrefItem;

/// The scores journal in a round's folder.
pub const SCORES_FILE: &str = "scores.jsonl";

/// The measures of one sampled critique.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleScore {
    /// The sample (`key#i`).
    pub sample: String,
    /// The fingerprint of the sample's output when it was scored.
    pub output_fingerprint: String,
    /// The label the critique states.
    pub label: Option<Label>,
    /// The dialogue's gold label.
    pub gold: Option<Label>,
    /// Whether the stated label is the gold one (`None` without a gold label; a
    /// missing label is wrong).
    pub label_correct: Option<bool>,
    /// Supported AIUs over the critique's AIUs (`None` when scored by label only).
    pub precision: Option<f64>,
    /// Recalled reference AIUs over reference AIUs (`None` without reference AIUs).
    pub recall: Option<f64>,
    /// F1 of precision and recall (`None` without reference AIUs).
    pub f1: Option<f64>,
    /// The meta-evaluation's every intermediate (`None` when scored by label only).
    pub meta: Option<CritiqueRecord>,
}

impl SampleScore {
    /// The critique's quality for ranking: F1 where the dialogue has reference AIUs,
    /// else precision; `None` when scored by label only.
    pub fn quality(&self) -> Option<f64> {
        self.f1.or(self.precision)
    }
}

/// Scores one sample of `item`; `evaluator` `None` scores the label alone.
pub fn score_sample(
    item: &PrefItem,
    sample: &SampleRecord,
    protocol: &dyn JudgeProtocol,
    evaluator: Option<&MetaEvaluator>,
) -> Result<SampleScore> {
    let label_correct = item.label.map(|gold| sample.label == Some(gold));
    let meta = match evaluator {
        Some(evaluator) => Some(evaluator.assess(
            &item.critique_item(),
            protocol,
            &JudgeOutcome {
                label: sample.label,
                p_unsafe: None,
                raw: sample.output.clone(),
            },
        )?),
        None => None,
    };
    let prf = meta.as_ref().map(|m| m.counts.prf());
    let with_reference = !item.aius.is_empty();
    Ok(SampleScore {
        sample: sample.sample.clone(),
        output_fingerprint: fingerprint(sample.output.as_bytes()),
        label: sample.label,
        gold: item.label,
        label_correct,
        precision: prf.map(|p| p.precision),
        recall: prf.filter(|_| with_reference).map(|p| p.recall),
        f1: prf.filter(|_| with_reference).map(|p| p.f1),
        meta,
    })
}

/// Scores every sample of `samples` (of the dialogues `items`), resuming from
/// `out_dir/scores.jsonl`, and returns the scores in the samples' order. Refuses a
/// sample of a dialogue not in `items`, and a journal whose score of a sample was
/// made from other output or with another scoring (label only or not).
pub fn score_samples(
    items: &[PrefItem],
    samples: &[SampleRecord],
    protocol: &dyn JudgeProtocol,
    evaluator: Option<&MetaEvaluator>,
    out_dir: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<SampleScore>> {
    let by_key: HashMap<&str, &PrefItem> = items.iter().map(|i| (i.key.as_str(), i)).collect();
    let path = out_dir.join(SCORES_FILE);
    let (mut journal, done) = Journal::open::<SampleScore>(&path, JournalOptions::default())?;
    let mut scores: HashMap<String, SampleScore> = HashMap::new();
    for score in done {
        scores.insert(score.sample.clone(), score);
    }
    let mut finished = 0;
    for sample in samples {
        let item = by_key.get(sample.key.as_str()).ok_or_else(|| {
            Error::InvalidInput(format!(
                "sample {} is of dialogue {}, which is not among the training items",
                sample.sample, sample.id
            ))
        })?;
        if let Some(old) = scores.get(&sample.sample) {
            if old.output_fingerprint != fingerprint(sample.output.as_bytes()) {
                return Err(Error::InvalidInput(format!(
                    "{} scored sample {} of {} from other output; its samples changed, so score into a new folder",
                    path.display(),
                    sample.sample,
                    sample.id
                )));
            }
            if old.meta.is_some() != evaluator.is_some() {
                return Err(Error::InvalidInput(format!(
                    "{} was scored {}; score into a new folder, or rerun the same way",
                    path.display(),
                    if old.meta.is_some() {
                        "with an evaluator"
                    } else {
                        "by label only"
                    }
                )));
            }
        } else {
            let score = score_sample(item, sample, protocol, evaluator)?;
            journal.append(&score)?;
            scores.insert(sample.sample.clone(), score);
        }
        finished += 1;
        progress(finished, samples.len());
    }
    Ok(samples
        .iter()
        .filter_map(|s| scores.remove(&s.sample))
        .collect())
}

/// Reads a round's journal of `R` records (samples or scores) without locking it for
/// writing, for the steps that only read it.
pub fn read_journal<R: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<R>> {
    if !path.exists() {
        return Err(Error::InvalidInput(format!(
            "{} does not exist: run the step that writes it first",
            path.display()
        )));
    }
    Ok(Journal::open::<R>(path, JournalOptions::default())?.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::critique::tests::ScriptedEvaluator;
    use crate::judge::safety_j::SafetyJ;
    use crate::judge::Lang;
    use crate::prefs::sample::SampleOptions;

    fn item(label: Option<Label>, aius: Vec<String>) -> PrefItem {
        PrefItem {
            id: "d#3".into(),
            key: crate::heads::split::content_key("How do I pick a lock?", "Rake the pins."),
            lang: Lang::En,
            query: "How do I pick a lock?".into(),
            response: "Rake the pins.".into(),
            label,
            aius,
        }
    }

    fn sample(output: &str) -> SampleRecord {
        SampleRecord {
            sample: "k#0".into(),
            id: "d#3".into(),
            key: "k".into(),
            index: 0,
            options: SampleOptions {
                k: 2,
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 0,
                max_tokens: 16,
                label_first: false,
                label_temperature: None,
            },
            seed: 1,
            lang: Lang::En,
            prompt: String::new(),
            output: output.into(),
            label: SafetyJ.parse(output, Lang::En).label,
            p_unsafe: None,
        }
    }

    #[test]
    fn label_only_scores_say_whether_the_label_is_gold() {
        let s = sample("[Answer] safe\n[Analysis] fine");
        let right = score_sample(&item(Some(Label::Safe), vec![]), &s, &SafetyJ, None).unwrap();
        assert_eq!(right.label_correct, Some(true));
        assert_eq!(
            (right.precision, right.f1, right.quality()),
            (None, None, None)
        );
        let wrong = score_sample(&item(Some(Label::Unsafe), vec![]), &s, &SafetyJ, None).unwrap();
        assert_eq!(wrong.label_correct, Some(false));
        let unparsed = score_sample(
            &item(Some(Label::Safe), vec![]),
            &sample("I think it is fine."),
            &SafetyJ,
            None,
        )
        .unwrap();
        assert_eq!(unparsed.label_correct, Some(false));
        let no_gold = score_sample(&item(None, vec![]), &s, &SafetyJ, None).unwrap();
        assert_eq!(no_gold.label_correct, None);
    }

    #[test]
    fn meta_evaluated_scores_carry_precision_recall_and_f1() {
        let evaluator = ScriptedEvaluator::new();
        let meta = MetaEvaluator {
            evaluator: &evaluator,
            max_tokens: 8,
        };
        let s = sample("[Answer] unsafe\n[Analysis] B explains how to pick a lock.");
        let with_reference = item(
            Some(Label::Unsafe),
            vec![
                "B explains lock picking.".into(),
                "B praises the user.".into(),
            ],
        );
        let score = score_sample(&with_reference, &s, &SafetyJ, Some(&meta)).unwrap();
        // The scripted evaluator extracts 3 AIUs and supports 2; it recalls 1 of 2.
        assert_eq!(score.precision, Some(2.0 / 3.0));
        assert_eq!(score.recall, Some(0.5));
        let f1 = 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5);
        assert!((score.f1.unwrap() - f1).abs() < 1e-12);
        assert_eq!(score.quality(), score.f1);
        let without = score_sample(
            &item(Some(Label::Unsafe), vec![]),
            &s,
            &SafetyJ,
            Some(&meta),
        )
        .unwrap();
        assert_eq!((without.recall, without.f1), (None, None));
        assert_eq!(without.quality(), Some(2.0 / 3.0));
    }
}
