//! The train / held-out split of labelled dialogues, by a hash of their content: an
//! item's side depends only on its query and response, never on file order, sample
//! size or seed, so the same dialogue is held out on every machine and in every run.

use sha2::{Digest, Sha256};

use crate::eval::datasets::LabelItem;
use crate::judge::Label;

/// The sha256 (hex) of an item's query and response: its identity in splits and
/// feature caches.
pub fn content_key(query: &str, response: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(query.as_bytes());
    hasher.update([0x1f]);
    hasher.update(response.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the item with `key` is held out when a `fraction` of items is: the key's
/// first 64 bits read as a number in [0, 1) fall below it.
pub fn is_heldout(key: &str, fraction: f64) -> bool {
    let head = u64::from_str_radix(&key[..16.min(key.len())], 16).unwrap_or(0);
    (head as f64 / 2f64.powi(64)) < fraction
}

/// An item with its content key and side of the split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitItem {
    pub item: LabelItem,
    pub key: String,
    pub heldout: bool,
}

/// Splits `items` by content hash (`holdout` of them held out in expectation) and
/// keeps at most `per_class_train` training and `per_class_heldout` held-out items
/// of each (dataset, label), taking them in key order: a stratified sample that is
/// random but fixed by content. Duplicated dialogues (same query and response) are
/// kept once.
pub fn split(
    items: &[LabelItem],
    holdout: f64,
    per_class_train: usize,
    per_class_heldout: usize,
) -> Vec<SplitItem> {
    let mut keyed: Vec<SplitItem> = items
        .iter()
        .map(|item| {
            let key = content_key(&item.query, &item.response);
            SplitItem {
                heldout: is_heldout(&key, holdout),
                item: item.clone(),
                key,
            }
        })
        .collect();
    keyed.sort_by(|a, b| a.key.cmp(&b.key));
    keyed.dedup_by(|a, b| a.key == b.key);
    let mut taken: std::collections::HashMap<(String, bool, bool), usize> = Default::default();
    let mut out: Vec<SplitItem> = keyed
        .into_iter()
        .filter(|s| {
            let limit = if s.heldout {
                per_class_heldout
            } else {
                per_class_train
            };
            let count = taken
                .entry((
                    s.item.dataset.clone(),
                    s.item.label == Label::Unsafe,
                    s.heldout,
                ))
                .or_default();
            *count += 1;
            *count <= limit
        })
        .collect();
    out.sort_by(|a, b| {
        (a.item.dataset.as_str(), a.item.index).cmp(&(b.item.dataset.as_str(), b.item.index))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Lang;

    fn item(dataset: &str, index: usize, label: Label) -> LabelItem {
        LabelItem {
            dataset: dataset.into(),
            index,
            lang: Lang::En,
            query: format!("q{index}"),
            response: format!("r{index} of {dataset}"),
            label,
        }
    }

    #[test]
    fn the_side_of_an_item_depends_on_its_content_alone() {
        let items: Vec<LabelItem> = (0..400)
            .map(|i| {
                item(
                    "a",
                    i,
                    if i % 2 == 0 {
                        Label::Safe
                    } else {
                        Label::Unsafe
                    },
                )
            })
            .collect();
        let all = split(&items, 0.3, usize::MAX, usize::MAX);
        let held = all.iter().filter(|s| s.heldout).count();
        assert!((90..=150).contains(&held), "{held} of 400 held out");
        // Reordering the input changes nothing.
        let mut reversed = items.clone();
        reversed.reverse();
        assert_eq!(split(&reversed, 0.3, usize::MAX, usize::MAX), all);
        // A smaller sample takes a subset with the same sides.
        let small = split(&items, 0.3, 20, 10);
        for s in &small {
            let same = all.iter().find(|a| a.key == s.key).unwrap();
            assert_eq!(same.heldout, s.heldout);
        }
        for label in [Label::Safe, Label::Unsafe] {
            let count = |heldout| {
                small
                    .iter()
                    .filter(|s| s.item.label == label && s.heldout == heldout)
                    .count()
            };
            assert_eq!((count(false), count(true)), (20, 10));
        }
    }

    #[test]
    fn duplicated_dialogues_are_kept_once() {
        let mut items = vec![item("a", 0, Label::Safe), item("a", 1, Label::Unsafe)];
        let mut copy = items[0].clone();
        copy.index = 2;
        items.push(copy);
        assert_eq!(split(&items, 0.5, 10, 10).len(), 2);
    }
}
