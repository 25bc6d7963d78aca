//! The forward pass: one implementation for every architecture, recorded into a
//! single command encoder per step.

use super::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder};
use crate::ops::kv_append::KvCache;
use crate::ops::rope::Rope;
use crate::ops::{self, Elem, Position, Tensor, WeightMatrix};

/// The weights of one transformer block on the GPU.
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub q: WeightMatrix,
    pub k: WeightMatrix,
    pub v: WeightMatrix,
    pub q_bias: Option<Tensor>,
    pub k_bias: Option<Tensor>,
    pub v_bias: Option<Tensor>,
    /// The per-head query and key RMS norm weights (`head_dim` each), for
    /// architectures that have them (qwen3).
    pub qk_norm: Option<(Tensor, Tensor)>,
    pub attn_output: WeightMatrix,
    pub ffn_norm: Tensor,
    pub ffn_gate: WeightMatrix,
    pub ffn_up: WeightMatrix,
    pub ffn_down: WeightMatrix,
}

/// A loaded model: its configuration and all weights on the GPU.
pub struct Model {
    pub config: ModelConfig,
    pub token_embedding: WeightMatrix,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Tensor,
    /// The output projection; `None` when tied to the token embedding.
    pub output: Option<WeightMatrix>,
    /// Rotary embedding tables, built once from the configuration.
    pub rope: Rope,
}

/// Activations and outputs for a step of `tokens` rows, allocated once per distinct
/// row count (the outputs on first use of each [`Logits`] kind).
struct Scratch {
    tokens: usize,
    ids: Tensor,
    x: Tensor,
    normed: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn: Tensor,
    proj: Tensor,
    gate: Tensor,
    up: Tensor,
    act: Tensor,
    /// Queries and keys before their per-head norm, for architectures that have one
    /// (the norm writes them into `q` and `k`).
    qk_raw: Option<(Tensor, Tensor)>,
    /// The last token's hidden state and its final norm, `[1, hidden]`, for
    /// [`Logits::Last`] steps of more than one token.
    last_row: Option<(Tensor, Tensor)>,
    /// Logits of [`Logits::Last`] steps, `[1, vocab]`.
    last_logits: Option<Tensor>,
    /// Logits of [`Logits::All`] steps, `[tokens, vocab]`.
    all_logits: Option<Tensor>,
}

impl Scratch {
    fn new(ctx: &Context, c: &ModelConfig, tokens: usize) -> Result<Scratch> {
        let f = |label: &str, cols: usize| Tensor::new(ctx, label, &[tokens, cols], Elem::F32);
        Ok(Scratch {
            tokens,
            ids: Tensor::new(ctx, "token ids", &[tokens], Elem::U32)?,
            x: f("residual", c.hidden)?,
            normed: f("normed", c.hidden)?,
            q: f("q", c.heads * c.head_dim)?,
            k: f("k", c.kv_heads * c.head_dim)?,
            v: f("v", c.kv_heads * c.head_dim)?,
            attn: f("attention", c.heads * c.head_dim)?,
            proj: f("projection", c.hidden)?,
            gate: f("gate", c.ffn)?,
            up: f("up", c.ffn)?,
            act: f("swiglu", c.ffn)?,
            qk_raw: if c.arch.has_qk_norm() {
                Some((
                    f("q before norm", c.heads * c.head_dim)?,
                    f("k before norm", c.kv_heads * c.head_dim)?,
                ))
            } else {
                None
            },
            last_row: None,
            last_logits: None,
            all_logits: None,
        })
    }

    fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        let outputs = [&self.last_logits, &self.all_logits]
            .into_iter()
            .flatten()
            .chain(self.last_row.iter().flat_map(|(h, n)| [h, n]))
            .chain(self.qk_raw.iter().flat_map(|(q, k)| [q, k]));
        [
            &self.ids,
            &self.x,
            &self.normed,
            &self.q,
            &self.k,
            &self.v,
            &self.attn,
            &self.proj,
            &self.gate,
            &self.up,
            &self.act,
        ]
        .into_iter()
        .chain(outputs)
    }
}

