//! Opening a model file or checkpoint folder: weights onto the GPU and the matching
//! tokenizer, in one call.

use std::path::Path;

use super::forward::Model;
use super::load::{GgufWeights, HfWeights};
use crate::error::{Error, Result};
use crate::formats::MmapSource;
use crate::gpu::Context;
use crate::quant::DType;
use crate::tokenizer::{GgufVocab, Tokenizer};

/// Loads `path`: a GGUF file (weights as stored, tokenizer from its metadata) or a
/// Hugging Face folder (weights quantized to `hf_dtype` while loading; tokenizer from
/// `tokenizer.json` or SentencePiece `tokenizer.model`). `progress` gets (tensors
/// done, tensors total).
pub fn open(
    ctx: &Context,
    path: &Path,
    hf_dtype: DType,
    progress: impl FnMut(usize, usize),
) -> Result<(Model, Tokenizer)> {
    if path.is_dir() {
        let weights = HfWeights::open(path, hf_dtype)?;
        let json = path.join("tokenizer.json");
        let sp = path.join("tokenizer.model");
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| Error::Io {
                file: p.display().to_string(),
                source,
            })
        };
        let tokenizer = if json.exists() {
            Tokenizer::from_json_bytes(&read(&json)?)?
        } else if sp.exists() {
            Tokenizer::from_sentencepiece_model(&read(&sp)?)?
        } else {
            return Err(Error::Format {
                file: path.display().to_string(),
                message: "no tokenizer.json or tokenizer.model in the checkpoint folder".into(),
            });
        };
        let model = Model::load(ctx, &weights, progress)?;
        Ok((model, tokenizer))
    } else {
        let weights = GgufWeights::new(Box::new(MmapSource::open(path)?))?;
        let tokenizer = Tokenizer::from_gguf_vocab(&GgufVocab::from_gguf(weights.file())?)?;
        let model = Model::load(ctx, &weights, progress)?;
        Ok((model, tokenizer))
    }
}
