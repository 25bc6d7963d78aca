//! Device and memory: adapter choice, real limits, optional features, the pipeline
//! cache, buffers and readback. Everything above this module speaks in [`Context`].

mod context;
mod encoder;
mod preprocess;

pub use context::{
    AdapterSummary, Capabilities, Context, ContextOptions, Readback, Shader, PROFILE_MAX_DISPATCHES,
};
pub use encoder::Encoder;
pub use preprocess::preprocess;
