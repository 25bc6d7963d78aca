//! The model on the CPU, for machines without a usable GPU: the same configuration,
//! loaders and forward pass as `crate::model`, with matrices kept in their GGUF block
//! types and multiplied by candle's quantized SIMD kernels (`matrix`), and the other
//! steps in plain Rust over f32 rows (`kernels`). In the browser it loads by HTTP
//! Range like the GPU engine (`stream`).
//!
//! Why candle-core: it is maintained, ships llama.cpp-derived dot products for every
//! weight type safetyj stores (AVX2, AVX-512 VNNI and AMX on x86-64, NEON on aarch64,
//! simd128 on wasm32), splits each product over its own thread pool natively, and builds
//! for wasm32 without features.

mod generate;
mod kernels;
mod matrix;
mod model;
mod pick;
mod stream;

pub use generate::generate;
pub use model::{CpuModel, CpuSession, CpuStep};
pub use pick::pick;
