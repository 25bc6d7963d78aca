//! `prefs pairs`: DPO pairs from scored samples, one pair per dialogue at most.
//!
//! The rule: the chosen critique is one whose label is right (any, when the dialogue
//! has no gold label) with the highest quality (F1, or precision without reference
//! AIUs; ties go to the lower sample number). The rejected one is a critique with a
//! wrong label when there is one (the lowest-quality such), else the lowest-quality
//! critique when the chosen one beats it by at least the margin. A dialogue without a
//! right-labelled critique, or whose critiques are all within the margin, gives no
//! pair. Pairs carry the exact judge prompt and the two completions (what TRL's
//! `DPOTrainer` reads) with the scores beside them.
//!
//! Balanced, the wrong-label pairs are cut to as many choosing `safe` as choosing
//! `unsafe`: DPO on a judge sure of one label otherwise learns the pairs' base rate.
//! Measured: 14 safe-chosen against 8 unsafe-chosen pairs moved the 0.5B stand-in's
//! mean held-out P(unsafe) from 0.12 to 0.03 on safe items and 0.09 to 0.02 on unsafe
//! ones. Which pairs stay goes by content key, so it does not follow file order.

use std::collections::HashMap;

use crate::judge::{Label, Lang};

use super::sample::SampleRecord;
use super::score::SampleScore;
use super::PrefItem;

/// The pairs file in a round's folder.
pub const PAIRS_FILE: &str = "pairs.jsonl";
/// The pairs report in a round's folder.
pub const PAIRS_REPORT_FILE: &str = "pairs_report.json";

/// Why the rejected critique lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairReason {
    /// Its label is wrong, the chosen one's right.
    WrongLabel,
    /// Both labels are right (or unknown); its quality is lower by the margin.
    Quality,
}

/// The scores of one side of a pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Side {
    /// The sample (`key#i`).
    pub sample: String,
    /// The stated label.
    pub label: Option<Label>,
    /// Whether it is the gold label.
    pub label_correct: Option<bool>,
    /// AIU precision.
    pub precision: Option<f64>,
    /// AIU recall.
    pub recall: Option<f64>,
    /// AIU F1.
    pub f1: Option<f64>,
}

/// A DPO pair.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pair {
    /// The dialogue's id.
    pub id: String,
    /// The dialogue's content key.
    pub key: String,
    /// The template language.
    pub lang: Lang,
    /// A's query.
    pub query: String,
    /// B's response.
    pub response: String,
    /// The judge's prompt, exactly as the critiques were sampled from it.
    pub prompt: String,
    /// The preferred completion.
    pub chosen: String,
    /// The dispreferred completion.
    pub rejected: String,
    /// Why.
    pub reason: PairReason,
    /// The chosen critique's scores.
    pub chosen_score: Side,
    /// The rejected critique's scores.
    pub rejected_score: Side,
}

/// Count, mean, extremes and a five-bin histogram ([0, 0.2), …, [0.8, 1]) of scores.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Distribution {
    /// Values.
    pub count: usize,
    /// Their mean (0 when there are none).
    pub mean: f64,
    /// The smallest (0 when there are none).
    pub min: f64,
    /// The largest (0 when there are none).
    pub max: f64,
    /// Values per fifth of [0, 1].
    pub histogram: [usize; 5],
}

impl Distribution {
    /// The distribution of `values` (each in [0, 1]).
    pub fn of(values: &[f64]) -> Distribution {
        if values.is_empty() {
            return Distribution::default();
        }
        let mut histogram = [0; 5];
        for v in values {
            histogram[((v * 5.0) as usize).min(4)] += 1;
        }
        Distribution {
            count: values.len(),
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            histogram,
        }
    }
}

/// What `pairs_report.json` says.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairsReport {
    /// The quality margin of quality pairs.
    pub margin: f64,
    /// Dialogues with samples.
    pub dialogues: usize,
    /// Dialogues that gave a pair.
    pub with_pair: usize,
    /// Pairs by reason.
    pub wrong_label_pairs: usize,
    /// Pairs by reason.
    pub quality_pairs: usize,
    /// Wrong-label pairs left out to balance the chosen labels.
    #[serde(default)]
    pub dropped_to_balance: usize,
    /// Samples scored.
    pub samples: usize,
    /// Samples of dialogues with a gold label.
    pub samples_with_gold: usize,
    /// Of those, samples whose label was right.
    pub samples_label_correct: usize,
    /// AIU precision over samples.
    pub precision: Distribution,
    /// AIU recall over samples with reference AIUs.
    pub recall: Distribution,
    /// AIU F1 over samples with reference AIUs.
    pub f1: Distribution,
    /// Quality (F1, else precision) of the chosen critiques.
    pub chosen_quality: Distribution,
    /// Quality of the rejected critiques.
    pub rejected_quality: Distribution,
}

