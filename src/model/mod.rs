//! Running a checkpoint: architecture tables, configuration, weights on the GPU, the
//! forward pass over the KV cache, and generation.

pub mod arch;
pub mod config;

pub use config::ModelConfig;
pub mod convert;
pub mod forward;
pub mod load;

pub use forward::{LayerWeights, Logits, Model, Session};
