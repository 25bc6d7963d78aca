//! Synthetic models (`safetyj synth`): a GGUF file with a real model's metadata
//! (tokenizer included) and exactly its tensor names, types and shapes, every tensor
//! filled with seeded random valid blocks. Speed does not depend on the values, so a
//! synthetic copy benchmarks like the real model; made from a header-only skeleton
//! of a few MB, it lets a machine without the real weights run that benchmark.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, GgufPlan, GgufTensorInfo, GgufWriter};
use crate::formats::FileSource;
use crate::quant::{self, random_weights, WeightRng};

use super::convert::partial_path;
use super::load::ROPE_FREQS;

/// What to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynthOptions {
    /// Seed of the random weights: the same seed gives the same file.
    pub seed: u64,
    /// Write the header alone (metadata and tensor infos, no tensor data).
    pub header_only: bool,
}

/// What a synthesis wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthReport {
    /// Tensors described (and, unless header-only, written).
    pub tensors: usize,
    /// Bytes of the file written.
    pub bytes: u64,
}

/// Writes `out`: the metadata and tensor infos of the GGUF file `like`, and (unless
/// `options.header_only`) every tensor filled with random valid data of its stored
/// type: 1-D norm weights (and RoPE frequency factors) near 1.0, other 1-D tensors
/// (biases) near 0, matrices as [`quant::random_weights`] makes them, so the model's
/// activations stay finite. Only the header of `like` is read, so a header-only
/// skeleton works as well as the real file. Tensors are generated and written one at
/// a time, into `out` with `.partial` appended, renamed into place when complete.
pub fn synth_gguf(like: &Path, out: &Path, options: &SynthOptions) -> Result<SynthReport> {
    let source = FileSource::open(like)?;
    let file = GgufFile::read_header_only(&source)?;
    let plan = plan_like(&file)?;
    let partial = partial_path(out);
    let result = write(&file, &plan, &partial, out, options);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;
    std::fs::rename(&partial, out).map_err(|source| write_error(out, source))?;
    Ok(SynthReport {
        tensors: file.tensors().len(),
        bytes: std::fs::metadata(out)
            .map_err(|source| write_error(out, source))?
            .len(),
    })
}

/// A plan with `file`'s metadata and tensors, in its order.
fn plan_like(file: &GgufFile) -> Result<GgufPlan> {
    let mut plan = GgufPlan::new();
    for (key, value) in file.metadata() {
        plan.add_metadata(key.clone(), value.clone())?;
    }
    for info in file.tensors() {
        plan.add_tensor(info.name.clone(), &info.dims, info.dtype)?;
    }
    Ok(plan)
}

fn write(
    file: &GgufFile,
    plan: &GgufPlan,
    partial: &Path,
    out: &Path,
    options: &SynthOptions,
) -> Result<()> {
    let created = std::fs::File::create(partial).map_err(|source| write_error(out, source))?;
    let mut stream = BufWriter::new(created);
    if options.header_only {
        stream
            .write_all(&plan.header_bytes())
            .and_then(|_| stream.flush())
            .map_err(|source| write_error(out, source))?;
        return Ok(());
    }
    let name = out.display().to_string();
    let mut writer = GgufWriter::start(stream, &name, plan)?;
    let mut rng = WeightRng::new(options.seed);
    for info in file.tensors() {
        writer.write_tensor(&info.name, &random_tensor(&mut rng, info)?)?;
    }
    writer.finish()?;
    Ok(())
}

/// Random data for one tensor, as its stored type.
fn random_tensor(rng: &mut WeightRng, info: &GgufTensorInfo) -> Result<Vec<u8>> {
    let elems = usize::try_from(info.elements()).map_err(|_| {
        Error::Unsupported(format!(
            "tensor `{}` ({} elements) does not fit in memory",
            info.name,
            info.elements()
        ))
    })?;
    let is_float = info.dtype.block_elems() == 1;
    if info.dims.len() == 1 && is_float {
        let near_one = info.name.ends_with("norm.weight") || info.name == ROPE_FREQS;
        let values = if near_one {
            rng.values(elems, 1.0, 0.1)
        } else {
            rng.values(elems, 0.0, 0.02)
        };
        return quant::quantize(info.dtype, &values);
    }
    random_weights(rng, info.dtype, elems)
}

fn write_error(out: &Path, source: std::io::Error) -> Error {
    Error::Write {
        file: out.display().to_string(),
        source,
    }
}
