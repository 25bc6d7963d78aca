//! Matrix product with a weight matrix kept in its GGUF block layout:
//! `output[M, N] = input[M, K] · weight[N, K]ᵀ (+ bias[N])`.
//!
//! Two kernels share one decoder (`shaders/dequant.wgsl`), so every weight type
//! works with both; [`choose_path`] picks one from the shape.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::{Elem, Tensor, WeightMatrix};
use crate::quant::DType;

const SHADER: Shader = Shader {
    name: "matmul.wgsl",
    source: include_str!("../../shaders/matmul.wgsl"),
};

/// Input rows one GEMV workgroup handles together (decoding each weight group once).
const GEMV_ROWS: usize = 4;
/// Output columns (weight rows) of one GEMV workgroup; its 64 threads split into
/// 64 / GEMV_COLS threads per column. Needs GEMV_COLS * GEMV_ROWS <= 64.
const GEMV_COLS: usize = 4;
/// Weight rows (output columns) of one GEMM workgroup.
const GEMM_COLS: usize = 64;
/// Input rows of one GEMM workgroup from [`GEMM_WIDE_ROWS`] input rows on (each
/// decoded weight tile serves twice the rows), fewer rows use [`GEMM_NARROW_ROWS`].
const GEMM_WIDE_ROWS: usize = 64;
/// Input rows of one GEMM workgroup below [`GEMM_WIDE_ROWS`] input rows.
const GEMM_NARROW_ROWS: usize = 32;
/// Elements decoded at a time (every quant block is a whole number of these).
const GROUP: usize = 32;

/// Which kernel computes a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// A workgroup per `GEMV_COLS` (4) output columns: each column's threads split K,
    /// then sum. Reads each weight once per `GEMV_ROWS` (4) input rows, which suits
    /// decoding one token.
    Gemv,
    /// [`Path::Gemv`] with each column's partial sums first reduced by subgroup
    /// shuffles, so the workgroup sums a few partials per column instead of 16.
    /// Needs `ctx.caps.subgroups`.
    GemvSubgroups,
    /// Tiled: each workgroup decodes a 64-row weight tile into workgroup memory once
    /// per K step and reuses it for 32 input rows, or 64 from 64 input rows on
    /// (prefill).
    Gemm,
}

/// The kernel for an input of `rows` rows on a device with or without `subgroups`:
///
/// | input rows | subgroups | kernel |
/// |------------|-----------|--------|
/// | 1 ..= 4    | no        | [`Path::Gemv`] |
/// | 1 ..= 4    | yes       | [`Path::GemvSubgroups`] |
/// | 5 and more | either    | [`Path::Gemm`] |
///
/// Up to four rows the GEMV kernel reads the weights once, as the GEMM would, but
/// keeps every workgroup busy; beyond that the GEMM's weight-tile reuse wins.
pub fn choose_path(rows: usize, subgroups: bool) -> Path {
    match (rows <= GEMV_ROWS, subgroups) {
        (true, false) => Path::Gemv,
        (true, true) => Path::GemvSubgroups,
        (false, _) => Path::Gemm,
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    k: u32,
    n_total: u32,
    first_row: u32,
    chunk_rows: u32,
    row_bytes: u32,
    groups: u32,
    _pad: u32,
}

/// The WGSL define that selects `dtype`'s decoder in `dequant.wgsl`.
pub(crate) fn dtype_define(dtype: DType) -> (&'static str, String) {
    (dtype.name(), String::new())
}

/// Records `output = input · weightᵀ (+ bias)` with the kernel [`choose_path`] picks.
/// `input` is f32 `[.., K]` (M rows), `weight` is N × K, `bias` has N values and
/// `output` is f32 `[.., N]` with M rows.
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    input: &Tensor,
    weight: &WeightMatrix,
    bias: Option<&Tensor>,
    output: &Tensor,
) -> Result<()> {
    encode_with_path(
        ctx,
        encoder,
        input,
        weight,
        bias,
        output,
        choose_path(input.rows(), ctx.caps.subgroups),
    )
}