/// Step sizes whose activations a session keeps; the least recently used beyond
/// this many is freed (a judge prefills dialogues of ever new lengths).
const SCRATCH_STEP_SIZES: usize = 4;

/// The tensor behind `slot` (a handle sharing its buffer), created as `[rows, cols]`
/// on first use.
fn output_slot(
    ctx: &Context,
    slot: &mut Option<Tensor>,
    label: &str,
    rows: usize,
    cols: usize,
) -> Result<Tensor> {
    if slot.is_none() {
        *slot = Some(Tensor::new(ctx, label, &[rows, cols], Elem::F32)?);
    }
    Ok(slot.clone().expect("filled above"))
}

/// Which positions' logits a step produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (scoring, tests).
    All,
}

/// A conversation's state on the GPU: the KV cache of every layer and the number of
/// positions filled.
pub struct Session {
    caches: Vec<KvCache>,
    len: usize,
    /// The current step's first position, read by rope, kv_append and attention.
    position: Position,
    /// A token id written on the GPU, input of [`Model::forward_picked_then`].
    picked: Tensor,
    /// `[layers, hidden]`: row `n - 1` holds the residual stream after block `n` that
    /// a capturing step copied out (see [`Model::forward_capture_then`]).
    captured: Tensor,
    scratch: Vec<Scratch>,
}

/// Where a step's token ids come from.
#[derive(Clone, Copy)]
enum StepInput<'a> {
    /// Written from the host.
    Host(&'a [u32]),
    /// Already on the GPU, in the session's picked-token tensor.
    Picked,
}

impl Session {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A one-element u32 tensor for a pick (argmax, sampling) to write the next
    /// token into, so that [`Model::forward_picked_then`] can run on it.
    pub fn picked_token(&self) -> &Tensor {
        &self.picked
    }

    /// `[layers, hidden]` f32: where [`Model::forward_capture_then`] copies the
    /// residual stream of the step's last token after each chosen block (row `n - 1`
    /// for block `n`).
    pub fn captured_hidden(&self) -> &Tensor {
        &self.captured
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.caches.first().map_or(0, |c| c.capacity())
    }

    /// Bytes of GPU memory the session holds: its KV caches and the activations and
    /// logits of the step sizes it keeps.
    pub fn gpu_bytes(&self) -> u64 {
        let caches: u64 = self
            .caches
            .iter()
            .map(|c| c.k.buffer.size() + c.v.buffer.size())
            .sum();
        let scratch: u64 = self
            .scratch
            .iter()
            .flat_map(Scratch::tensors)
            .map(|t| t.buffer.size())
            .sum();
        caches + scratch + self.picked.buffer.size() + self.captured.buffer.size()
    }

    /// Forgets positions from `len` on, so the next step overwrites them (used to
    /// reuse a cached prefix). Fails if `len` is past what is filled.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::InvalidInput(format!(
                "cannot keep {len} positions of a session holding {}",
                self.len
            )));
        }
        self.len = len;
        Ok(())
    }
}

