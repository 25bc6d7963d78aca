//! The committed split of preference learning's dialogues: a training part that rounds
//! sample from and a held-out part that only measures, decided by a hash of each
//! dialogue's content ([`crate::heads::split`]), so the same dialogue falls on the
//! same side on every machine and in every round.
//!
//! A split folder holds `train.jsonl` ([`PrefItem`]s), `heldout/label/<dataset>.jsonl`
//! and `heldout/critique/<dataset>.jsonl` (in the formats `safetyj eval label` and
//! `safetyj eval critique` read, one file per source so each keeps its language), and
//! `split.json` (the parameters and counts).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{Error, Result};
use crate::eval::datasets::{item_id, CritiqueItem, LabelItem};
use crate::heads::split::{content_key, is_heldout, split};

use super::PrefItem;

/// How a split is drawn.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitOptions {
    /// Fraction of dialogues held out, by content hash.
    pub holdout: f64,
    /// Training dialogues kept per label-level dataset and label, or per
    /// critique-level dataset.
    pub train_per_class: usize,
    /// Held-out dialogues kept per label-level dataset and label, or per
    /// critique-level dataset.
    pub heldout_per_class: usize,
}

/// A drawn split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Dialogues rounds train on.
    pub train: Vec<PrefItem>,
    /// Held-out label-level items, by dataset.
    pub heldout_label: BTreeMap<String, Vec<LabelItem>>,
    /// Held-out critique-level items, by dataset.
    pub heldout_critique: BTreeMap<String, Vec<CritiqueItem>>,
}

/// What `split.json` records.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitSummary {
    /// The parameters.
    pub options: SplitOptions,
    /// Training dialogues.
    pub train: usize,
    /// Held-out dialogues per dataset.
    pub heldout: BTreeMap<String, usize>,
}

