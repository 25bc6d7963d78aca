//! CPU quantization of f32 values into every block type, following llama.cpp's
//! reference quantizers (`quantize_row_*_ref` in ggml-quants.c) operation by operation,
//! so the bytes match what the ecosystem's tools write for the same input. The order
//! of every float operation matters for that; keep it when editing.

use half::f16;

use super::DType;
use crate::error::{Error, Result};

/// Quantizes `values` (whole rows: a whole number of `dtype` blocks) into GGUF block
/// bytes. Fails on NaN or infinite input, and when a value or block scale is too large
/// for the type's f16/bf16 fields.
pub fn quantize(dtype: DType, values: &[f32]) -> Result<Vec<u8>> {
    let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
    if !values.len().is_multiple_of(be) {
        return Err(Error::Shape {
            op: "quantize",
            message: format!(
                "{} values are not a whole number of {be}-element {dtype} blocks",
                values.len()
            ),
        });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Quantize {
            dtype: dtype.name(),
            message: format!(
                "element {i} is {}, which no weight type can store",
                values[i]
            ),
        });
    }
    let mut out = vec![0u8; values.len() / be * bb];
    for (index, (x, y)) in values
        .chunks_exact(be)
        .zip(out.chunks_exact_mut(bb))
        .enumerate()
    {
        let stored = match dtype {
            DType::F32 => {
                y.copy_from_slice(&x[0].to_le_bytes());
                Ok(())
            }
            DType::F16 => put_f16(y, 0, x[0]),
            DType::BF16 => bf16(y, x[0]),
            DType::Q4_0 => q4_0(x, y),
            DType::Q4_1 => q4_1(x, y),
            DType::Q5_0 => q5_0(x, y),
            DType::Q8_0 => q8_0(x, y),
            DType::Q4_K => q4_k(x, y),
            DType::Q5_K => q5_k(x, y),
            DType::Q6_K => q6_k(x, y),
        };
        stored.map_err(|Overflow(value)| Error::Quantize {
            dtype: dtype.name(),
            message: if be == 1 {
                format!("element {index} ({value:e}) is beyond the type's largest finite value")
            } else {
                format!(
                    "block {index} (elements {}..{}) needs a scale of {value:e}, beyond f16's \
                     largest finite value 65504",
                    index * be,
                    index * be + be
                )
            },
        })?;
    }
    Ok(out)
}

/// A value that became infinite (or NaN) when narrowed to a 16-bit float field.
struct Overflow(f32);

type Stored = std::result::Result<(), Overflow>;

/// Writes `v` as f16 (round to nearest even, as ggml's `GGML_FP32_TO_FP16`) at `at`.
fn put_f16(y: &mut [u8], at: usize, v: f32) -> Stored {
    let h = f16::from_f32(v);
    if !h.is_finite() {
        return Err(Overflow(v));
    }
    y[at..at + 2].copy_from_slice(&h.to_le_bytes());
    Ok(())
}

/// The f32 that an f16 field written by [`put_f16`] reads back as.
fn f16_round_trip(y: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([y[at], y[at + 1]]).to_f32()
}

/// bf16 by rounding to nearest even on the bit pattern, as ggml's `ggml_compute_fp32_to_bf16`.
fn bf16(y: &mut [u8], v: f32) -> Stored {
    let bits = v.to_bits();
    let rounded = ((bits as u64 + 0x7fff + ((bits as u64 >> 16) & 1)) >> 16) as u16;
    if rounded & 0x7f80 == 0x7f80 {
        return Err(Overflow(v));
    }
    y.copy_from_slice(&rounded.to_le_bytes());
    Ok(())
}

/// ggml's `nearest_int`: round half to even through the 1.5·2²³ trick, bit for bit
/// (valid for |v| ≤ 2²²; larger values give the same wrapped result as ggml).
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// The element of largest magnitude, with its sign (the first one on ties).
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn q4_0(x: &[f32], y: &mut [u8]) -> Stored {
    let d = signed_absmax(x) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d)?;
    for j in 0..16 {
        let lo = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let hi = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        y[2 + j] = lo | (hi << 4);
    }
    Ok(())
}

fn q4_1(x: &[f32], y: &mut [u8]) -> Stored {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        // Plain comparisons, as ggml: `f32::min` may pick either sign of zero.
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d)?;
    put_f16(y, 2, min)?;
    for j in 0..16 {
        let lo = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let hi = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
        y[4 + j] = lo | (hi << 4);
    }
    Ok(())
}

fn q5_0(x: &[f32], y: &mut [u8]) -> Stored {
    let d = signed_absmax(x) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d)?;
    let mut qh = 0u32;
    for j in 0..16 {
        let lo = ((x[j] * id + 16.5) as i8).min(31) as u8;
        let hi = ((x[j + 16] * id + 16.5) as i8).min(31) as u8;
        y[6 + j] = (lo & 0xf) | ((hi & 0xf) << 4);
        qh |= ((lo as u32 & 0x10) >> 4) << j;
        qh |= ((hi as u32 & 0x10) >> 4) << (j + 16);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
    Ok(())
}

