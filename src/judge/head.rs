//! Verdict heads: a logistic regression on the residual stream at the verdict
//! position, trained from labelled dialogues, that replaces the model's own label
//! probabilities. A head is a small safetensors file (standardisation, weights, bias)
//! whose metadata binds it to its base model, protocol and layer, and carries its
//! calibration, threshold and held-out figures.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Lang;
use crate::error::{Error, Result};

/// Format version written into every head file.
pub const HEAD_FORMAT: u32 = 1;

/// The safetensors metadata key holding [`HeadMeta`] as JSON.
const META_KEY: &str = "safetyj.head";

/// What a head was made for and how it decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMeta {
    /// [`HEAD_FORMAT`] of the writer.
    pub format: u32,
    /// A short name shown with verdicts ("qwen2.5-coder-1.5b safety-j l23").
    pub name: String,
    /// The base model's fingerprint ([`crate::model::Engine::fingerprint`]): a head
    /// only runs on the model it was trained on.
    pub base_fingerprint: String,
    /// The base model's architecture and width, for errors a person can read.
    pub base_arch: String,
    pub base_layers: usize,
    pub base_hidden: usize,
    /// The protocol whose prompt produced the features (`safety-j`).
    pub protocol: String,
    /// The template languages it was trained on.
    pub langs: Vec<Lang>,
    /// Features are the residual stream after this many blocks (1..=layers).
    pub layer: usize,
    /// Platt calibration: P(unsafe) = sigmoid(`platt_a` · score + `platt_b`), where
    /// score = weights · standardised features + bias.
    pub platt_a: f64,
    pub platt_b: f64,
    /// P(unsafe) at or above which the head says unsafe.
    pub threshold: f64,
    /// How it was trained and its held-out figures (free-form, reported as is).
    pub training: serde_json::Value,
}

/// A loaded head: metadata and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictHead {
    pub meta: HeadMeta,
    /// Feature means subtracted before scaling (`hidden` values).
    pub mean: Vec<f32>,
    /// Feature standard deviations divided by (`hidden` values, all positive).
    pub scale: Vec<f32>,
    /// Weights on the standardised features (`hidden` values).
    pub weights: Vec<f32>,
    pub bias: f32,
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl VerdictHead {
    /// The raw score (log-odds before calibration) of one feature vector.
    pub fn score(&self, features: &[f32]) -> Result<f64> {
        if features.len() != self.weights.len() {
            return Err(Error::InvalidInput(format!(
                "head {} expects {} features, got {}",
                self.meta.name,
                self.weights.len(),
                features.len()
            )));
        }
        let dot: f64 = features
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((&x, &m), &s), &w)| ((x - m) / s) as f64 * w as f64)
            .sum();
        Ok(dot + self.bias as f64)
    }

    /// Calibrated P(unsafe) of one feature vector.
    pub fn p_unsafe(&self, features: &[f32]) -> Result<f64> {
        let score = self.score(features)?;
        Ok(sigmoid(self.meta.platt_a * score + self.meta.platt_b))
    }

    /// Refuses to run on a model other than the one the head was trained on.
    pub fn check_base(&self, fingerprint: &str, arch: &str, protocol: &str) -> Result<()> {
        if self.meta.base_fingerprint != fingerprint {
            return Err(Error::InvalidInput(format!(
                "head {} was trained on another model ({} with {} layers of width {}, fingerprint {}); \
                 this model ({arch}) has fingerprint {fingerprint}: train a head for it with `safetyj head train`",
                self.meta.name,
                self.meta.base_arch,
                self.meta.base_layers,
                self.meta.base_hidden,
                short(&self.meta.base_fingerprint),
            )));
        }
        if self.meta.protocol != protocol {
            return Err(Error::InvalidInput(format!(
                "head {} reads features of the {} prompt, but the judge speaks {protocol}",
                self.meta.name, self.meta.protocol
            )));
        }
        Ok(())
    }

    /// The head as safetensors bytes (f32 tensors `mean`, `scale`, `weights`, `bias`;
    /// [`HeadMeta`] as JSON in the metadata).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let bias = [self.bias];
        let tensors: [(&str, &[f32]); 4] = [
            ("mean", &self.mean),
            ("scale", &self.scale),
            ("weights", &self.weights),
            ("bias", &bias),
        ];
        let views = tensors
            .iter()
            .map(|(name, values)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    vec![values.len()],
                    bytemuck::cast_slice(values),
                )
                .map_err(|e| Error::InvalidInput(format!("head tensor {name}: {e}")))?;
                Ok((name.to_string(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = serde_json::to_string(&self.meta)
            .map_err(|e| Error::InvalidInput(format!("head metadata: {e}")))?;
        let metadata: HashMap<String, String> = [(META_KEY.to_string(), meta)].into();
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::InvalidInput(format!("writing head {}: {e}", self.meta.name)))
    }

    /// Reads a head written by [`VerdictHead::to_bytes`]; `name` (a file or URL)
    /// is used in errors.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<VerdictHead> {
        let bad = |message: String| Error::Format {
            file: name.to_string(),
            message,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors head: {e}")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad(format!("no {META_KEY} metadata: not a safetyj head")))?;
        let meta: HeadMeta = serde_json::from_str(meta_json)
            .map_err(|e| bad(format!("head metadata is not valid: {e}")))?;
        if meta.format != HEAD_FORMAT {
            return Err(bad(format!(
                "head format {} is not supported (this build reads format {HEAD_FORMAT})",
                meta.format
            )));
        }
        let tensors = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors head: {e}")))?;
        let read = |tensor: &str, len: usize| -> Result<Vec<f32>> {
            let view = tensors
                .tensor(tensor)
                .map_err(|e| bad(format!("tensor {tensor}: {e}")))?;
            if view.dtype() != safetensors::Dtype::F32 || view.shape() != [len] {
                return Err(bad(format!(
                    "tensor {tensor} must be F32 [{len}], found {:?} {:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            let values: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("tensor {tensor} holds a non-finite value")));
            }
            Ok(values)
        };
        let hidden = meta.base_hidden;
        let head = VerdictHead {
            mean: read("mean", hidden)?,
            scale: read("scale", hidden)?,
            weights: read("weights", hidden)?,
            bias: read("bias", 1)?[0],
            meta,
        };
        if head.scale.iter().any(|&s| s <= 0.0) {
            return Err(bad("tensor scale must be positive".into()));
        }
        let (a, b, t) = (head.meta.platt_a, head.meta.platt_b, head.meta.threshold);
        if !(a.is_finite() && b.is_finite() && (0.0..=1.0).contains(&t)) {
            return Err(bad(format!(
                "calibration ({a}, {b}) or threshold {t} is not valid"
            )));
        }
        if head.meta.layer == 0 || head.meta.layer > head.meta.base_layers {
            return Err(bad(format!(
                "layer {} is outside the base model's 1..={}",
                head.meta.layer, head.meta.base_layers
            )));
        }
        Ok(head)
    }

    /// Reads a head file (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &std::path::Path) -> Result<VerdictHead> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            file: path.display().to_string(),
            source,
        })?;
        VerdictHead::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Writes the head file (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        std::fs::write(path, self.to_bytes()?).map_err(|source| Error::Io {
            file: path.display().to_string(),
            source,
        })
    }
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(12)]
}

