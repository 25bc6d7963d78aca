//! Feature extraction for head training: one verdict pass per dialogue on the
//! judge's engine, the residual stream at the candidate layers, through the
//! resumable [`FeatureCache`].

use std::path::Path;

use super::features::{CacheMeta, FeatureCache, Features};
use super::split::SplitItem;
use super::train::Example;
use crate::error::Result;
use crate::judge::engine::Judge;
use crate::judge::Dialogue;

/// Features of every item, read from the cache in `cache_dir` or extracted on the
/// judge (and appended to the cache as each one finishes). `progress` gets (done,
/// total, extracted this run).
pub fn extract_examples(
    judge: &Judge,
    fingerprint: &str,
    layers: &[usize],
    items: &[SplitItem],
    cache_dir: &Path,
    mut progress: impl FnMut(usize, usize, usize),
) -> Result<Vec<Example>> {
    let meta = CacheMeta {
        fingerprint: fingerprint.to_string(),
        protocol: judge.protocol().name().to_string(),
        layers: layers.to_vec(),
        hidden: judge.config().hidden,
    };
    let mut cache = FeatureCache::open(cache_dir, meta)?;
    let mut examples = Vec::with_capacity(items.len());
    let mut extracted = 0;
    for (done, split) in items.iter().enumerate() {
        let item = &split.item;
        let features = match cache.get(&split.key)? {
            Some(features) => features,
            None => {
                let dialogue = Dialogue::single(item.query.clone(), item.response.clone());
                let probe = judge.probe(&dialogue, Some(item.lang), layers)?;
                let features = Features {
                    p_model: probe.p_unsafe,
                    hidden: probe.hidden,
                };
                cache.put(&split.key, &features)?;
                extracted += 1;
                features
            }
        };
        examples.push(Example {
            dataset: item.dataset.clone(),
            lang: item.lang,
            label: item.label,
            heldout: split.heldout,
            p_model: features.p_model,
            hidden: features.hidden,
        });
        progress(done + 1, items.len(), extracted);
    }
    Ok(examples)
}
