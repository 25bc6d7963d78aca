//! Shared test support: one GPU context per test binary, seeded random inputs,
//! and comparison with a stated tolerance.

use std::sync::OnceLock;

use rand::{RngExt, SeedableRng};

pub use super::close::assert_close;
use crate::gpu::Context;

/// The test binary's GPU context (lavapipe in CI), created once.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new_blocking().expect("a GPU adapter (install mesa-vulkan-drivers)")
    })
}

/// A seeded generator, so a failure reproduces.
pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale], none exactly zero.
pub fn random_f32(rng: &mut rand::rngs::StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = rng.random_range(-scale..scale);
            if v == 0.0 {
                scale * 0.5
            } else {
                v
            }
        })
        .collect()
}

/// `rows` × `cols` random weights in `dtype`'s block layout (see
/// [`crate::quant::random_weights`]), seeded from `rng`.
pub fn random_weights(
    rng: &mut rand::rngs::StdRng,
    dtype: crate::quant::DType,
    rows: usize,
    cols: usize,
) -> Vec<u8> {
    let mut weights = crate::quant::WeightRng::new(rng.random());
    crate::quant::random_weights(&mut weights, dtype, rows * cols)
        .expect("test weights are whole blocks")
}
