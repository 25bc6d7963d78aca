//! The records an eval saves per item (one JSON line each in `results.jsonl`), read
//! back by a resumed run and by the reports.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::critique::CritiqueRecord;
use crate::judge::{Label, Lang};

/// A record saved per item, identified across runs by its id.
pub trait ResultRecord: Serialize + DeserializeOwned + Send {
    /// The item's id (`dataset#index`).
    fn id(&self) -> &str;
}

impl ResultRecord for CritiqueRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

/// The saved result of judging one label-level item.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelRecord {
    /// `dataset#index`.
    pub id: String,
    /// The dataset.
    pub dataset: String,
    /// The item's position in its file.
    pub index: usize,
    /// The template language used.
    pub lang: Lang,
    /// The gold label.
    pub gold: Label,
    /// The label the judge stated; `None` when unparsed.
    pub predicted: Option<Label>,
    /// P(unsafe), when the backend gives it.
    pub p_unsafe: Option<f64>,
    /// The label by the reference code's strict rule (anything but an exact
    /// `[Answer] safe` first line is unsafe), kept for parity checks.
    pub reference_rule: Label,
    /// The judge's raw output.
    pub raw: String,
}

impl ResultRecord for LabelRecord {
    fn id(&self) -> &str {
        &self.id
    }
}
