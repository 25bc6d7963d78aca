//! Shared test support: one GPU context per test binary, seeded random inputs,
//! and comparison with a stated tolerance.

use std::sync::OnceLock;

use rand::{RngExt, SeedableRng};

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

/// Panics unless every `got[i]` is within `atol + rtol * |want[i]|` of `want[i]`
/// (NaN never passes), naming the first bad index.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let ok = err <= atol + rtol * w.abs();
        assert!(
            ok,
            "{what}: element {i} is {g}, expected {w} (|err| {err} > atol {atol} + rtol {rtol})"
        );
        if err > worst.1 {
            worst = (i, err);
        }
    }
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
