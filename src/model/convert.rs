//! Converting a Hugging Face checkpoint (F32/F16/BF16 safetensors) into a quantized
//! GGUF file that llama.cpp and the wider ecosystem read: llama.cpp's tensor names,
//! metadata keys and Q/K row order, plus the tokenizer and chat template. Tensors are
//! streamed one at a time, so peak memory is about one tensor's f32 copy.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::arch::{Arch, Weight};
use super::config::ModelConfig;
use super::load::{needed_weights, HfWeights, WeightKind, WeightSource, ROPE_FREQS};
use crate::error::{Error, Result};
use crate::formats::gguf::{GgufPlan, GgufWriter, MetadataArray, MetadataValue, ValueType};
use crate::quant::{self, DType};
use crate::tokenizer::GgufVocab;

/// The block types `quantize_checkpoint` writes matrices in.
pub const QUANTIZE_TYPES: [DType; 3] = [DType::Q4_K, DType::Q4_0, DType::Q8_0];

/// What a conversion did.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertReport {
    /// The checkpoint's architecture.
    pub arch: Arch,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of the source safetensors files.
    pub bytes_in: u64,
    /// Bytes of the GGUF file written.
    pub bytes_out: u64,
    /// Whether a tokenizer (tokenizer.model or tokenizer.json) went into the metadata.
    pub tokenizer: bool,
}

/// One tensor of the output: the weight, its shape (rows × cols; cols 0 for a
/// vector) and storage type.
struct PlannedWeight {
    weight: Weight,
    rows: usize,
    cols: usize,
    dtype: DType,
}

