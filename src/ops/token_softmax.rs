//! Label scoring: for one row of logits and a list of chosen token ids, each id's
//! log-probability under the softmax of the whole row, and its probability
//! renormalised over the chosen ids alone (what the judge turns into `P(unsafe)`
//! from the `safe` / `unsafe` continuations).
//!
//! Numerics: the row maximum is subtracted before `exp`, the per-invocation sums are
//! compensated (Kahan) and combined by a tree, and a log-probability is formed as
//! `(x - max) - log(sum)`, so large logits lose nothing. Logits are expected finite
//! (`-inf` entries get probability 0). Against an f64 reference the log-probabilities
//! agree within `3e-5 + 1e-6·|want|` and the renormalised probabilities within
//! `1e-6 + 1e-5·want`, up to the full 151,936-token vocabulary.
//!
//! Contract on ids (they live on the GPU, so the kernel checks them): an id at or
//! beyond the vocabulary gets NaN in both outputs and is left out of the
//! renormalisation of the others; an id listed twice counts twice.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::{Elem, Tensor};

const SHADER: Shader = Shader {
    name: "token_softmax.wgsl",
    source: include_str!("../../shaders/token_softmax.wgsl"),
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    row: u32,
    cols: u32,
    count: u32,
    _pad: u32,
}

/// Records, for each `ids[j]`, `log_probs[j] = log_softmax(logits[row, ..])[ids[j]]`
/// and `probs[j] = softmax over the chosen ids`. `logits` is f32 `[.., vocab]`; `ids`
/// is a non-empty u32 tensor; `log_probs` and `probs` are f32 of the same shape as `ids`.
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    logits: &Tensor,
    row: usize,
    ids: &Tensor,
    log_probs: &Tensor,
    probs: &Tensor,
) -> Result<()> {
    const OP: &str = "token_softmax";
    logits.expect_elem(OP, "logits", Elem::F32)?;
    ids.expect_elem(OP, "ids", Elem::U32)?;
    log_probs.expect_elem(OP, "log_probs", Elem::F32)?;
    probs.expect_elem(OP, "probs", Elem::F32)?;
    if logits.is_empty() || row >= logits.rows() {
        return Err(Error::Shape {
            op: OP,
            message: format!(
                "logits {:?} have {} non-empty rows; row {row} asked for",
                logits.shape,
                logits.rows()
            ),
        });
    }
    if ids.is_empty() {
        return Err(Error::Shape {
            op: OP,
            message: format!(
                "ids {:?} are empty; at least one token is needed",
                ids.shape
            ),
        });
    }
    if log_probs.shape != ids.shape || probs.shape != ids.shape {
        return Err(Error::Shape {
            op: OP,
            message: format!(
                "ids {:?} need log_probs and probs of the same shape; got {:?} and {:?}",
                ids.shape, log_probs.shape, probs.shape
            ),
        });
    }
    let params = Params {
        row: row as u32,
        cols: logits.cols() as u32,
        count: ids.len() as u32,
        _pad: 0,
    };
    let pipeline = ctx.pipeline(SHADER, &[])?;
    let uniform = ctx.uniform("token_softmax params", &params);
    let bind = ctx.bind_group(
        &pipeline,
        &[
            &uniform,
            &logits.buffer,
            &ids.buffer,
            &log_probs.buffer,
            &probs.buffer,
        ],
    );
    ctx.dispatch(encoder, &pipeline, &bind, (1, 1, 1));
    Ok(())
}

