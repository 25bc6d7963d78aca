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

/// The most decoder layers a config may declare (the largest released models have
/// about 130); more is a corrupt or hostile file, refused before anything is built.
pub const MAX_LAYERS: usize = 1024;

/// The most elements one tensor or activation may have: the kernels index elements
/// with WGSL's `u32`.
pub const MAX_ELEMENTS: u64 = u32::MAX as u64;

impl ModelConfig {
    /// Checks the numbers fit together and stay within what the kernels can index,
    /// before anything is allocated; `source` names the file for errors.
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
        if self.layers > MAX_LAYERS {
            return fail(format!(
                "{} layers is past the limit of {MAX_LAYERS}",
                self.layers
            ));
        }
        let products = [
            ("heads × head dim", self.heads, self.head_dim),
            ("KV heads × head dim", self.kv_heads, self.head_dim),
            ("vocabulary × hidden size", self.vocab, self.hidden),
            ("feed-forward × hidden size", self.ffn, self.hidden),
            ("heads × context", self.heads, self.context),
        ];
        for (name, a, b) in products {
            if (a as u64)
                .checked_mul(b as u64)
                .is_none_or(|n| n > MAX_ELEMENTS)
            {
                return fail(format!(
                    "{name} ({a} × {b}) is past the {MAX_ELEMENTS} elements a kernel can index"
                ));
            }
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
        let positive_finite = |v: f32| v > 0.0 && v.is_finite();
        if !positive_finite(self.rms_eps) || !positive_finite(self.rope_base) {
            return fail(format!(
                "rms eps {} and rope base {} must be positive",
                self.rms_eps, self.rope_base
            ));
        }
        Ok(())
    }
}
