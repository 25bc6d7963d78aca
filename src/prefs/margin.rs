//! `prefs margin`: how strongly a judge model prefers each pair's chosen completion
//! to its rejected one, log P(chosen | prompt) − log P(rejected | prompt), scored on
//! the local engine ([`Judge::score_completions`]). DPO raises this margin on the pairs
//! it trains on; measured before and after, it shows training moved the model.

use crate::error::{Error, Result};
use crate::judge::engine::Judge;

use super::pairs::Pair;
use super::PrefItem;

/// One pair's log-probabilities.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairMargin {
    /// The dialogue's id.
    pub id: String,
    /// log P(chosen | prompt), natural log.
    pub chosen: f64,
    /// log P(rejected | prompt).
    pub rejected: f64,
}

/// Margins of all pairs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MarginReport {
    /// Pairs scored.
    pub pairs: usize,
    /// Mean of chosen − rejected.
    pub mean_margin: f64,
    /// Fraction of pairs whose chosen completion is the more likely.
    pub preferred: f64,
    /// Mean log P(chosen).
    pub mean_chosen: f64,
    /// Mean log P(rejected).
    pub mean_rejected: f64,
    /// Each pair.
    pub each: Vec<PairMargin>,
}

/// Scores every pair's two completions with `judge`. The prompt is rendered again
/// from the pair's dialogue with the judge's protocol and must equal the pair's
/// `prompt` (pairs made with another template are refused).
pub fn pair_margins(judge: &Judge, pairs: &[Pair]) -> Result<MarginReport> {
    if pairs.is_empty() {
        return Err(Error::InvalidInput("no pairs to score".into()));
    }
    let mut each = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let item = PrefItem {
            id: pair.id.clone(),
            key: pair.key.clone(),
            lang: pair.lang,
            query: pair.query.clone(),
            response: pair.response.clone(),
            label: None,
            aius: Vec::new(),
        };
        let prompt = item.prompt(judge.protocol());
        if prompt.text() != pair.prompt {
            return Err(Error::InvalidInput(format!(
                "the pair of {} was made from another prompt than this judge's {} template",
                pair.id,
                judge.protocol().name()
            )));
        }
        let lps = judge.score_completions(&prompt.parts, &[&pair.chosen, &pair.rejected])?;
        each.push(PairMargin {
            id: pair.id.clone(),
            chosen: lps[0],
            rejected: lps[1],
        });
    }
    let n = each.len() as f64;
    Ok(MarginReport {
        pairs: each.len(),
        mean_margin: each.iter().map(|m| m.chosen - m.rejected).sum::<f64>() / n,
        preferred: each.iter().filter(|m| m.chosen > m.rejected).count() as f64 / n,
        mean_chosen: each.iter().map(|m| m.chosen).sum::<f64>() / n,
        mean_rejected: each.iter().map(|m| m.rejected).sum::<f64>() / n,
        each,
    })
}

/// Reads a pairs file (JSONL of [`Pair`]s).
pub fn load_pairs(path: &std::path::Path) -> Result<Vec<Pair>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        file: file.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Dataset {
                file: file.clone(),
                message: format!("line {} is not a pair: {e}", i + 1),
            })
        })
        .collect()
}
