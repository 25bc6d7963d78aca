//! Choosing, fitting and reporting a head from extracted features: layer and
//! regularisation by stratified cross-validation on the training part, Platt
//! calibration on the out-of-fold scores, then figures on the held-out part only,
//! per dataset, beside the model's own verdicts, and trained on all-but-one dataset
//! and tested on that one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::fit::{platt, sigmoid, stratified_folds, Logistic, Standardiser};
use crate::error::{Error, Result};
use crate::eval::metrics::{label_metrics, reliability, roc_auc, ReliabilityBin};
use crate::judge::head::{HeadMeta, VerdictHead, HEAD_FORMAT};
use crate::judge::{Label, Lang};

/// One labelled dialogue's features.
#[derive(Debug, Clone)]
pub struct Example {
    pub dataset: String,
    pub lang: Lang,
    pub label: Label,
    pub heldout: bool,
    /// The model's own P(unsafe).
    pub p_model: f64,
    /// The residual stream at each candidate layer (in [`TrainOptions::layers`] order).
    pub hidden: Vec<Vec<f32>>,
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The layers the features were taken at; cross-validation picks one.
    pub layers: Vec<usize>,
    /// Regularisation strengths tried (scikit-learn's `C`).
    pub c_grid: Vec<f64>,
    pub folds: usize,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            layers: Vec::new(),
            c_grid: vec![0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
            folds: 5,
            seed: 0,
        }
    }
}

/// Accuracy, F1 (unsafe) and ROC-AUC of one group of held-out items.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub items: usize,
    pub accuracy: f64,
    pub f1_unsafe: f64,
    pub roc_auc: Option<f64>,
}

fn figures(scored: &[(Label, f64)], threshold: f64) -> Figures {
    let pairs: Vec<(Label, Option<Label>)> = scored
        .iter()
        .map(|&(gold, p)| {
            let predicted = if p >= threshold {
                Label::Unsafe
            } else {
                Label::Safe
            };
            (gold, Some(predicted))
        })
        .collect();
    let m = label_metrics(&pairs);
    Figures {
        items: scored.len(),
        accuracy: m.accuracy,
        f1_unsafe: m.f1_unsafe,
        roc_auc: roc_auc(scored),
    }
}

/// What training found, saved in the head and printed.
#[cfg_attr(target_arch = "wasm32", derive(tsify::Tsify))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub train_items: usize,
    pub heldout_items: usize,
    /// Training items per dataset.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "Record<string, number>"))]
    pub train_per_dataset: BTreeMap<String, usize>,
    pub layer: usize,
    pub c: f64,
    /// Cross-validated accuracy of every (layer, C) tried on the training part.
    pub cv_accuracy: Vec<(usize, f64, f64)>,
    /// The head on the held-out part, per dataset.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "Record<string, Figures>"))]
    pub heldout_head: BTreeMap<String, Figures>,
    /// The model's own scored verdict on the same held-out items.
    #[cfg_attr(target_arch = "wasm32", tsify(type = "Record<string, Figures>"))]
    pub heldout_model: BTreeMap<String, Figures>,
    /// The unweighted mean of the per-dataset held-out accuracies (head, model).
    pub heldout_mean_accuracy_head: f64,
    pub heldout_mean_accuracy_model: f64,
    /// Trained on the other datasets' training items, tested on this dataset's
    /// held-out items (same layer and C).
    #[cfg_attr(target_arch = "wasm32", tsify(type = "Record<string, Figures>"))]
    pub transfer: BTreeMap<String, Figures>,
    /// Held-out reliability of the calibrated head (10 bins).
    pub reliability: Vec<ReliabilityBin>,
}

fn is_unsafe(label: Label) -> bool {
    label == Label::Unsafe
}

/// A standardised logistic fit on `rows` of one layer.
struct Fitted {
    standardiser: Standardiser,
    model: Logistic,
}

