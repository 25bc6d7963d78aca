//! Rotary position embedding (RoPE), applied in place to query or key activations
//! shaped `[tokens, heads * head_dim]`; token `t` sits at the step's first position
//! plus `t`.
//!
//! Pair `i` of a head (for `i < rotary_dim / 2`) turns by `position * theta_i` with
//! `theta_i = base^(-2i / rotary_dim) / freq_factor[i]`; dimensions from
//! `rotary_dim` on are left as they are.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::{Elem, Position, Tensor};

const SHADER: Shader = Shader {
    name: "rope.wgsl",
    source: include_str!("../../shaders/rope.wgsl"),
};

/// Invocations per workgroup; must match `WG` in rope.wgsl.
const WORKGROUP: usize = 256;

/// Which dimensions of a head rotate together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairing {
    /// Adjacent dimensions `(2i, 2i + 1)`: GPT-J, llama.cpp's "normal" mode (GGUF
    /// llama/internlm2, whose converter permutes Q and K rows to match).
    Interleaved,
    /// Dimensions `(i, i + rotary_dim / 2)`: GPT-NeoX, HF Llama/Qwen2 checkpoints and
    /// GGUF qwen2.
    Neox,
}

/// A model's RoPE settings, fixed when it is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// Dimensions per attention head.
    pub head_dim: usize,
    /// Leading dimensions of each head that rotate: even, at most `head_dim`.
    pub rotary_dim: usize,
    /// Frequency base theta (10000, 1e6, ...).
    pub base: f64,
    /// How dimensions pair up.
    pub pairing: RopePairing,
    /// Optional divisor per frequency, `rotary_dim / 2` positive values: the GGUF
    /// `rope_freqs.weight` of Llama-3-style scaling, read on the host at load time.
    pub freq_factors: Option<Vec<f32>>,
}

impl RopeConfig {
    /// The rotation of frequency `i` per position, in radians, computed in f64.
    pub fn inv_freq(&self, i: usize) -> f64 {
        let factor = self.freq_factors.as_ref().map_or(1.0, |f| f[i] as f64);
        self.base.powf(-((2 * i) as f64) / self.rotary_dim as f64) / factor
    }

    /// Fails unless the settings fit together (even rotary dims within the head, a
    /// positive base, one positive factor per frequency).
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Shape {
                op: "rope",
                message,
            })
        };
        if self.rotary_dim == 0
            || !self.rotary_dim.is_multiple_of(2)
            || self.rotary_dim > self.head_dim
        {
            return fail(format!(
                "rotary_dim {} must be even, positive and at most head_dim {}",
                self.rotary_dim, self.head_dim
            ));
        }
        if !(self.base.is_finite() && self.base > 0.0) {
            return fail(format!(
                "base {} must be a positive finite number",
                self.base
            ));
        }
        if let Some(factors) = &self.freq_factors {
            if factors.len() != self.rotary_dim / 2 {
                return fail(format!(
                    "rotary_dim {} needs {} frequency factors, got {}",
                    self.rotary_dim,
                    self.rotary_dim / 2,
                    factors.len()
                ));
            }
            if let Some((i, f)) = factors
                .iter()
                .enumerate()
                .find(|(_, f)| !(f.is_finite() && **f > 0.0))
            {
                return fail(format!(
                    "frequency factor {i} is {f}; factors must be positive and finite"
                ));
            }
        }
        Ok(())
    }
}

/// RoPE for one model: its settings and, on the GPU, each frequency's rotation per
/// position as a 0.64 fixed-point fraction of a turn (see rope.wgsl).
pub struct Rope {
    config: RopeConfig,
    steps: wgpu::Buffer,
}

impl Rope {
    /// Bytes of GPU memory the per-frequency table occupies.
    pub fn gpu_bytes(&self) -> u64 {
        self.steps.size()
    }

    /// Checks `config` and uploads its per-frequency steps.
    pub fn new(ctx: &Context, config: RopeConfig) -> Result<Rope> {
        config.validate()?;
        let steps: Vec<u32> = (0..config.rotary_dim / 2)
            .flat_map(|i| {
                let turns = (config.inv_freq(i) / std::f64::consts::TAU).fract();
                let fixed = (turns * 2f64.powi(64)) as u64;
                [(fixed >> 32) as u32, fixed as u32]
            })
            .collect();
        let steps = ctx.upload_bytes("rope steps", bytemuck::cast_slice(&steps))?;
        Ok(Rope { config, steps })
    }