/// Converts the checkpoint at `source` (a directory with config.json and
/// model.safetensors or shards, or one `.safetensors` file with config.json beside
/// it) into a GGUF file at `out` whose matrices are `dtype` blocks (Q4_K, Q4_0 or
/// Q8_0; matrices of widths that are not a whole number of blocks, and all norms and
/// biases, stay F32). Every tensor is planned from the headers before any data is
/// read; `progress` is called with (tensors done, total, tensor name) after each
/// write. The file is written beside `out` and renamed into place on success.
pub fn quantize_checkpoint(
    source: &Path,
    out: &Path,
    dtype: DType,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<ConvertReport> {
    if !QUANTIZE_TYPES.contains(&dtype) {
        return Err(Error::Unsupported(format!(
            "quantizing to {dtype} is not supported (supported: q4_k, q4_0, q8_0)"
        )));
    }
    if !source.exists() {
        return Err(Error::Io {
            file: source.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        });
    }
    let weights = HfWeights::open_path(source, dtype)?;
    let config = weights.config()?;
    let dir = if source.is_dir() {
        source.to_path_buf()
    } else {
        source.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let planned = plan_weights(&weights, &config, dtype)?;
    let mut plan = GgufPlan::new();
    add_model_metadata(&mut plan, &config, &model_name(source), dtype)?;
    let tokenizer = add_tokenizer_metadata(&mut plan, &dir, &weights, &config)?;
    // Llama 3 RoPE scaling travels as llama.cpp's per-frequency divisors.
    if let Some(factors) = &config.rope_freq_factors {
        plan.add_tensor(ROPE_FREQS, &[factors.len() as u64], DType::F32)?;
    }
    for p in &planned {
        let dims: Vec<u64> = if p.cols == 0 {
            vec![p.rows as u64]
        } else {
            vec![p.cols as u64, p.rows as u64]
        };
        plan.add_tensor(p.weight.gguf_name(), &dims, p.dtype)?;
    }

    let partial = partial_path(out);
    let result = write_tensors(&weights, &config, &planned, &plan, &partial, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, out).map_err(|e| Error::Io {
        file: out.display().to_string(),
        source: e,
    })?;
    Ok(ConvertReport {
        arch: config.arch,
        tensors: planned.len() + usize::from(config.rope_freq_factors.is_some()),
        bytes_in: safetensors_bytes(source),
        bytes_out: std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        tokenizer,
    })
}

/// Every tensor the GGUF file will hold, with shapes from the safetensors headers
/// checked against the configuration. Fails on a missing required tensor.
fn plan_weights(weights: &HfWeights, c: &ModelConfig, dtype: DType) -> Result<Vec<PlannedWeight>> {
    // What the model loads, with vectors as (len, 0).
    let wanted = needed_weights(c).into_iter().map(|need| match need.kind {
        WeightKind::Matrix { rows, cols } => (need.weight, rows, cols, !need.optional),
        WeightKind::Vector { len } => (need.weight, len, 0, !need.optional),
    });
    let mut planned = Vec::new();
    for (weight, rows, cols, required) in wanted {
        if !required && !weights.has(weight) {
            continue;
        }
        let (got_rows, got_cols) = weights.shape(weight)?;
        let got = if cols == 0 {
            (got_rows * got_cols, 0)
        } else {
            (got_rows, got_cols)
        };
        if got != (rows, cols) {
            return Err(Error::Format {
                file: weights.name().to_string(),
                message: format!(
                    "tensor {} is {got_rows}×{got_cols} but the configuration needs {}",
                    weight.gguf_name(),
                    if cols == 0 {
                        format!("{rows} values")
                    } else {
                        format!("{rows}×{cols}")
                    }
                ),
            });
        }
        let stored = if cols != 0 && cols % dtype.block_elems() == 0 {
            dtype
        } else {
            DType::F32
        };
        planned.push(PlannedWeight {
            weight,
            rows,
            cols,
            dtype: stored,
        });
    }
    Ok(planned)
}

fn write_tensors(
    weights: &HfWeights,
    config: &ModelConfig,
    planned: &[PlannedWeight],
    plan: &GgufPlan,
    path: &Path,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    let name = path.display().to_string();
    let file = std::fs::File::create(path).map_err(|e| Error::Io {
        file: name.clone(),
        source: e,
    })?;
    let mut writer = GgufWriter::start(BufWriter::new(file), &name, plan)?;
    if let Some(factors) = &config.rope_freq_factors {
        writer.write_tensor(ROPE_FREQS, &quant::quantize(DType::F32, factors)?)?;
    }
    for (done, p) in planned.iter().enumerate() {
        let (mut values, _, _) = weights.read_f32(p.weight)?;
        if let Some(heads) = rope_permute_heads(config, p.weight) {
            values = permute_rope_rows(&values, heads, config.head_dim)?;
        }
        let bytes = quant::quantize(p.dtype, &values)?;
        drop(values);
        let tensor = p.weight.gguf_name();
        writer.write_tensor(&tensor, &bytes)?;
        progress(done + 1, planned.len(), &tensor);
    }
    writer.finish()?;
    Ok(())
}

/// The heads whose rows llama.cpp permutes in `weight` (Q and K, and their biases,
/// of llama and internlm2), or `None` for tensors written as they are.
fn rope_permute_heads(c: &ModelConfig, weight: Weight) -> Option<usize> {
    if !matches!(c.arch, Arch::Llama | Arch::InternLm2) {
        return None;
    }
    match weight {
        Weight::Q(_) | Weight::QBias(_) => Some(c.heads),
        Weight::K(_) | Weight::KBias(_) => Some(c.kv_heads),
        _ => None,
    }
}

/// Reorders the rows of each of `heads` heads of `head_dim` rows from Hugging Face's
/// rotate-half RoPE layout to the interleaved layout llama.cpp's converter writes
/// (`permute` in convert_hf_to_gguf.py): row `j * head_dim / 2 + i` of a head moves
/// to row `2 * i + j`.
pub fn permute_rope_rows(values: &[f32], heads: usize, head_dim: usize) -> Result<Vec<f32>> {
    let rows = heads * head_dim;
    if rows == 0 || !head_dim.is_multiple_of(2) || !values.len().is_multiple_of(rows) {
        return Err(Error::Shape {
            op: "rope row permutation",
            message: format!(
                "{} values are not {heads} heads of {head_dim} (even) rows",
                values.len()
            ),
        });
    }
    let cols = values.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let from = (h * head_dim + j * half + i) * cols;
                let to = (h * head_dim + 2 * i + j) * cols;
                out[to..to + cols].copy_from_slice(&values[from..from + cols]);
            }
        }
    }
    Ok(out)
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for files of `dtype` matrices.
fn file_type(dtype: DType) -> u32 {
    match dtype {
        DType::Q4_0 => 2,
        DType::Q8_0 => 7,
        // MOSTLY_Q4_K_S: every matrix Q4_K.
        _ => 14,
    }
}

