//! The model on the CPU: weights loaded from any [`WeightSource`] and checked as the
//! GPU loader checks them, sessions holding an f32 KV cache, and the forward pass of
//! `crate::model::forward` step for step.

use super::kernels::{self, AttentionShape, KvCache, RopeTable};
use super::matrix::{QuantMatrix, EXACT_ROWS};
use crate::error::{Error, Result};
use crate::model::arch::Weight;
use crate::model::load::{check_finite, needed_weights, WeightKind, WeightSource};
use crate::model::{Logits, ModelConfig};
use crate::ops::rope::RopeConfig;

/// The weights of one transformer block.
struct Layer {
    attn_norm: Vec<f32>,
    q: QuantMatrix,
    k: QuantMatrix,
    v: QuantMatrix,
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    /// Per-head query and key RMS norm weights (qwen3).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    attn_output: QuantMatrix,
    ffn_norm: Vec<f32>,
    ffn_gate: QuantMatrix,
    ffn_up: QuantMatrix,
    ffn_down: QuantMatrix,
}

/// A model loaded for the CPU: its configuration and its weights, matrices kept in
/// their stored (GGUF block) types.
pub struct CpuModel {
    pub config: ModelConfig,
    token_embedding: QuantMatrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    /// The output projection; `None` when tied to the token embedding.
    output: Option<QuantMatrix>,
    rope: RopeConfig,
}

/// A conversation's state on the CPU: every layer's KV cache and the positions filled.
pub struct CpuSession {
    caches: Vec<KvCache>,
    capacity: usize,
    len: usize,
}

/// What one forward step returns.
pub struct CpuStep {
    /// `rows × vocab`: the last token's logits ([`Logits::Last`]) or every token's
    /// ([`Logits::All`]).
    pub logits: Vec<f32>,
    /// The residual stream at the step's last token after each asked number of
    /// blocks, in the order asked.
    pub hidden: Vec<Vec<f32>>,
}

impl CpuSession {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions from `len` on, so the next step overwrites them. Fails if
    /// `len` is past what is filled.
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

/// A weight read from a source and checked against the configuration.
enum Loaded {
    Matrix(QuantMatrix),
    Vector(Vec<f32>),
}

/// Takes the loaded weights out by name while assembling the model.
struct Loadeds {
    name: String,
    weights: Vec<(Weight, Loaded)>,
}

impl Loadeds {
    fn take(&mut self, weight: Weight) -> Option<Loaded> {
        let at = self.weights.iter().position(|(w, _)| *w == weight)?;
        Some(self.weights.swap_remove(at).1)
    }

    fn missing(&self, weight: Weight) -> Error {
        Error::Format {
            file: self.name.clone(),
            message: format!("tensor {} was not loaded", weight.gguf_name()),
        }
    }

    fn optional_matrix(&mut self, weight: Weight) -> Option<QuantMatrix> {
        match self.take(weight) {
            Some(Loaded::Matrix(m)) => Some(m),
            _ => None,
        }
    }

    fn matrix(&mut self, weight: Weight) -> Result<QuantMatrix> {
        self.optional_matrix(weight)
            .ok_or_else(|| self.missing(weight))
    }

    fn optional_vector(&mut self, weight: Weight) -> Option<Vec<f32>> {
        match self.take(weight) {
            Some(Loaded::Vector(v)) => Some(v),
            _ => None,
        }
    }

