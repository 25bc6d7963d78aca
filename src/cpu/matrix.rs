//! A weight matrix held in host memory in its GGUF block layout, multiplied by f32
//! activations with candle's quantized kernels.
//!
//! Every safetyj weight type maps to a candle `GgmlDType` with the identical block
//! layout (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32), so the bytes of
//! a GGUF tensor are used as they are; nothing is converted at load.
//!
//! Two ways to multiply, chosen by the caller:
//! - Quantized (decode): candle's quantized dot products. Like llama.cpp, they round
//!   the activations too (to Q8_0 blocks for the 32-element types, Q8_K for the
//!   k-quants, f16/bf16 for those float types): about 1% of an output's typical size,
//!   which moves a 0.5B model's logits by a few tenths.
//! - Exact (prefill, where the judge reads its verdict): the weights are decoded to
//!   f32 a slice of rows at a time and multiplied in f32 (candle's gemm), as the GPU
//!   does; decoding costs about what a quantized product does, so it pays once a step
//!   has [`EXACT_ROWS`] rows to share it.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::kernels;
use crate::error::{Error, Result};
use crate::model::load::StoredMatrix;
use crate::quant::{self, DType};

/// Steps of at least this many tokens multiply exactly (see the module docs).
pub const EXACT_ROWS: usize = 4;

/// Weight elements decoded to f32 at a time by the f32 path (16 MiB).
const DECODED_ELEMS: usize = 1 << 22;

/// Exact steps of fewer input rows than this decode one weight row at a time and
/// dot it with each input row; longer ones decode slices and run a gemm.
const GEMM_ROWS: usize = 8;

