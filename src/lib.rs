//! safetyj: an on-device bilingual (English/Chinese) LLM safety judge implementing
//! Safety-J, with the transformer written as WGSL compute shaders on wgpu.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod cpu;
#[cfg(not(target_arch = "wasm32"))]
pub mod device;
pub mod error;
pub mod eval;
#[cfg(not(target_arch = "wasm32"))]
pub mod fetch;
pub mod formats;
pub mod gpu;
pub mod heads;
#[cfg(not(target_arch = "wasm32"))]
pub mod journal;
pub mod judge;
pub mod model;
pub mod ops;
#[cfg(not(target_arch = "wasm32"))]
pub mod prefs;
pub mod quant;
#[cfg(all(feature = "serve", not(target_arch = "wasm32")))]
pub mod serve;
pub mod tokenizer;
#[cfg(all(target_arch = "wasm32", feature = "web"))]
pub mod web;

pub use error::{Error, Result};
