//! Where a model runs, and opening one by name on it: the facade above the model
//! layer (preset names and downloads resolve here; `model` reads files only).

use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::gpu::{Context, ContextOptions};
use crate::model::open::{open, open_cpu};
use crate::model::Engine;
use crate::quant::DType;
use crate::tokenizer::Tokenizer;

/// The engine asked for: `--device` / `SAFETYJ_DEVICE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The GPU when a hardware adapter exists, else the CPU: a software adapter
    /// (lavapipe, SwiftShader, WARP) counts as none, since the CPU engine is far
    /// faster than a rasteriser emulating a GPU.
    #[default]
    Auto,
    /// The CPU engine.
    Cpu,
    /// The WGSL engine on the best adapter (a software one included).
    Gpu,
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Device> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            other => Err(Error::InvalidInput(format!(
                "the device must be auto, cpu or gpu, not \"{other}\""
            ))),
        }
    }
}

impl Device {
    /// `SAFETYJ_DEVICE`, or [`Device::Auto`] when unset.
    pub fn from_env() -> Result<Device> {
        match std::env::var("SAFETYJ_DEVICE") {
            Ok(value) if !value.trim().is_empty() => value
                .parse()
                .map_err(|e: Error| Error::InvalidInput(format!("SAFETYJ_DEVICE: {e}"))),
            _ => Ok(Device::Auto),
        }
    }

    /// [`Device::Cpu`] or [`Device::Gpu`]: what [`Device::Auto`] picks on this
    /// machine (the adapters are listed, none is opened).
    pub fn resolve(self) -> Device {
        match self {
            Device::Auto => {
                let hardware = Context::adapters(&ContextOptions::from_env())
                    .iter()
                    .any(|a| !a.software);
                if hardware {
                    Device::Gpu
                } else {
                    Device::Cpu
                }
            }
            fixed => fixed,
        }
    }

    /// The lowercase name (`auto`, `cpu`, `gpu`).
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

/// Opens the GGUF file or Hugging Face folder at `path` on `device` (folders are
/// quantized to Q4_K once, beside the checkpoint). `progress` gets (tensors done,
/// tensors total).
pub fn open_engine(
    path: &Path,
    device: Device,
    progress: impl FnMut(usize, usize),
) -> Result<(Engine, Tokenizer)> {
    match device.resolve() {
        Device::Cpu => {
            let (model, tokenizer) = open_cpu(path, DType::Q4_K, progress)?;
            Ok((Engine::Cpu(model), tokenizer))
        }
        _ => {
            let ctx = Context::new_blocking()?;
            let (model, tokenizer) = open(&ctx, path, DType::Q4_K, progress)?;
            Ok((Engine::gpu(ctx, model), tokenizer))
        }
    }
}

/// A model opened by name.
pub struct NamedModel {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    /// The notice to show with verdicts when a stand-in preset (not Safety-J) was
    /// named.
    pub stand_in: Option<String>,
    /// The preset's verdict head (file name and bytes, built in), when it has one.
    pub head: Option<(&'static str, &'static [u8])>,
    /// The protocol the model speaks: the preset's, else guessed from the name it
    /// was opened by ([`crate::judge::protocol_for_model`]).
    pub protocol: String,
}

/// Opens a model by preset name (fetched into the cache on first use), GGUF file or
/// Hugging Face folder on `device`. `progress` receives one-line status texts
/// (downloads, then tensors loaded).
pub fn open_named(
    model: &str,
    device: Device,
    mut progress: impl FnMut(&str),
) -> Result<NamedModel> {
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
    let (engine, tokenizer) = open_engine(&path, device, |done, total| {
        progress(&format!(
            "loading {}: {done}/{total} tensors",
            path.display()
        ))
    })?;
    let head = resolved
        .preset
        .as_ref()
        .and_then(|p| p.head.as_deref())
        .and_then(crate::judge::head::builtin_head);
    let protocol = match &resolved.preset {
        Some(preset) => preset.protocol.clone(),
        None => crate::judge::protocol_for_model(model).to_string(),
    };
    Ok(NamedModel {
        engine,
        tokenizer,
        stand_in: resolved.stand_in_notice(),
        head,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_from_their_names_and_refuse_others() {
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        assert_eq!(" CPU ".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("gpu".parse::<Device>().unwrap(), Device::Gpu);
        let err = "tpu".parse::<Device>().unwrap_err();
        assert!(err.to_string().contains("auto, cpu or gpu"), "{err}");
        assert_eq!(Device::Cpu.resolve(), Device::Cpu);
        assert_eq!(Device::Gpu.resolve(), Device::Gpu);
    }
}