    fn vector(&mut self, weight: Weight) -> Result<Vec<f32>> {
        self.optional_vector(weight)
            .ok_or_else(|| self.missing(weight))
    }
}

impl CpuModel {
    /// Loads every weight of `source`, checking each shape against the configuration
    /// and refusing non-finite values, as the GPU loader does. `progress` is called
    /// with (tensors done, tensors total).
    pub fn load(
        source: &dyn WeightSource,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<CpuModel> {
        let config = source.config()?;
        let rope = RopeConfig {
            head_dim: config.head_dim,
            rotary_dim: config.rope_dims,
            base: config.rope_base as f64,
            pairing: config.rope_pairing,
            freq_factors: config.rope_freq_factors.clone(),
        };
        rope.validate()?;
        let name = source.name().to_string();
        let invalid = |message: String| Error::Format {
            file: name.clone(),
            message,
        };
        let needed = needed_weights(&config);
        let mut weights = Vec::with_capacity(needed.len());
        for (index, need) in needed.iter().enumerate() {
            if need.optional && !source.has(need.weight) {
                progress(index + 1, needed.len());
                continue;
            }
            let tensor = need.weight.gguf_name();
            let loaded = match need.kind {
                WeightKind::Matrix { rows, cols } => {
                    let m = source.matrix(need.weight)?;
                    if (m.rows, m.cols) != (rows, cols) {
                        return Err(invalid(format!(
                            "tensor {tensor} is {}×{} but the configuration needs {rows}×{cols}",
                            m.rows, m.cols
                        )));
                    }
                    check_finite(&tensor, m.dtype, &m.bytes).map_err(invalid)?;
                    Loaded::Matrix(QuantMatrix::new(&tensor, m)?)
                }
                WeightKind::Vector { len } => {
                    let values = source.vector(need.weight)?;
                    if values.len() != len {
                        return Err(invalid(format!(
                            "tensor {tensor} has {} values but the configuration needs {len}",
                            values.len()
                        )));
                    }
                    if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                        return Err(invalid(format!(
                            "tensor {tensor} holds a non-finite value at element {i}"
                        )));
                    }
                    Loaded::Vector(values)
                }
            };
            weights.push((need.weight, loaded));
            progress(index + 1, needed.len());
        }
        let mut w = Loadeds { name, weights };
        let token_embedding = w.matrix(Weight::TokenEmbedding)?;
        let layers = (0..config.layers)
            .map(|i| {
                Ok(Layer {
                    attn_norm: w.vector(Weight::AttnNorm(i))?,
                    q: w.matrix(Weight::Q(i))?,
                    k: w.matrix(Weight::K(i))?,
                    v: w.matrix(Weight::V(i))?,
                    q_bias: w.optional_vector(Weight::QBias(i)),
                    k_bias: w.optional_vector(Weight::KBias(i)),
                    v_bias: w.optional_vector(Weight::VBias(i)),
                    qk_norm: if config.arch.has_qk_norm() {
                        Some((w.vector(Weight::QNorm(i))?, w.vector(Weight::KNorm(i))?))
                    } else {
                        None
                    },
                    attn_output: w.matrix(Weight::AttnOutput(i))?,
                    ffn_norm: w.vector(Weight::FfnNorm(i))?,
                    ffn_gate: w.matrix(Weight::FfnGate(i))?,
                    ffn_up: w.matrix(Weight::FfnUp(i))?,
                    ffn_down: w.matrix(Weight::FfnDown(i))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output_norm = w.vector(Weight::OutputNorm)?;
        let output = w.optional_matrix(Weight::Output);
        Ok(CpuModel {
            config,
            token_embedding,
            layers,
            output_norm,
            output,
            rope,
        })
    }

    /// Every norm vector: each block's attention and feed-forward norms, then the
    /// output norm (what [`crate::model::Engine::fingerprint`] hashes).
    pub fn norm_weights(&self) -> impl Iterator<Item = &[f32]> {
        self.layers
            .iter()
            .flat_map(|l| [l.attn_norm.as_slice(), l.ffn_norm.as_slice()])
            .chain([self.output_norm.as_slice()])
    }

    /// Bytes the weights occupy in memory (matrices as stored, vectors as f32).
    pub fn weight_bytes(&self) -> u64 {
        let vec_bytes = |v: &Vec<f32>| 4 * v.len() as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                [
                    &l.q,
                    &l.k,
                    &l.v,
                    &l.attn_output,
                    &l.ffn_gate,
                    &l.ffn_up,
                    &l.ffn_down,
                ]
                .iter()
                .map(|m| m.bytes())
                .sum::<u64>()
                    + [Some(&l.attn_norm), Some(&l.ffn_norm)]
                        .into_iter()
                        .chain([&l.q_bias, &l.k_bias, &l.v_bias].map(Option::as_ref))
                        .chain(l.qk_norm.iter().flat_map(|(q, k)| [q, k]).map(Some))
                        .flatten()
                        .map(vec_bytes)
                        .sum::<u64>()
            })
            .sum();
        layers
            + self.token_embedding.bytes()
            + self.output.as_ref().map_or(0, QuantMatrix::bytes)
            + vec_bytes(&self.output_norm)
    }

    fn attention_shape(&self, capacity: usize) -> AttentionShape {
        let c = &self.config;
        AttentionShape {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            capacity,
        }
    }

    /// A fresh session whose cache holds `capacity` positions (at most the model's
    /// context length).
    pub fn new_session(&self, capacity: usize) -> Result<CpuSession> {
        let c = &self.config;
        if capacity == 0 || capacity > c.context {
            return Err(Error::InvalidInput(format!(
                "a session of {capacity} positions does not fit the model's context of {}",
                c.context
            )));
        }
        let shape = self.attention_shape(capacity);
        Ok(CpuSession {
            caches: (0..c.layers).map(|_| KvCache::new(shape)).collect(),
            capacity,
            len: 0,
        })
    }

    /// Runs `tokens` at the session's next positions, appending them to its cache.
    /// The logits are `1 × vocab` for [`Logits::Last`] and `tokens × vocab` for
    /// [`Logits::All`]. For each `n` of `hidden_layers` (1 ..= layers) the step also
    /// returns the residual stream after `n` blocks at its last token (for
    /// `n = layers`, before the output norm).
    pub fn forward(
        &self,
        session: &mut CpuSession,
        tokens: &[u32],
        which: Logits,
        hidden_layers: &[usize],
    ) -> Result<CpuStep> {
        let exact = tokens.len() >= EXACT_ROWS;
        self.step(session, tokens, which, hidden_layers, exact)
    }

    /// [`CpuModel::forward`] multiplying exactly (f32) however few the tokens: what
    /// scoring uses, so that P(unsafe) never depends on how a prompt was split
    /// into steps (a prefix-cache hit, a streaming check).
    pub fn forward_exact(
        &self,
        session: &mut CpuSession,
        tokens: &[u32],
        which: Logits,
        hidden_layers: &[usize],
    ) -> Result<CpuStep> {
        self.step(session, tokens, which, hidden_layers, true)
    }

    fn step(
        &self,
        session: &mut CpuSession,
        tokens: &[u32],
        which: Logits,
        hidden_layers: &[usize],
        exact: bool,
    ) -> Result<CpuStep> {
        let c = &self.config;
        let t = tokens.len();
        if t == 0 {
            return Err(Error::InvalidInput(
                "a forward step needs at least one token".into(),
            ));
        }
        if session.len + t > session.capacity {
            return Err(Error::InvalidInput(format!(
                "{} positions in the cache plus {t} new tokens exceed its capacity of {} (model context {})",
                session.len, session.capacity, c.context
            )));
        }
        if let Some(n) = hidden_layers.iter().find(|&&n| n == 0 || n > c.layers) {
            return Err(Error::InvalidInput(format!(
                "hidden state after layer {n} asked of a model of {} layers (valid: 1 to {})",
                c.layers, c.layers
            )));
        }
        crate::ops::embedding::check_ids(tokens, c.vocab)?;

        let first = session.len;
        let shape = self.attention_shape(session.capacity);
        let table = RopeTable::new(&self.rope, first, t);
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let mut x = vec![0.0; t * c.hidden];
        for (&id, row) in tokens.iter().zip(x.chunks_exact_mut(c.hidden)) {
            self.token_embedding.row(id as usize, row)?;
        }
        let mut normed = vec![0.0; t * c.hidden];
        let mut attn = vec![0.0; t * c.heads * c.head_dim];
        let mut hidden = vec![Vec::new(); hidden_layers.len()];
        for (i, (layer, cache)) in self.layers.iter().zip(&mut session.caches).enumerate() {
            kernels::rms_norm(&x, &layer.attn_norm, c.rms_eps, &mut normed);
            let mut q = layer.q.matmul(&normed, t, layer.q_bias.as_deref(), exact)?;
            let mut k = layer.k.matmul(&normed, t, layer.k_bias.as_deref(), exact)?;
            let v = layer.v.matmul(&normed, t, layer.v_bias.as_deref(), exact)?;
            if let Some((q_norm, k_norm)) = &layer.qk_norm {
                // Rows of head_dim: every head of every token, as the GPU does.
                q = per_head_rms_norm(&q, q_norm, c.rms_eps);
                k = per_head_rms_norm(&k, k_norm, c.rms_eps);
            }
            table.apply(&self.rope, &mut q, c.heads);
            table.apply(&self.rope, &mut k, c.kv_heads);
            cache.append(shape, &k, &v, first);
            kernels::attention(shape, cache, &q, first, scale, &mut attn);
            add(&mut x, &layer.attn_output.matmul(&attn, t, None, exact)?);
            kernels::rms_norm(&x, &layer.ffn_norm, c.rms_eps, &mut normed);
            let mut gate = layer.ffn_gate.matmul(&normed, t, None, exact)?;
            let up = layer.ffn_up.matmul(&normed, t, None, exact)?;
            kernels::silu_mul(&mut gate, &up);
            add(&mut x, &layer.ffn_down.matmul(&gate, t, None, exact)?);
            for (slot, &n) in hidden_layers.iter().enumerate() {
                if n == i + 1 {
                    hidden[slot] = x[(t - 1) * c.hidden..].to_vec();
                }
            }
        }
        let rows = match which {
            Logits::Last => 1,
            Logits::All => t,
        };
        let last = &x[(t - rows) * c.hidden..];
        let normed = &mut normed[..rows * c.hidden];
        kernels::rms_norm(last, &self.output_norm, c.rms_eps, normed);
        let output = self.output.as_ref().unwrap_or(&self.token_embedding);
        let logits = output.matmul(normed, rows, None, exact)?;
        session.len += t;
        Ok(CpuStep { logits, hidden })
    }
}

/// Each `weight.len()`-wide row of `x` RMS-normed and scaled by `weight`.
fn per_head_rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    kernels::rms_norm(x, weight, eps, &mut out);
    out
}

/// `x += y`, element by element.
fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}
