//! RMS normalisation of each row, scaled by a learned weight:
//! `y = x / sqrt(mean(x²) + eps) * w`.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::{Elem, Tensor};

const SHADER: Shader = Shader {
    name: "rms_norm.wgsl",
    source: include_str!("../../shaders/rms_norm.wgsl"),
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

/// Records `output = rms_norm(input) * weight` for every row. `input` and `output`
/// are `[rows, cols]` f32; `weight` has `cols` values; `eps` comes from the model config.
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    input: &Tensor,
    weight: &Tensor,
    output: &Tensor,
    eps: f32,
) -> Result<()> {
    input.expect_elem("rms_norm", "input", Elem::F32)?;
    if weight.len() != input.cols() || output.shape != input.shape {
        return Err(Error::Shape {
            op: "rms_norm",
            message: format!(
                "input {:?} needs a weight of {} values and an output of the same shape; got weight {:?}, output {:?}",
                input.shape,
                input.cols(),
                weight.shape,
                output.shape
            ),
        });
    }
    let params = Params {
        rows: input.rows() as u32,
        cols: input.cols() as u32,
        eps,
        _pad: 0,
    };
    let pipeline = ctx.pipeline(SHADER, &[])?;
    let uniform = ctx.uniform("rms_norm params", &params);
    let bind = ctx.bind_group(
        &pipeline,
        &[&uniform, &input.buffer, &weight.buffer, &output.buffer],
    );
    ctx.dispatch(encoder, &pipeline, &bind, (params.rows, 1, 1));
    Ok(())
}

/// CPU reference: row-wise RMS norm of `input` (`cols` per row) scaled by `weight`.
pub fn reference(input: &[f32], weight: &[f32], cols: usize, eps: f32) -> Vec<f32> {
    input
        .chunks(cols)
        .flat_map(|row| {
            let mean_sq = row.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / cols as f64;
            let scale = (1.0 / (mean_sq + eps as f64).sqrt()) as f32;
            row.iter().zip(weight).map(move |(&x, &w)| x * scale * w)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::params_layout::{assert_matches_wgsl, rust_params};
    use crate::ops::testing::{assert_close, ctx, random_f32, rng};

    #[test]
    fn params_match_the_wgsl_struct() {
        assert_matches_wgsl(SHADER, &[], rust_params!(Params { rows, cols, eps }));
    }

    #[test]
    fn rms_norm_matches_reference_on_awkward_shapes() {
        let ctx = ctx();
        let mut rng = rng(7);
        for &(rows, cols) in &[(1, 1), (7, 33), (33, 896), (3, 1757), (2, 4864)] {
            let x = random_f32(&mut rng, rows * cols, 3.0);
            let w = random_f32(&mut rng, cols, 1.5);
            let input = Tensor::from_f32(ctx, "x", &[rows, cols], &x).unwrap();
            let weight = Tensor::from_f32(ctx, "w", &[cols], &w).unwrap();
            let output = Tensor::new(ctx, "y", &[rows, cols], Elem::F32).unwrap();
            output.poison(ctx);
            let mut enc = ctx.encoder();
            encode(ctx, &mut enc, &input, &weight, &output, 1e-6).unwrap();
            ctx.submit("rms_norm test", enc).unwrap();
            let got = output.read_f32(ctx).unwrap();
            // f32 accumulation in a different order than the f64 reference.
            assert_close(
                &format!("rms_norm {rows}x{cols}"),
                &got,
                &reference(&x, &w, cols, 1e-6),
                1e-5,
                1e-4,
            );
        }
    }

    #[test]
    fn rms_norm_rejects_mismatched_weight() {
        let ctx = ctx();
        let input = Tensor::new(ctx, "x", &[2, 8], Elem::F32).unwrap();
        let weight = Tensor::new(ctx, "w", &[7], Elem::F32).unwrap();
        let output = Tensor::new(ctx, "y", &[2, 8], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &input, &weight, &output, 1e-5).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("rms_norm: input [2, 8] needs a weight of 8 values"),
            "{err}"
        );
    }
}
