//! Hugging Face repositories: the files a safetensors checkpoint needs, fetched from
//! the hub's `{endpoint}/{repo}/resolve/{revision}/{file}` layout, pinned to the
//! commit the revision names and checked against the sizes and sha256 the hub's API
//! lists for them.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::download::{io_error, Downloader, Expected, Progress};
use super::presets::HfRepo;
use crate::{Error, Result};

/// The hub, used unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// Files every checkpoint must have.
const REQUIRED_FILES: [&str; 2] = ["config.json", "tokenizer_config.json"];

/// The tokenizer: SentencePiece's model (InternLM2, Safety-J), or else byte-level
/// BPE's `tokenizer.json` (Qwen3Guard, Llama Guard 3).
const TOKENIZER_FILES: [&str; 2] = ["tokenizer.model", "tokenizer.json"];

/// Files fetched when the repository has them.
const OPTIONAL_FILES: [&str; 1] = ["special_tokens_map.json"];

/// The index of a sharded safetensors checkpoint.
const INDEX_FILE: &str = "model.safetensors.index.json";

/// The weights of an unsharded checkpoint.
const SINGLE_WEIGHTS_FILE: &str = "model.safetensors";

/// Written into a checkpoint folder once every file is there, listing them; a
/// folder with it is used without asking the hub anything.
pub const COMPLETE_MARKER: &str = ".safetyj-complete";

/// Written into a checkpoint folder as soon as the hub names the commit its files
/// come from; a fetch resumed later asks for that commit again, so a branch that
/// moved between the two runs cannot mix two versions in one folder.
pub const COMMIT_FILE: &str = ".safetyj-commit";

/// What the hub's API (`/api/models/{repo}/revision/{revision}?blobs=true`) says
/// about a repository at a revision: the commit it names, and its files.
#[derive(Deserialize)]
struct RepoInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

/// One file of [`RepoInfo`]: its size, and its sha256 when stored in LFS.
#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    lfs: Option<LfsBlob>,
}

/// An LFS file's content hash and size.
#[derive(Deserialize)]
struct LfsBlob {
    sha256: String,
    size: u64,
}

/// A repository pinned to one commit, with what each of its files must be.
struct Pinned {
    commit: String,
    files: HashMap<String, Expected>,
}

/// The part of `model.safetensors.index.json` that names the shards.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

/// The download URL of `file` in `repo` at `revision` on the hub at `endpoint`.
pub fn file_url(endpoint: &str, repo: &str, revision: &str, file: &str) -> String {
    format!(
        "{}/{repo}/resolve/{revision}/{file}",
        endpoint.trim_end_matches('/')
    )
}

/// A client for one hub: its endpoint and, for gated or private repositories, a
/// token sent as `Authorization: Bearer`.
#[derive(Debug, Clone)]
pub struct Hub {
    endpoint: String,
    downloader: Downloader,
}

impl Hub {
    /// A client for the hub at `endpoint`, sending `token` if given.
    pub fn new(endpoint: &str, token: Option<&str>, downloader: Downloader) -> Self {
        let downloader = match token {
            Some(token) => downloader.with_header("Authorization", &format!("Bearer {token}")),
            None => downloader,
        };
        Self {
            endpoint: endpoint.to_owned(),
            downloader,
        }
    }

