//! Hugging Face `config.json`: the model's shape and hyperparameters.
//!
//! A field missing from the file takes the default that the model's own
//! `transformers` configuration class gives it (`LlamaConfig`, `Qwen2Config`, or
//! InternLM2's `InternLM2Config` from its remote code), so a sparse config reads as
//! Hugging Face would read it.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};

/// RoPE scaling (`rope_scaling` in config.json), e.g. linear, dynamic or YaRN.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeScaling {
    /// The method (`linear`, `dynamic`, `yarn`, `llama3`, …); older files call it `type`.
    pub rope_type: String,
    /// The scaling factor, when the method has one.
    pub factor: Option<f64>,
    /// The method's other parameters, as written.
    pub other: BTreeMap<String, serde_json::Value>,
}

impl RopeScaling {
    fn from_json(
        mut fields: BTreeMap<String, serde_json::Value>,
    ) -> std::result::Result<Self, String> {
        let rope_type = fields.remove("rope_type");
        let legacy_type = fields.remove("type");
        let rope_type = match rope_type.or(legacy_type) {
            Some(serde_json::Value::String(t)) => t,
            other => {
                return Err(format!(
                    "rope_scaling needs a string `rope_type` (or `type`), got {other:?}"
                ))
            }
        };
        let factor = match fields.remove("factor") {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => Some(
                value
                    .as_f64()
                    .ok_or_else(|| format!("rope_scaling factor {value} is not a number"))?,
            ),
        };
        Ok(Self {
            rope_type,
            factor,
            other: fields,
        })
    }
}

/// Whether transformers 5 `rope_parameters` describe a scaling (a `rope_type` other
/// than `default`), as opposed to only the base frequency.
fn scales_rope(parameters: &BTreeMap<String, serde_json::Value>) -> bool {
    let kind = parameters.get("rope_type").or(parameters.get("type"));
    kind.and_then(serde_json::Value::as_str)
        .is_some_and(|kind| kind != "default")
}

/// One token id or several (`eos_token_id` may be either).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn into_vec(self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

/// config.json's top-level object, read field by field so an error names its field.
struct RawConfig<'a> {
    name: &'a str,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl RawConfig<'_> {
    /// Field `key`, or None when absent or null.
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.fields.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(value) => T::deserialize(value).map(Some).map_err(|e| Error::Format {
                file: self.name.to_string(),
                message: format!("not a valid Hugging Face config: field `{key}`: {e}"),
            }),
        }
    }
}

/// The defaults of one architecture's Hugging Face configuration class.
struct ArchDefaults {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    tie_word_embeddings: bool,
    /// The class's fixed head width, when it has one (`hidden / heads` otherwise).
    head_dim: Option<usize>,
}

fn arch_defaults(model_type: &str) -> ArchDefaults {
    match model_type {
        "qwen2" => ArchDefaults {
            vocab_size: 151936,
            hidden_size: 4096,
            intermediate_size: 22016,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            max_position_embeddings: 32768,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            head_dim: None,
        },
        "qwen3" => ArchDefaults {
            vocab_size: 151936,
            hidden_size: 4096,
            intermediate_size: 22016,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            max_position_embeddings: 32768,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            head_dim: Some(128),
        },
        "internlm2" => ArchDefaults {
            vocab_size: 103168,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            head_dim: None,
        },
        _ => ArchDefaults {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            head_dim: None,
        },
    }
}

/// A decoder-only transformer's configuration, with Hugging Face's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    /// Model classes (`LlamaForCausalLM`, `InternLM2ForCausalLM`, …).
    pub architectures: Vec<String>,
    /// The architecture family (`llama`, `qwen2`, `internlm2`, …).
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward (SwiGLU) hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); the query head count when absent.
    pub num_key_value_heads: usize,
    /// Width of one attention head; `hidden_size / num_attention_heads` when absent.
    pub head_dim: usize,
    /// Epsilon of every RMS norm.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RoPE scaling, when the model uses it.
    pub rope_scaling: Option<RopeScaling>,
    /// Vocabulary size (rows of the embedding and the LM head).
    pub vocab_size: usize,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Whether the attention projections have biases: InternLM2's `bias` (default
    /// true; on `wqkv` and `wo`), Llama's `attention_bias` (default false), and
    /// always true for Qwen2 (on q, k and v only).
    pub attention_bias: bool,
    /// Beginning-of-sequence token ids (empty when unset).
    pub bos_token_id: Vec<u32>,
    /// End-of-sequence token ids (empty when unset); some models list several.
    pub eos_token_id: Vec<u32>,
    /// Padding token ids (empty when unset).
    pub pad_token_id: Vec<u32>,
    /// The dtype the checkpoint was saved in (`bfloat16`, …), when stated.
    pub torch_dtype: Option<String>,
}

