//! Device and memory: adapter choice, real limits, optional features, the pipeline
//! cache, buffers and readback. Everything above this module speaks in [`Context`].

mod adapter;
mod caches;
mod context;
mod encoder;
mod faults;
mod pipelines;
mod preprocess;
mod profiler;
mod readback;

pub use adapter::{AdapterSummary, Capabilities, ContextOptions};
pub use context::Context;
pub use encoder::Encoder;
pub use pipelines::Shader;
pub use preprocess::preprocess;
pub use profiler::PROFILE_MAX_DISPATCHES;
pub use readback::Readback;