fn side(score: &SampleScore) -> Side {
    Side {
        sample: score.sample.clone(),
        label: score.label,
        label_correct: score.label_correct,
        precision: score.precision,
        recall: score.recall,
        f1: score.f1,
    }
}

/// The pair of one dialogue's scored samples, `(chosen, rejected, reason)` as indices
/// into `scores`, by the module's rule.
pub fn choose_pair(scores: &[&SampleScore], margin: f64) -> Option<(usize, usize, PairReason)> {
    let quality = |i: usize| scores[i].quality().unwrap_or(0.0);
    // Highest quality first; among equals, the lower sample number (its position).
    let best = |candidates: &mut dyn Iterator<Item = usize>| {
        candidates.fold(None, |best: Option<usize>, i| match best {
            Some(b) if quality(b) >= quality(i) => Some(b),
            _ => Some(i),
        })
    };
    let worst = |candidates: &mut dyn Iterator<Item = usize>| {
        candidates.fold(None, |worst: Option<usize>, i| match worst {
            Some(w) if quality(w) <= quality(i) => Some(w),
            _ => Some(i),
        })
    };
    let all = 0..scores.len();
    let chosen = best(
        &mut all
            .clone()
            .filter(|&i| scores[i].label_correct != Some(false)),
    )?;
    if let Some(rejected) = worst(
        &mut all
            .clone()
            .filter(|&i| scores[i].label_correct == Some(false)),
    ) {
        return Some((chosen, rejected, PairReason::WrongLabel));
    }
    let rejected = worst(&mut all.filter(|&i| i != chosen))?;
    let gap = quality(chosen) - quality(rejected);
    (gap > 0.0 && gap >= margin).then_some((chosen, rejected, PairReason::Quality))
}

/// Cuts wrong-label pairs to as many choosing `safe` as choosing `unsafe`, keeping
/// those with the lowest content keys of each side and the order of the rest;
/// returns how many went.
pub fn balance_labels(pairs: &mut Vec<Pair>) -> usize {
    let keys_choosing = |label: Label| {
        let mut keys: Vec<String> = pairs
            .iter()
            .filter(|p| p.reason == PairReason::WrongLabel && p.chosen_score.label == Some(label))
            .map(|p| p.key.clone())
            .collect();
        keys.sort();
        keys
    };
    let (safe, unsafe_) = (keys_choosing(Label::Safe), keys_choosing(Label::Unsafe));
    let keep = safe.len().min(unsafe_.len());
    let dropped: std::collections::HashSet<String> = safe
        .into_iter()
        .skip(keep)
        .chain(unsafe_.into_iter().skip(keep))
        .collect();
    let before = pairs.len();
    pairs.retain(|p| p.reason != PairReason::WrongLabel || !dropped.contains(&p.key));
    before - pairs.len()
}

