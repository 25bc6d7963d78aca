//! Seeded random weights in any storage type: valid blocks (random quant bits, small
//! finite f16 scales) for kernel tests and for synthetic models of a real model's exact
//! tensor layout (`safetyj synth`). The generator is SplitMix64, so the same seed
//! gives the same bytes on every platform.

use half::f16;

use super::{quantize, DType};
use crate::error::{Error, Result};

/// A small seeded generator (SplitMix64): fast, and the same sequence everywhere.
#[derive(Debug, Clone)]
pub struct WeightRng {
    state: u64,
}

impl WeightRng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// Fills `out` with random bytes.
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        let mut chunks = out.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// `n` values uniform in `center ± spread`, none exactly zero.
    pub fn values(&mut self, n: usize, center: f32, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let v = center + self.uniform(-spread, spread);
                if v == 0.0 {
                    spread * 0.5
                } else {
                    v
                }
            })
            .collect()
    }
}

/// Byte offsets of the f16 scale fields (`d`, and `dmin` where the type has one)
/// inside one block of a quantized type; empty for plain float types.
fn scale_offsets(dtype: DType) -> &'static [usize] {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => &[],
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q6_K => &[208],
    }
}

/// `elems` random weights in `dtype`'s block layout. Quantized types get random quant
/// bits with f16 scales of magnitude 0.001 to 0.02 and either sign, so every code
/// path of a block format is exercised and every value is finite; plain float types
/// get values uniform in ±1, never zero. Fails when `elems` is not a whole number
/// of blocks.
pub fn random_weights(rng: &mut WeightRng, dtype: DType, elems: usize) -> Result<Vec<u8>> {
    let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
    if !elems.is_multiple_of(be) {
        return Err(Error::Shape {
            op: "random weights",
            message: format!(
                "{elems} values are not a whole number of {be}-element {dtype} blocks"
            ),
        });
    }
    if be == 1 {
        return quantize(dtype, &rng.values(elems, 0.0, 1.0));
    }
    let mut bytes = vec![0u8; elems / be * bb];
    rng.fill_bytes(&mut bytes);
    for block in bytes.chunks_exact_mut(bb) {
        for &o in scale_offsets(dtype) {
            let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
            let scale = f16::from_f32(sign * rng.uniform(0.001, 0.02));
            block[o..o + 2].copy_from_slice(&scale.to_le_bytes());
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_to_vec;

    #[test]
    fn every_type_dequantizes_to_finite_varied_values() {
        for dtype in DType::ALL {
            let elems = 2 * 256;
            let bytes = random_weights(&mut WeightRng::new(7), dtype, elems).unwrap();
            assert_eq!(bytes.len(), dtype.row_bytes(elems).unwrap(), "{dtype}");
            let values = dequantize_to_vec(dtype, &bytes, elems).unwrap();
            assert_eq!(values.len(), elems, "{dtype}");
            assert!(values.iter().all(|v| v.is_finite()), "{dtype}: non-finite");
            let largest = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                largest > 0.0 && largest < 100.0,
                "{dtype}: largest |value| {largest}"
            );
            assert!(
                values.iter().any(|&v| v < 0.0) && values.iter().any(|&v| v > 0.0),
                "{dtype}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let a = random_weights(&mut WeightRng::new(3), DType::Q4_K, 512).unwrap();
        let b = random_weights(&mut WeightRng::new(3), DType::Q4_K, 512).unwrap();
        let c = random_weights(&mut WeightRng::new(4), DType::Q4_K, 512).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn partial_blocks_are_refused() {
        let err = random_weights(&mut WeightRng::new(0), DType::Q8_0, 33).unwrap_err();
        assert!(
            err.to_string()
                .contains("33 values are not a whole number of 32-element Q8_0 blocks"),
            "{err}"
        );
    }

    #[test]
    fn values_stay_in_their_range_and_fill_bytes_covers_odd_lengths() {
        let mut rng = WeightRng::new(1);
        let values = rng.values(1000, 1.0, 0.1);
        assert!(values.iter().all(|v| (0.9..1.1).contains(v)));
        let mut bytes = [0u8; 13];
        rng.fill_bytes(&mut bytes);
        assert!(bytes[8..].iter().any(|&b| b != 0));
    }
}