impl Fitted {
    fn train(rows: &[&[f32]], labels: &[bool], c: f64) -> Result<Fitted> {
        let standardiser = Standardiser::fit(rows)?;
        let x: Vec<Vec<f64>> = rows.iter().map(|r| standardiser.apply(r)).collect();
        Ok(Fitted {
            model: Logistic::fit(&x, labels, c)?,
            standardiser,
        })
    }

    fn score(&self, row: &[f32]) -> f64 {
        self.model.score(&self.standardiser.apply(row))
    }
}

/// Out-of-fold scores of a (layer, C) on `train`: each item scored by a fit on the
/// folds it is not in.
fn out_of_fold(
    train: &[&Example],
    layer: usize,
    c: f64,
    options: &TrainOptions,
) -> Result<Vec<f64>> {
    let labels: Vec<bool> = train.iter().map(|e| is_unsafe(e.label)).collect();
    let folds = stratified_folds(&labels, options.folds, options.seed);
    let mut scores = vec![0.0; train.len()];
    for fold in &folds {
        let inside: Vec<usize> = (0..train.len()).filter(|i| !fold.contains(i)).collect();
        let rows: Vec<&[f32]> = inside
            .iter()
            .map(|&i| train[i].hidden[layer].as_slice())
            .collect();
        let y: Vec<bool> = inside.iter().map(|&i| labels[i]).collect();
        let fit = Fitted::train(&rows, &y, c)?;
        for &i in fold {
            scores[i] = fit.score(&train[i].hidden[layer]);
        }
    }
    Ok(scores)
}