impl Model {
    /// A fresh session whose cache holds `capacity` positions (at most the model's
    /// context length).
    pub fn new_session(&self, ctx: &Context, capacity: usize) -> Result<Session> {
        let c = &self.config;
        if capacity == 0 || capacity > c.context {
            return Err(Error::InvalidInput(format!(
                "a session of {capacity} positions does not fit the model's context of {}",
                c.context
            )));
        }
        let caches = (0..c.layers)
            .map(|i| {
                KvCache::new(
                    ctx,
                    &format!("kv cache {i}"),
                    c.kv_heads,
                    capacity,
                    c.head_dim,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Session {
            caches,
            len: 0,
            position: Position::new(ctx, 0)?,
            picked: Tensor::new(ctx, "picked token", &[1], Elem::U32)?,
            captured: Tensor::new(
                ctx,
                "captured hidden states",
                &[c.layers, c.hidden],
                Elem::F32,
            )?,
            scratch: Vec::new(),
        })
    }

    fn layer_matrices(&self) -> impl Iterator<Item = &WeightMatrix> {
        self.layers.iter().flat_map(|l| {
            [
                &l.q,
                &l.k,
                &l.v,
                &l.attn_output,
                &l.ffn_gate,
                &l.ffn_up,
                &l.ffn_down,
            ]
        })
    }

    /// Bytes of GPU memory the weights occupy (including the rotary tables).
    pub fn gpu_bytes(&self) -> u64 {
        let matrices = self
            .layer_matrices()
            .chain([&self.token_embedding])
            .chain(self.output.as_ref())
            .flat_map(|m| &m.chunks)
            .map(|c| c.buffer.size());
        let vectors = self
            .layers
            .iter()
            .flat_map(|l| {
                [
                    Some(&l.attn_norm),
                    Some(&l.ffn_norm),
                    l.q_bias.as_ref(),
                    l.k_bias.as_ref(),
                    l.v_bias.as_ref(),
                    l.qk_norm.as_ref().map(|(q, _)| q),
                    l.qk_norm.as_ref().map(|(_, k)| k),
                ]
            })
            .flatten()
            .chain([&self.output_norm])
            .map(|t| t.buffer.size());
        matrices.chain(vectors).sum::<u64>() + self.rope.gpu_bytes()
    }

    /// Weight bytes one decode step reads: every layer's matrices and the output
    /// projection (the embedding lookup reads one row, which is left out).
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.layer_matrices()
            .chain([self.output_matrix()])
            .map(|m| (m.rows * m.row_bytes()) as u64)
            .sum()
    }

    /// Multiply-adds × 2 of the matrix products for one token, not counting the
    /// output projection (computed for the last token only) or attention.
    pub fn layer_flops_per_token(&self) -> u64 {
        self.layer_matrices()
            .map(|m| 2 * (m.rows * m.cols) as u64)
            .sum()
    }

    /// Multiply-adds × 2 of the output projection for one token.
    pub fn output_flops(&self) -> u64 {
        let m = self.output_matrix();
        2 * (m.rows * m.cols) as u64
    }

    fn output_matrix(&self) -> &WeightMatrix {
        self.output.as_ref().unwrap_or(&self.token_embedding)
    }

    /// Runs `tokens` at the session's next positions, appends them to its cache and
    /// records their logits (`[1, vocab]` for [`Logits::Last`], `[tokens, vocab]` for
    /// [`Logits::All`]). One command encoder, one submit, and no allocation once the
    /// session has run a step of this size.
    ///
    /// The logits live in the session's scratch: read them before the next forward
    /// on this session. (Precisely, the next step of the same token count and
    /// [`Logits`] kind overwrites them; steps of other sizes or kinds leave them be.)
    pub fn forward(
        &self,
        ctx: &Context,
        session: &mut Session,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Tensor> {
        self.forward_then(ctx, session, tokens, which, |_, logits| Ok(logits.clone()))
    }

    /// [`Model::forward`], with `then` recording more work on the step's logits
    /// (picking the next token, scoring labels) into the same submit.
    pub fn forward_then<T>(
        &self,
        ctx: &Context,
        session: &mut Session,
        tokens: &[u32],
        which: Logits,
        then: impl FnOnce(&mut Encoder, &Tensor) -> Result<T>,
    ) -> Result<T> {
        self.step(ctx, session, StepInput::Host(tokens), which, &[], then)
    }

    /// [`Model::forward_then`] that also copies the residual stream of the last token
    /// after each of `hidden_layers` blocks (each in 1..=layers; `layers` is the
    /// stream before the final norm) into [`Session::captured_hidden`], in the same
    /// submit.
    pub fn forward_capture_then<T>(
        &self,
        ctx: &Context,
        session: &mut Session,
        tokens: &[u32],
        which: Logits,
        hidden_layers: &[usize],
        then: impl FnOnce(&mut Encoder, &Tensor) -> Result<T>,
    ) -> Result<T> {
        if let Some(bad) = hidden_layers
            .iter()
            .find(|&&n| n == 0 || n > self.config.layers)
        {
            return Err(Error::InvalidInput(format!(
                "hidden layer {bad} does not exist: the model has layers 1..={}",
                self.config.layers
            )));
        }
        let input = StepInput::Host(tokens);
        self.step(ctx, session, input, which, hidden_layers, then)
    }

    /// [`Model::forward_then`] for one token that a pick recorded earlier wrote into
    /// [`Session::picked_token`]: the step is queued on the GPU before the CPU has
    /// read the token, so generation does not wait for each token before recording
    /// the next step. The id is not checked here: an id past the vocabulary (a pick
    /// over NaN logits writes 0xFFFF_FFFF) gets no embedding row written, and the caller, which
    /// reads the id back, refuses it (the tokenizer knows no such token).
    pub fn forward_picked_then<T>(
        &self,
        ctx: &Context,
        session: &mut Session,
        which: Logits,
        then: impl FnOnce(&mut Encoder, &Tensor) -> Result<T>,
    ) -> Result<T> {
        self.step(ctx, session, StepInput::Picked, which, &[], then)
    }

    fn step<T>(
        &self,
        ctx: &Context,
        session: &mut Session,
        input: StepInput,
        which: Logits,
        capture: &[usize],
        then: impl FnOnce(&mut Encoder, &Tensor) -> Result<T>,
    ) -> Result<T> {
        let c = &self.config;
        let t = match input {
            StepInput::Host(tokens) => tokens.len(),
            StepInput::Picked => 1,
        };
        if t == 0 {
            return Err(Error::InvalidInput(
                "a forward step needs at least one token".into(),
            ));
        }
        if session.len + t > session.capacity() {
            return Err(Error::InvalidInput(format!(
                "{} positions in the cache plus {t} new tokens exceed its capacity of {} (model context {})",
                session.len,
                session.capacity(),
                c.context
            )));
        }
        if let StepInput::Host(tokens) = input {
            ops::embedding::check_ids(tokens, c.vocab)?;
        }
        let index = match session.scratch.iter().position(|s| s.tokens == t) {
            Some(i) => i,
            None => {
                if session.scratch.len() >= SCRATCH_STEP_SIZES {
                    session.scratch.remove(0);
                }
                session.scratch.push(Scratch::new(ctx, c, t)?);
                session.scratch.len() - 1
            }
        };
        // Most recently used last, so the eviction above drops the stalest size.
        let recent = session.scratch.remove(index);
        session.scratch.push(recent);
        session.position.set(ctx, session.len)?;
        let position = &session.position;
        let s = session.scratch.last_mut().expect("pushed above");
        let ids = match input {
            StepInput::Host(tokens) => {
                ctx.write_bytes(&s.ids.buffer, 0, bytemuck::cast_slice(tokens));
                &s.ids
            }
            StepInput::Picked => &session.picked,
        };
        let rows = match which {
            Logits::Last => 1,
            Logits::All => t,
        };
        if rows < t && s.last_row.is_none() {
            s.last_row = Some((
                Tensor::new(ctx, "final hidden", &[rows, c.hidden], Elem::F32)?,
                Tensor::new(ctx, "final norm", &[rows, c.hidden], Elem::F32)?,
            ));
        }
        let logits = match which {
            Logits::Last => output_slot(ctx, &mut s.last_logits, "logits", rows, c.vocab)?,
            Logits::All => output_slot(ctx, &mut s.all_logits, "logits", rows, c.vocab)?,
        };
        let s = &*s;

        let mut enc = ctx.encoder();
        ops::embedding::encode(ctx, &mut enc, ids, &self.token_embedding, &s.x)?;
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        for (index, (layer, cache)) in self.layers.iter().zip(&session.caches).enumerate() {
            ops::rms_norm::encode(ctx, &mut enc, &s.x, &layer.attn_norm, &s.normed, c.rms_eps)?;
            // With a per-head q/k norm, the projections land in `qk_raw` and the
            // norm (rows = tokens × heads of head_dim) writes them into q and k.
            let (q_out, k_out) = match &s.qk_raw {
                Some((q, k)) => (q, k),
                None => (&s.q, &s.k),
            };
            ops::matmul::encode(
                ctx,
                &mut enc,
                &s.normed,
                &layer.q,
                layer.q_bias.as_ref(),
                q_out,
            )?;
            ops::matmul::encode(
                ctx,
                &mut enc,
                &s.normed,
                &layer.k,
                layer.k_bias.as_ref(),
                k_out,
            )?;
            if let Some((q_norm, k_norm)) = &layer.qk_norm {
                let per_head = |x: &Tensor, heads: usize| x.reshaped(&[t * heads, c.head_dim]);
                let (q_heads, k_heads) = (per_head(q_out, c.heads)?, per_head(k_out, c.kv_heads)?);
                let (q, k) = (per_head(&s.q, c.heads)?, per_head(&s.k, c.kv_heads)?);
                ops::rms_norm::encode(ctx, &mut enc, &q_heads, q_norm, &q, c.rms_eps)?;
                ops::rms_norm::encode(ctx, &mut enc, &k_heads, k_norm, &k, c.rms_eps)?;
            }
            ops::matmul::encode(
                ctx,
                &mut enc,
                &s.normed,
                &layer.v,
                layer.v_bias.as_ref(),
                &s.v,
            )?;
            ops::rope::encode(ctx, &mut enc, &self.rope, &s.q, c.heads, position)?;
            ops::rope::encode(ctx, &mut enc, &self.rope, &s.k, c.kv_heads, position)?;
            ops::kv_append::encode(ctx, &mut enc, cache, &s.k, &s.v, position)?;
            ops::attention::encode(ctx, &mut enc, &s.q, cache, &s.attn, position, scale)?;
            ops::matmul::encode(ctx, &mut enc, &s.attn, &layer.attn_output, None, &s.proj)?;
            ops::add::encode_in_place(ctx, &mut enc, &s.x, &s.proj)?;
            ops::rms_norm::encode(ctx, &mut enc, &s.x, &layer.ffn_norm, &s.normed, c.rms_eps)?;
            ops::matmul::encode(ctx, &mut enc, &s.normed, &layer.ffn_gate, None, &s.gate)?;
            ops::matmul::encode(ctx, &mut enc, &s.normed, &layer.ffn_up, None, &s.up)?;
            ops::silu_mul::encode(ctx, &mut enc, &s.gate, &s.up, &s.act)?;
            ops::matmul::encode(ctx, &mut enc, &s.act, &layer.ffn_down, None, &s.proj)?;
            ops::add::encode_in_place(ctx, &mut enc, &s.x, &s.proj)?;
            if capture.contains(&(index + 1)) {
                let row_bytes = (c.hidden * 4) as u64;
                let last = (t - 1) as u64 * row_bytes;
                let to = index as u64 * row_bytes;
                let captured = &session.captured.buffer;
                enc.copy_buffer_to_buffer(&s.x.buffer, last, captured, to, row_bytes);
            }
        }
        // The final norm and output projection, of the last row only when asked.
        let (hidden, normed) = match &s.last_row {
            Some((hidden, normed)) if rows < t => {
                let offset = ((t - rows) * c.hidden * 4) as u64;
                let bytes = (rows * c.hidden * 4) as u64;
                enc.copy_buffer_to_buffer(&s.x.buffer, offset, &hidden.buffer, 0, bytes);
                (hidden, normed)
            }
            _ => (&s.x, &s.normed),
        };
        ops::rms_norm::encode(ctx, &mut enc, hidden, &self.output_norm, normed, c.rms_eps)?;
        ops::matmul::encode(ctx, &mut enc, normed, self.output_matrix(), None, &logits)?;
        let result = then(&mut enc, &logits)?;
        ctx.submit("running a forward step", enc)?;
        session.len += t;
        Ok(result)
    }
}
