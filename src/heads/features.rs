//! The on-disk feature cache of head training: extraction (a verdict pass per
//! dialogue) is the expensive part, so every item's features are appended as soon
//! as they exist and a rerun extracts only what is missing.
//!
//! A cache folder holds `meta.json` (the model fingerprint, protocol, layers and
//! width it was made with: a cache for another model is refused), `features.f16`
//! (one fixed-size record per item: the residual stream at each layer, f16) and
//! `index.jsonl` (one line per record: content key, the model's own P(unsafe)). A
//! record is written before its index line, and on opening the data file is cut
//! back to the records the index names, so a run killed at any point resumes with
//! every finished item exactly once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a cache was made with; a cache is only reused for the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    pub fingerprint: String,
    pub protocol: String,
    pub layers: Vec<usize>,
    pub hidden: usize,
}

#[derive(Serialize, Deserialize)]
struct IndexLine {
    key: String,
    p_model: f64,
}

/// One item's cached features.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// The model's own P(unsafe).
    pub p_model: f64,
    /// The residual stream at each cached layer, in [`CacheMeta::layers`] order.
    pub hidden: Vec<Vec<f32>>,
}

/// A feature cache folder, open for reading and appending.
pub struct FeatureCache {
    dir: PathBuf,
    meta: CacheMeta,
    rows: HashMap<String, (usize, f64)>,
    data: File,
    index: File,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        file: path.display().to_string(),
        source,
    }
}