fn q8_0(x: &[f32], y: &mut [u8]) -> Stored {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(y, 0, d)?;
    for j in 0..32 {
        // `round` is C's roundf: halves away from zero.
        y[2 + j] = (x[j] * id).round() as i8 as u8;
    }
    Ok(())
}

/// The scale search behind Q4_K and Q5_K (ggml's `make_qkx2_quants` with squared
/// error): fits `x ≈ scale·L + min` with `L` in `0..=nmax` and `min ≤ 0`, trying
/// `nstep + 1` candidate scales around `nmax / (max - min)`. Writes `L`, returns
/// `(scale, -min)`.
fn fit_scale_min(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    levels: &mut [u8],
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut trial = [0u8; 32];
    let trial = &mut trial[..n];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            trial[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * trial[i] as f32 + this_min - x[i];
                error += weights[i] * (diff * diff);
            }
            if error < best_error {
                levels.copy_from_slice(trial);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q4_K and Q5_K share everything but the level count and the search grid: eight
/// 32-element sub-blocks, each with a 6-bit scale and min under f16 super-scales.
/// Fills `levels` (0..=nmax per element) and the header (d, dmin, packed scales).
fn k_scales_and_levels(
    x: &[f32],
    y: &mut [u8],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    levels: &mut [u8; 256],
) -> Stored {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    let mut weights = [0.0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2 = xs.iter().fold(0.0f32, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = fit_scale_min(
            xs,
            &weights,
            nmax,
            rmin,
            rdelta,
            nstep,
            &mut levels[32 * j..32 * j + 32],
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut y[4..16];
    packed.fill(0);
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t before clamping: keep that truncation.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(y, 0, max_scale / 63.0)?;
    put_f16(y, 2, max_min / 63.0)?;
    let (d_all, dmin_all) = (f16_round_trip(y, 0), f16_round_trip(y, 2));
    for j in 0..8 {
        let (sc, m) = super::dequant::k_scale_min(j, &y[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for i in 32 * j..32 * j + 32 {
            levels[i] = nearest_int((x[i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    Ok(())
}

fn q4_k(x: &[f32], y: &mut [u8]) -> Stored {
    let mut levels = [0u8; 256];
    k_scales_and_levels(x, y, 15, -1.0, 0.1, 20, &mut levels)?;
    for chunk in 0..4 {
        let l = &levels[64 * chunk..64 * chunk + 64];
        for i in 0..32 {
            y[16 + 32 * chunk + i] = l[i] | (l[i + 32] << 4);
        }
    }
    Ok(())
}

fn q5_k(x: &[f32], y: &mut [u8]) -> Stored {
    let mut levels = [0u8; 256];
    k_scales_and_levels(x, y, 31, -0.5, 0.1, 15, &mut levels)?;
    let (qh, qs) = y[16..176].split_at_mut(32);
    qh.fill(0);
    for chunk in 0..4 {
        let l = &levels[64 * chunk..64 * chunk + 64];
        let (m1, m2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for i in 0..32 {
            let (mut lo, mut hi) = (l[i], l[i + 32]);
            if lo > 15 {
                lo -= 16;
                qh[i] |= m1;
            }
            if hi > 15 {
                hi -= 16;
                qh[i] |= m2;
            }
            qs[32 * chunk + i] = lo | (hi << 4);
        }
    }
    Ok(())
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (weights
/// x²): a symmetric fit `x ≈ scale·(L - nmax)` with `L` in `0..2·nmax`, trying scales
/// around `-nmax / max`. Writes `L`, returns the scale.
fn fit_symmetric_scale(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let max = signed_absmax(x);
    if max.abs() < 1e-15 {
        levels.fill(0);
        return 0.0;
    }
    let quantize_at = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = quantize_at(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, levels: &mut [u8]| {
        for (level, &v) in levels.iter_mut().zip(x) {
            *level = (nmax + quantize_at(iscale, v)) as u8;
        }
    };
    let iscale = -(nmax as f32) / max;
    fill(iscale, levels);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, levels);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

fn q6_k(x: &[f32], y: &mut [u8]) -> Stored {
    let mut levels = [0u8; 256];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for (ib, scale) in scales.iter_mut().enumerate() {
        *scale = fit_symmetric_scale(
            &x[16 * ib..16 * ib + 16],
            32,
            &mut levels[16 * ib..16 * ib + 16],
        );
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = *scale;
        }
    }
    y.fill(0);
    if max_abs_scale < 1e-15 {
        return Ok(());
    }
    let iscale = -128.0 / max_scale;
    put_f16(y, 208, 1.0 / iscale)?;
    for (ib, scale) in scales.iter().enumerate() {
        y[192 + ib] = nearest_int(iscale * scale).min(127) as i8 as u8;
    }
    let d_all = f16_round_trip(y, 208);
    for j in 0..16 {
        let d = d_all * (y[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for i in 16 * j..16 * j + 16 {
            levels[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as u8;
        }
    }
    for half in 0..2 {
        let l = &levels[128 * half..128 * half + 128];
        for i in 0..32 {
            let (q1, q2, q3, q4) = (l[i], l[i + 32], l[i + 64], l[i + 96]);
            y[64 * half + i] = (q1 & 0xf) | ((q3 & 0xf) << 4);
            y[64 * half + i + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
            y[128 + 32 * half + i] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    Ok(())
}
