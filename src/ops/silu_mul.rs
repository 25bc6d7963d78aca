//! SwiGLU gating of the feed-forward block: `output = silu(gate) * up`, where
//! `silu(x) = x * sigmoid(x)`.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::{Elem, Tensor};

const SHADER: Shader = Shader {
    name: "silu_mul.wgsl",
    source: include_str!("../../shaders/silu_mul.wgsl"),
};

/// Invocations per workgroup; must match `WG` in silu_mul.wgsl.
const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    _pad: [u32; 3],
}

/// Records `output = silu(gate) * up`. All three are f32 `[tokens, ffn_width]` of one
/// shape; `output` must be a buffer of its own.
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    gate: &Tensor,
    up: &Tensor,
    output: &Tensor,
) -> Result<()> {
    gate.expect_elem("silu_mul", "gate", Elem::F32)?;
    up.expect_elem("silu_mul", "up", Elem::F32)?;
    output.expect_elem("silu_mul", "output", Elem::F32)?;
    if up.shape != gate.shape || output.shape != gate.shape {
        return Err(Error::Shape {
            op: "silu_mul",
            message: format!(
                "gate {:?}, up {:?} and output {:?} must have the same shape",
                gate.shape, up.shape, output.shape
            ),
        });
    }
    if output.buffer == gate.buffer || output.buffer == up.buffer {
        return Err(Error::Shape {
            op: "silu_mul",
            message: "output must not alias gate or up".into(),
        });
    }
    let len = gate.len();
    let pipeline = ctx.pipeline(SHADER, &[])?;
    let uniform = ctx.uniform(
        "silu_mul params",
        &Params {
            len: len as u32,
            _pad: [0; 3],
        },
    );
    let bind = ctx.bind_group(
        &pipeline,
        &[&uniform, &gate.buffer, &up.buffer, &output.buffer],
    );
    ctx.dispatch(
        encoder,
        &pipeline,
        &bind,
        (len.div_ceil(WORKGROUP) as u32, 1, 1),
    );
    Ok(())
}

/// CPU reference: `silu(gate) * up` element by element, computed in f64.
pub fn reference(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = g as f64;
            (g / (1.0 + (-g).exp()) * u as f64) as f32
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
        assert_matches_wgsl(SHADER, &[], rust_params!(Params { len }));
    }

    fn run(ctx: &Context, shape: &[usize], gate: &[f32], up: &[f32]) -> Vec<f32> {
        let g = Tensor::from_f32(ctx, "gate", shape, gate).unwrap();
        let u = Tensor::from_f32(ctx, "up", shape, up).unwrap();
        let output = Tensor::new(ctx, "out", shape, Elem::F32).unwrap();
        output.poison(ctx);
        let mut enc = ctx.encoder();
        encode(ctx, &mut enc, &g, &u, &output).unwrap();
        ctx.submit("silu_mul test", enc).unwrap();
        output.read_f32(ctx).unwrap()
    }

    #[test]
    fn silu_mul_matches_reference_on_awkward_shapes() {
        let ctx = ctx();
        let mut rng = rng(21);
        for &(rows, cols) in &[(1, 1), (1, 4864), (7, 1757), (33, 896), (33, 4864)] {
            let gate = random_f32(&mut rng, rows * cols, 12.0);
            let up = random_f32(&mut rng, rows * cols, 3.0);
            let got = run(ctx, &[rows, cols], &gate, &up);
            // WGSL lets exp be off by 3 + 2|x| ulp (~2e-6 relative at |x| = 12); the reference is f64.
            assert_close(
                &format!("silu_mul {rows}x{cols}"),
                &got,
                &reference(&gate, &up),
                1e-6,
                5e-6,
            );
        }
    }

    #[test]
    fn silu_mul_saturates_cleanly_for_extreme_gates() {
        let ctx = ctx();
        let gate = [
            -1000.0, -100.0, -88.0, -20.0, -1e-30, 0.0, 1e-30, 20.0, 88.0, 100.0, 1000.0,
        ];
        let up = [2.0; 11];
        let got = run(ctx, &[gate.len()], &gate, &up);
        assert_close(
            "silu_mul extremes",
            &got,
            &reference(&gate, &up),
            1e-6,
            5e-6,
        );
    }

    #[test]
    fn silu_mul_covers_more_workgroups_than_one_dispatch_dimension_allows() {
        let ctx = ctx();
        let len = (ctx.caps.max_workgroups_per_dimension as usize + 3) * WORKGROUP + 5;
        let gate: Vec<f32> = (0..len).map(|i| (i % 1999) as f32 / 100.0 - 10.0).collect();
        let up: Vec<f32> = (0..len).map(|i| (i / 1999 % 7) as f32 - 3.0).collect();
        let got = run(ctx, &[len], &gate, &up);
        assert_close(
            "silu_mul, folded dispatch",
            &got,
            &reference(&gate, &up),
            1e-6,
            5e-6,
        );
    }

    #[test]
    fn silu_mul_rejects_mismatched_shapes() {
        let ctx = ctx();
        let gate = Tensor::new(ctx, "gate", &[3, 16], Elem::F32).unwrap();
        let up = Tensor::new(ctx, "up", &[3, 15], Elem::F32).unwrap();
        let out = Tensor::new(ctx, "out", &[3, 16], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &gate, &up, &out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "silu_mul: gate [3, 16], up [3, 15] and output [3, 16] must have the same shape"
        );
        let err = encode(ctx, &mut ctx.encoder(), &gate, &out, &gate).unwrap_err();
        assert_eq!(
            err.to_string(),
            "silu_mul: output must not alias gate or up"
        );
        let ids = Tensor::new(ctx, "ids", &[3, 16], Elem::U32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &ids, &out, &gate).unwrap_err();
        assert_eq!(err.to_string(), "silu_mul: gate must be F32, not U32");
    }
}