/// Trains a head on the training part of `examples` and reports on the held-out
/// part. `name`, `fingerprint`, `arch`, `layers`/`hidden` of the base model and
/// `protocol` go into the head's metadata.
pub fn train_head(
    examples: &[Example],
    options: &TrainOptions,
    base: &HeadBase,
) -> Result<(VerdictHead, TrainReport)> {
    let train: Vec<&Example> = examples.iter().filter(|e| !e.heldout).collect();
    let heldout: Vec<&Example> = examples.iter().filter(|e| e.heldout).collect();
    let labels: Vec<bool> = train.iter().map(|e| is_unsafe(e.label)).collect();
    let (positives, negatives) = (
        labels.iter().filter(|&&y| y).count(),
        labels.iter().filter(|&&y| !y).count(),
    );
    if positives < options.folds || negatives < options.folds {
        return Err(Error::InvalidInput(format!(
            "training needs at least {} safe and {} unsafe items, found {negatives} and {positives}",
            options.folds, options.folds
        )));
    }
    if options.layers.is_empty() || train.iter().any(|e| e.hidden.len() != options.layers.len()) {
        return Err(Error::InvalidInput(
            "every example needs features at each candidate layer".into(),
        ));
    }

    // Layer and C by cross-validated accuracy; ties go to the smaller C.
    let mut cv_accuracy = Vec::new();
    let mut best: Option<(f64, usize, f64, Vec<f64>)> = None;
    for (slot, &layer) in options.layers.iter().enumerate() {
        for &c in &options.c_grid {
            let scores = out_of_fold(&train, slot, c, options)?;
            let correct = scores
                .iter()
                .zip(&labels)
                .filter(|(s, y)| (**s >= 0.0) == **y)
                .count();
            let accuracy = correct as f64 / train.len() as f64;
            cv_accuracy.push((layer, c, accuracy));
            if best.as_ref().is_none_or(|b| accuracy > b.0 + 1e-12) {
                best = Some((accuracy, slot, c, scores));
            }
        }
    }
    let (_, slot, c, oof) = best.expect("at least one layer and C were tried");
    let (platt_a, platt_b) = platt(&oof, &labels)?;
    let rows: Vec<&[f32]> = train.iter().map(|e| e.hidden[slot].as_slice()).collect();
    let fit = Fitted::train(&rows, &labels, c)?;

    let calibrated =
        |fit: &Fitted, e: &Example| sigmoid(platt_a * fit.score(&e.hidden[slot]) + platt_b);
    fn by_dataset<'a>(items: &[&'a Example]) -> BTreeMap<String, Vec<&'a Example>> {
        let mut groups: BTreeMap<String, Vec<&'a Example>> = BTreeMap::new();
        for e in items {
            groups.entry(e.dataset.clone()).or_default().push(e);
        }
        groups
    }
    let mut heldout_head = BTreeMap::new();
    let mut heldout_model = BTreeMap::new();
    let mut transfer = BTreeMap::new();
    let train_groups = by_dataset(&train);
    for (dataset, items) in by_dataset(&heldout) {
        let head: Vec<(Label, f64)> = items
            .iter()
            .map(|e| (e.label, calibrated(&fit, e)))
            .collect();
        let model: Vec<(Label, f64)> = items.iter().map(|e| (e.label, e.p_model)).collect();
        heldout_head.insert(dataset.clone(), figures(&head, 0.5));
        heldout_model.insert(dataset.clone(), figures(&model, 0.5));
        let others: Vec<&Example> = train_groups
            .iter()
            .filter(|(d, _)| **d != dataset)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let other_labels: Vec<bool> = others.iter().map(|e| is_unsafe(e.label)).collect();
        if other_labels.iter().any(|&y| y) && other_labels.iter().any(|&y| !y) {
            let rows: Vec<&[f32]> = others.iter().map(|e| e.hidden[slot].as_slice()).collect();
            let other_fit = Fitted::train(&rows, &other_labels, c)?;
            let scored: Vec<(Label, f64)> = items
                .iter()
                .map(|e| (e.label, sigmoid(other_fit.score(&e.hidden[slot]))))
                .collect();
            transfer.insert(dataset, figures(&scored, 0.5));
        }
    }
    let mean = |m: &BTreeMap<String, Figures>| {
        if m.is_empty() {
            0.0
        } else {
            m.values().map(|f| f.accuracy).sum::<f64>() / m.len() as f64
        }
    };
    let all_heldout: Vec<(Label, f64)> = heldout
        .iter()
        .map(|e| (e.label, calibrated(&fit, e)))
        .collect();
    let report = TrainReport {
        train_items: train.len(),
        heldout_items: heldout.len(),
        train_per_dataset: train_groups
            .iter()
            .map(|(d, v)| (d.clone(), v.len()))
            .collect(),
        layer: options.layers[slot],
        c,
        cv_accuracy,
        heldout_mean_accuracy_head: mean(&heldout_head),
        heldout_mean_accuracy_model: mean(&heldout_model),
        heldout_head,
        heldout_model,
        transfer,
        reliability: reliability(&all_heldout, 10),
    };
    let mut langs: Vec<Lang> = examples.iter().map(|e| e.lang).collect();
    langs.sort_by_key(|l| *l as u8);
    langs.dedup();
    let head = VerdictHead {
        meta: HeadMeta {
            format: HEAD_FORMAT,
            name: format!("{} l{}", base.name, options.layers[slot]),
            base_fingerprint: base.fingerprint.clone(),
            base_arch: base.arch.clone(),
            base_layers: base.layers,
            base_hidden: base.hidden,
            protocol: base.protocol.clone(),
            langs,
            layer: options.layers[slot],
            platt_a,
            platt_b,
            threshold: 0.5,
            training: serde_json::to_value(&report).expect("plain data serialises"),
        },
        mean: fit.standardiser.mean.clone(),
        scale: fit.standardiser.scale.clone(),
        weights: fit.model.weights.iter().map(|&w| w as f32).collect(),
        bias: fit.model.bias as f32,
    };
    Ok((head, report))
}