/// CPU reference in f64: `(log_probs, probs)` for `ids` under the logits `row`, with
/// the same contract on out-of-vocabulary ids as the kernel.
pub fn reference(row: &[f32], ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let row_max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let log_sum = row
        .iter()
        .map(|&x| (x as f64 - row_max).exp())
        .sum::<f64>()
        .ln();
    let logit = |id: u32| row.get(id as usize).map(|&x| x as f64);
    let chosen_max = ids
        .iter()
        .filter_map(|&id| logit(id))
        .fold(f64::NEG_INFINITY, f64::max);
    let chosen_sum: f64 = ids
        .iter()
        .filter_map(|&id| logit(id))
        .map(|x| (x - chosen_max).exp())
        .sum();
    ids.iter()
        .map(|&id| match logit(id) {
            Some(x) => (
                ((x - row_max) - log_sum) as f32,
                ((x - chosen_max).exp() / chosen_sum) as f32,
            ),
            None => (f32::NAN, f32::NAN),
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::params_layout::{assert_matches_wgsl, rust_params};
    use crate::ops::testing::{assert_close, ctx, random_f32, rng};
    use rand::RngExt;

    #[test]
    fn params_match_the_wgsl_struct() {
        assert_matches_wgsl(SHADER, &[], rust_params!(Params { row, cols, count }));
    }

    fn run(logits: &[f32], shape: &[usize], row: usize, ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
        let ctx = ctx();
        let input = Tensor::from_f32(ctx, "logits", shape, logits).unwrap();
        let ids = Tensor::from_u32(ctx, "ids", &[ids.len()], ids).unwrap();
        let log_probs = Tensor::new(ctx, "log_probs", &ids.shape, Elem::F32).unwrap();
        let probs = Tensor::new(ctx, "probs", &ids.shape, Elem::F32).unwrap();
        log_probs.poison(ctx);
        probs.poison(ctx);
        let mut enc = ctx.encoder();
        encode(ctx, &mut enc, &input, row, &ids, &log_probs, &probs).unwrap();
        ctx.submit("token_softmax test", enc).unwrap();
        (
            log_probs.read_f32(ctx).unwrap(),
            probs.read_f32(ctx).unwrap(),
        )
    }

    fn check(what: &str, logits: &[f32], shape: &[usize], row: usize, ids: &[u32]) {
        let vocab = shape[shape.len() - 1];
        let (want_log, want_p) = reference(&logits[row * vocab..(row + 1) * vocab], ids);
        let (got_log, got_p) = run(logits, shape, row, ids);
        assert_close(
            &format!("{what} log_probs"),
            &got_log,
            &want_log,
            3e-5,
            1e-6,
        );
        assert_close(&format!("{what} probs"), &got_p, &want_p, 1e-6, 1e-5);
    }

    #[test]
    fn token_softmax_matches_f64_reference_on_every_row_and_vocab_size() {
        let mut rng = rng(5);
        for &(rows, vocab) in &[(1, 1), (2, 7), (3, 33), (2, 4864), (2, 151936)] {
            let logits = random_f32(&mut rng, rows * vocab, 12.0);
            for row in 0..rows {
                let top = crate::ops::argmax::reference(&logits[row * vocab..(row + 1) * vocab]);
                let mut ids = vec![top, (vocab - 1) as u32];
                ids.extend((0..rng.random_range(0..5)).map(|_| rng.random_range(0..vocab as u32)));
                check(
                    &format!("rows {rows} vocab {vocab} row {row}"),
                    &logits,
                    &[rows, vocab],
                    row,
                    &ids,
                );
            }
        }
    }

    #[test]
    fn token_softmax_is_stable_for_huge_logits_and_scores_two_labels() {
        let mut rng = rng(6);
        let vocab = 4864;
        let logits: Vec<f32> = random_f32(&mut rng, vocab, 4.0)
            .iter()
            .map(|x| x + 3000.0)
            .collect();
        check("offset 3000", &logits, &[vocab], 0, &[17, 4000]);
        let mut masked = random_f32(&mut rng, 33, 4.0);
        masked[5] = f32::NEG_INFINITY;
        let (got_log, got_p) = run(&masked, &[33], 0, &[5, 6]);
        let (want_log, want_p) = reference(&masked, &[5, 6]);
        assert_eq!(
            (got_log[0], got_p[0]),
            (f32::NEG_INFINITY, 0.0),
            "a masked (-inf) logit has probability 0"
        );
        assert_close(
            "masked",
            &[got_log[1], got_p[1]],
            &[want_log[1], want_p[1]],
            3e-5,
            1e-5,
        );
        let (_, probs) = run(&logits, &[vocab], 0, &[17, 4000]);
        assert!(
            (probs[0] + probs[1] - 1.0).abs() < 1e-6,
            "two labels renormalise to 1: {probs:?}"
        );
    }

    #[test]
    fn token_softmax_marks_out_of_vocabulary_ids_with_nan() {
        let mut rng = rng(8);
        let logits = random_f32(&mut rng, 2 * 33, 3.0);
        let ids = [4, 33, 9, u32::MAX];
        let (log_probs, probs) = run(&logits, &[2, 33], 1, &ids);
        let (want_log, want_p) = reference(&logits[33..], &ids);
        for j in [1, 3] {
            assert!(
                log_probs[j].is_nan() && probs[j].is_nan() && want_log[j].is_nan(),
                "id {}",
                ids[j]
            );
        }
        for j in [0, 2] {
            assert_close(
                "valid ids",
                &[log_probs[j], probs[j]],
                &[want_log[j], want_p[j]],
                3e-5,
                1e-5,
            );
        }
        assert!((probs[0] + probs[2] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn token_softmax_rejects_empty_ids_and_mismatched_outputs() {
        let ctx = ctx();
        let logits = Tensor::new(ctx, "logits", &[2, 5], Elem::F32).unwrap();
        let ids = Tensor::new(ctx, "ids", &[0], Elem::U32).unwrap();
        let out = Tensor::new(ctx, "out", &[0], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &logits, 0, &ids, &out, &out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "token_softmax: ids [0] are empty; at least one token is needed"
        );
        let ids = Tensor::new(ctx, "ids", &[2], Elem::U32).unwrap();
        let short = Tensor::new(ctx, "out", &[1], Elem::F32).unwrap();
        let long = Tensor::new(ctx, "out", &[2], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &logits, 0, &ids, &long, &short).unwrap_err();
        assert_eq!(
            err.to_string(),
            "token_softmax: ids [2] need log_probs and probs of the same shape; got [2] and [1]"
        );
        let err = encode(ctx, &mut ctx.encoder(), &logits, 2, &ids, &long, &long).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("token_softmax: logits [2, 5] have 2 non-empty rows; row 2"),
            "{err}"
        );
        let err = encode(ctx, &mut ctx.encoder(), &logits, 0, &long, &long, &long).unwrap_err();
        assert_eq!(err.to_string(), "token_softmax: ids must be U32, not F32");
    }
}