thread_local! {
    /// The f32 path's decoded slice of weights, kept by each thread between calls so
    /// that every matmul does not fault in 16 MiB of fresh pages.
    static DECODED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A `rows` × `cols` weight matrix (rows are output features), stored quantized.
pub struct QuantMatrix {
    tensor: QTensor,
    dtype: DType,
    rows: usize,
    cols: usize,
}

/// The candle type with `dtype`'s block layout.
fn candle_dtype(dtype: DType) -> GgmlDType {
    match dtype {
        DType::F32 => GgmlDType::F32,
        DType::F16 => GgmlDType::F16,
        DType::BF16 => GgmlDType::BF16,
        DType::Q4_0 => GgmlDType::Q4_0,
        DType::Q4_1 => GgmlDType::Q4_1,
        DType::Q5_0 => GgmlDType::Q5_0,
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q4_K => GgmlDType::Q4K,
        DType::Q5_K => GgmlDType::Q5K,
        DType::Q6_K => GgmlDType::Q6K,
    }
}

/// A candle error as safetyj's, naming the op.
fn candle_error(op: &'static str) -> impl Fn(candle_core::Error) -> Error {
    move |e| Error::Shape {
        op,
        message: e.to_string(),
    }
}

impl QuantMatrix {
    /// Takes `m`'s blocks as they are; fails when the byte count does not match
    /// `rows` × `cols` of its type. `name` is used in errors.
    pub fn new(name: &str, m: StoredMatrix) -> Result<QuantMatrix> {
        let want = m.rows * m.dtype.row_bytes(m.cols)?;
        if m.bytes.len() != want {
            return Err(Error::Shape {
                op: "cpu weights",
                message: format!(
                    "tensor {name} ({} {}×{}) has {} bytes, expected {want}",
                    m.dtype,
                    m.rows,
                    m.cols,
                    m.bytes.len()
                ),
            });
        }
        // candle reads the blocks in place and requires their alignment (2 bytes for
        // f16 scales, 4 for f32); an allocation from the reader is normally aligned
        // far beyond that, but a copy guarantees it.
        let aligned: Vec<u64>;
        let bytes: &[u8] = if (m.bytes.as_ptr() as usize).is_multiple_of(8) {
            &m.bytes
        } else {
            let mut words = vec![0u64; m.bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..m.bytes.len()]
                .copy_from_slice(&m.bytes);
            aligned = words;
            &bytemuck::cast_slice::<u64, u8>(&aligned)[..m.bytes.len()]
        };
        let storage =
            QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, candle_dtype(m.dtype))
                .map_err(candle_error("cpu weights"))?;
        let tensor =
            QTensor::new(storage, (m.rows, m.cols)).map_err(candle_error("cpu weights"))?;
        Ok(QuantMatrix {
            tensor,
            dtype: m.dtype,
            rows: m.rows,
            cols: m.cols,
        })
    }

    /// Bytes the blocks occupy.
    pub fn bytes(&self) -> u64 {
        self.tensor.storage_size_in_bytes() as u64
    }

    /// `input` (`m` rows of `cols`) times the transposed matrix, plus `bias` (one
    /// value per output feature) when given: `m` rows of `rows` values; `exact`
    /// multiplies in f32 on decoded weights, otherwise activations are quantized.
    pub fn matmul(
        &self,
        input: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        exact: bool,
    ) -> Result<Vec<f32>> {
        if input.len() != m * self.cols || bias.is_some_and(|b| b.len() != self.rows) {
            return Err(Error::Shape {
                op: "cpu matmul",
                message: format!(
                    "{} inputs for {m} rows of {} columns, a bias of {:?} for {} outputs",
                    input.len(),
                    self.cols,
                    bias.map(<[f32]>::len),
                    self.rows
                ),
            });
        }
        let mut out = if !exact {
            let err = candle_error("cpu matmul");
            let x = Tensor::from_slice(input, (m, self.cols), &Device::Cpu).map_err(&err)?;
            let y = x.apply_op1_no_bwd(&self.tensor).map_err(&err)?;
            y.flatten_all()
                .and_then(|y| y.to_vec1::<f32>())
                .map_err(&err)?
        } else if m < GEMM_ROWS {
            self.matmul_rowwise(input, m)?
        } else {
            self.matmul_decoded(input, m)?
        };
        if let Some(bias) = bias {
            for row in out.chunks_exact_mut(self.rows) {
                row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
            }
        }
        Ok(out)
    }

    /// `input` (`m` × `cols`, few rows) times the transposed matrix in f32, one
    /// weight row at a time: each is decoded into a small buffer and dotted with
    /// every input row, so no decoded matrix is ever written out.
    fn matmul_rowwise(&self, input: &[f32], m: usize) -> Result<Vec<f32>> {
        let row_bytes = self.dtype.row_bytes(self.cols)?;
        let data = self.tensor.data().map_err(candle_error("cpu matmul"))?;
        // Output feature major (`rows` × `m`), turned to token major below.
        let mut by_feature = vec![0.0; self.rows * m];
        by_feature
            .par_chunks_mut(m)
            .zip(data.par_chunks(row_bytes))
            .try_for_each_init(
                || vec![0.0; self.cols],
                |w, (y, bytes)| {
                    quant::dequantize(self.dtype, bytes, w)?;
                    for (y, x) in y.iter_mut().zip(input.chunks_exact(self.cols)) {
                        *y = kernels::dot(x, w);
                    }
                    Ok::<_, Error>(())
                },
            )?;
        let mut out = vec![0.0; m * self.rows];
        for (feature, ys) in by_feature.chunks_exact(m).enumerate() {
            for (token, &y) in ys.iter().enumerate() {
                out[token * self.rows + feature] = y;
            }
        }
        Ok(out)
    }

    /// `input` (`m` × `cols`) times the transposed matrix in f32: weights decoded a
    /// slice of rows at a time (in parallel) into a buffer kept by the thread, each
    /// slice one gemm written straight into its columns of the output.
    fn matmul_decoded(&self, input: &[f32], m: usize) -> Result<Vec<f32>> {
        self.matmul_in_slices(input, m, (DECODED_ELEMS / self.cols).clamp(1, self.rows))
    }

    /// [`QuantMatrix::matmul_decoded`] with slices of `slice_rows` weight rows.
    fn matmul_in_slices(&self, input: &[f32], m: usize, slice_rows: usize) -> Result<Vec<f32>> {
        let row_bytes = self.dtype.row_bytes(self.cols)?;
        let data = self.tensor.data().map_err(candle_error("cpu matmul"))?;
        let mut out = vec![0.0; m * self.rows];
        let threads = rayon::current_num_threads();
        let parallelism = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        DECODED.with_borrow_mut(|decoded| {
            if decoded.len() < slice_rows * self.cols {
                decoded.resize(slice_rows * self.cols, 0.0);
            }
            for first in (0..self.rows).step_by(slice_rows) {
                let n = slice_rows.min(self.rows - first);
                let w = &mut decoded[..n * self.cols];
                w.par_chunks_mut(self.cols)
                    .zip(data[first * row_bytes..(first + n) * row_bytes].par_chunks(row_bytes))
                    .try_for_each(|(w, bytes)| quant::dequantize(self.dtype, bytes, w))?;
                // SAFETY: the output is `m` rows of `self.rows` and the columns
                // `first..first + n` lie inside each row (dst: row stride `rows`,
                // column stride 1); the input is `m` × `cols` row major (checked by
                // `matmul`); `w` holds `n` decoded rows of `cols`, read as the
                // `cols` × `n` right-hand side (row stride 1, column stride `cols`).
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        self.cols,
                        out.as_mut_ptr().add(first),
                        1,
                        self.rows as isize,
                        false,
                        input.as_ptr(),
                        1,
                        self.cols as isize,
                        w.as_ptr(),
                        self.cols as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    );
                }
            }
            Ok::<_, Error>(())
        })?;
        Ok(out)
    }

    /// Row `index` decoded to f32 into `out` (`cols` values): an embedding lookup.
    pub fn row(&self, index: usize, out: &mut [f32]) -> Result<()> {
        let row_bytes = self.dtype.row_bytes(self.cols)?;
        let data = self.tensor.data().map_err(candle_error("cpu embedding"))?;
        let bytes = data
            .get(index * row_bytes..(index + 1) * row_bytes)
            .ok_or_else(|| Error::Shape {
                op: "cpu embedding",
                message: format!("row {index} is outside a matrix of {} rows", self.rows),
            })?;
        quant::dequantize(self.dtype, bytes, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{random_f32, random_weights, rng};

    /// Every weight type against the f64 reference of the GPU matmul, for one row
    /// (decode) and several (prefill), with a bias. The tolerance covers candle's
    /// quantization of the activations (Q8_0/Q8_K blocks, f16 or bf16 for those
    /// weight types): 4% of the outputs' root mean square (seen: up to 2.1%, Q4_K);
    /// the exact path agrees to f32 rounding.
    #[test]
    fn every_weight_type_matches_the_reference_matmul() {
        let mut rng = rng(14);
        let (n, k) = (48, 512);
        for dtype in DType::ALL {
            let bytes = random_weights(&mut rng, dtype, n, k);
            let bias = random_f32(&mut rng, n, 1.0);
            let matrix = QuantMatrix::new(
                "w",
                StoredMatrix {
                    dtype,
                    rows: n,
                    cols: k,
                    bytes: bytes.clone(),
                },
            )
            .unwrap();
            let cases = [
                (1, false),
                (5, false),
                (40, false),
                (1, true),
                (GEMM_ROWS - 1, true),
                (GEMM_ROWS, true),
                (40, true),
            ];
            for (m, exact) in cases {
                let x = random_f32(&mut rng, m * k, 1.0);
                let got = matrix.matmul(&x, m, Some(&bias), exact).unwrap();
                let want =
                    crate::ops::matmul::reference(&x, m, k, dtype, &bytes, n, Some(&bias)).unwrap();
                let scale = (want.iter().map(|v| v * v).sum::<f32>() / want.len() as f32).sqrt();
                let tolerance = match (dtype, exact) {
                    (DType::F32, _) | (_, true) => 1e-5,
                    _ => 4e-2,
                } * scale;
                let max_diff = |got: &[f32]| {
                    got.iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max)
                };
                let diff = max_diff(&got);
                assert!(
                    diff <= tolerance,
                    "{dtype}, {m} rows, exact {exact}: max |diff| {diff} over {tolerance}"
                );
                if exact && m >= GEMM_ROWS {
                    // Slices that do not divide the rows: the last one is shorter.
                    let mut sliced = matrix.matmul_in_slices(&x, m, 13).unwrap();
                    for row in sliced.chunks_exact_mut(n) {
                        row.iter_mut().zip(&bias).for_each(|(y, b)| *y += b);
                    }
                    let diff = max_diff(&sliced);
                    assert!(
                        diff <= tolerance,
                        "{dtype}, {m} rows in slices of 13: {diff}"
                    );
                }
            }
            let mut row = vec![0.0; k];
            matrix.row(n - 1, &mut row).unwrap();
            let mut want = vec![0.0; k];
            crate::quant::dequantize(
                dtype,
                &bytes[(n - 1) * dtype.row_bytes(k).unwrap()..],
                &mut want,
            )
            .unwrap();
            assert_eq!(row, want, "{dtype}: last row decoded");
            let err = matrix.row(n, &mut row).unwrap_err().to_string();
            assert!(
                err.contains(&format!("row {n} is outside a matrix of {n} rows")),
                "{dtype}: row past the end: {err}"
            );
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let bytes = vec![0u8; DType::Q8_0.row_bytes(64).unwrap() * 3];
        let make = |rows| {
            QuantMatrix::new(
                "w",
                StoredMatrix {
                    dtype: DType::Q8_0,
                    rows,
                    cols: 64,
                    bytes: bytes.clone(),
                },
            )
        };
        // `QuantMatrix` is not `Debug`, so `unwrap_err` is not available.
        let err = make(4).err().expect("too few bytes for 4 rows").to_string();
        let row_bytes = DType::Q8_0.row_bytes(64).unwrap();
        let want = format!(
            "tensor w (Q8_0 4×64) has {} bytes, expected {}",
            3 * row_bytes,
            4 * row_bytes
        );
        assert!(err.contains(&want), "{err}");
        let m = make(3).unwrap();
        for exact in [false, true] {
            let err = m
                .matmul(&[0.0; 63], 1, None, exact)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("63 inputs for 1 rows of 64 columns, a bias of None"),
                "{err}"
            );
            let err = m
                .matmul(&[0.0; 64], 1, Some(&[0.0; 2]), exact)
                .unwrap_err()
                .to_string();
            assert!(err.contains("a bias of Some(2) for 3 outputs"), "{err}");
            assert_eq!(m.matmul(&[0.0; 64], 1, None, exact).unwrap(), vec![0.0; 3]);
        }
    }
}
