//! The engine seam: everything a judge needs from a model, whatever runs it. A judge
//! prefills a session, scores continuations after a shared prefix (with the residual
//! stream at a chosen layer from the same pass), generates, and truncates a session
//! back to a position. Nothing above this module knows which engine runs.

use std::ops::ControlFlow;

use super::config::ModelConfig;
use super::forward::{Logits, Model, Session};
use super::generate::{self, GenerateOptions, Generation};
use super::score;
use crate::cpu::{CpuModel, CpuSession};
use crate::error::{Error, Result};
use crate::gpu::Context;
use crate::tokenizer::Tokenizer;

/// A loaded model and the hardware that runs it.
#[allow(clippy::large_enum_variant)] // one engine per judge; boxing buys nothing
pub enum Engine {
    /// WGSL kernels on a wgpu adapter, weights in GPU buffers.
    Gpu { ctx: Context, model: Model },
    /// Quantized SIMD kernels on the CPU's cores, weights in memory.
    Cpu(CpuModel),
}

/// A conversation's KV cache on its engine.
pub enum EngineSession {
    /// Keys and values in GPU buffers.
    Gpu(Session),
    /// Keys and values in memory.
    Cpu(CpuSession),
}

/// What [`Engine::score`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// For each continuation, the sum of its tokens' log-probabilities after the
    /// session and the prefix (natural log).
    pub log_probs: Vec<f64>,
    /// For each requested layer `n`, the residual stream after `n` blocks at the
    /// prefix's last position (`hidden` values each), in the order asked.
    pub hidden: Vec<Vec<f32>>,
}

impl EngineSession {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        match self {
            EngineSession::Gpu(s) => s.len(),
            EngineSession::Cpu(s) => s.len(),
        }
    }

    /// True before the first step.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        match self {
            EngineSession::Gpu(s) => s.capacity(),
            EngineSession::Cpu(s) => s.capacity(),
        }
    }

    /// Forgets positions from `len` on (a rollback); fails past what is filled.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        match self {
            EngineSession::Gpu(s) => s.truncate(len),
            EngineSession::Cpu(s) => s.truncate(len),
        }
    }
}

impl Engine {
    /// The WGSL engine for `model`, loaded on `ctx`.
    pub fn gpu(ctx: Context, model: Model) -> Engine {
        Engine::Gpu { ctx, model }
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        match self {
            Engine::Gpu { model, .. } => &model.config,
            Engine::Cpu(model) => &model.config,
        }
    }

    /// The GPU context, when the engine runs on one.
    pub fn gpu_context(&self) -> Option<&Context> {
        match self {
            Engine::Gpu { ctx, .. } => Some(ctx),
            Engine::Cpu(_) => None,
        }
    }

    /// The GPU context and the model's GPU weights, when the engine runs on a GPU
    /// (for GPU-level checks and benchmarks).
    pub fn gpu_model(&self) -> Option<(&Context, &Model)> {
        match self {
            Engine::Gpu { ctx, model } => Some((ctx, model)),
            Engine::Cpu(_) => None,
        }
    }

