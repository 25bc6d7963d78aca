//! CPU dequantization of every block type, following GGUF's layouts exactly.
//! This is the reference every GPU kernel is tested against.

use half::{bf16, f16};

use super::DType;
use crate::error::{Error, Result};

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `bytes` (whole blocks of `dtype`) into `out`, which must hold exactly
/// the number of elements those blocks encode.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let (be, bb) = (dtype.block_elems(), dtype.block_bytes());
    if !bytes.len().is_multiple_of(bb) || bytes.len() / bb * be != out.len() {
        return Err(Error::Shape {
            op: "dequantize",
            message: format!(
                "{} bytes of {dtype} do not encode exactly {} elements ({be} per {bb}-byte block)",
                bytes.len(),
                out.len()
            ),
        });
    }
    for (block, y) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        match dtype {
            DType::F32 => y[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]),
            DType::F16 => y[0] = f16_at(block, 0),
            DType::BF16 => y[0] = bf16::from_le_bytes([block[0], block[1]]).to_f32(),
            DType::Q4_0 => q4_0(block, y),
            DType::Q4_1 => q4_1(block, y),
            DType::Q5_0 => q5_0(block, y),
            DType::Q8_0 => q8_0(block, y),
            DType::Q4_K => q4_k(block, y),
            DType::Q5_K => q5_k(block, y),
            DType::Q6_K => q6_k(block, y),
        }
    }
    Ok(())
}

/// Dequantizes into a new vector of `elems` values.
pub fn dequantize_to_vec(dtype: DType, bytes: &[u8], elems: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0; elems];
    dequantize(dtype, bytes, &mut out)?;
    Ok(out)
}

fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        y[j] = ((b[2 + j] & 0xf) as i32 - 8) as f32 * d;
        y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..16 {
        y[j] = (b[4 + j] & 0xf) as f32 * d + m;
        y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
    }
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((b[6 + j] & 0xf) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((b[6 + j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = b[2 + j] as i8 as f32 * d;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) packed in K-quant `scales[12]`.
pub(crate) fn k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let (sc1, m1) = k_scale_min(2 * chunk, scales);
        let (sc2, m2) = k_scale_min(2 * chunk + 1, scales);
        let q = &qs[32 * chunk..32 * chunk + 32];
        for l in 0..32 {
            y[64 * chunk + l] = d * sc1 as f32 * (q[l] & 0xf) as f32 - dmin * m1 as f32;
            y[64 * chunk + 32 + l] = d * sc2 as f32 * (q[l] >> 4) as f32 - dmin * m2 as f32;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for chunk in 0..4 {
        let (sc1, m1) = k_scale_min(2 * chunk, scales);
        let (sc2, m2) = k_scale_min(2 * chunk + 1, scales);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for l in 0..32 {
            let lo = (q[l] & 0xf) + if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi = (q[l] >> 4) + if qh[l] & u2 != 0 { 16 } else { 0 };
            y[64 * chunk + l] = d * sc1 as f32 * lo as f32 - dmin * m1 as f32;
            y[64 * chunk + 32 + l] = d * sc2 as f32 * hi as f32 - dmin * m2 as f32;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}