    /// The settings this was built from.
    pub fn config(&self) -> &RopeConfig {
        &self.config
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pairs: u32,
    half_rotary: u32,
    heads: u32,
    head_dim: u32,
}

/// Records RoPE in place on `x`, f32 `[tokens, heads * head_dim]`, for tokens at
/// positions `position`, `position + 1`, ….
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    rope: &Rope,
    x: &Tensor,
    heads: usize,
    position: &Position,
) -> Result<()> {
    x.expect_elem("rope", "x", Elem::F32)?;
    let config = &rope.config;
    if heads == 0 || x.cols() != heads * config.head_dim {
        return Err(Error::Shape {
            op: "rope",
            message: format!(
                "x {:?} must have rows of {heads} heads x {} dims = {} values",
                x.shape,
                config.head_dim,
                heads * config.head_dim
            ),
        });
    }
    let tokens = x.rows();
    let first = position.value();
    if tokens > 0 && first + (tokens - 1) > u32::MAX as usize {
        return Err(Error::Shape {
            op: "rope",
            message: format!(
                "{tokens} tokens from position {first} run past position {}",
                u32::MAX
            ),
        });
    }
    let half_rotary = config.rotary_dim / 2;
    let pairs = tokens * heads * half_rotary;
    let params = Params {
        pairs: pairs as u32,
        half_rotary: half_rotary as u32,
        heads: heads as u32,
        head_dim: config.head_dim as u32,
    };
    let defines: &[(&str, String)] = match config.pairing {
        RopePairing::Interleaved => &[],
        RopePairing::Neox => &[("NEOX", String::new())],
    };
    let pipeline = ctx.pipeline(SHADER, defines)?;
    let uniform = ctx.uniform("rope params", &params);
    let bind = ctx.bind_group(
        &pipeline,
        &[&uniform, position.buffer(), &rope.steps, &x.buffer],
    );
    ctx.dispatch(
        encoder,
        &pipeline,
        &bind,
        (pairs.div_ceil(WORKGROUP) as u32, 1, 1),
    );
    Ok(())
}

