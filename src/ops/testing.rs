//! Shared test support: one GPU context per test binary, seeded random inputs,
//! and comparison with a stated tolerance.

use std::sync::OnceLock;

use rand::{RngExt, SeedableRng};

use crate::gpu::Context;

/// The test binary's GPU context (lavapipe in CI), created once.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| Context::new_blocking().expect("a GPU adapter (install mesa-vulkan-drivers)"))
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
            if v == 0.0 { scale * 0.5 } else { v }
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
        assert!(ok, "{what}: element {i} is {g}, expected {w} (|err| {err} > atol {atol} + rtol {rtol})");
        if err > worst.1 {
            worst = (i, err);
        }
    }
}

/// `rows` × `cols` random weights in `dtype`'s block layout: random quant bits with
/// small finite scales, so every code path of a block format is exercised.
pub fn random_weights(rng: &mut rand::rngs::StdRng, dtype: crate::quant::DType, rows: usize, cols: usize) -> Vec<u8> {
    use crate::quant::DType;
    use half::{bf16, f16};
    let elems = rows * cols;
    match dtype {
        DType::F32 => return bytemuck::cast_slice(&random_f32(rng, elems, 1.0)).to_vec(),
        DType::F16 => {
            return random_f32(rng, elems, 1.0).iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
        }
        DType::BF16 => {
            return random_f32(rng, elems, 1.0).iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect()
        }
        _ => {}
    }
    let bb = dtype.block_bytes();
    let blocks = elems / dtype.block_elems();
    let mut bytes: Vec<u8> = (0..blocks * bb).map(|_| rng.random::<u8>()).collect();
    let scale_offsets: &[usize] = match dtype {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q6_K => &[208],
        DType::F32 | DType::F16 | DType::BF16 => unreachable!(),
    };
    for block in bytes.chunks_exact_mut(bb) {
        for &o in scale_offsets {
            let s = f16::from_f32(rng.random_range(0.001f32..0.02) * if rng.random::<bool>() { 1.0 } else { -1.0 });
            block[o..o + 2].copy_from_slice(&s.to_le_bytes());
        }
    }
    bytes
}
