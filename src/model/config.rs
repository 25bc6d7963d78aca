//! The architecture-neutral shape of a decoder-only transformer.

use super::arch::Arch;
use crate::error::{Error, Result};
use crate::ops::rope::RopePairing;

/// Everything the forward pass needs to know about a checkpoint's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub layers: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub ffn: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Leading dimensions of each head that are rotated (the rest pass through).
    pub rope_dims: usize,
    pub rope_pairing: RopePairing,
    /// Per-frequency rope divisors (Llama 3 scaling, GGUF `rope_freqs.weight`).
    pub rope_freq_factors: Option<Vec<f32>>,
    /// Longest sequence the checkpoint was trained for.
    pub context: usize,
}

impl ModelConfig {
    /// Checks the numbers fit together; `source` names the file for errors.
    pub fn validate(&self, source: &str) -> Result<()> {
        let fail = |m: String| {
            Err(Error::Format {
                file: source.to_string(),
                message: m,
            })
        };
        let positive = [
            ("layers", self.layers),
            ("hidden size", self.hidden),
            ("heads", self.heads),
            ("KV heads", self.kv_heads),
            ("head dim", self.head_dim),
            ("feed-forward size", self.ffn),
            ("vocabulary", self.vocab),
            ("context", self.context),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return fail(format!("{name} is 0"));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return fail(format!(
                "{} heads are not a multiple of {} KV heads",
                self.heads, self.kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2)
            || self.rope_dims > self.head_dim
            || !self.rope_dims.is_multiple_of(2)
        {
            return fail(format!(
                "rotary dims {} do not fit a head of {} (both must be even)",
                self.rope_dims, self.head_dim
            ));
        }
        if !(self.rms_eps > 0.0 && self.rms_eps.is_finite())
            || !(self.rope_base > 0.0 && self.rope_base.is_finite())
        {
            return fail(format!(
                "rms eps {} and rope base {} must be positive",
                self.rms_eps, self.rope_base
            ));
        }
        Ok(())
    }
}
