//! Iterative preference learning, the third part of Safety-J: sample several critiques
//! per training dialogue from the judge ([`sample`]), score each with the critique
//! meta-evaluation and label correctness ([`score`]), turn the scores into chosen /
//! rejected pairs for DPO ([`pairs`]), train on them (`scripts/train_dpo.py`, TRL),
//! and measure how far a model prefers the chosen completions ([`margin`]).
//!
//! The dialogues come from a committed split ([`split`]) into a training part and a
//! held-out part that never mix. Every step writes a resumable journal in the round's
//! folder (`samples.jsonl`, `scores.jsonl`), so a killed round goes on where it
//! stopped.

pub mod margin;
pub mod pairs;
pub mod sample;
pub mod score;
pub mod split;

use std::path::Path;

use crate::error::{Error, Result};
use crate::eval::datasets::CritiqueItem;
use crate::judge::{Dialogue, JudgeProtocol, Label, Lang, Mode, Prompt};

/// A training dialogue of preference learning: from the label-level data (with a
/// gold label) or the critique-level data (with reference AIUs).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrefItem {
    /// Where it came from: `dataset#index` of its source file.
    pub id: String,
    /// sha256 of query and response ([`crate::heads::split::content_key`]): its
    /// identity in the split and in every journal.
    pub key: String,
    /// The template language.
    pub lang: Lang,
    /// A's query.
    pub query: String,
    /// B's response, under judgement.
    pub response: String,
    /// The gold label, when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    /// Reference AIUs of a good critique, when the source has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aius: Vec<String>,
}

impl PrefItem {
    /// The judge's critique-mode prompt for this dialogue: what critiques are sampled
    /// from, and the `prompt` of its DPO pairs.
    pub fn prompt(&self, protocol: &dyn JudgeProtocol) -> Prompt {
        let dialogue = Dialogue::single(self.query.clone(), self.response.clone());
        protocol.prompt(&dialogue, self.lang, Mode::Critique)
    }

    /// The item as the critique meta-evaluation takes it (no reference AIUs for a
    /// label-level item: then only precision is measured).
    pub fn critique_item(&self) -> CritiqueItem {
        let (dataset, index) = match self.id.rsplit_once('#') {
            Some((dataset, index)) => (dataset.to_string(), index.parse().unwrap_or(0)),
            None => (self.id.clone(), 0),
        };
        CritiqueItem {
            dataset,
            index,
            lang: self.lang,
            prompt: self.query.clone(),
            response: self.response.clone(),
            aius: self.aius.clone(),
        }
    }
}

/// Reads a JSONL file of [`PrefItem`]s (a split's `train.jsonl`), refusing an empty
/// file, a line that is not an item and two items with the same content.
pub fn load_items(path: &Path) -> Result<Vec<PrefItem>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        file: file.clone(),
        source,
    })?;
    let mut items: Vec<PrefItem> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: PrefItem = serde_json::from_str(line).map_err(|e| Error::Dataset {
            file: file.clone(),
            message: format!(
                "line {} is not a preference item (id, key, lang, query, response, label?, aius?): {e}",
                i + 1
            ),
        })?;
        if crate::heads::split::content_key(&item.query, &item.response) != item.key {
            return Err(Error::Dataset {
                file: file.clone(),
                message: format!(
                    "line {}: the key of {} is not the hash of its query and response (edited by hand?)",
                    i + 1,
                    item.id
                ),
            });
        }
        if !seen.insert(item.key.clone()) {
            return Err(Error::Dataset {
                file: file.clone(),
                message: format!("line {}: {} repeats an earlier dialogue", i + 1, item.id),
            });
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(Error::Dataset {
            file,
            message: "no items".into(),
        });
    }
    Ok(items)
}

/// The `i`-th sample of an item, as journals name it: `key#i`.
pub fn sample_id(key: &str, i: usize) -> String {
    format!("{key}#{i}")
}
