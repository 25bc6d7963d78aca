//! Scoring continuations: the log-probability of token sequences after a shared
//! prefix (a judge's label words), with the residual stream at chosen layers read
//! from the same pass, on the GPU and on the CPU.

use super::engine::Scored;
use super::forward::{Logits, Model, Session};
use crate::cpu::{CpuModel, CpuSession};
use crate::error::Result;
use crate::gpu::{Context, Readback};
use crate::ops::{self, Elem, Tensor};

/// Runs `prefix` on `session` and scores each continuation after it; see
/// [`super::Engine::score`] for the contract (checked there). One submit runs the
/// prefix, scores every continuation's first token and copies the scores (and the
/// captured hidden state) back; a continuation of more tokens costs one more step of
/// them, rolled back afterwards.
pub(super) async fn score_gpu(
    ctx: &Context,
    model: &Model,
    session: &mut Session,
    prefix: &[u32],
    continuations: &[&[u32]],
    hidden_layers: &[usize],
) -> Result<Scored> {
    let firsts: Vec<u32> = continuations.iter().map(|c| c[0]).collect();
    let shape = [firsts.len()];
    let first_ids = Tensor::from_u32(ctx, "continuation first tokens", &shape, &firsts)?;
    let first_log_probs = Tensor::new(ctx, "continuation log-probs", &shape, Elem::F32)?;
    let first_probs = Tensor::new(ctx, "continuation probs", &shape, Elem::F32)?;
    let captured = session.captured_hidden().clone();
    let then = |encoder: &mut crate::gpu::Encoder, logits: &Tensor| {
        ops::token_softmax::encode(
            ctx,
            encoder,
            logits,
            0,
            &first_ids,
            &first_log_probs,
            &first_probs,
        )?;
        let scores = first_log_probs.record_read(ctx, encoder)?;
        let row_bytes = (model.config.hidden * 4) as u64;
        let hidden = hidden_layers
            .iter()
            .map(|&n| {
                let offset = (n - 1) as u64 * row_bytes;
                ctx.record_readback(encoder, &captured.buffer, offset, row_bytes)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((scores, hidden))
    };
    let (scores, hidden_reads) =
        model.forward_capture_then(ctx, session, prefix, Logits::Last, hidden_layers, then)?;
    let base = session.len();
    let first: Vec<f32> = read_f32(ctx, scores).await?;
    let mut hidden = Vec::with_capacity(hidden_reads.len());
    for readback in hidden_reads {
        hidden.push(read_f32(ctx, readback).await?);
    }
    let mut log_probs = Vec::with_capacity(continuations.len());
    for (tokens, first) in continuations.iter().zip(first) {
        let rest = rest_log_prob(ctx, model, session, tokens).await;
        session.truncate(base)?;
        log_probs.push(first as f64 + rest?);
    }
    Ok(Scored { log_probs, hidden })
}

async fn read_f32(ctx: &Context, readback: Readback) -> Result<Vec<f32>> {
    Ok(bytemuck::pod_collect_to_vec(
        &ctx.finish_readback(readback).await?,
    ))
}

/// log P(`tokens[1..]` | the session, then `tokens[0]`): 0 for one token. Runs
/// `tokens[..len-1]` on the session (the caller rolls it back) and reads every
/// row's score in one submit.
async fn rest_log_prob(
    ctx: &Context,
    model: &Model,
    session: &mut Session,
    tokens: &[u32],
) -> Result<f64> {
    if tokens.len() < 2 {
        return Ok(0.0);
    }
    let targets = &tokens[1..];
    let per_row = targets
        .iter()
        .map(|&token| {
            Ok((
                Tensor::from_u32(ctx, "continuation token", &[1], &[token])?,
                Tensor::new(ctx, "continuation log-prob", &[1], Elem::F32)?,
                Tensor::new(ctx, "continuation prob", &[1], Elem::F32)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let inputs = &tokens[..tokens.len() - 1];
    let readbacks = model.forward_then(ctx, session, inputs, Logits::All, |encoder, logits| {
        per_row
            .iter()
            .enumerate()
            .map(|(row, (id, log_prob, prob))| {
                ops::token_softmax::encode(ctx, encoder, logits, row, id, log_prob, prob)?;
                log_prob.record_read(ctx, encoder)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut total = 0.0;
    for readback in readbacks {
        total += read_f32(ctx, readback).await?[0] as f64;
    }
    Ok(total)
}

/// [`score_gpu`] on the CPU engine: the same passes, log-softmax by the f64
/// reference of `ops::token_softmax`.
pub(super) fn score_cpu(
    model: &CpuModel,
    session: &mut CpuSession,
    prefix: &[u32],
    continuations: &[&[u32]],
    hidden_layers: &[usize],
) -> Result<Scored> {
    let step = model.forward_exact(session, prefix, Logits::Last, hidden_layers)?;
    let base = session.len();
    let firsts: Vec<u32> = continuations.iter().map(|c| c[0]).collect();
    let (first, _) = ops::token_softmax::reference(&step.logits, &firsts);
    let vocab = model.config.vocab;
    let mut log_probs = Vec::with_capacity(continuations.len());
    for (tokens, first) in continuations.iter().zip(first) {
        let mut total = first as f64;
        if tokens.len() >= 2 {
            let rest = model.forward_exact(session, &tokens[..tokens.len() - 1], Logits::All, &[]);
            session.truncate(base)?;
            let rest = rest?;
            for (row, &token) in rest.logits.chunks_exact(vocab).zip(&tokens[1..]) {
                total += ops::token_softmax::reference(row, &[token]).0[0] as f64;
            }
        }
        log_probs.push(total);
    }
    Ok(Scored {
        log_probs,
        hidden: step.hidden,
    })
}
