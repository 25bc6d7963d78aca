//! Opening a model file or checkpoint folder: weights onto the GPU and the matching
//! tokenizer, in one call.

use std::path::Path;

use super::convert::quantize_checkpoint;
use super::forward::Model;
use super::load::GgufWeights;
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
    let model = Model::load(ctx, &weights, progress)?;
    Ok((model, tokenizer))
}

/// Loads a model by preset name (fetched into the cache on first use), GGUF file or
/// Hugging Face folder; Hugging Face weights become Q4_K. `progress` receives
/// one-line status texts (downloads, then tensors loaded). Also returns the notice
/// to show when a stand-in preset (not Safety-J) was named.
pub fn open_named(
    ctx: &Context,
    model: &str,
    mut progress: impl FnMut(&str),
) -> Result<(Model, Tokenizer, Option<String>)> {
    use crate::fetch::{resolve, ModelKind, Progress};
    let resolved = resolve(model, &mut |p: Progress| {
        progress(&match p.total {
            Some(total) => format!(
                "downloading {}: {} / {} MiB",
                p.file,
                p.done >> 20,
                total >> 20
            ),
            None => format!("downloading {}: {} MiB", p.file, p.done >> 20),
        })
    })?;
    let path = match &resolved.kind {
        ModelKind::Gguf(path) | ModelKind::HfDir(path) => path.clone(),
    };
    let (model, tokenizer) = open(ctx, &path, DType::Q4_K, |done, total| {
        progress(&format!(
            "loading {}: {done}/{total} tensors",
            path.display()
        ))
    })?;
    Ok((model, tokenizer, resolved.stand_in_notice()))
}
