//! Opening a model file or checkpoint folder (files only; names and downloads are
//! resolved above this layer): weights onto the GPU or into memory for the CPU, and
//! the matching tokenizer, in one call.

use std::path::Path;

use super::convert::quantize_checkpoint;
use super::forward::Model;
use super::load::GgufWeights;
use crate::cpu::CpuModel;
use crate::error::{Error, Result};
use crate::formats::MmapSource;
use crate::gpu::Context;
use crate::quant::DType;
use crate::tokenizer::{GgufVocab, Tokenizer};

/// Loads `path`: a GGUF file (weights as stored, tokenizer from its metadata) or a
/// Hugging Face folder. A folder is quantized to `hf_dtype` once, into
/// `<folder>/safetyj-<type>.gguf` (written beside a `.part` and renamed when complete),
/// and that file is what loads, now and on every later run. `progress` gets (tensors
/// done, tensors total) of whichever step is running.
pub fn open(
    ctx: &Context,
    path: &Path,
    hf_dtype: DType,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Model, Tokenizer)> {
    let (weights, tokenizer) = open_weights(path, hf_dtype, &mut progress)?;
    let model = Model::load(ctx, &weights, progress)?;
    Ok((model, tokenizer))
}

/// [`open`] for the CPU engine: the same file or folder, weights kept in memory.
pub fn open_cpu(
    path: &Path,
    hf_dtype: DType,
    mut progress: impl FnMut(usize, usize),
) -> Result<(CpuModel, Tokenizer)> {
    let (weights, tokenizer) = open_weights(path, hf_dtype, &mut progress)?;
    let model = CpuModel::load(&weights, progress)?;
    Ok((model, tokenizer))
}

/// The GGUF weights of `path` (a folder quantized once first) and its tokenizer.
fn open_weights(
    path: &Path,
    hf_dtype: DType,
    progress: &mut impl FnMut(usize, usize),
) -> Result<(GgufWeights, Tokenizer)> {
    let gguf = if path.is_dir() {
        let cached = path.join(format!("safetyj-{}.gguf", hf_dtype.name().to_lowercase()));
        if !cached.exists() {
            let part = cached.with_extension("gguf.part");
            quantize_checkpoint(path, &part, hf_dtype, &mut |done, total, _| {
                progress(done, total)
            })?;
            std::fs::rename(&part, &cached).map_err(|source| Error::Io {
                file: cached.display().to_string(),
                source,
            })?;
        }
        cached
    } else {
        path.to_path_buf()
    };
    let weights = GgufWeights::new(Box::new(MmapSource::open(&gguf)?))?;
    let tokenizer = Tokenizer::from_gguf_vocab(&GgufVocab::from_gguf(weights.file())?)?;
    Ok((weights, tokenizer))
}
