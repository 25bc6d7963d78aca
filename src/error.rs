//! The crate's error type: every failure a caller can act on, with the op, tensor,
//! file or limit at fault named in the message.

/// Everything that can go wrong in safetyj.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No WebGPU adapter matched (none present, or the override excluded all).
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("the GPU device could not be created on adapter \"{adapter}\": {message}")]
    DeviceRequest { adapter: String, message: String },
    /// wgpu rejected a call as invalid (a bug in safetyj, or input it should have refused).
    #[error("GPU validation error while {context}: {message}")]
    Validation { context: String, message: String },
    /// The device ran out of memory.
    #[error("the GPU ran out of memory while {context}: {message}")]
    OutOfMemory { context: String, message: String },
    /// The device was lost (driver reset, browser tab backgrounded, GPU removed).
    #[error("the GPU device was lost ({0}); reload the model to continue")]
    DeviceLost(String),
    /// A WGSL shader failed to preprocess.
    #[error("shader {shader}: {message}")]
    Shader { shader: String, message: String },
    /// An op was given shapes that do not fit together.
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
    /// An op was given a parameter value outside its domain (a temperature of 0, a
    /// probability above 1).
    #[error("{op}: {message}")]
    Parameter { op: &'static str, message: String },
    /// An op or buffer needs more than the device allows.
    #[error("{what} needs {needed} bytes, but this device allows at most {limit} ({limit_name})")]
    Limit {
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },
    /// An op does not implement a weight type.
    #[error("{op} does not support weight type {dtype}")]
    UnsupportedDType { op: &'static str, dtype: String },
    /// Input that cannot be judged or run as given (a malformed dialogue, a prompt
    /// longer than the context, …).
    #[error("{0}")]
    InvalidInput(String),
    /// A model, file or feature that safetyj does not support.
    #[error("{0}")]
    Unsupported(String),
    /// Reading a model file failed at the operating-system level.
    #[error("reading {file} failed: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A model file (GGUF, safetensors, config.json) is malformed, or lacks what was
    /// asked of it; the message names the tensor, key, offset or limit at fault.
    #[error("{file}: {message}")]
    Format { file: String, message: String },
    /// Values cannot be stored in a weight type (NaN, infinity, or beyond its range).
    #[error("cannot quantize to {dtype}: {message}")]
    Quantize {
        dtype: &'static str,
        message: String,
    },
    /// A tokenizer could not be built from its file, or could not encode or decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A download failed: the server refused it, the connection kept breaking past
    /// every retry, or the bytes did not match their size or checksum.
    #[error("downloading {url} failed: {message}")]
    Download { url: String, message: String },
    /// A file or folder (the model cache, a downloaded archive) could not be read
    /// or written.
    #[error("{path}: {message}")]
    CacheIo { path: String, message: String },
    /// A dataset file that cannot be read as an evaluation set; the message names
    /// the line (JSONL) or item index (JSON array) at fault.
    #[error("{file}: {message}")]
    Dataset { file: String, message: String },
    /// A judge or evaluator backend (an HTTP endpoint) refused or failed a request,
    /// or answered with something that is not a chat completion.
    #[error("{endpoint}: {message}")]
    Backend { endpoint: String, message: String },
    /// Writing an evaluation's results or reports failed at the operating-system level.
    #[error("writing {file} failed: {source}")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Mapping a buffer for reading failed.
    #[error("reading back GPU buffer \"{label}\" failed: {message}")]
    Readback { label: String, message: String },
}

impl Error {
    /// Whether the failure lies in the moment rather than in the input: the device
    /// was lost or ran out of memory, a readback failed, an I/O call timed out or was
    /// interrupted, a download kept breaking. A long run must stop (or retry) on such
    /// an error, never record it as an item's final answer.
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind;
        let io_transient = |e: &std::io::Error| {
            matches!(
                e.kind(),
                ErrorKind::TimedOut
                    | ErrorKind::Interrupted
                    | ErrorKind::WouldBlock
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::OutOfMemory
            )
        };
        match self {
            Error::DeviceLost(_)
            | Error::OutOfMemory { .. }
            | Error::Readback { .. }
            | Error::Download { .. } => true,
            Error::Io { source, .. } | Error::Write { source, .. } => io_transient(source),
            _ => false,
        }
    }
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_and_timeout_failures_are_transient_and_input_errors_are_not() {
        let io = |kind| std::io::Error::new(kind, "x");
        for transient in [
            Error::DeviceLost("reset".into()),
            Error::OutOfMemory {
                context: "prefill".into(),
                message: "x".into(),
            },
            Error::Io {
                file: "f".into(),
                source: io(std::io::ErrorKind::TimedOut),
            },
        ] {
            assert!(transient.is_transient(), "{transient}");
        }
        for lasting in [
            Error::InvalidInput("empty query".into()),
            Error::Tokenizer("bad".into()),
            Error::Io {
                file: "f".into(),
                source: io(std::io::ErrorKind::NotFound),
            },
        ] {
            assert!(!lasting.is_transient(), "{lasting}");
        }
    }
}