/// The layers a head may read when none is named: the upper half of the network
/// (where a linear probe separates safe from unsafe best, measured on the Qwen2.5
/// stand-ins: layer 16 of 24, 23 of 28), up to the last but one.
pub fn candidate_layers(layers: usize) -> Vec<usize> {
    let last = layers.saturating_sub(1).max(1);
    ((layers / 2).max(1)..=last).collect()
}

/// The base model a head is trained for.
#[derive(Debug, Clone)]
pub struct HeadBase {
    /// A short name for the head ("qwen2.5-coder-1.5b safety-j").
    pub name: String,
    pub fingerprint: String,
    pub arch: String,
    pub layers: usize,
    pub hidden: usize,
    pub protocol: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_layers_are_the_upper_half_but_the_last() {
        assert_eq!(candidate_layers(28), (14..=27).collect::<Vec<_>>());
        assert_eq!(candidate_layers(2), vec![1]);
        assert_eq!(candidate_layers(1), vec![1]);
    }

    /// A synthetic task a linear head separates: the label is the sign of a fixed
    /// direction in noisy features, which the "model" ignores (its P is a coin).
    fn examples(n: usize) -> Vec<Example> {
        let mut state = 99u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        (0..n)
            .map(|i| {
                let hidden: Vec<f32> = (0..16).map(|_| uniform() as f32).collect();
                let signal: f32 = hidden[3] - hidden[7] + 0.5 * hidden[11];
                Example {
                    dataset: ["a", "b"][i % 2].into(),
                    lang: Lang::En,
                    label: if signal > 0.0 {
                        Label::Unsafe
                    } else {
                        Label::Safe
                    },
                    heldout: i % 4 == 0,
                    p_model: 0.5 + uniform() * 0.1,
                    hidden: vec![hidden.iter().map(|x| x * 0.1).collect(), hidden],
                }
            })
            .collect()
    }

    #[test]
    fn a_head_learns_a_separable_task_the_model_cannot() {
        let data = examples(400);
        let options = TrainOptions {
            layers: vec![5, 6],
            ..TrainOptions::default()
        };
        let base = HeadBase {
            name: "synthetic".into(),
            fingerprint: "f".into(),
            arch: "llama".into(),
            layers: 6,
            hidden: 16,
            protocol: "safety-j".into(),
        };
        let (head, report) = train_head(&data, &options, &base).unwrap();
        assert!(report.heldout_mean_accuracy_head > 0.95, "{report:?}");
        assert!(report.heldout_mean_accuracy_model < 0.7, "{report:?}");
        assert_eq!(report.train_items + report.heldout_items, 400);
        // The head applied to raw features gives the reported held-out accuracy.
        let heldout: Vec<&Example> = data.iter().filter(|e| e.heldout).collect();
        let slot = options
            .layers
            .iter()
            .position(|&l| l == head.meta.layer)
            .unwrap();
        let correct = heldout
            .iter()
            .filter(|e| {
                let p = head.p_unsafe(&e.hidden[slot]).unwrap();
                (p >= 0.5) == (e.label == Label::Unsafe)
            })
            .count();
        let accuracy = correct as f64 / heldout.len() as f64;
        let reported: f64 = report
            .heldout_head
            .values()
            .map(|f| f.accuracy * f.items as f64)
            .sum::<f64>()
            / report.heldout_items as f64;
        assert!(
            (accuracy - reported).abs() < 1e-9,
            "{accuracy} vs {reported}"
        );
    }

    #[test]
    fn training_refuses_one_class_data() {
        let mut data = examples(40);
        data.iter_mut().for_each(|e| e.label = Label::Safe);
        let options = TrainOptions {
            layers: vec![5, 6],
            ..TrainOptions::default()
        };
        let base = HeadBase {
            name: "x".into(),
            fingerprint: "f".into(),
            arch: "llama".into(),
            layers: 6,
            hidden: 16,
            protocol: "safety-j".into(),
        };
        let err = train_head(&data, &options, &base).unwrap_err();
        assert!(err.to_string().contains("unsafe items"), "{err}");
    }
}