/// Like [`encode`] with the kernel chosen by the caller (tests force each path).
pub fn encode_with_path(
    ctx: &Context,
    encoder: &mut Encoder,
    input: &Tensor,
    weight: &WeightMatrix,
    bias: Option<&Tensor>,
    output: &Tensor,
    path: Path,
) -> Result<()> {
    check_shapes(input, weight, bias, output)?;
    if path == Path::GemvSubgroups && !ctx.caps.subgroups {
        return Err(Error::Unsupported(format!(
            "matmul {path:?} needs subgroup operations, which {} does not offer",
            ctx.info.name
        )));
    }
    let (m, k, n) = (input.rows(), weight.cols, weight.rows);
    if m == 0 || n == 0 {
        return Ok(());
    }
    let row_bytes = weight.row_bytes();
    for (what, needed) in [
        (
            format!("matmul byte addressing of weight \"{}\"", weight.name),
            weight
                .chunks
                .iter()
                .map(|c| c.rows * row_bytes)
                .max()
                .unwrap_or(0) as u64,
        ),
        (format!("matmul output {:?}", output.shape), (m * n) as u64),
        (format!("matmul input {:?}", input.shape), (m * k) as u64),
    ] {
        if needed > u32::MAX as u64 {
            return Err(Error::Limit {
                what,
                needed,
                limit: u32::MAX as u64,
                limit_name: "u32 indexing",
            });
        }
    }
    let gemm_rows = if m >= GEMM_WIDE_ROWS {
        GEMM_WIDE_ROWS
    } else {
        GEMM_NARROW_ROWS
    };
    // Workgroups: x covers the chunk's weight rows, z the batches of input rows.
    let (rows_per_workgroup, row_batches) = match path {
        Path::Gemv | Path::GemvSubgroups => (GEMV_COLS, m.div_ceil(GEMV_ROWS)),
        Path::Gemm => (GEMM_COLS, m.div_ceil(gemm_rows)),
    };
    if row_batches > ctx.caps.max_workgroups_per_dimension as usize {
        return Err(Error::Limit {
            what: format!("matmul over {m} input rows ({path:?} workgroups)"),
            needed: row_batches as u64,
            limit: ctx.caps.max_workgroups_per_dimension as u64,
            limit_name: "max_compute_workgroups_per_dimension",
        });
    }
    let mut defines = vec![dtype_define(weight.dtype)];
    match path {
        Path::Gemv | Path::GemvSubgroups => {
            defines.push(("GEMV", String::new()));
            defines.push(("GEMV_ROWS", format!("{GEMV_ROWS}u")));
            defines.push(("GEMV_COLS", format!("{GEMV_COLS}u")));
            if path == Path::GemvSubgroups {
                defines.push(("SUBGROUPS", String::new()));
            }
        }
        Path::Gemm => {
            defines.push(("GEMM", String::new()));
            defines.push(("GEMM_ROWS", format!("{gemm_rows}u")));
        }
    }
    if k.is_multiple_of(4) {
        defines.push(("INPUT_VEC4", String::new()));
    }
    if bias.is_some() {
        defines.push(("BIAS", String::new()));
    }
    let pipeline = ctx.pipeline(SHADER, &defines)?;
    for chunk in &weight.chunks {
        if chunk.rows == 0 {
            continue;
        }
        let params = Params {
            m: m as u32,
            k: k as u32,
            n_total: n as u32,
            first_row: chunk.first_row as u32,
            chunk_rows: chunk.rows as u32,
            row_bytes: row_bytes as u32,
            groups: k.div_ceil(GROUP) as u32,
            _pad: 0,
        };
        let uniform = ctx.uniform("matmul params", &params);
        let mut buffers = vec![&uniform, &input.buffer, &chunk.buffer, &output.buffer];
        if let Some(bias) = bias {
            buffers.push(&bias.buffer);
        }
        let bind = ctx.bind_group(&pipeline, &buffers);
        ctx.dispatch(
            encoder,
            &pipeline,
            &bind,
            (
                chunk.rows.div_ceil(rows_per_workgroup) as u32,
                1,
                row_batches as u32,
            ),
        );
    }
    Ok(())
}

fn check_shapes(
    input: &Tensor,
    weight: &WeightMatrix,
    bias: Option<&Tensor>,
    output: &Tensor,
) -> Result<()> {
    let fail = |problem: String| Error::Shape {
        op: "matmul",
        message: format!(
            "input {:?} · weight \"{}\" ({} rows × {} cols, {}): {problem}",
            input.shape, weight.name, weight.rows, weight.cols, weight.dtype
        ),
    };
    input.expect_elem("matmul", "input", Elem::F32)?;
    output.expect_elem("matmul", "output", Elem::F32)?;
    if input.cols() != weight.cols {
        return Err(fail(format!(
            "the input's last dimension {} must equal the weight's cols",
            input.cols()
        )));
    }
    if !weight.cols.is_multiple_of(weight.dtype.block_elems()) {
        return Err(fail(format!(
            "cols must be whole {}-element blocks",
            weight.dtype.block_elems()
        )));
    }
    if output.cols() != weight.rows || output.rows() != input.rows() {
        return Err(fail(format!(
            "the output must have {} rows of {} values, got {:?}",
            input.rows(),
            weight.rows,
            output.shape
        )));
    }
    if let Some(bias) = bias {
        bias.expect_elem("matmul", "bias", Elem::F32)?;
        if bias.len() != weight.rows {
            return Err(fail(format!(
                "the bias must have {} values, got {:?}",
                weight.rows, bias.shape
            )));
        }
    }
    Ok(())
}

