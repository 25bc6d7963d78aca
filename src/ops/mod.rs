//! GPU kernels, one op per file: each owns its pipeline(s), records a typed dispatch
//! with `encode(...)`, and carries a plain-Rust `reference(...)` that tests compare
//! against.

pub mod add;
pub mod argmax;
pub mod attention;
#[cfg(test)]
mod close;
pub mod embedding;
pub mod kv_append;
pub mod matmul;
#[cfg(test)]
mod params_layout;
mod position;
pub mod rms_norm;
pub mod rope;
pub mod sample;
pub mod silu_mul;
mod tensor;
#[cfg(test)]
pub(crate) mod testing;
pub mod token_softmax;
mod weights;

pub use position::Position;
pub use tensor::{Elem, Tensor};
pub use weights::{WeightChunk, WeightMatrix};
