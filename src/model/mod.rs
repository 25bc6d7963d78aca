//! Running a checkpoint: architecture tables, configuration, weights on the GPU, the
//! forward pass over the KV cache, generation, the engine seam a judge uses, and synthetic copies of a model's
//! layout for benchmarks.

pub mod arch;
pub mod config;
#[cfg(not(target_arch = "wasm32"))]
pub mod convert;
pub mod engine;
pub mod forward;
pub mod generate;
pub mod load;
#[cfg(not(target_arch = "wasm32"))]
pub mod open;
pub mod rope_scaling;
mod score;
pub mod stream;
#[cfg(not(target_arch = "wasm32"))]
pub mod synth;

pub use config::ModelConfig;
pub use engine::{Engine, EngineSession, Scored};
pub use forward::{LayerWeights, Logits, Model, Session};
