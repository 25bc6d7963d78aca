//! Greedy decoding on the GPU: the index of the largest logit in one row of a
//! `[rows, vocab]` tensor, written as a u32 token into an output buffer, so the
//! vocabulary never travels back to the CPU.
//!
//! Ties go to the lowest index. NaN logits never win; a row holding only NaN yields
//! [`NO_TOKEN`]. `-inf` is an ordinary (smallest) value.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::{Elem, Tensor};

const SHADER: Shader = Shader {
    name: "argmax.wgsl",
    source: include_str!("../../shaders/argmax.wgsl"),
};

/// The token written when a row has no candidate (every logit NaN).
pub const NO_TOKEN: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    row: u32,
    cols: u32,
    slot: u32,
    _pad: u32,
}

/// Records `output[slot] = argmax(logits[row, ..])`. `logits` is f32 `[.., vocab]`
/// (all leading dimensions count as rows); `output` is a u32 tensor with more than
/// `slot` elements, so a decode loop can collect its tokens in one buffer.
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    logits: &Tensor,
    row: usize,
    output: &Tensor,
    slot: usize,
) -> Result<()> {
    check_row("argmax", logits, row, output, slot)?;
    let params = Params {
        row: row as u32,
        cols: logits.cols() as u32,
        slot: slot as u32,
        _pad: 0,
    };
    let pipeline = ctx.pipeline(SHADER, &[])?;
    let uniform = ctx.uniform("argmax params", &params);
    let bind = ctx.bind_group(&pipeline, &[&uniform, &logits.buffer, &output.buffer]);
    ctx.dispatch(encoder, &pipeline, &bind, (1, 1, 1));
    Ok(())
}

/// Validates what every token-picking op needs: f32 logits with a non-empty last
/// dimension, `row` among their rows, and a u32 `output` with an element at `slot`.
pub(crate) fn check_row(
    op: &'static str,
    logits: &Tensor,
    row: usize,
    output: &Tensor,
    slot: usize,
) -> Result<()> {
    logits.expect_elem(op, "logits", Elem::F32)?;
    output.expect_elem(op, "output", Elem::U32)?;
    if logits.is_empty() || row >= logits.rows() {
        return Err(Error::Shape {
            op,
            message: format!(
                "logits {:?} have {} non-empty rows; row {row} asked for",
                logits.shape,
                logits.rows()
            ),
        });
    }
    if slot >= output.len() {
        return Err(Error::Shape {
            op,
            message: format!("output {:?} has no slot {slot}", output.shape),
        });
    }
    Ok(())
}

/// CPU reference: the first index of the largest non-NaN value of `row`, or
/// [`NO_TOKEN`] when there is none.
pub fn reference(row: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in row.iter().enumerate() {
        if !x.is_nan() && best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map_or(NO_TOKEN, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::params_layout::{assert_matches_wgsl, rust_params};
    use crate::ops::testing::{ctx, random_f32, rng};

    #[test]
    fn params_match_the_wgsl_struct() {
        assert_matches_wgsl(SHADER, &[], rust_params!(Params { row, cols, slot }));
    }

    fn run(logits: &[f32], shape: &[usize], row: usize) -> u32 {
        let ctx = ctx();
        let input = Tensor::from_f32(ctx, "logits", shape, logits).unwrap();
        let output = Tensor::new(ctx, "token", &[3], Elem::U32).unwrap();
        output.poison(ctx);
        let mut enc = ctx.encoder();
        encode(ctx, &mut enc, &input, row, &output, 1).unwrap();
        ctx.submit("argmax test", enc).unwrap();
        let got = output.read_u32(ctx).unwrap();
        assert_eq!(
            (got[0], got[2]),
            (u32::MAX, u32::MAX),
            "argmax wrote outside its slot"
        );
        got[1]
    }

    #[test]
    fn argmax_matches_reference_on_every_row_and_vocab_size() {
        let mut rng = rng(11);
        for &(rows, vocab) in &[(1, 1), (3, 7), (2, 33), (3, 4864), (2, 151936)] {
            let logits = random_f32(&mut rng, rows * vocab, 8.0);
            for row in 0..rows {
                let want = reference(&logits[row * vocab..(row + 1) * vocab]);
                assert_eq!(
                    run(&logits, &[rows, vocab], row),
                    want,
                    "rows {rows} vocab {vocab} row {row}"
                );
            }
        }
    }

    #[test]
    fn argmax_prefers_the_lowest_index_among_ties_and_skips_nan() {
        let vocab = 1000;
        let mut logits = vec![-1.0f32; vocab];
        for i in [700, 313, 999, 514] {
            logits[i] = 2.5;
        }
        logits[3] = f32::NAN;
        logits[600] = -f32::NAN;
        assert_eq!(reference(&logits), 313);
        assert_eq!(run(&logits, &[vocab], 0), 313);

        let mut masked = vec![f32::NEG_INFINITY; 300];
        masked[0] = f32::NAN;
        assert_eq!(
            run(&masked, &[300], 0),
            1,
            "all -inf but one NaN: the first -inf wins"
        );
        assert_eq!(run(&[f32::NAN; 40], &[40], 0), NO_TOKEN);
    }

    #[test]
    fn argmax_rejects_bad_rows_slots_and_types() {
        let ctx = ctx();
        let logits = Tensor::new(ctx, "logits", &[2, 5], Elem::F32).unwrap();
        let output = Tensor::new(ctx, "token", &[1], Elem::U32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &logits, 2, &output, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "argmax: logits [2, 5] have 2 non-empty rows; row 2 asked for"
        );
        let err = encode(ctx, &mut ctx.encoder(), &logits, 0, &output, 1).unwrap_err();
        assert_eq!(err.to_string(), "argmax: output [1] has no slot 1");
        let err = encode(ctx, &mut ctx.encoder(), &logits, 0, &logits, 0).unwrap_err();
        assert_eq!(err.to_string(), "argmax: output must be U32, not F32");
        let empty = Tensor::new(ctx, "logits", &[2, 0], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &empty, 0, &output, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "argmax: logits [2, 0] have 0 non-empty rows; row 0 asked for"
        );
    }
}