/// The verdict heads built into this binary, by file name in `models/heads/`.
const BUILTIN_HEADS: [(&str, &[u8]); 1] = [(
    "qwen2.5-coder-1.5b.safety-j.head.safetensors",
    include_bytes!("../../models/heads/qwen2.5-coder-1.5b.safety-j.head.safetensors"),
)];

/// A head shipped in `models/heads/` by file name: the name and the bytes
/// (compiled in, so a preset's head needs no download and no checkout).
pub fn builtin_head(file: &str) -> Option<(&'static str, &'static [u8])> {
    BUILTIN_HEADS
        .iter()
        .find(|(name, _)| *name == file)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> VerdictHead {
        VerdictHead {
            meta: HeadMeta {
                format: HEAD_FORMAT,
                name: "test".into(),
                base_fingerprint: "abc".into(),
                base_arch: "qwen2".into(),
                base_layers: 4,
                base_hidden: 3,
                protocol: "safety-j".into(),
                langs: vec![Lang::En, Lang::Zh],
                layer: 3,
                platt_a: 1.5,
                platt_b: -0.25,
                threshold: 0.5,
                training: serde_json::json!({"items": 10}),
            },
            mean: vec![0.5, -1.0, 2.0],
            scale: vec![1.0, 2.0, 0.5],
            weights: vec![0.3, -0.7, 1.1],
            bias: 0.2,
        }
    }

    #[test]
    fn a_head_round_trips_through_safetensors_bytes() {
        let h = head();
        let back = VerdictHead::from_bytes("mem", &h.to_bytes().unwrap()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn p_unsafe_is_the_calibrated_logistic_of_the_standardised_dot_product() {
        let h = head();
        let x = [1.0f32, 3.0, 2.5];
        let z = (0.5 / 1.0) * 0.3 + (4.0 / 2.0) * -0.7 + (0.5 / 0.5) * 1.1 + 0.2;
        let want = 1.0 / (1.0 + (-(1.5 * z - 0.25f64)).exp());
        assert!((h.p_unsafe(&x).unwrap() - want).abs() < 1e-6);
        assert!(matches!(
            h.p_unsafe(&[1.0, 2.0]),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn a_head_for_another_model_or_protocol_is_refused() {
        let h = head();
        assert!(h.check_base("abc", "qwen2", "safety-j").is_ok());
        let other = h.check_base("def", "qwen2", "safety-j").unwrap_err();
        assert!(
            other.to_string().contains("trained on another model"),
            "{other}"
        );
        let protocol = h.check_base("abc", "qwen2", "llama-guard-3").unwrap_err();
        assert!(protocol.to_string().contains("safety-j"), "{protocol}");
    }

    #[test]
    fn damaged_heads_are_refused_with_a_reason() {
        let mut h = head();
        h.scale[1] = 0.0;
        let err = VerdictHead::from_bytes("h", &h.to_bytes().unwrap()).unwrap_err();
        assert!(err.to_string().contains("scale"), "{err}");
        let mut h = head();
        h.meta.layer = 9;
        let err = VerdictHead::from_bytes("h", &h.to_bytes().unwrap()).unwrap_err();
        assert!(err.to_string().contains("layer 9"), "{err}");
        let err = VerdictHead::from_bytes("h", b"not a head").unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
    }
}