    /// A fingerprint of the loaded weights (sha256, hex) that verdict heads bind to:
    /// the configuration and every norm vector, which differ between fine-tunes of
    /// the same architecture and are stored unquantized, so a re-quantized copy of
    /// the same checkpoint keeps its fingerprint.
    pub async fn fingerprint(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let c = self.config();
        let mut hasher = Sha256::new();
        hasher.update(
            format!(
                "{}|{}|{}|{}|{}|{}|{}|{}",
                c.arch.gguf_name(),
                c.layers,
                c.hidden,
                c.heads,
                c.kv_heads,
                c.head_dim,
                c.ffn,
                c.vocab
            )
            .as_bytes(),
        );
        match self {
            Engine::Gpu { ctx, model } => {
                let norms = model
                    .layers
                    .iter()
                    .flat_map(|l| [&l.attn_norm, &l.ffn_norm])
                    .chain([&model.output_norm]);
                for norm in norms {
                    let values = norm.read_f32_async(ctx).await?;
                    hasher.update(bytemuck::cast_slice::<f32, u8>(&values));
                }
            }
            Engine::Cpu(model) => {
                for values in model.norm_weights() {
                    hasher.update(bytemuck::cast_slice::<f32, u8>(values));
                }
            }
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// A fresh session of `capacity` positions (at most the model's context).
    pub fn new_session(&self, capacity: usize) -> Result<EngineSession> {
        match self {
            Engine::Gpu { ctx, model } => Ok(EngineSession::Gpu(model.new_session(ctx, capacity)?)),
            Engine::Cpu(model) => Ok(EngineSession::Cpu(model.new_session(capacity)?)),
        }
    }

    /// Appends `ids` to the session without reading anything back.
    pub async fn prefill(&self, session: &mut EngineSession, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        match (self, session) {
            (Engine::Gpu { ctx, model }, EngineSession::Gpu(session)) => {
                model.forward_then(ctx, session, ids, Logits::Last, |_, _| Ok(()))?;
                ctx.check_alive()
            }
            (Engine::Cpu(model), EngineSession::Cpu(session)) => model
                .forward_exact(session, ids, Logits::Last, &[])
                .map(|_| ()),
            _ => Err(mismatch()),
        }
    }

    /// Appends `prefix` (at least one token) to the session and returns, for each of
    /// `continuations` (each at least one token), the log-probability of the whole
    /// sequence after it, plus the residual stream after each of `hidden_layers`
    /// blocks (each in 1..=layers) at the prefix's last position, from the same pass.
    /// The session is left holding the prefix: continuations are scored and rolled
    /// back.
    pub async fn score(
        &self,
        session: &mut EngineSession,
        prefix: &[u32],
        continuations: &[&[u32]],
        hidden_layers: &[usize],
    ) -> Result<Scored> {
        if prefix.is_empty() {
            return Err(Error::InvalidInput(
                "scoring needs at least one prefix token".into(),
            ));
        }
        if continuations.iter().any(|c| c.is_empty()) {
            return Err(Error::InvalidInput(
                "a scored continuation needs at least one token".into(),
            ));
        }
        let layers = self.config().layers;
        if let Some(bad) = hidden_layers.iter().find(|&&n| n == 0 || n > layers) {
            return Err(Error::InvalidInput(format!(
                "hidden layer {bad} does not exist: the model has layers 1..={layers}"
            )));
        }
        let longest = continuations.iter().map(|c| c.len()).max().unwrap_or(0);
        let need = session.len() + prefix.len() + longest.saturating_sub(1);
        if need > session.capacity() {
            return Err(Error::InvalidInput(format!(
                "scoring needs {need} positions but the session holds {}",
                session.capacity()
            )));
        }
        match (self, session) {
            (Engine::Gpu { ctx, model }, EngineSession::Gpu(session)) => {
                score::score_gpu(ctx, model, session, prefix, continuations, hidden_layers).await
            }
            (Engine::Cpu(model), EngineSession::Cpu(session)) => {
                score::score_cpu(model, session, prefix, continuations, hidden_layers)
            }
            _ => Err(mismatch()),
        }
    }

    /// Runs `prompt` after what the session holds and generates from it; see
    /// [`generate::generate_async`].
    pub async fn generate(
        &self,
        session: &mut EngineSession,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        options: &GenerateOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        match (self, session) {
            (Engine::Gpu { ctx, model }, EngineSession::Gpu(session)) => {
                generate::generate_async(ctx, model, tokenizer, session, prompt, options, on_text)
                    .await
            }
            (Engine::Cpu(model), EngineSession::Cpu(session)) => {
                crate::cpu::generate(model, tokenizer, session, prompt, options, on_text)
            }
            _ => Err(mismatch()),
        }
    }

    /// Which engine runs, for people: `gpu (<adapter>)` or `cpu (<n> threads)`.
    pub fn describe(&self) -> String {
        match self {
            Engine::Gpu { ctx, .. } => format!("gpu ({})", ctx.info.name),
            Engine::Cpu(_) => format!(
                "cpu ({} threads)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
        }
    }
}

/// A session used with an engine that did not make it.
fn mismatch() -> Error {
    Error::InvalidInput("a session of one engine was used with another".into())
}
