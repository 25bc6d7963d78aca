//! A resumable JSONL journal: the output of a long run (batch judging, an eval), one
//! record per line, that a rerun reads back to skip what is done.
//!
//! What it guarantees:
//! - each record is one `write_all` of its line and newline, so a killed run leaves
//!   at most one cut last line, which the next [`Journal::open`] cuts off (that item
//!   is redone); no record is ever spread over several writes;
//! - two runs never append to the same file: the file is locked (an OS advisory lock,
//!   released when the process ends, even by SIGKILL) for as long as the journal is
//!   open, and a second open fails naming the file;
//! - with [`JournalOptions::fsync`], each record reaches the disk before the next
//!   item starts (survives a power loss, not only a killed process);
//! - records carry a key tied to their input ([`fingerprint`]), so a caller can tell
//!   an edited input from a finished one and name the item that changed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How a [`Journal`] writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalOptions {
    /// Sync each record to the disk (`fsync`) before returning from
    /// [`Journal::append`]; slower, but a power loss loses no finished record.
    pub fsync: bool,
}

/// An open, locked, append-only JSONL output.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    options: JournalOptions,
}

/// A short, stable fingerprint of an input's bytes (the first 16 hex digits of its
/// sha256), stored with a record so a resumed run can tell whether the input it
/// was made from has changed.
pub fn fingerprint(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Journal {
    /// Opens (or creates) `path`, locks it against other runs, and reads the records
    /// already in it. A final line without a newline is a record cut short by a killed
    /// run: it is cut off the file and not returned. Any other line that does not read
    /// as an `R` is an error naming the line.
    pub fn open<R: DeserializeOwned>(
        path: &Path,
        options: JournalOptions,
    ) -> Result<(Journal, Vec<R>)> {
        let name = path.display().to_string();
        let write_error = |source| Error::Write {
            file: name.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(write_error)?;
        match file.try_lock_exclusive() {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::InvalidInput(format!(
                    "{name} is in use by another run (it is locked); wait for that run to \
                     finish, or give this one another output"
                )))
            }
            Err(source) => return Err(write_error(source)),
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|source| Error::Io {
                file: name.clone(),
                source,
            })?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut records = Vec::new();
        for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record = serde_json::from_slice(line).map_err(|e| Error::Format {
                file: name.clone(),
                message: format!(
                    "line {} is not a record of this run ({e}); move the file aside to start over",
                    i + 1
                ),
            })?;
            records.push(record);
        }
        if complete < bytes.len() {
            file.set_len(complete as u64).map_err(write_error)?;
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                options,
            },
            records,
        ))
    }

    /// Appends `record` as one line, in a single write, and flushes it to the
    /// operating system (and to the disk, with [`JournalOptions::fsync`]).
    pub fn append<R: Serialize>(&mut self, record: &R) -> Result<()> {
        let mut line = serde_json::to_vec(record)
            .map_err(|e| Error::InvalidInput(format!("a record cannot be written as JSON: {e}")))?;
        line.push(b'\n');
        let sync = self.options.fsync;
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) })
            .map_err(|source| Error::Write {
                file: self.path.display().to_string(),
                source,
            })
    }

    /// The file the journal writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Record {
        line: usize,
        input: String,
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("safetyj-journal-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("out.jsonl")
    }

    #[test]
    fn records_round_trip_and_a_cut_last_line_is_removed() {
        let path = temp_file("roundtrip");
        std::fs::write(&path, "{\"line\":1,\"input\":\"a\"}\n\n{\"line\":2,\"inp").unwrap();
        let (mut journal, records) =
            Journal::open::<Record>(&path, JournalOptions { fsync: true }).unwrap();
        assert_eq!(
            records,
            [Record {
                line: 1,
                input: "a".into()
            }]
        );
        journal
            .append(&Record {
                line: 2,
                input: "b".into(),
            })
            .unwrap();
        drop(journal);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"line\":1,\"input\":\"a\"}\n\n{\"line\":2,\"input\":\"b\"}\n"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_second_open_of_the_same_output_is_refused_until_the_first_closes() {
        let path = temp_file("lock");
        let (first, _) = Journal::open::<Record>(&path, JournalOptions::default()).unwrap();
        let err = Journal::open::<Record>(&path, JournalOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("in use by another run")),
            "{err}"
        );
        drop(first);
        Journal::open::<Record>(&path, JournalOptions::default()).unwrap();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_complete_line_that_is_not_a_record_is_named() {
        let path = temp_file("corrupt");
        std::fs::write(&path, "{\"line\":1,\"input\":\"a\"}\nnot json\n").unwrap();
        let err = Journal::open::<Record>(&path, JournalOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Format { message, .. } if message.contains("line 2")),
            "{err}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn fingerprints_differ_for_different_inputs() {
        assert_eq!(fingerprint(b"abc"), fingerprint(b"abc"));
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
        assert_eq!(fingerprint(b"").len(), 16);
    }
}