/// Splits label-level and critique-level items: label-level ones stratified by
/// dataset and label, critique-level ones by dataset, each side taken in key order.
/// A dialogue present in several sources is kept once.
pub fn split_items(label: &[LabelItem], critique: &[CritiqueItem], options: SplitOptions) -> Split {
    let mut train = Vec::new();
    let mut heldout_label: BTreeMap<String, Vec<LabelItem>> = BTreeMap::new();
    for s in split(
        label,
        options.holdout,
        options.train_per_class,
        options.heldout_per_class,
    ) {
        if s.heldout {
            heldout_label
                .entry(s.item.dataset.clone())
                .or_default()
                .push(s.item);
        } else {
            train.push(PrefItem {
                id: item_id(&s.item.dataset, s.item.index),
                key: s.key,
                lang: s.item.lang,
                query: s.item.query,
                response: s.item.response,
                label: Some(s.item.label),
                aius: Vec::new(),
            });
        }
    }
    let mut keyed: Vec<(String, &CritiqueItem)> = critique
        .iter()
        .map(|c| (content_key(&c.prompt, &c.response), c))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    let mut taken: HashMap<(String, bool), usize> = HashMap::new();
    let mut heldout_critique: BTreeMap<String, Vec<CritiqueItem>> = BTreeMap::new();
    for (key, item) in keyed {
        let heldout = is_heldout(&key, options.holdout);
        let count = taken.entry((item.dataset.clone(), heldout)).or_default();
        *count += 1;
        let limit = match heldout {
            true => options.heldout_per_class,
            false => options.train_per_class,
        };
        if *count > limit {
            continue;
        }
        if heldout {
            heldout_critique
                .entry(item.dataset.clone())
                .or_default()
                .push(item.clone());
        } else {
            train.push(PrefItem {
                id: item_id(&item.dataset, item.index),
                key,
                lang: item.lang,
                query: item.prompt.clone(),
                response: item.response.clone(),
                label: None,
                aius: item.aius.clone(),
            });
        }
    }
    train.sort_by(|a, b| a.key.cmp(&b.key));
    train.dedup_by(|a, b| a.key == b.key);
    for items in heldout_label.values_mut() {
        items.sort_by_key(|i| i.index);
    }
    for items in heldout_critique.values_mut() {
        items.sort_by_key(|i| i.index);
    }
    Split {
        train,
        heldout_label,
        heldout_critique,
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Write {
            file: parent.display().to_string(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| Error::Write {
        file: path.display().to_string(),
        source,
    })
}

fn jsonl<T: serde::Serialize>(rows: impl IntoIterator<Item = T>) -> String {
    rows.into_iter()
        .map(|row| serde_json::to_string(&row).expect("plain data serializes") + "\n")
        .collect()
}

/// Writes `split` into `dir` (see the module's documentation) and returns the summary
/// written to `split.json`. Refuses a folder that already holds a `train.jsonl`: a
/// committed split is never redrawn in place.
pub fn write_split(dir: &Path, split: &Split, options: SplitOptions) -> Result<SplitSummary> {
    let train_file = dir.join("train.jsonl");
    if train_file.exists() {
        return Err(Error::InvalidInput(format!(
            "{} exists: a split is drawn once; give another folder",
            train_file.display()
        )));
    }
    write(&train_file, &jsonl(&split.train))?;
    let mut heldout = BTreeMap::new();
    for (dataset, items) in &split.heldout_label {
        let rows = items.iter().map(
            |i| serde_json::json!({"query": i.query, "response": i.response, "label": i.label}),
        );
        write(
            &dir.join("heldout/label").join(format!("{dataset}.jsonl")),
            &jsonl(rows),
        )?;
        heldout.insert(format!("label/{dataset}"), items.len());
    }
    for (dataset, items) in &split.heldout_critique {
        let rows = items.iter().map(
            |i| serde_json::json!({"prompt": i.prompt, "response": i.response, "aius": i.aius}),
        );
        write(
            &dir.join("heldout/critique")
                .join(format!("{dataset}.jsonl")),
            &jsonl(rows),
        )?;
        heldout.insert(format!("critique/{dataset}"), items.len());
    }
    let summary = SplitSummary {
        options,
        train: split.train.len(),
        heldout,
    };
    write(
        &dir.join("split.json"),
        &(serde_json::to_string_pretty(&summary).expect("plain data serializes") + "\n"),
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{Label, Lang};

    fn label_item(dataset: &str, index: usize) -> LabelItem {
        LabelItem {
            dataset: dataset.into(),
            index,
            lang: Lang::En,
            query: format!("q{index}"),
            response: format!("r{index} in {dataset}"),
            label: if index.is_multiple_of(2) {
                Label::Safe
            } else {
                Label::Unsafe
            },
        }
    }

    #[test]
    fn train_and_heldout_never_share_a_dialogue_and_follow_the_content_hash() {
        let label: Vec<LabelItem> = (0..60).map(|i| label_item("a", i)).collect();
        let critique: Vec<CritiqueItem> = (0..40)
            .map(|i| CritiqueItem {
                dataset: "en".into(),
                index: i,
                lang: Lang::En,
                prompt: format!("p{i}"),
                response: format!("r{i}"),
                aius: vec![format!("B says r{i}.")],
            })
            .collect();
        let options = SplitOptions {
            holdout: 0.3,
            train_per_class: 5,
            heldout_per_class: 3,
        };
        let split = split_items(&label, &critique, options);
        assert_eq!(split.train.len(), 5 + 5 + 5);
        assert_eq!(split.heldout_label["a"].len(), 6);
        assert_eq!(split.heldout_critique["en"].len(), 3);
        for item in &split.train {
            assert!(
                !is_heldout(&item.key, 0.3),
                "{} trains but hashes held out",
                item.id
            );
        }
        let held: Vec<String> = split.heldout_label["a"]
            .iter()
            .map(|i| content_key(&i.query, &i.response))
            .chain(
                split.heldout_critique["en"]
                    .iter()
                    .map(|i| content_key(&i.prompt, &i.response)),
            )
            .collect();
        for key in &held {
            assert!(is_heldout(key, 0.3));
            assert!(split.train.iter().all(|t| &t.key != key));
        }
        // Order of the sources does not matter.
        let mut reversed = label.clone();
        reversed.reverse();
        assert_eq!(split_items(&reversed, &critique, options), split);
    }
}