/// CPU reference: `x` (`[tokens, heads * head_dim]`) with RoPE applied, angles and
/// rotation computed in f64.
pub fn reference(x: &[f32], heads: usize, config: &RopeConfig, position_offset: u32) -> Vec<f32> {
    let half = config.rotary_dim / 2;
    let mut out = x.to_vec();
    for (row, values) in out.chunks_mut(heads * config.head_dim).enumerate() {
        let position = (position_offset as u64 + row as u64) as f64;
        for head in values.chunks_mut(config.head_dim) {
            for i in 0..half {
                let (sin, cos) = (position * config.inv_freq(i)).sin_cos();
                let (a, b) = match config.pairing {
                    RopePairing::Interleaved => (2 * i, 2 * i + 1),
                    RopePairing::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a] as f64, head[b] as f64);
                head[a] = (x0 * cos - x1 * sin) as f32;
                head[b] = (x0 * sin + x1 * cos) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::params_layout::{assert_matches_wgsl, rust_params};
    use crate::ops::testing::{assert_close, ctx, random_f32, rng};

    #[test]
    fn params_match_the_wgsl_struct() {
        assert_matches_wgsl(
            SHADER,
            &[],
            rust_params!(Params {
                pairs,
                half_rotary,
                heads,
                head_dim
            }),
        );
    }

    /// Llama-3-style factors: 1 for high frequencies, up to 8 for low ones, smooth between.
    fn llama3_factors(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 1.0 + 7.0 * (i as f32 / (n - 1).max(1) as f32).powi(2))
            .collect()
    }

    fn config(
        head_dim: usize,
        rotary_dim: usize,
        base: f64,
        pairing: RopePairing,
        factors: bool,
    ) -> RopeConfig {
        RopeConfig {
            head_dim,
            rotary_dim,
            base,
            pairing,
            freq_factors: factors.then(|| llama3_factors(rotary_dim / 2)),
        }
    }

    fn run(
        ctx: &Context,
        rope: &Rope,
        x: &[f32],
        tokens: usize,
        heads: usize,
        offset: u32,
    ) -> Vec<f32> {
        let t = Tensor::from_f32(ctx, "x", &[tokens, heads * rope.config().head_dim], x).unwrap();
        let position = Position::new(ctx, offset as usize).unwrap();
        let mut enc = ctx.encoder();
        encode(ctx, &mut enc, rope, &t, heads, &position).unwrap();
        ctx.submit("rope test", enc).unwrap();
        t.read_f32(ctx).unwrap()
    }

    // The angle is exact to ~2^-32 turn at any position, so only f32 rounding of the
    // reduced angle, sin/cos and the rotation remain: |x| <= 2 gives errors ~1e-6.
    const ATOL: f32 = 1e-5;
    const RTOL: f32 = 1e-5;

    #[test]
    fn rope_matches_reference_for_both_pairings_and_all_settings() {
        let ctx = ctx();
        let mut rng = rng(31);
        // (heads, head_dim, rotary_dim, base, with freq factors)
        let settings = [
            (1, 2, 2, 10_000.0, false),
            (14, 64, 64, 1e6, false),      // Qwen2.5-0.5B queries: width 896
            (2, 64, 64, 1e6, true),        // its keys, with Llama-3 scaling
            (3, 128, 64, 10_000.0, false), // partial rotary (GPT-J/Phi style)
            (5, 96, 32, 500_000.0, true),  // partial rotary with factors
            (38, 128, 128, 10_000.0, false), // width 4864
        ];
        for pairing in [RopePairing::Interleaved, RopePairing::Neox] {
            for &(heads, head_dim, rotary_dim, base, factors) in &settings {
                let rope =
                    Rope::new(ctx, config(head_dim, rotary_dim, base, pairing, factors)).unwrap();
                for tokens in [1, 7, 33] {
                    for offset in [0, 5, 30_000] {
                        let x = random_f32(&mut rng, tokens * heads * head_dim, 2.0);
                        let got = run(ctx, &rope, &x, tokens, heads, offset);
                        let want = reference(&x, heads, rope.config(), offset);
                        let what = format!(
                            "rope {pairing:?} heads {heads} head_dim {head_dim} rotary {rotary_dim} base {base} \
                             factors {factors} tokens {tokens} offset {offset}"
                        );
                        assert_close(&what, &got, &want, ATOL, RTOL);
                    }
                }
            }
        }
    }

    #[test]
    fn rope_stays_exact_at_very_large_positions() {
        let ctx = ctx();
        let mut rng = rng(32);
        let rope = Rope::new(ctx, config(64, 64, 10_000.0, RopePairing::Neox, false)).unwrap();
        for offset in [1 << 20, u32::MAX - 3] {
            let x = random_f32(&mut rng, 4 * 2 * 64, 2.0);
            let got = run(ctx, &rope, &x, 4, 2, offset);
            assert_close(
                &format!("rope at {offset}"),
                &got,
                &reference(&x, 2, rope.config(), offset),
                ATOL,
                RTOL,
            );
        }
    }

    #[test]
    fn rope_leaves_dimensions_past_rotary_dim_alone() {
        let ctx = ctx();
        let mut rng = rng(33);
        for pairing in [RopePairing::Interleaved, RopePairing::Neox] {
            let rope = Rope::new(ctx, config(96, 32, 10_000.0, pairing, false)).unwrap();
            let x = random_f32(&mut rng, 7 * 3 * 96, 2.0);
            let got = run(ctx, &rope, &x, 7, 3, 5);
            for (i, (g, w)) in got.iter().zip(&x).enumerate().filter(|(i, _)| i % 96 >= 32) {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{pairing:?}: element {i} past rotary_dim changed"
                );
            }
        }
    }

    #[test]
    fn rope_rejects_bad_settings_and_shapes() {
        let ctx = ctx();
        let bad = |c: RopeConfig| {
            Rope::new(ctx, c)
                .err()
                .expect("config must be refused")
                .to_string()
        };
        let neox = RopePairing::Neox;
        assert_eq!(
            bad(config(64, 63, 1e4, neox, false)),
            "rope: rotary_dim 63 must be even, positive and at most head_dim 64"
        );
        assert_eq!(
            bad(config(64, 128, 1e4, neox, false)),
            "rope: rotary_dim 128 must be even, positive and at most head_dim 64"
        );
        assert_eq!(
            bad(config(64, 64, -1.0, neox, false)),
            "rope: base -1 must be a positive finite number"
        );
        let mut short = config(64, 64, 1e4, neox, true);
        short.freq_factors.as_mut().unwrap().pop();
        assert_eq!(
            bad(short),
            "rope: rotary_dim 64 needs 32 frequency factors, got 31"
        );
        let mut zero = config(64, 64, 1e4, neox, true);
        zero.freq_factors.as_mut().unwrap()[3] = 0.0;
        assert_eq!(
            bad(zero),
            "rope: frequency factor 3 is 0; factors must be positive and finite"
        );

        let rope = Rope::new(ctx, config(64, 64, 1e4, neox, false)).unwrap();
        let start = Position::new(ctx, 0).unwrap();
        let x = Tensor::new(ctx, "x", &[3, 200], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &rope, &x, 3, &start).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rope: x [3, 200] must have rows of 3 heads x 64 dims = 192 values"
        );
        let x = Tensor::new(ctx, "x", &[3, 192], Elem::F32).unwrap();
        let late = Position::new(ctx, u32::MAX as usize - 1).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &rope, &x, 3, &late).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "rope: 3 tokens from position {} run past position {}",
                u32::MAX - 1,
                u32::MAX
            )
        );
        let ids = Tensor::new(ctx, "ids", &[3, 192], Elem::U32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &rope, &ids, 3, &start).unwrap_err();
        assert_eq!(err.to_string(), "rope: x must be F32, not U32");
    }
}
