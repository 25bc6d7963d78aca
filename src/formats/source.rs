//! Byte sources: random access to a model file without loading all of it.
//!
//! Readers in this module never ask for the whole file. They fetch a header prefix,
//! parse it with pure functions over `&[u8]`, and then fetch each tensor's byte range
//! on its own. A source only has to answer "give me bytes `offset..offset + len`".
//!
//! Natively that is [`FileSource`] (positioned reads) or [`MmapSource`] (a memory
//! map). In the browser the same question becomes an HTTP `Range` request, which is
//! asynchronous; an async source does not implement [`ByteSource`] but drives the
//! same pure parsers: [`crate::formats::gguf::GgufFile::parse`] reports how many
//! leading bytes it needs ([`crate::formats::gguf::HeaderParse::NeedBytes`]) and
//! [`crate::formats::safetensors::SafetensorsFile::from_header`] takes the JSON
//! header once fetched; tensor ranges then come from
//! [`crate::formats::gguf::GgufTensorInfo::file_range`] and
//! [`crate::formats::safetensors::SafetensorsTensorInfo::file_range`], each fetched
//! with one `await`ed request.

use crate::error::{Error, Result};

/// Random-access, read-only bytes of one model file.
pub trait ByteSource {
    /// What to call the source in error messages (a path or URL).
    fn name(&self) -> &str;

    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Whether the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`; fails (naming the
    /// source and range) when that range runs past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The `len` bytes at `offset`, as a new vector.
    fn read_range(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        check_range(self.name(), self.len(), offset, len as u64)?;
        let mut buf = vec![0u8; len];
        self.read_at(offset, &mut buf)?;
        Ok(buf)
    }
}

/// Fails unless `offset..offset + len` lies inside a source of `total` bytes.
pub(crate) fn check_range(name: &str, total: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= total => Ok(()),
        _ => Err(Error::Format {
            file: name.to_string(),
            message: format!(
                "a read of {len} bytes at offset {offset} runs past the end of the file ({total} bytes)"
            ),
        }),
    }
}

/// A file's bytes held in memory (tests, small files, or a download already done).
pub struct MemorySource {
    name: String,
    bytes: Vec<u8>,
}

impl MemorySource {
    /// Wraps `bytes`, calling them `name` in errors.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            bytes,
        }
    }
}

impl ByteSource for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.name, self.len(), offset, buf.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{FileSource, MmapSource};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::fs::File;
    use std::path::Path;

    use super::{check_range, ByteSource};
    use crate::error::{Error, Result};

    fn io_error(path: &str, source: std::io::Error) -> Error {
        Error::Io {
            file: path.to_string(),
            source,
        }
    }

    /// A file read with positioned reads: nothing is cached, each read is a syscall.
    pub struct FileSource {
        name: String,
        file: File,
        len: u64,
    }

    impl FileSource {
        /// Opens `path` for reading.
        pub fn open(path: impl AsRef<Path>) -> Result<Self> {
            let name = path.as_ref().display().to_string();
            let file = File::open(path.as_ref()).map_err(|e| io_error(&name, e))?;
            let len = file.metadata().map_err(|e| io_error(&name, e))?.len();
            Ok(Self { name, file, len })
        }
    }

    impl ByteSource for FileSource {
        fn name(&self) -> &str {
            &self.name
        }

        fn len(&self) -> u64 {
            self.len
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            check_range(&self.name, self.len, offset, buf.len() as u64)?;
            read_exact_at(&self.file, offset, buf).map_err(|e| io_error(&self.name, e))
        }
    }

    #[cfg(unix)]
    fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }

    #[cfg(windows)]
    fn read_exact_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A memory-mapped file: reads are copies out of the page cache.
    pub struct MmapSource {
        name: String,
        map: memmap2::Mmap,
    }

    impl MmapSource {
        /// Maps `path` read-only. The file must not be truncated while mapped.
        pub fn open(path: impl AsRef<Path>) -> Result<Self> {
            let name = path.as_ref().display().to_string();
            let file = File::open(path.as_ref()).map_err(|e| io_error(&name, e))?;
            // SAFETY: the map is read-only and private to this value; a model file
            // changed underneath it by another process is outside what safetyj
            // supports, as for every mmap-based model loader.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(&name, e))?;
            Ok(Self { name, map })
        }

        /// The mapped bytes, for callers that can use them in place.
        pub fn bytes(&self) -> &[u8] {
            &self.map
        }
    }

    impl ByteSource for MmapSource {
        fn name(&self) -> &str {
            &self.name
        }

        fn len(&self) -> u64 {
            self.map.len() as u64
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
            check_range(&self.name, self.len(), offset, buf.len() as u64)?;
            let start = offset as usize;
            buf.copy_from_slice(&self.map[start..start + buf.len()]);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("safetyj-source-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn check_source(source: &dyn ByteSource) {
        assert_eq!(source.len(), 10);
        assert_eq!(source.read_range(3, 4).unwrap(), vec![3, 4, 5, 6]);
        assert_eq!(source.read_range(10, 0).unwrap(), Vec::<u8>::new());
        let err = source.read_range(8, 3).unwrap_err().to_string();
        assert!(
            err.contains("3 bytes at offset 8") && err.contains("10 bytes"),
            "{err}"
        );
        let err = source.read_range(u64::MAX, 2).unwrap_err().to_string();
        assert!(err.contains("past the end"), "{err}");
    }

    #[test]
    fn every_source_reads_ranges_and_refuses_reads_past_the_end() {
        let bytes: Vec<u8> = (0..10).collect();
        check_source(&MemorySource::new("mem", bytes.clone()));
        let path = temp_file("ranges", &bytes);
        check_source(&FileSource::open(&path).unwrap());
        check_source(&MmapSource::open(&path).unwrap());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn opening_a_missing_file_names_it() {
        let err = FileSource::open("/nonexistent/model.gguf")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/model.gguf"), "{err}");
        let err = MmapSource::open("/nonexistent/model.gguf")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    }
}
