//! Per-architecture knowledge: which architectures run, how their tensors are named in
//! GGUF files and in Hugging Face checkpoints, and how fused tensors are split. One
//! forward pass serves them all; only this table differs.

use crate::error::{Error, Result};

/// A supported decoder architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama family (SmolLM2, Llama 3.2 / Llama-Guard-3-1B).
    Llama,
    /// Qwen2 family (Qwen2.5, Qwen2.5-Coder): Llama plus QKV bias.
    Qwen2,
    /// Qwen3 family (Qwen3, Qwen3Guard-Gen): Llama plus a per-head RMS norm of the
    /// queries and keys before RoPE; no QKV bias.
    Qwen3,
    /// InternLM2 (Safety-J): fused, per-KV-head grouped `wqkv`.
    InternLm2,
}

impl Arch {
    /// The architecture called `name` in GGUF's `general.architecture` or HF's
    /// `model_type`.
    pub fn from_name(name: &str) -> Result<Arch> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "mistral" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "internlm2" => Ok(Arch::InternLm2),
            other => Err(Error::Unsupported(format!(
                "architecture \"{other}\" is not supported (supported: llama, qwen2, qwen3, internlm2)"
            ))),
        }
    }

    /// The GGUF name of the architecture (prefix of its metadata keys).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::InternLm2 => "internlm2",
        }
    }

    /// Whether each head's queries and keys are RMS-normed (weights [`Weight::QNorm`]
    /// and [`Weight::KNorm`], `head_dim` values shared by all heads) before RoPE.
    pub fn has_qk_norm(self) -> bool {
        self == Arch::Qwen3
    }
}

/// One weight of the network, independent of how a file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    TokenEmbedding,
    OutputNorm,
    Output,
    AttnNorm(usize),
    Q(usize),
    K(usize),
    V(usize),
    QBias(usize),
    KBias(usize),
    VBias(usize),
    /// Per-head RMS norm of the queries (qwen3).
    QNorm(usize),
    /// Per-head RMS norm of the keys (qwen3).
    KNorm(usize),
    AttnOutput(usize),
    FfnNorm(usize),
    FfnGate(usize),
    FfnUp(usize),
    FfnDown(usize),
}

impl Weight {
    /// The tensor's name in a GGUF file (llama.cpp's naming, shared by all arches).
    pub fn gguf_name(self) -> String {
        let blk = |i: usize, s: &str| format!("blk.{i}.{s}");
        match self {
            Weight::TokenEmbedding => "token_embd.weight".into(),
            Weight::OutputNorm => "output_norm.weight".into(),
            Weight::Output => "output.weight".into(),
            Weight::AttnNorm(i) => blk(i, "attn_norm.weight"),
            Weight::Q(i) => blk(i, "attn_q.weight"),
            Weight::K(i) => blk(i, "attn_k.weight"),
            Weight::V(i) => blk(i, "attn_v.weight"),
            Weight::QBias(i) => blk(i, "attn_q.bias"),
            Weight::KBias(i) => blk(i, "attn_k.bias"),
            Weight::VBias(i) => blk(i, "attn_v.bias"),
            Weight::QNorm(i) => blk(i, "attn_q_norm.weight"),
            Weight::KNorm(i) => blk(i, "attn_k_norm.weight"),
            Weight::AttnOutput(i) => blk(i, "attn_output.weight"),
            Weight::FfnNorm(i) => blk(i, "ffn_norm.weight"),
            Weight::FfnGate(i) => blk(i, "ffn_gate.weight"),
            Weight::FfnUp(i) => blk(i, "ffn_up.weight"),
            Weight::FfnDown(i) => blk(i, "ffn_down.weight"),
        }
    }

