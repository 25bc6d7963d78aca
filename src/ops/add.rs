//! Element-wise sum of two f32 tensors of the same shape: `output = a + b`, and the
//! in-place residual update `a += b`.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::{Elem, Tensor};

const SHADER: Shader = Shader {
    name: "add.wgsl",
    source: include_str!("../../shaders/add.wgsl"),
};

/// Invocations per workgroup; must match `WG` in add.wgsl.
const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    _pad: [u32; 3],
}

fn check_operands(a: &Tensor, b: &Tensor) -> Result<()> {
    a.expect_elem("add", "a", Elem::F32)?;
    b.expect_elem("add", "b", Elem::F32)?;
    if b.shape != a.shape {
        return Err(Error::Shape {
            op: "add",
            message: format!(
                "a {:?} and b {:?} must have the same shape",
                a.shape, b.shape
            ),
        });
    }
    if a.buffer == b.buffer {
        return Err(Error::Shape {
            op: "add",
            message: "a and b must be different buffers".into(),
        });
    }
    Ok(())
}

fn record(
    ctx: &Context,
    encoder: &mut Encoder,
    in_place: bool,
    buffers: &[&wgpu::Buffer],
    len: usize,
) -> Result<()> {
    let defines: &[(&str, String)] = if in_place {
        &[("IN_PLACE", String::new())]
    } else {
        &[]
    };
    let pipeline = ctx.pipeline(SHADER, defines)?;
    let uniform = ctx.uniform(
        "add params",
        &Params {
            len: len as u32,
            _pad: [0; 3],
        },
    );
    let mut bindings = vec![&uniform];
    bindings.extend_from_slice(buffers);
    let bind = ctx.bind_group(&pipeline, &bindings);
    ctx.dispatch(
        encoder,
        &pipeline,
        &bind,
        (len.div_ceil(WORKGROUP) as u32, 1, 1),
    );
    Ok(())
}

/// Records `output = a + b`. All three are f32 of one shape; `output` must be a
/// buffer of its own (use [`encode_in_place`] to update `a`).
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    a: &Tensor,
    b: &Tensor,
    output: &Tensor,
) -> Result<()> {
    check_operands(a, b)?;
    output.expect_elem("add", "output", Elem::F32)?;
    if output.shape != a.shape {
        return Err(Error::Shape {
            op: "add",
            message: format!(
                "a {:?} needs an output of the same shape; got output {:?}",
                a.shape, output.shape
            ),
        });
    }
    if output.buffer == a.buffer || output.buffer == b.buffer {
        return Err(Error::Shape {
            op: "add",
            message: "output must not alias a or b; use add::encode_in_place to accumulate into a"
                .into(),
        });
    }
    record(
        ctx,
        encoder,
        false,
        &[&a.buffer, &b.buffer, &output.buffer],
        a.len(),
    )
}

/// Records the residual update `a += b` (f32, same shape, distinct buffers).
pub fn encode_in_place(ctx: &Context, encoder: &mut Encoder, a: &Tensor, b: &Tensor) -> Result<()> {
    check_operands(a, b)?;
    record(ctx, encoder, true, &[&a.buffer, &b.buffer], a.len())
}

