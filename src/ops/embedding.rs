//! Embedding lookup: token ids → rows of a weight table (vocab × d, any weight type),
//! decoded to f32.
//!
//! The GPU cannot report an id outside the vocabulary; the output row of such an id
//! is left unwritten. Callers validate ids with [`check_ids`] before encoding.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::matmul::dtype_define;
use crate::ops::{Elem, Tensor, WeightMatrix};
use crate::quant::DType;

const SHADER: Shader = Shader {
    name: "embedding.wgsl",
    source: include_str!("../../shaders/embedding.wgsl"),
};

/// Threads per workgroup in `embedding.wgsl`; each decodes one 32-element group.
const WG: usize = 64;
/// Elements decoded at a time.
const GROUP: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tokens: u32,
    cols: u32,
    groups: u32,
    first_row: u32,
    chunk_rows: u32,
    row_bytes: u32,
    _pad0: u32,
    _pad1: u32,
}

/// Fails if any id is not below `vocab`, naming the first bad id and its position.
/// Call it on the CPU before [`encode`]: the kernel skips such ids silently.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(position) => Err(Error::Shape {
            op: "embedding",
            message: format!(
                "token id {} at position {position} is outside the vocabulary of {vocab}",
                ids[position]
            ),
        }),
        None => Ok(()),
    }
}