impl HfConfig {
    /// Parses config.json text (the file called `name` in errors).
    pub fn from_json(name: &str, json: &[u8]) -> Result<Self> {
        let error = |message: String| Error::Format {
            file: name.to_string(),
            message,
        };
        let fields = serde_json::from_slice(json)
            .map_err(|e| error(format!("not a valid Hugging Face config: {e}")))?;
        let raw = RawConfig { name, fields };
        let model_type: String = raw.get("model_type")?.ok_or_else(|| {
            error("not a valid Hugging Face config: field `model_type` is missing".to_string())
        })?;
        let defaults = arch_defaults(&model_type);
        let hidden_size = raw.get("hidden_size")?.unwrap_or(defaults.hidden_size);
        let num_attention_heads = raw
            .get("num_attention_heads")?
            .unwrap_or(defaults.num_attention_heads);
        let num_key_value_heads = raw
            .get("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads == 0
            || num_key_value_heads == 0
            || !num_attention_heads.is_multiple_of(num_key_value_heads)
        {
            return Err(error(format!(
                "num_attention_heads {num_attention_heads} is not a positive multiple of num_key_value_heads {num_key_value_heads}"
            )));
        }
        let head_dim = match raw.get("head_dim")?.or(defaults.head_dim) {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_attention_heads) => hidden_size / num_attention_heads,
            None => {
                return Err(error(format!(
                    "hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}, and head_dim is not given"
                )))
            }
        };
        // transformers 5 writes RoPE settings (theta and any scaling) under
        // `rope_parameters`; published checkpoints use `rope_theta` / `rope_scaling`.
        let rope_parameters = raw.get::<BTreeMap<String, serde_json::Value>>("rope_parameters")?;
        let attention_bias = match model_type.as_str() {
            "internlm2" => raw.get("bias")?.unwrap_or(true),
            "qwen2" => true,
            _ => raw.get("attention_bias")?.unwrap_or(false),
        };
        Ok(Self {
            architectures: raw.get("architectures")?.unwrap_or_default(),
            model_type,
            hidden_size,
            intermediate_size: raw
                .get("intermediate_size")?
                .unwrap_or(defaults.intermediate_size),
            num_hidden_layers: raw
                .get("num_hidden_layers")?
                .unwrap_or(defaults.num_hidden_layers),
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.get("rms_norm_eps")?.unwrap_or(defaults.rms_norm_eps),
            rope_theta: match raw.get("rope_theta")? {
                Some(theta) => theta,
                None => rope_parameters
                    .as_ref()
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(defaults.rope_theta),
            },
            rope_scaling: raw
                .get::<BTreeMap<String, serde_json::Value>>("rope_scaling")?
                .or_else(|| rope_parameters.clone().filter(scales_rope))
                .map(|mut fields| {
                    fields.remove("rope_theta");
                    RopeScaling::from_json(fields)
                })
                .transpose()
                .map_err(error)?,
            vocab_size: raw.get("vocab_size")?.unwrap_or(defaults.vocab_size),
            max_position_embeddings: raw
                .get("max_position_embeddings")?
                .unwrap_or(defaults.max_position_embeddings),
            tie_word_embeddings: raw
                .get("tie_word_embeddings")?
                .unwrap_or(defaults.tie_word_embeddings),
            attention_bias,
            bos_token_id: raw
                .get::<TokenIds>("bos_token_id")?
                .map(TokenIds::into_vec)
                .unwrap_or_default(),
            eos_token_id: raw
                .get::<TokenIds>("eos_token_id")?
                .map(TokenIds::into_vec)
                .unwrap_or_default(),
            pad_token_id: raw
                .get::<TokenIds>("pad_token_id")?
                .map(TokenIds::into_vec)
                .unwrap_or_default(),
            torch_dtype: raw.get("torch_dtype")?,
        })
    }

    /// Reads and parses a config.json file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let name = path.as_ref().display().to_string();
        let json = std::fs::read(path.as_ref()).map_err(|e| Error::Io {
            file: name.clone(),
            source: e,
        })?;
        Self::from_json(&name, &json)
    }
}