/// CPU reference: `a + b` element by element.
pub fn reference(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(&x, &y)| x + y).collect()
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

    /// Shapes from one token up to a long prompt of an awkward width.
    const SHAPES: &[(usize, usize)] = &[(1, 1), (1, 896), (7, 1757), (33, 896), (33, 4864)];

    #[test]
    fn add_matches_reference_on_awkward_shapes() {
        let ctx = ctx();
        let mut rng = rng(11);
        for &(rows, cols) in SHAPES {
            let x = random_f32(&mut rng, rows * cols, 4.0);
            let y = random_f32(&mut rng, rows * cols, 4.0);
            let a = Tensor::from_f32(ctx, "a", &[rows, cols], &x).unwrap();
            let b = Tensor::from_f32(ctx, "b", &[rows, cols], &y).unwrap();
            let output = Tensor::new(ctx, "out", &[rows, cols], Elem::F32).unwrap();
            output.poison(ctx);
            let mut enc = ctx.encoder();
            encode(ctx, &mut enc, &a, &b, &output).unwrap();
            ctx.submit("add test", enc).unwrap();
            // One correctly rounded f32 addition on both sides: bit-exact.
            assert_close(
                &format!("add {rows}x{cols}"),
                &output.read_f32(ctx).unwrap(),
                &reference(&x, &y),
                0.0,
                0.0,
            );
            assert_eq!(a.read_f32(ctx).unwrap(), x, "add must leave a unchanged");
        }
    }

    #[test]
    fn add_in_place_accumulates_into_a() {
        let ctx = ctx();
        let mut rng = rng(12);
        for &(rows, cols) in SHAPES {
            let x = random_f32(&mut rng, rows * cols, 4.0);
            let y = random_f32(&mut rng, rows * cols, 4.0);
            let a = Tensor::from_f32(ctx, "a", &[rows, cols], &x).unwrap();
            let b = Tensor::from_f32(ctx, "b", &[rows, cols], &y).unwrap();
            let mut enc = ctx.encoder();
            encode_in_place(ctx, &mut enc, &a, &b).unwrap();
            encode_in_place(ctx, &mut enc, &a, &b).unwrap();
            ctx.submit("add in place test", enc).unwrap();
            let want = reference(&reference(&x, &y), &y);
            assert_close(
                &format!("a += b twice {rows}x{cols}"),
                &a.read_f32(ctx).unwrap(),
                &want,
                0.0,
                0.0,
            );
        }
    }

    #[test]
    fn add_covers_more_workgroups_than_one_dispatch_dimension_allows() {
        let ctx = ctx();
        let len = (ctx.caps.max_workgroups_per_dimension as usize + 3) * WORKGROUP + 17;
        // Distinct, exactly representable values so a misplaced or skipped element shows.
        let x: Vec<f32> = (0..len).map(|i| (i % 65_521) as f32).collect();
        let y: Vec<f32> = (0..len).map(|i| (i / 65_521) as f32 * 0.5).collect();
        let a = Tensor::from_f32(ctx, "a", &[len], &x).unwrap();
        let b = Tensor::from_f32(ctx, "b", &[len], &y).unwrap();
        let output = Tensor::new(ctx, "out", &[len], Elem::F32).unwrap();
        output.poison(ctx);
        let mut enc = ctx.encoder();
        encode(ctx, &mut enc, &a, &b, &output).unwrap();
        encode_in_place(ctx, &mut enc, &a, &b).unwrap();
        ctx.submit("big add test", enc).unwrap();
        let want = reference(&x, &y);
        assert_close(
            "add, folded dispatch",
            &output.read_f32(ctx).unwrap(),
            &want,
            0.0,
            0.0,
        );
        assert_close(
            "a += b, folded dispatch",
            &a.read_f32(ctx).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }

    #[test]
    fn add_rejects_mismatched_shapes_and_aliasing() {
        let ctx = ctx();
        let a = Tensor::new(ctx, "a", &[2, 8], Elem::F32).unwrap();
        let b = Tensor::new(ctx, "b", &[2, 7], Elem::F32).unwrap();
        let out = Tensor::new(ctx, "out", &[2, 8], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &a, &b, &out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "add: a [2, 8] and b [2, 7] must have the same shape"
        );
        let err = encode_in_place(ctx, &mut ctx.encoder(), &a, &b).unwrap_err();
        assert_eq!(
            err.to_string(),
            "add: a [2, 8] and b [2, 7] must have the same shape"
        );

        let small_out = Tensor::new(ctx, "out", &[8], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &a, &out, &small_out).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("add: a [2, 8] needs an output of the same shape"),
            "{err}"
        );

        let err = encode(ctx, &mut ctx.encoder(), &a, &out, &a).unwrap_err();
        assert!(
            err.to_string().contains("use add::encode_in_place"),
            "{err}"
        );
        let err = encode_in_place(ctx, &mut ctx.encoder(), &a, &a).unwrap_err();
        assert_eq!(err.to_string(), "add: a and b must be different buffers");

        let ids = Tensor::new(ctx, "ids", &[2, 8], Elem::U32).unwrap();
        let err = encode_in_place(ctx, &mut ctx.encoder(), &a, &ids).unwrap_err();
        assert_eq!(err.to_string(), "add: b must be F32, not U32");
    }
}
