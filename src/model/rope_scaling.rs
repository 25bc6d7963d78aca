//! RoPE scaling from a Hugging Face `rope_scaling` as per-frequency divisors, the form
//! GGUF files store (`rope_freqs.weight`) and the rope op applies.

use crate::error::{Error, Result};
use crate::formats::config::RopeScaling;

/// The divisor of each of the `rotary_dim / 2` frequencies (`base^(-2i / rotary_dim)`)
/// that `scaling` asks for. Only Llama 3's scaling (`rope_type: llama3`) is a fixed
/// per-frequency divisor; other methods are refused, naming `source`.
///
/// Llama 3 (transformers' `_compute_llama3_parameters`, llama.cpp's `rope_freqs`):
/// with `original_max_position_embeddings` L, wavelengths `2π / f` below
/// `L / high_freq_factor` keep their frequency, those above `L / low_freq_factor`
/// are divided by `factor`, and those between are interpolated with
/// `s = (L / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)`:
/// `f' = (1 - s) f / factor + s f`, i.e. a divisor of `1 / ((1 - s) / factor + s)`.
pub fn freq_factors(
    source: &str,
    scaling: &RopeScaling,
    base: f64,
    rotary_dim: usize,
) -> Result<Vec<f32>> {
    if scaling.rope_type != "llama3" {
        return Err(Error::Unsupported(format!(
            "{source}: rope_scaling of type \"{}\" is not supported (supported: llama3)",
            scaling.rope_type
        )));
    }
    let invalid = |message: String| Error::Format {
        file: source.to_string(),
        message: format!("rope_scaling (llama3): {message}"),
    };
    let number = |key: &str| -> Result<f64> {
        scaling
            .other
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| invalid(format!("`{key}` is missing or not a number")))
    };
    let factor = scaling
        .factor
        .ok_or_else(|| invalid("`factor` is missing".into()))?;
    let low = number("low_freq_factor")?;
    let high = number("high_freq_factor")?;
    let original = number("original_max_position_embeddings")?;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !(positive(factor) && positive(low) && positive(original) && high.is_finite() && high > low)
    {
        return Err(invalid(format!(
            "factor {factor}, low_freq_factor {low}, high_freq_factor {high} and original_max_position_embeddings {original} must be positive, with high > low"
        )));
    }
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    Ok((0..rotary_dim / 2)
        .map(|i| {
            let freq = base.powf(-((2 * i) as f64) / rotary_dim as f64);
            let wavelen = std::f64::consts::TAU / freq;
            let divisor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            divisor as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn llama3(original: f64) -> RopeScaling {
        RopeScaling {
            rope_type: "llama3".into(),
            factor: Some(32.0),
            other: BTreeMap::from([
                ("low_freq_factor".into(), 1.0.into()),
                ("high_freq_factor".into(), 4.0.into()),
                ("original_max_position_embeddings".into(), original.into()),
            ]),
        }
    }

    /// Llama 3.2's settings (theta 500000, head_dim 64, original context 8192): the
    /// high frequencies stay, the low ones are divided by 32, and the band between
    /// is smooth and monotonic.
    #[test]
    fn llama3_factors_cover_the_three_bands() {
        let f = freq_factors("c", &llama3(8192.0), 500_000.0, 64).unwrap();
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[31], 32.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
        assert!(f.iter().any(|&x| x > 1.0 && x < 32.0), "{f:?}");
    }

    #[test]
    fn other_methods_and_bad_parameters_are_refused() {
        let mut yarn = llama3(8192.0);
        yarn.rope_type = "yarn".into();
        let err = freq_factors("m/config.json", &yarn, 1e4, 64).unwrap_err();
        assert!(
            err.to_string().contains("\"yarn\" is not supported"),
            "{err}"
        );
        let mut broken = llama3(8192.0);
        broken.other.remove("high_freq_factor");
        let err = freq_factors("m/config.json", &broken, 1e4, 64).unwrap_err();
        assert!(err.to_string().contains("high_freq_factor"), "{err}");
        let err = freq_factors("m/config.json", &llama3(-1.0), 1e4, 64).unwrap_err();
        assert!(err.to_string().contains("must be positive"), "{err}");
    }
}
