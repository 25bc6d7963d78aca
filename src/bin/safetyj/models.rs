//! Naming the model a subcommand runs: `--model` and its resolution to a file.

use crate::terminal::status_line;

/// Where the model comes from: a GGUF file, a Hugging Face folder, or a preset name
/// from models/presets.json (downloaded into the cache on first use).
#[derive(clap::Args)]
pub struct ModelArg {
    /// GGUF file, Hugging Face checkpoint folder, or preset name from models/presets.json.
    #[arg(long, default_value = "qwen2.5-coder-1.5b")]
    pub model: String,
    /// Where the model runs: auto (a hardware GPU if there is one, else the CPU), cpu
    /// or gpu. Default: SAFETYJ_DEVICE, else auto.
    #[arg(long)]
    pub device: Option<safetyj::device::Device>,
}

impl ModelArg {
    /// The device asked for: `--device`, else SAFETYJ_DEVICE, else auto.
    pub fn device(&self) -> safetyj::Result<safetyj::device::Device> {
        match self.device {
            Some(device) => Ok(device),
            None => safetyj::device::Device::from_env(),
        }
    }
}

/// The GGUF file `model` names: a path, or a preset with a GGUF file (downloaded into
/// the cache on first use, with a status line). `flag` names the option in errors.
pub fn gguf_file(model: &str, flag: &str, purpose: &str) -> safetyj::Result<std::path::PathBuf> {
    use safetyj::fetch::{presets, resolve, ModelKind};
    let catalog = presets::catalog()?;
    if !std::path::Path::new(model).exists() && catalog.find(model).is_none() {
        return Err(safetyj::Error::InvalidInput(format!(
            "{flag} \"{model}\" is neither an existing file nor a preset (presets: {})",
            catalog.names()
        )));
    }
    let mut show = status_line();
    let mut downloaded = false;
    let resolved = resolve(model, &mut |p| {
        downloaded = true;
        show(&format!("downloading {}: {} MiB", p.file, p.done >> 20))
    })?;
    if downloaded {
        eprintln!();
    }
    match resolved.kind {
        ModelKind::Gguf(path) => Ok(path),
        ModelKind::HfDir(path) => Err(safetyj::Error::InvalidInput(format!(
            "{flag} {} is a Hugging Face folder; {purpose} a GGUF file (`safetyj quantize` makes one)",
            path.display()
        ))),
    }
}