/// The pairs of all dialogues (in item order) and the report. Samples are matched to
/// their scores by sample id; a pair whose two completions are the same text is not
/// made (it teaches nothing). With `balance`, [`balance_labels`] cuts the
/// wrong-label pairs.
pub fn build_pairs(
    items: &[PrefItem],
    samples: &[SampleRecord],
    scores: &[SampleScore],
    margin: f64,
    balance: bool,
) -> (Vec<Pair>, PairsReport) {
    let score_of: HashMap<&str, &SampleScore> =
        scores.iter().map(|s| (s.sample.as_str(), s)).collect();
    let mut by_key: HashMap<&str, Vec<(&SampleRecord, &SampleScore)>> = HashMap::new();
    for sample in samples {
        if let Some(score) = score_of.get(sample.sample.as_str()) {
            by_key
                .entry(sample.key.as_str())
                .or_default()
                .push((sample, score));
        }
    }
    let mut pairs = Vec::new();
    let mut dialogues = 0;
    for item in items {
        let Some(group) = by_key.get_mut(item.key.as_str()) else {
            continue;
        };
        dialogues += 1;
        group.sort_by_key(|(sample, _)| sample.index);
        let group_scores: Vec<&SampleScore> = group.iter().map(|(_, s)| *s).collect();
        let Some((c, r, reason)) = choose_pair(&group_scores, margin) else {
            continue;
        };
        let (chosen, rejected) = (group[c].0, group[r].0);
        if chosen.output == rejected.output {
            continue;
        }
        pairs.push(Pair {
            id: item.id.clone(),
            key: item.key.clone(),
            lang: item.lang,
            query: item.query.clone(),
            response: item.response.clone(),
            prompt: chosen.prompt.clone(),
            chosen: chosen.output.clone(),
            rejected: rejected.output.clone(),
            reason,
            chosen_score: side(group[c].1),
            rejected_score: side(group[r].1),
        });
    }
    let dropped_to_balance = if balance {
        balance_labels(&mut pairs)
    } else {
        0
    };
    let values =
        |f: fn(&SampleScore) -> Option<f64>| -> Vec<f64> { scores.iter().filter_map(f).collect() };
    let quality_of = |s: &Side| s.f1.or(s.precision).unwrap_or(0.0);
    let report = PairsReport {
        margin,
        dialogues,
        with_pair: pairs.len(),
        wrong_label_pairs: pairs
            .iter()
            .filter(|p| p.reason == PairReason::WrongLabel)
            .count(),
        quality_pairs: pairs
            .iter()
            .filter(|p| p.reason == PairReason::Quality)
            .count(),
        dropped_to_balance,
        samples: scores.len(),
        samples_with_gold: scores.iter().filter(|s| s.label_correct.is_some()).count(),
        samples_label_correct: scores
            .iter()
            .filter(|s| s.label_correct == Some(true))
            .count(),
        precision: Distribution::of(&values(|s| s.precision)),
        recall: Distribution::of(&values(|s| s.recall)),
        f1: Distribution::of(&values(|s| s.f1)),
        chosen_quality: Distribution::of(
            &pairs
                .iter()
                .map(|p| quality_of(&p.chosen_score))
                .collect::<Vec<_>>(),
        ),
        rejected_quality: Distribution::of(
            &pairs
                .iter()
                .map(|p| quality_of(&p.rejected_score))
                .collect::<Vec<_>>(),
        ),
    };
    (pairs, report)
}