impl FeatureCache {
    /// Opens (or creates) the cache in `dir` for `meta`; fails when the folder holds
    /// a cache made with another model, protocol or layers.
    pub fn open(dir: &Path, meta: CacheMeta) -> Result<FeatureCache> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let meta_path = dir.join("meta.json");
        if meta_path.exists() {
            let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
            let found: CacheMeta = serde_json::from_str(&text).map_err(|e| Error::Format {
                file: meta_path.display().to_string(),
                message: e.to_string(),
            })?;
            if found != meta {
                return Err(Error::InvalidInput(format!(
                    "the feature cache {} was made for another model, protocol or layers \
                     ({} {:?}); use another --cache folder",
                    dir.display(),
                    found.protocol,
                    found.layers
                )));
            }
        } else {
            let text = serde_json::to_string_pretty(&meta).expect("plain data serialises");
            std::fs::write(&meta_path, text).map_err(io(&meta_path))?;
        }
        let index_path = dir.join("index.jsonl");
        let data_path = dir.join("features.f16");
        let mut rows = HashMap::new();
        let mut valid_bytes = 0u64;
        if index_path.exists() {
            let reader = BufReader::new(File::open(&index_path).map_err(io(&index_path))?);
            for line in reader.split(b'\n') {
                let line = line.map_err(io(&index_path))?;
                // A line cut short by a killed run does not parse: it and anything
                // after it are redone.
                let Ok(entry) = serde_json::from_slice::<IndexLine>(&line) else {
                    break;
                };
                let row = rows.len();
                rows.insert(entry.key, (row, entry.p_model));
                valid_bytes += line.len() as u64 + 1;
            }
        }
        let record = Self::record_bytes(&meta) as u64;
        let data = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&data_path)
            .map_err(io(&data_path))?;
        let have = data.metadata().map_err(io(&data_path))?.len();
        if have < rows.len() as u64 * record {
            return Err(Error::Format {
                file: data_path.display().to_string(),
                message: format!(
                    "holds {have} bytes, fewer than the {} records its index names",
                    rows.len()
                ),
            });
        }
        data.set_len(rows.len() as u64 * record)
            .map_err(io(&data_path))?;
        let index = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index_path)
            .map_err(io(&index_path))?;
        index.set_len(valid_bytes).map_err(io(&index_path))?;
        Ok(FeatureCache {
            dir: dir.to_path_buf(),
            meta,
            rows,
            data,
            index,
        })
    }

    fn record_bytes(meta: &CacheMeta) -> usize {
        meta.layers.len() * meta.hidden * 2
    }

    /// Items cached.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// What the cache was made with.
    pub fn meta(&self) -> &CacheMeta {
        &self.meta
    }

    /// Whether `key`'s features are cached.
    pub fn contains(&self, key: &str) -> bool {
        self.rows.contains_key(key)
    }

    /// The cached features of `key`.
    pub fn get(&mut self, key: &str) -> Result<Option<Features>> {
        let Some(&(row, p_model)) = self.rows.get(key) else {
            return Ok(None);
        };
        let record = Self::record_bytes(&self.meta);
        let path = self.dir.join("features.f16");
        let mut bytes = vec![0u8; record];
        self.data
            .seek(SeekFrom::Start((row * record) as u64))
            .map_err(io(&path))?;
        self.data.read_exact(&mut bytes).map_err(io(&path))?;
        let values: Vec<f32> = bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        Ok(Some(Features {
            p_model,
            hidden: values
                .chunks(self.meta.hidden)
                .map(<[f32]>::to_vec)
                .collect(),
        }))
    }

    /// Appends `key`'s features (one vector per cached layer, in order).
    pub fn put(&mut self, key: &str, features: &Features) -> Result<()> {
        if features.hidden.len() != self.meta.layers.len()
            || features.hidden.iter().any(|h| h.len() != self.meta.hidden)
        {
            return Err(Error::InvalidInput(format!(
                "features of {} layers are not the cache's {} layers of {}",
                features.hidden.len(),
                self.meta.layers.len(),
                self.meta.hidden
            )));
        }
        if self.rows.contains_key(key) {
            return Ok(());
        }
        let bytes: Vec<u8> = features
            .hidden
            .iter()
            .flatten()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        let data_path = self.dir.join("features.f16");
        self.data.write_all(&bytes).map_err(io(&data_path))?;
        self.data.flush().map_err(io(&data_path))?;
        let mut line = serde_json::to_string(&IndexLine {
            key: key.to_string(),
            p_model: features.p_model,
        })
        .expect("plain data serialises");
        line.push('\n');
        let index_path = self.dir.join("index.jsonl");
        self.index
            .write_all(line.as_bytes())
            .map_err(io(&index_path))?;
        self.index.flush().map_err(io(&index_path))?;
        self.rows
            .insert(key.to_string(), (self.rows.len(), features.p_model));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CacheMeta {
        CacheMeta {
            fingerprint: "f".into(),
            protocol: "safety-j".into(),
            layers: vec![2, 3],
            hidden: 4,
        }
    }

    fn features(seed: f32) -> Features {
        Features {
            p_model: seed as f64 / 10.0,
            hidden: vec![
                vec![seed, 1.0, -2.0, 0.5],
                vec![0.25, seed * 2.0, 3.0, -1.0],
            ],
        }
    }

    #[test]
    fn a_half_written_cache_resumes_with_each_item_once() {
        let dir = std::env::temp_dir().join(format!("safetyj-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut cache = FeatureCache::open(&dir, meta()).unwrap();
            cache.put("a", &features(1.0)).unwrap();
            cache.put("b", &features(2.0)).unwrap();
        }
        // A killed run: a third record written, its index line cut short.
        let mut data = OpenOptions::new()
            .append(true)
            .open(dir.join("features.f16"))
            .unwrap();
        data.write_all(&[7u8; 16]).unwrap();
        let mut index = OpenOptions::new()
            .append(true)
            .open(dir.join("index.jsonl"))
            .unwrap();
        index.write_all(b"{\"key\":\"c\",\"p_mo").unwrap();
        drop((data, index));

        let mut cache = FeatureCache::open(&dir, meta()).unwrap();
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains("c"));
        assert_eq!(cache.get("b").unwrap().unwrap(), features(2.0));
        cache.put("c", &features(3.0)).unwrap();
        drop(cache);
        let mut cache = FeatureCache::open(&dir, meta()).unwrap();
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("a").unwrap().unwrap(), features(1.0));
        assert_eq!(cache.get("c").unwrap().unwrap(), features(3.0));

        let other = CacheMeta {
            fingerprint: "g".into(),
            ..meta()
        };
        let err = FeatureCache::open(&dir, other).err().unwrap();
        assert!(err.to_string().contains("another model"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