    /// Where the tensor lives in a Hugging Face checkpoint of `arch`.
    pub fn hf_source(self, arch: Arch) -> HfSource {
        let layer = |i: usize, s: &str| HfSource::Whole(format!("model.layers.{i}.{s}"));
        match arch {
            Arch::Llama | Arch::Qwen2 | Arch::Qwen3 => match self {
                Weight::TokenEmbedding => HfSource::Whole("model.embed_tokens.weight".into()),
                Weight::OutputNorm => HfSource::Whole("model.norm.weight".into()),
                Weight::Output => HfSource::Whole("lm_head.weight".into()),
                Weight::AttnNorm(i) => layer(i, "input_layernorm.weight"),
                Weight::Q(i) => layer(i, "self_attn.q_proj.weight"),
                Weight::K(i) => layer(i, "self_attn.k_proj.weight"),
                Weight::V(i) => layer(i, "self_attn.v_proj.weight"),
                Weight::QBias(i) => layer(i, "self_attn.q_proj.bias"),
                Weight::KBias(i) => layer(i, "self_attn.k_proj.bias"),
                Weight::VBias(i) => layer(i, "self_attn.v_proj.bias"),
                Weight::QNorm(i) => layer(i, "self_attn.q_norm.weight"),
                Weight::KNorm(i) => layer(i, "self_attn.k_norm.weight"),
                Weight::AttnOutput(i) => layer(i, "self_attn.o_proj.weight"),
                Weight::FfnNorm(i) => layer(i, "post_attention_layernorm.weight"),
                Weight::FfnGate(i) => layer(i, "mlp.gate_proj.weight"),
                Weight::FfnUp(i) => layer(i, "mlp.up_proj.weight"),
                Weight::FfnDown(i) => layer(i, "mlp.down_proj.weight"),
            },
            Arch::InternLm2 => {
                let wqkv = |i: usize, part: QkvPart, what: &str| HfSource::FusedQkv {
                    name: format!("model.layers.{i}.attention.wqkv.{what}"),
                    part,
                };
                match self {
                    Weight::TokenEmbedding => HfSource::Whole("model.tok_embeddings.weight".into()),
                    Weight::OutputNorm => HfSource::Whole("model.norm.weight".into()),
                    Weight::Output => HfSource::Whole("output.weight".into()),
                    Weight::AttnNorm(i) => layer(i, "attention_norm.weight"),
                    Weight::Q(i) => wqkv(i, QkvPart::Q, "weight"),
                    Weight::K(i) => wqkv(i, QkvPart::K, "weight"),
                    Weight::V(i) => wqkv(i, QkvPart::V, "weight"),
                    Weight::QBias(i) => wqkv(i, QkvPart::Q, "bias"),
                    Weight::KBias(i) => wqkv(i, QkvPart::K, "bias"),
                    Weight::VBias(i) => wqkv(i, QkvPart::V, "bias"),
                    // InternLM2 has no q/k norms (`has_qk_norm`); never looked up.
                    Weight::QNorm(i) => layer(i, "attention.q_norm.weight"),
                    Weight::KNorm(i) => layer(i, "attention.k_norm.weight"),
                    Weight::AttnOutput(i) => layer(i, "attention.wo.weight"),
                    Weight::FfnNorm(i) => layer(i, "ffn_norm.weight"),
                    Weight::FfnGate(i) => layer(i, "feed_forward.w1.weight"),
                    Weight::FfnUp(i) => layer(i, "feed_forward.w3.weight"),
                    Weight::FfnDown(i) => layer(i, "feed_forward.w2.weight"),
                }
            }
        }
    }
}

/// Which projection to take out of a fused QKV tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkvPart {
    Q,
    K,
    V,
}

/// Where a weight comes from in a Hugging Face checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HfSource {
    /// A tensor stored as is.
    Whole(String),
    /// Rows of InternLM2's fused `wqkv`.
    FusedQkv { name: String, part: QkvPart },
}

/// Takes the rows of `part` out of InternLM2's fused `wqkv` (`rows` × `cols`,
/// row-major f32). Its rows are grouped per KV head: for each of the `kv_heads`
/// groups, `heads / kv_heads` query heads, then one key head, then one value head,
/// each `head_dim` rows (modeling_internlm2.py: `rearrange(qkv, "b q (h gs d) -> b q h
/// gs d", gs=2+groups)`). Query head `h * groups + g` is row block `g` of group `h`.
pub fn split_internlm2_qkv(
    fused: &[f32],
    cols: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    part: QkvPart,
) -> Result<Vec<f32>> {
    let groups = heads / kv_heads.max(1);
    let rows = kv_heads * (groups + 2) * head_dim;
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) || fused.len() != rows * cols {
        return Err(Error::Shape {
            op: "internlm2 wqkv split",
            message: format!(
                "a fused wqkv for {heads} heads / {kv_heads} KV heads of {head_dim} needs {rows}×{cols} values, got {}",
                fused.len()
            ),
        });
    }
    let block = |h: usize, slot: usize| {
        let start = ((h * (groups + 2) + slot) * head_dim) * cols;
        &fused[start..start + head_dim * cols]
    };
    let mut out = Vec::new();
    for h in 0..kv_heads {
        match part {
            QkvPart::Q => (0..groups).for_each(|g| out.extend_from_slice(block(h, g))),
            QkvPart::K => out.extend_from_slice(block(h, groups)),
            QkvPart::V => out.extend_from_slice(block(h, groups + 1)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internlm2_split_follows_per_kv_head_grouping() {
        // 4 query heads, 2 KV heads, head_dim 1, one column: rows are
        // [q0 q1 k0 v0 | q2 q3 k1 v1].
        let fused: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let split = |p| split_internlm2_qkv(&fused, 1, 4, 2, 1, p).unwrap();
        assert_eq!(split(QkvPart::Q), vec![0.0, 1.0, 4.0, 5.0]);
        assert_eq!(split(QkvPart::K), vec![2.0, 6.0]);
        assert_eq!(split(QkvPart::V), vec![3.0, 7.0]);
        // 3 query heads do not split evenly over 2 KV heads.
        let err = split_internlm2_qkv(&fused, 1, 3, 2, 1, QkvPart::Q)
            .unwrap_err()
            .to_string();
        assert!(err.contains("for 3 heads / 2 KV heads"), "{err}");
    }

    #[test]
    fn unknown_architecture_is_named() {
        let err = Arch::from_name("gpt-neox").unwrap_err().to_string();
        assert!(err.contains("\"gpt-neox\" is not supported"), "{err}");
    }
}