fn model_name(source: &Path) -> String {
    let dir = if source.is_dir() {
        Some(source)
    } else {
        source.parent()
    };
    dir.and_then(|d| d.file_name())
        .or_else(|| source.file_stem())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string())
}

fn add_model_metadata(
    plan: &mut GgufPlan,
    c: &ModelConfig,
    name: &str,
    dtype: DType,
) -> Result<()> {
    let arch = c.arch.gguf_name();
    let u32_of = |v: usize| MetadataValue::U32(v as u32);
    plan.add_metadata("general.architecture", MetadataValue::String(arch.into()))?;
    plan.add_metadata("general.name", MetadataValue::String(name.into()))?;
    plan.add_metadata("general.file_type", MetadataValue::U32(file_type(dtype)))?;
    plan.add_metadata("general.quantization_version", MetadataValue::U32(2))?;
    let mut keys = vec![
        ("context_length", u32_of(c.context)),
        ("embedding_length", u32_of(c.hidden)),
        ("block_count", u32_of(c.layers)),
        ("feed_forward_length", u32_of(c.ffn)),
        ("attention.head_count", u32_of(c.heads)),
        ("attention.head_count_kv", u32_of(c.kv_heads)),
        (
            "attention.layer_norm_rms_epsilon",
            MetadataValue::F32(c.rms_eps),
        ),
        ("rope.freq_base", MetadataValue::F32(c.rope_base)),
        ("rope.dimension_count", u32_of(c.rope_dims)),
    ];
    if c.head_dim * c.heads != c.hidden {
        keys.push(("attention.key_length", u32_of(c.head_dim)));
        keys.push(("attention.value_length", u32_of(c.head_dim)));
    }
    for (key, value) in keys {
        plan.add_metadata(format!("{arch}.{key}"), value)?;
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            file: path.display().to_string(),
            source: e,
        }),
    }
}

/// Adds `tokenizer.ggml.*` and `tokenizer.chat_template` from the files beside the
/// checkpoint: tokenizer.model (SentencePiece) or else tokenizer.json (byte-level
/// BPE), tokenizer_config.json (added tokens, BOS/EOS flags, chat template) and
/// config.json's special ids. Returns whether a tokenizer was found.
fn add_tokenizer_metadata(
    plan: &mut GgufPlan,
    dir: &Path,
    weights: &HfWeights,
    c: &ModelConfig,
) -> Result<bool> {
    let mut vocab = if let Some(bytes) = read_optional(&dir.join("tokenizer.model"))? {
        GgufVocab::from_sentencepiece_model(&bytes)?
    } else if let Some(bytes) = read_optional(&dir.join("tokenizer.json"))? {
        GgufVocab::from_tokenizer_json(&bytes, c.vocab)?
    } else {
        return Ok(false);
    };
    let config_path = dir.join("tokenizer_config.json");
    let tokenizer_config: serde_json::Value = match read_optional(&config_path)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Format {
            file: config_path.display().to_string(),
            message: format!("not JSON: {e}"),
        })?,
        None => serde_json::Value::Null,
    };
    if let Some(added) = tokenizer_config["added_tokens_decoder"].as_object() {
        for (id, token) in added {
            let (Ok(id), Some(content)) = (id.parse::<usize>(), token["content"].as_str()) else {
                continue;
            };
            if id < vocab.tokens.len() && !vocab.token_type.is_empty() {
                vocab.tokens[id] = content.to_string();
                // GGUF token types: 3 control (special), 4 user-defined.
                vocab.token_type[id] = if token["special"].as_bool().unwrap_or(false) {
                    3
                } else {
                    4
                };
            }
        }
    }
    let hf = weights.hf_config();
    let in_vocab = |id: u32| ((id as usize) < vocab.tokens.len()).then_some(id);
    if let Some(&id) = hf.bos_token_id.first() {
        vocab.bos_id = in_vocab(id).or(vocab.bos_id);
    }
    if let Some(&id) = hf.eos_token_id.first() {
        vocab.eos_id = in_vocab(id).or(vocab.eos_id);
    }
    if let Some(&id) = hf.pad_token_id.first() {
        vocab.padding_id = in_vocab(id).or(vocab.padding_id);
    }
    if let Some(add) = tokenizer_config["add_bos_token"].as_bool() {
        vocab.add_bos = add;
    }
    if let Some(add) = tokenizer_config["add_eos_token"].as_bool() {
        vocab.add_eos = add;
    }
    add_vocab_metadata(plan, &vocab)?;
    let template = match &tokenizer_config["chat_template"] {
        serde_json::Value::String(t) => Some(t.clone()),
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t["name"] == "default")
            .or(named.first())
            .and_then(|t| t["template"].as_str())
            .map(String::from),
        _ => read_optional(&dir.join("chat_template.jinja"))?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    };
    if let Some(template) = template {
        plan.add_metadata("tokenizer.chat_template", MetadataValue::String(template))?;
    }
    Ok(true)
}

