//! The model cache: where downloads land, laid out as `models/README.md` describes.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A cache folder for downloaded models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCache {
    root: PathBuf,
}

impl ModelCache {
    /// A cache rooted at `root` (created on first download).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache the environment names: `SAFETYJ_CACHE`, else
    /// `$XDG_CACHE_HOME/safetyj`, else `~/.cache/safetyj` (`%LOCALAPPDATA%\safetyj`
    /// on Windows when `HOME` is unset).
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = var("SAFETYJ_CACHE") {
            return Ok(Self::new(dir));
        }
        if let Some(dir) = var("XDG_CACHE_HOME") {
            return Ok(Self::new(PathBuf::from(dir).join("safetyj")));
        }
        if let Some(home) = var("HOME") {
            return Ok(Self::new(
                PathBuf::from(home).join(".cache").join("safetyj"),
            ));
        }
        if let Some(dir) = var("LOCALAPPDATA") {
            return Ok(Self::new(PathBuf::from(dir).join("safetyj")));
        }
        Err(Error::InvalidInput(
            "no cache folder for models: set SAFETYJ_CACHE (or XDG_CACHE_HOME or HOME)".into(),
        ))
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where an assembled GGUF called `file` lives: `models/<file>`.
    pub fn gguf_path(&self, file: &str) -> PathBuf {
        self.root.join("models").join(file)
    }

    /// Where a downloaded archive waits to be unpacked: `downloads/<filename>`.
    pub fn download_path(&self, filename: &str) -> PathBuf {
        self.root.join("downloads").join(filename)
    }

    /// Where the extracted pieces of the GGUF `file` wait to be joined:
    /// `parts/<file>/`.
    pub fn parts_dir(&self, file: &str) -> PathBuf {
        self.root.join("parts").join(file)
    }

    /// Where a Hugging Face repository's files live:
    /// `hf/<owner>--<name>/<revision>/` (a `/` in the revision becomes `--`).
    pub fn hf_dir(&self, repo: &str, revision: &str) -> PathBuf {
        self.root
            .join("hf")
            .join(repo.replace('/', "--"))
            .join(revision.replace('/', "--"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_readme() {
        let cache = ModelCache::new("/c");
        assert_eq!(cache.gguf_path("a.gguf"), PathBuf::from("/c/models/a.gguf"));
        assert_eq!(
            cache.download_path("p-1-py3-none-any.whl"),
            PathBuf::from("/c/downloads/p-1-py3-none-any.whl")
        );
        assert_eq!(cache.parts_dir("a.gguf"), PathBuf::from("/c/parts/a.gguf"));
        assert_eq!(
            cache.hf_dir("GAIR/Safety-J-v5", "refs/pr/1"),
            PathBuf::from("/c/hf/GAIR--Safety-J-v5/refs--pr--1")
        );
    }
}