    /// Downloads the checkpoint's config, tokenizer files (`tokenizer.model`, else
    /// `tokenizer.json`) and weights (the shards
    /// named by `model.safetensors.index.json`, or else `model.safetensors`) into
    /// `dir`, skipping files already there, and returns `dir`. A folder that a
    /// finished fetch marked complete is returned without any request.
    ///
    /// The hub's API is asked first which commit the revision names and what its
    /// files are: every file then comes from that commit (not from a branch that may
    /// move mid-download) and is checked against the listed size and, for LFS files,
    /// sha256 before it gets its name. The commit is written to [`COMMIT_FILE`]
    /// first, and a fetch resumed later keeps to it. A server without that API (a
    /// plain mirror) serves the revision's files unchecked.
    pub fn fetch_checkpoint(
        &self,
        repo: &HfRepo,
        dir: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf> {
        let marker = dir.join(COMPLETE_MARKER);
        if marker.is_file() {
            return Ok(dir.to_path_buf());
        }
        let lock = dir.join(COMMIT_FILE);
        let asked = match fs::read_to_string(&lock) {
            Ok(commit) => {
                let commit = commit.trim();
                if !is_commit_hash(commit) {
                    return Err(Error::CacheIo {
                        path: lock.display().to_string(),
                        message: format!(
                            "holds \"{commit}\", not a commit hash; delete it to fetch {} afresh",
                            repo.revision
                        ),
                    });
                }
                HfRepo {
                    repo: repo.repo.clone(),
                    revision: commit.to_owned(),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => repo.clone(),
            Err(e) => return Err(io_error(&lock, e)),
        };
        let pinned = self.pin(&asked)?;
        if let Some(pinned) = &pinned {
            if is_commit_hash(&asked.revision) && pinned.commit != asked.revision {
                return Err(Error::Download {
                    url: self.endpoint.clone(),
                    message: format!(
                        "asked for commit {} of {}, the hub answered for {}",
                        asked.revision, repo.repo, pinned.commit
                    ),
                });
            }
            fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
            fs::write(&lock, format!("{}\n", pinned.commit)).map_err(|e| io_error(&lock, e))?;
        }
        let repo = &HfRepo {
            repo: repo.repo.clone(),
            revision: pinned
                .as_ref()
                .map_or_else(|| repo.revision.clone(), |p| p.commit.clone()),
        };
        let pinned = pinned.as_ref();
        let mut files: Vec<String> = Vec::new();
        for file in REQUIRED_FILES {
            self.fetch_file(repo, pinned, dir, file, progress)?;
            files.push(file.into());
        }
        let tokenizer = TOKENIZER_FILES[0];
        if self.fetch_optional_file(repo, pinned, dir, tokenizer, progress)? {
            files.push(tokenizer.into());
        } else {
            self.fetch_file(repo, pinned, dir, TOKENIZER_FILES[1], progress)?;
            files.push(TOKENIZER_FILES[1].into());
        }
        for file in OPTIONAL_FILES {
            if self.fetch_optional_file(repo, pinned, dir, file, progress)? {
                files.push(file.into());
            }
        }
        if self.fetch_optional_file(repo, pinned, dir, INDEX_FILE, progress)? {
            files.push(INDEX_FILE.into());
            for shard in shard_files(&dir.join(INDEX_FILE))? {
                self.fetch_file(repo, pinned, dir, &shard, progress)?;
                files.push(shard);
            }
        } else if self.fetch_optional_file(repo, pinned, dir, SINGLE_WEIGHTS_FILE, progress)? {
            files.push(SINGLE_WEIGHTS_FILE.into());
        } else {
            return Err(Error::Download {
                url: file_url(
                    &self.endpoint,
                    &repo.repo,
                    &repo.revision,
                    SINGLE_WEIGHTS_FILE,
                ),
                message: format!(
                    "{} has neither {INDEX_FILE} nor {SINGLE_WEIGHTS_FILE}",
                    repo.repo
                ),
            });
        }
        let mut listing = files.join("\n");
        listing.push('\n');
        fs::write(&marker, listing).map_err(|e| io_error(&marker, e))?;
        Ok(dir.to_path_buf())
    }

    /// The commit `repo`'s revision names and its files' sizes and hashes, from the
    /// hub's API; `None` when the server has no such API (404).
    fn pin(&self, repo: &HfRepo) -> Result<Option<Pinned>> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint.trim_end_matches('/'),
            repo.repo,
            repo.revision
        );
        let Some(text) = self.downloader.get_text_if_exists(&url)? else {
            return Ok(None);
        };
        let info: RepoInfo = serde_json::from_str(&text).map_err(|e| Error::Download {
            url: url.clone(),
            message: format!("the hub's description of the repository is unreadable: {e}"),
        })?;
        if !is_commit_hash(&info.sha) {
            return Err(Error::Download {
                url,
                message: format!(
                    "the hub named \"{}\" as the commit, not a commit hash",
                    info.sha
                ),
            });
        }
        let files = info
            .siblings
            .into_iter()
            .map(|s| {
                let expected = match s.lfs {
                    Some(lfs) => Expected {
                        sha256: Some(lfs.sha256.to_ascii_lowercase()),
                        size: Some(lfs.size),
                    },
                    None => Expected {
                        sha256: None,
                        size: s.size,
                    },
                };
                (s.rfilename, expected)
            })
            .collect();
        Ok(Some(Pinned {
            commit: info.sha,
            files,
        }))
    }

    /// Downloads `file` unless it is already in `dir`; a missing file is an error.
    fn fetch_file(
        &self,
        repo: &HfRepo,
        pinned: Option<&Pinned>,
        dir: &Path,
        file: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        if !self.fetch_optional_file(repo, pinned, dir, file, progress)? {
            return Err(Error::Download {
                url: file_url(&self.endpoint, &repo.repo, &repo.revision, file),
                message: "HTTP 404: no such file on the server".into(),
            });
        }
        Ok(())
    }

    /// Downloads `file` unless it is already in `dir`, checked against what the hub
    /// lists for it when pinned; returns whether it exists (a pinned repository
    /// that does not list it is not asked).
    fn fetch_optional_file(
        &self,
        repo: &HfRepo,
        pinned: Option<&Pinned>,
        dir: &Path,
        file: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<bool> {
        let dest = dir.join(file);
        if dest.exists() {
            return Ok(true);
        }
        let expected = match pinned {
            Some(pinned) => match pinned.files.get(file) {
                Some(expected) => expected.clone(),
                None => return Ok(false),
            },
            None => Expected::default(),
        };
        let url = file_url(&self.endpoint, &repo.repo, &repo.revision, file);
        self.downloader
            .fetch_if_exists(&url, &dest, &expected, progress)
    }
}

/// Whether `text` is a full git commit hash (40 hex digits).
fn is_commit_hash(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The distinct shard files an index names, checked to be plain file names.
fn shard_files(index_path: &Path) -> Result<BTreeSet<String>> {
    let invalid = |message: String| Error::Format {
        file: index_path.display().to_string(),
        message,
    };
    let text = fs::read_to_string(index_path).map_err(|e| io_error(index_path, e))?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let shards: BTreeSet<String> = index.weight_map.into_values().collect();
    if shards.is_empty() {
        return Err(invalid("weight_map names no shards".into()));
    }
    if let Some(bad) = shards
        .iter()
        .find(|s| s.contains(['/', '\\']) || s.starts_with('.') || s.is_empty())
    {
        return Err(invalid(format!("shard \"{bad}\" is not a plain file name")));
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_hub_layout() {
        assert_eq!(
            file_url(
                "https://huggingface.co/",
                "GAIR/Safety-J-v5",
                "main",
                "config.json"
            ),
            "https://huggingface.co/GAIR/Safety-J-v5/resolve/main/config.json"
        );
    }

    #[test]
    fn shard_names_must_stay_inside_the_folder() {
        let dir = std::env::temp_dir().join(format!("safetyj-index-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(INDEX_FILE);
        fs::write(&path, r#"{"weight_map":{"a":"../escape.safetensors"}}"#).unwrap();
        let message = shard_files(&path).unwrap_err().to_string();
        assert!(message.contains("not a plain file name"), "{message}");
        fs::write(
            &path,
            r#"{"metadata":{},"weight_map":{"a":"s2","b":"s1","c":"s2"}}"#,
        )
        .unwrap();
        let shards: Vec<String> = shard_files(&path).unwrap().into_iter().collect();
        assert_eq!(shards, ["s1", "s2"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