/// CPU reference with f64 accumulation: `input` is `m` rows of `k`, `weight_bytes`
/// holds `n` rows of `k` in `dtype`'s layout (decoded a row at a time), `bias` (if
/// any) has `n` values.
pub fn reference(
    input: &[f32],
    m: usize,
    k: usize,
    dtype: DType,
    weight_bytes: &[u8],
    n: usize,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let row_bytes = dtype.row_bytes(k)?;
    let mut out = vec![0.0; m * n];
    let mut w = vec![0.0; k];
    for j in 0..n {
        crate::quant::dequantize(
            dtype,
            &weight_bytes[j * row_bytes..(j + 1) * row_bytes],
            &mut w,
        )?;
        let b = bias.map_or(0.0, |b| b[j] as f64);
        for (i, x) in input.chunks_exact(k).enumerate() {
            let dot: f64 = x.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum();
            out[i * n + j] = (dot + b) as f32;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::params_layout::{assert_matches_wgsl, rust_params};
    use crate::ops::testing::{assert_close, ctx, random_f32, random_weights, rng};

    #[test]
    fn params_match_the_wgsl_struct() {
        assert_matches_wgsl(
            SHADER,
            &[
                dtype_define(DType::Q8_0),
                ("GEMV", String::new()),
                ("GEMV_ROWS", format!("{GEMV_ROWS}u")),
                ("GEMV_COLS", format!("{GEMV_COLS}u")),
            ],
            rust_params!(Params {
                m,
                k,
                n_total,
                first_row,
                chunk_rows,
                row_bytes,
                groups
            }),
        );
    }

    /// Inner dimensions that exercise each block size: float types take K that is no
    /// multiple of the 32-element group or the workgroup; quant types whole blocks.
    fn inner_dims(dtype: DType) -> [usize; 2] {
        match dtype.block_elems() {
            1 => [33, 1000],
            32 => [96, 896],
            _ => [256, 1280],
        }
    }

    struct Case {
        m: usize,
        n: usize,
        /// Index into [`inner_dims`].
        k: usize,
        bias: bool,
        /// Split the weights into chunks of this many rows (None: one chunk).
        chunk_rows: Option<usize>,
    }

    fn run_case(dtype: DType, path: Path, case: &Case, seed: u64) {
        let ctx = ctx();
        let mut rng = rng(seed);
        let (m, n, k) = (case.m, case.n, inner_dims(dtype)[case.k]);
        let x = random_f32(&mut rng, m * k, 2.0);
        let bytes = random_weights(&mut rng, dtype, n, k);
        let b = random_f32(&mut rng, n, 1.0);
        let row_bytes = dtype.row_bytes(k).unwrap();
        let max_chunk = case
            .chunk_rows
            .map_or(u64::MAX, |rows| (rows * row_bytes + 8) as u64);
        let weight = WeightMatrix::upload_split(ctx, "w", dtype, n, k, &bytes, max_chunk).unwrap();
        if let Some(rows) = case.chunk_rows {
            assert_eq!(
                weight.chunks.len(),
                n.div_ceil(rows),
                "{dtype} split into chunks of {rows} rows"
            );
        }
        let input = Tensor::from_f32(ctx, "x", &[m, k], &x).unwrap();
        let bias = Tensor::from_f32(ctx, "b", &[n], &b).unwrap();
        let output = Tensor::new(ctx, "y", &[m, n], Elem::F32).unwrap();
        output.poison(ctx);
        let mut enc = ctx.encoder();
        encode_with_path(
            ctx,
            &mut enc,
            &input,
            &weight,
            case.bias.then_some(&bias),
            &output,
            path,
        )
        .unwrap();
        ctx.submit("matmul test", enc).unwrap();
        let got = output.read_f32(ctx).unwrap();
        let want = reference(&x, m, k, dtype, &bytes, n, case.bias.then_some(&b[..])).unwrap();
        // f32 accumulation in another order than the f64 reference: the error of a
        // K-term dot product scales like sqrt(K)·max|x|·max|w|.
        let max_w = crate::quant::dequantize_to_vec(dtype, &bytes, n * k)
            .unwrap()
            .iter()
            .fold(0f32, |a, w| a.max(w.abs()));
        let atol = 1e-5 * (k as f32).sqrt() * 2.0 * max_w;
        let what = format!(
            "{dtype} {path:?} m={m} n={n} k={k} bias={} chunk_rows={:?}",
            case.bias, case.chunk_rows
        );
        assert_close(&what, &got, &want, atol, 1e-5);
    }

    fn cases(path: Path) -> Vec<Case> {
        let case = |m, n, k, bias, chunk_rows| Case {
            m,
            n,
            k,
            bias,
            chunk_rows,
        };
        match path {
            Path::Gemv => vec![
                case(1, 1, 0, false, None),
                case(1, 7, 1, true, None),
                case(1, 33, 0, true, Some(10)),
                case(1, 896, 1, false, Some(300)),
                case(1, 4864, 0, true, None),
            ],
            Path::GemvSubgroups => vec![
                case(1, 1, 0, false, None),
                case(1, 7, 1, true, None),
                case(3, 33, 0, true, Some(10)),
                case(4, 45, 1, false, None),
                case(1, 896, 1, false, Some(300)),
                case(2, 4864, 0, true, None),
            ],
            Path::Gemm => vec![
                case(2, 7, 0, true, None),
                case(7, 33, 1, false, Some(10)),
                case(33, 896, 0, true, Some(100)),
                case(33, 4864, 0, false, None),
                case(7, 896, 1, true, None),
                case(70, 65, 1, true, Some(40)),
            ],
        }
    }

    fn check_all_dtypes(path: Path) {
        for (i, dtype) in DType::ALL.into_iter().enumerate() {
            for (j, case) in cases(path).iter().enumerate() {
                run_case(dtype, path, case, (i * 100 + j) as u64);
            }
        }
    }

    #[test]
    fn gemv_matches_reference_for_every_dtype_on_awkward_shapes() {
        check_all_dtypes(Path::Gemv);
    }

    #[test]
    fn subgroup_gemv_matches_reference_for_every_dtype_on_awkward_shapes() {
        if !ctx().caps.subgroups {
            return;
        }
        check_all_dtypes(Path::GemvSubgroups);
        // More input rows than one workgroup batches.
        run_case(
            DType::Q4_K,
            Path::GemvSubgroups,
            &Case {
                m: 9,
                n: 33,
                k: 0,
                bias: true,
                chunk_rows: Some(16),
            },
            9,
        );
    }

    #[test]
    fn gemm_matches_reference_for_every_dtype_on_awkward_shapes() {
        check_all_dtypes(Path::Gemm);
    }

    #[test]
    fn forced_paths_agree_beyond_their_usual_shapes() {
        // GEMV over more rows than one workgroup batches; GEMM over a single row.
        run_case(
            DType::Q4_K,
            Path::Gemv,
            &Case {
                m: 9,
                n: 33,
                k: 0,
                bias: true,
                chunk_rows: Some(16),
            },
            7,
        );
        run_case(
            DType::F16,
            Path::Gemm,
            &Case {
                m: 1,
                n: 70,
                k: 0,
                bias: false,
                chunk_rows: None,
            },
            8,
        );
    }

    #[test]
    fn q8_0_table_over_128_mib_splits_and_serves_gemv_and_embedding() {
        use crate::ops::embedding;
        use rand::Rng;
        let ctx = ctx();
        let mut rng = rng(5);
        let (vocab, d) = (151_936, 896);
        let dtype = DType::Q8_0;
        let mut bytes = vec![0u8; vocab * dtype.row_bytes(d).unwrap()];
        rng.fill_bytes(&mut bytes);
        // Random quants with a small finite scale per block (random bits could be NaN).
        for block in bytes.chunks_exact_mut(dtype.block_bytes()) {
            let scale = half::f16::from_f32((block[2] as f32 - 127.5) * 1e-4);
            block[..2].copy_from_slice(&scale.to_le_bytes());
        }
        let table = WeightMatrix::upload(ctx, "token_embd", dtype, vocab, d, &bytes).unwrap();
        if ctx.caps.max_storage_binding_bytes < bytes.len() as u64 {
            assert!(
                table.chunks.len() >= 2,
                "{} bytes in one binding",
                bytes.len()
            );
        }

        let x = random_f32(&mut rng, d, 1.0);
        let input = Tensor::from_f32(ctx, "x", &[1, d], &x).unwrap();
        let logits = Tensor::new(ctx, "logits", &[1, vocab], Elem::F32).unwrap();
        logits.poison(ctx);
        let mut enc = ctx.encoder();
        encode(ctx, &mut enc, &input, &table, None, &logits).unwrap();
        ctx.submit("large gemv", enc).unwrap();
        let want = reference(&x, 1, d, dtype, &bytes, vocab, None).unwrap();
        // |w| <= 128 * 0.0128; the sqrt(K)·|x|·|w| scale as in the matrix tests.
        let atol = 1e-5 * (d as f32).sqrt() * 1.0 * 1.7;
        assert_close(
            "large Q8_0 gemv",
            &logits.read_f32(ctx).unwrap(),
            &want,
            atol,
            1e-5,
        );

        let boundary = table.chunks.get(1).map_or(vocab / 2, |c| c.first_row) as u32;
        let ids = [
            0,
            vocab as u32 - 1,
            boundary - 1,
            boundary,
            boundary + 1,
            4242,
        ];
        let ids_tensor = Tensor::from_u32(ctx, "ids", &[ids.len()], &ids).unwrap();
        let embedded = Tensor::new(ctx, "embedded", &[ids.len(), d], Elem::F32).unwrap();
        embedded.poison(ctx);
        let mut enc = ctx.encoder();
        embedding::encode(ctx, &mut enc, &ids_tensor, &table, &embedded).unwrap();
        ctx.submit("large embedding", enc).unwrap();
        let want = embedding::reference(&ids, dtype, &bytes, d).unwrap();
        // Q8_0 decodes to one exact product q·d, as on the CPU.
        assert_close(
            "large Q8_0 embedding",
            &embedded.read_f32(ctx).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }

    #[test]
    fn path_follows_input_rows() {
        assert_eq!(choose_path(1, false), Path::Gemv);
        assert_eq!(choose_path(GEMV_ROWS, false), Path::Gemv);
        assert_eq!(choose_path(GEMV_ROWS, true), Path::GemvSubgroups);
        assert_eq!(choose_path(GEMV_ROWS + 1, false), Path::Gemm);
        assert_eq!(choose_path(GEMV_ROWS + 1, true), Path::Gemm);
    }

    fn bad_shape_error(
        input_shape: &[usize],
        bias_len: Option<usize>,
        output_shape: &[usize],
    ) -> String {
        let ctx = ctx();
        let mut rng = rng(3);
        let bytes = random_weights(&mut rng, DType::Q8_0, 5, 64);
        let weight = WeightMatrix::upload(ctx, "w", DType::Q8_0, 5, 64, &bytes).unwrap();
        let input = Tensor::new(ctx, "x", input_shape, Elem::F32).unwrap();
        let bias = bias_len.map(|len| Tensor::new(ctx, "b", &[len], Elem::F32).unwrap());
        let output = Tensor::new(ctx, "y", output_shape, Elem::F32).unwrap();
        encode(
            ctx,
            &mut ctx.encoder(),
            &input,
            &weight,
            bias.as_ref(),
            &output,
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn mismatched_shapes_are_errors_naming_op_shapes_and_dtype() {
        let k_mismatch = bad_shape_error(&[2, 63], None, &[2, 5]);
        assert!(
            k_mismatch.starts_with("matmul: input [2, 63] · weight \"w\" (5 rows × 64 cols, Q8_0)"),
            "{k_mismatch}"
        );
        assert!(k_mismatch.contains("last dimension 63"), "{k_mismatch}");
        let bias = bad_shape_error(&[2, 64], Some(4), &[2, 5]);
        assert!(bias.contains("bias must have 5 values, got [4]"), "{bias}");
        let output = bad_shape_error(&[2, 64], None, &[3, 5]);
        assert!(
            output.contains("output must have 2 rows of 5 values, got [3, 5]"),
            "{output}"
        );
    }

    #[test]
    fn inner_dimension_of_partial_blocks_is_an_error() {
        let ctx = ctx();
        let buffer = ctx.upload_bytes("w", &[0u8; 36]).unwrap();
        let chunks = vec![crate::ops::WeightChunk {
            buffer,
            first_row: 0,
            rows: 1,
        }];
        let weight = WeightMatrix {
            name: "w".into(),
            dtype: DType::Q8_0,
            rows: 1,
            cols: 48,
            chunks,
        };
        let input = Tensor::new(ctx, "x", &[1, 48], Elem::F32).unwrap();
        let output = Tensor::new(ctx, "y", &[1, 1], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &input, &weight, None, &output)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("Q8_0): cols must be whole 32-element blocks"),
            "{err}"
        );
    }
}
