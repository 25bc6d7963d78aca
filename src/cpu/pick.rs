//! Choosing the next token from a row of logits on the CPU, with the semantics of the
//! GPU's argmax and sample ops (their CPU references, `crate::ops::argmax::reference`
//! and `crate::ops::sample::reference`, are what run here).

use crate::error::{Error, Result};
use crate::model::generate::Sampling;
use crate::ops::sample::NO_TOKEN;
use crate::ops::{argmax, sample};

/// The next token from one row of `logits`: the largest (ties: lowest id) for
/// [`Sampling::Greedy`], a draw with the uniform number `u ∈ [0, 1)` for
/// [`Sampling::Random`] (the seed there is the caller's: it makes `u`). Fails on an
/// empty row, out-of-range sampling parameters, or a row with nothing to pick (every
/// logit NaN, or for sampling NaN and `-inf`).
pub fn pick(logits: &[f32], sampling: Sampling, u: f32) -> Result<u32> {
    if logits.is_empty() {
        return Err(Error::InvalidInput(
            "cannot pick a token from an empty row of logits".into(),
        ));
    }
    let token = match sampling.params() {
        None => argmax::reference(logits),
        Some(params) => {
            params.validate(u)?;
            sample::reference(logits, &params, u)
        }
    };
    if token == NO_TOKEN {
        return Err(Error::InvalidInput(format!(
            "no token can be picked: none of the {} logits is a number that can be drawn",
            logits.len()
        )));
    }
    Ok(token)
}