/// Records `output[t] = table[ids[t]]`: `ids` is a u32 tensor `[T]` of ids already
/// checked by [`check_ids`], `table` is vocab × d, `output` is f32 `[T, d]`.
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    ids: &Tensor,
    table: &WeightMatrix,
    output: &Tensor,
) -> Result<()> {
    ids.expect_elem("embedding", "ids", Elem::U32)?;
    output.expect_elem("embedding", "output", Elem::F32)?;
    let tokens = ids.len();
    if ids.shape.len() != 1 || output.shape != [tokens, table.cols] {
        return Err(Error::Shape {
            op: "embedding",
            message: format!(
                "ids {:?} from table \"{}\" ({} × {}, {}) need ids of one dimension and an output of [{tokens}, {}]; got output {:?}",
                ids.shape, table.name, table.rows, table.cols, table.dtype, table.cols, output.shape
            ),
        });
    }
    let groups = table.cols.div_ceil(GROUP);
    if tokens == 0 || groups == 0 {
        return Ok(());
    }
    let threads = tokens as u64 * groups as u64;
    let largest_chunk = table
        .chunks
        .iter()
        .map(|c| c.rows * table.row_bytes())
        .max()
        .unwrap_or(0) as u64;
    for (what, needed) in [
        (
            format!("embedding of {tokens} tokens × {} values", table.cols),
            (tokens * table.cols) as u64,
        ),
        (format!("embedding threads for {tokens} tokens"), threads),
        (
            format!("embedding byte addressing of table \"{}\"", table.name),
            largest_chunk,
        ),
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
    let pipeline = ctx.pipeline(SHADER, &[dtype_define(table.dtype)])?;
    for chunk in table.chunks.iter().filter(|c| c.rows > 0) {
        let params = Params {
            tokens: tokens as u32,
            cols: table.cols as u32,
            groups: groups as u32,
            first_row: chunk.first_row as u32,
            chunk_rows: chunk.rows as u32,
            row_bytes: table.row_bytes() as u32,
            _pad0: 0,
            _pad1: 0,
        };
        let uniform = ctx.uniform("embedding params", &params);
        let bind = ctx.bind_group(
            &pipeline,
            &[&uniform, &ids.buffer, &chunk.buffer, &output.buffer],
        );
        ctx.dispatch(
            encoder,
            &pipeline,
            &bind,
            (threads.div_ceil(WG as u64) as u32, 1, 1),
        );
    }
    Ok(())
}

/// CPU reference: the rows `ids` of a table of `cols` columns stored as `table_bytes`
/// in `dtype`'s layout, decoded to f32.
pub fn reference(ids: &[u32], dtype: DType, table_bytes: &[u8], cols: usize) -> Result<Vec<f32>> {
    let row_bytes = dtype.row_bytes(cols)?;
    let vocab = table_bytes.len() / row_bytes.max(1);
    check_ids(ids, vocab)?;
    let mut out = vec![0.0; ids.len() * cols];
    for (&id, y) in ids.iter().zip(out.chunks_exact_mut(cols)) {
        let row = &table_bytes[id as usize * row_bytes..(id as usize + 1) * row_bytes];
        crate::quant::dequantize(dtype, row, y)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::params_layout::{assert_matches_wgsl, rust_params};
    use crate::ops::testing::{assert_close, ctx, random_weights, rng};

    #[test]
    fn params_match_the_wgsl_struct() {
        assert_matches_wgsl(
            SHADER,
            &[("Q8_0", String::new())],
            rust_params!(Params {
                tokens,
                cols,
                groups,
                first_row,
                chunk_rows,
                row_bytes
            }),
        );
    }

    fn lookup(ids: &[u32], table: &WeightMatrix) -> Vec<f32> {
        let ctx = ctx();
        let ids_tensor = Tensor::from_u32(ctx, "ids", &[ids.len()], ids).unwrap();
        let output = Tensor::new(ctx, "embedded", &[ids.len(), table.cols], Elem::F32).unwrap();
        output.poison(ctx);
        let mut enc = ctx.encoder();
        encode(ctx, &mut enc, &ids_tensor, table, &output).unwrap();
        ctx.submit("embedding test", enc).unwrap();
        output.read_f32(ctx).unwrap()
    }

    #[test]
    fn embedding_matches_reference_for_every_dtype_across_chunks() {
        let ctx = ctx();
        let mut rng = rng(11);
        let vocab = 37;
        for dtype in DType::ALL {
            let cols = match dtype.block_elems() {
                1 => 45,
                32 => 96,
                _ => 512,
            };
            let bytes = random_weights(&mut rng, dtype, vocab, cols);
            let row_bytes = dtype.row_bytes(cols).unwrap();
            let table = WeightMatrix::upload_split(
                ctx,
                "emb",
                dtype,
                vocab,
                cols,
                &bytes,
                (10 * row_bytes + 8) as u64,
            )
            .unwrap();
            assert_eq!(table.chunks.len(), 4);
            // First and last rows, both sides of every chunk boundary, repeats.
            let ids = [0, 36, 9, 10, 19, 20, 29, 30, 5, 5, 36, 0, 17];
            let want = reference(&ids, dtype, &bytes, cols).unwrap();
            // Decoding is the CPU's arithmetic, up to a fused multiply-add in the
            // affine formats (one rounding of a value of at most max|w|).
            let max_w = want.iter().fold(0f32, |a, w| a.max(w.abs()));
            assert_close(
                &format!("embedding {dtype}"),
                &lookup(&ids, &table),
                &want,
                1e-6 * max_w,
                0.0,
            );
        }
    }

    #[test]
    fn ids_outside_the_vocabulary_are_reported_by_check_ids() {
        assert!(check_ids(&[0, 4, 9], 10).is_ok());
        let err = check_ids(&[0, 10, 3], 10).unwrap_err().to_string();
        assert_eq!(
            err,
            "embedding: token id 10 at position 1 is outside the vocabulary of 10"
        );
    }

    #[test]
    fn embedding_rejects_a_mismatched_output() {
        let ctx = ctx();
        let bytes = random_weights(&mut rng(2), DType::Q4_0, 4, 64);
        let table = WeightMatrix::upload(ctx, "emb", DType::Q4_0, 4, 64, &bytes).unwrap();
        let ids = Tensor::from_u32(ctx, "ids", &[3], &[0, 1, 2]).unwrap();
        let output = Tensor::new(ctx, "y", &[3, 63], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &ids, &table, &output)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("embedding: ids [3] from table \"emb\" (4 × 64, Q4_0)"),
            "{err}"
        );
        assert!(
            err.contains("output of [3, 64]; got output [3, 63]"),
            "{err}"
        );
    }
}