/// Writes a vocabulary under the `tokenizer.ggml.*` keys [`GgufVocab::from_gguf`] reads.
pub fn add_vocab_metadata(plan: &mut GgufPlan, vocab: &GgufVocab) -> Result<()> {
    let key = |k: &str| format!("tokenizer.ggml.{k}");
    plan.add_metadata(key("model"), MetadataValue::String(vocab.model.clone()))?;
    if vocab.model == "gpt2" {
        let pre = vocab.pre.clone().unwrap_or_else(|| "default".into());
        plan.add_metadata(key("pre"), MetadataValue::String(pre))?;
    }
    plan.add_metadata(
        key("tokens"),
        MetadataValue::Array(MetadataArray::strings(vocab.tokens.iter().cloned())),
    )?;
    if !vocab.scores.is_empty() {
        let scores = vocab
            .scores
            .iter()
            .map(|&s| MetadataValue::F32(s))
            .collect();
        plan.add_metadata(
            key("scores"),
            MetadataValue::Array(MetadataArray::new(ValueType::F32, scores)?),
        )?;
    }
    if !vocab.token_type.is_empty() {
        let types = vocab
            .token_type
            .iter()
            .map(|&t| MetadataValue::I32(t))
            .collect();
        plan.add_metadata(
            key("token_type"),
            MetadataValue::Array(MetadataArray::new(ValueType::I32, types)?),
        )?;
    }
    if !vocab.merges.is_empty() {
        plan.add_metadata(
            key("merges"),
            MetadataValue::Array(MetadataArray::strings(vocab.merges.iter().cloned())),
        )?;
    }
    for (name, id) in [
        ("bos_token_id", vocab.bos_id),
        ("eos_token_id", vocab.eos_id),
        ("unknown_token_id", vocab.unknown_id),
        ("padding_token_id", vocab.padding_id),
    ] {
        if let Some(id) = id {
            plan.add_metadata(key(name), MetadataValue::U32(id))?;
        }
    }
    plan.add_metadata(key("add_bos_token"), MetadataValue::Bool(vocab.add_bos))?;
    plan.add_metadata(key("add_eos_token"), MetadataValue::Bool(vocab.add_eos))?;
    if vocab.model == "llama" {
        plan.add_metadata(
            key("add_space_prefix"),
            MetadataValue::Bool(vocab.add_space_prefix),
        )?;
    }
    Ok(())
}

/// `out` with `.partial` appended: where a file is written before it is renamed into place.
pub(super) fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// Bytes of the checkpoint's safetensors files.
fn safetensors_bytes(source: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    if !source.is_dir() {
        return size(source);
    }
    std::fs::read_dir(source)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| size(&p))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_interleaves_each_heads_halves() {
        // Two heads of 4 rows, one column: [a0 a1 b0 b1] → [a0 b0 a1 b1] per head.
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let got = permute_rope_rows(&values, 2, 4).unwrap();
        assert_eq!(got, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        let err = permute_rope_rows(&values, 2, 3).unwrap_err().to_string();
        assert!(
            err.contains("8 values are not 2 heads of 3 (even) rows"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_type_is_refused_before_reading() {
        let err = quantize_checkpoint(
            Path::new("/nonexistent"),
            Path::new("/tmp/x.gguf"),
            DType::Q6_K,
            &mut |_, _, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("Q6_K") && err.contains("q4_k"), "{err}");
    }
}