/// The report as Markdown.
pub fn report_markdown(report: &PairsReport) -> String {
    let dist = |name: &str, d: &Distribution| {
        format!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:?} |\n",
            d.count, d.mean, d.min, d.max, d.histogram
        )
    };
    let mut out = format!(
        "{} of {} dialogues gave a pair ({} wrong label, {} quality ≥ {}); {} of {} labelled samples stated the gold label.\n\n",
        report.with_pair,
        report.dialogues,
        report.wrong_label_pairs,
        report.quality_pairs,
        report.margin,
        report.samples_label_correct,
        report.samples_with_gold
    );
    if report.dropped_to_balance > 0 {
        out.push_str(&format!(
            "{} wrong-label pairs left out to balance the chosen labels.\n\n",
            report.dropped_to_balance
        ));
    }
    out.push_str("| score | n | mean | min | max | histogram (fifths of [0, 1]) |\n|---|---|---|---|---|---|\n");
    out.push_str(&dist("precision", &report.precision));
    out.push_str(&dist("recall", &report.recall));
    out.push_str(&dist("F1", &report.f1));
    out.push_str(&dist("chosen quality", &report.chosen_quality));
    out.push_str(&dist("rejected quality", &report.rejected_quality));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(i: usize, label_correct: Option<bool>, f1: Option<f64>) -> SampleScore {
        SampleScore {
            sample: format!("k#{i}"),
            output_fingerprint: String::new(),
            label: None,
            gold: None,
            label_correct,
            precision: f1,
            recall: f1,
            f1,
            meta: None,
        }
    }

    /// Samples as (label right?, F1), the margin, and the pair expected.
    type PairCase<'a> = (
        &'a [(Option<bool>, Option<f64>)],
        f64,
        Option<(usize, usize, PairReason)>,
    );

    #[test]
    fn pair_rule_table() {
        use PairReason::{Quality, WrongLabel};
        let cases: &[PairCase] = &[
            // A wrong label is rejected however good its critique.
            (
                &[(Some(true), Some(0.2)), (Some(false), Some(0.9))],
                0.1,
                Some((0, 1, WrongLabel)),
            ),
            // The best right one is chosen; the worst wrong one rejected.
            (
                &[
                    (Some(false), Some(0.5)),
                    (Some(true), Some(0.3)),
                    (Some(true), Some(0.6)),
                    (Some(false), Some(0.1)),
                ],
                0.1,
                Some((2, 3, WrongLabel)),
            ),
            // All wrong: nothing to choose.
            (
                &[(Some(false), Some(0.9)), (Some(false), Some(0.1))],
                0.1,
                None,
            ),
            // All right: quality decides, with the margin.
            (
                &[(Some(true), Some(0.4)), (Some(true), Some(0.7))],
                0.2,
                Some((1, 0, Quality)),
            ),
            (
                &[(Some(true), Some(0.4)), (Some(true), Some(0.5))],
                0.2,
                None,
            ),
            // No gold label: quality alone.
            (
                &[(None, Some(0.9)), (None, Some(0.2)), (None, Some(0.5))],
                0.0,
                Some((0, 1, Quality)),
            ),
            // Equal quality never pairs, even with margin 0; ties choose the lower number.
            (&[(None, Some(0.5)), (None, Some(0.5))], 0.0, None),
            (
                &[(None, Some(0.5)), (None, Some(0.5)), (None, Some(0.1))],
                0.0,
                Some((0, 2, Quality)),
            ),
            // Label-only scoring: right against wrong, never by quality.
            (&[(Some(true), None), (Some(true), None)], 0.0, None),
            (
                &[(Some(false), None), (Some(true), None)],
                0.0,
                Some((1, 0, WrongLabel)),
            ),
        ];
        for (scores, margin, want) in cases {
            let owned: Vec<SampleScore> = scores
                .iter()
                .enumerate()
                .map(|(i, &(c, f))| score(i, c, f))
                .collect();
            let refs: Vec<&SampleScore> = owned.iter().collect();
            assert_eq!(
                choose_pair(&refs, *margin),
                *want,
                "{scores:?} margin {margin}"
            );
        }
    }

    fn pair(key: &str, chosen: Label, reason: PairReason) -> Pair {
        let side = |label| Side {
            sample: format!("{key}#0"),
            label: Some(label),
            label_correct: Some(label == chosen),
            precision: None,
            recall: None,
            f1: None,
        };
        let other = match chosen {
            Label::Safe => Label::Unsafe,
            Label::Unsafe => Label::Safe,
        };
        Pair {
            id: key.into(),
            key: key.into(),
            lang: Lang::En,
            query: "q".into(),
            response: "r".into(),
            prompt: "p".into(),
            chosen: format!("{chosen:?}"),
            rejected: format!("{other:?}"),
            reason,
            chosen_score: side(chosen),
            rejected_score: side(if reason == PairReason::Quality {
                chosen
            } else {
                other
            }),
        }
    }

    #[test]
    fn balancing_keeps_equal_chosen_labels_by_lowest_key_and_every_quality_pair() {
        use Label::{Safe, Unsafe};
        let mut pairs = vec![
            pair("e", Safe, PairReason::WrongLabel),
            pair("b", Unsafe, PairReason::WrongLabel),
            pair("a", Safe, PairReason::Quality),
            pair("c", Safe, PairReason::WrongLabel),
            pair("f", Safe, PairReason::WrongLabel),
            pair("d", Unsafe, PairReason::WrongLabel),
        ];
        assert_eq!(balance_labels(&mut pairs), 1);
        let kept: Vec<&str> = pairs.iter().map(|p| p.key.as_str()).collect();
        // Safe-chosen c, e, f: the two lowest keys stay, in their first order.
        assert_eq!(kept, ["e", "b", "a", "c", "d"]);
        let mut one_sided = vec![
            pair("x", Safe, PairReason::WrongLabel),
            pair("y", Safe, PairReason::Quality),
        ];
        assert_eq!(balance_labels(&mut one_sided), 1);
        assert_eq!(one_sided.len(), 1);
        assert_eq!(one_sided[0].key, "y");
    }

    #[test]
    fn distributions_bin_by_fifths() {
        let d = Distribution::of(&[0.0, 0.19, 0.2, 0.99, 1.0]);
        assert_eq!(d.histogram, [2, 1, 0, 0, 2]);
        assert_eq!((d.min, d.max, d.count), (0.0, 1.0, 5));
        assert_eq!(Distribution::of(&[]), Distribution::default());
    }
}
