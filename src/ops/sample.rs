//! Stochastic decoding on the GPU: temperature, top-k and top-p (nucleus) sampling of
//! one row of a `[rows, vocab]` logits tensor, written as a u32 token into an output
//! buffer. The caller supplies the uniform number `u ∈ [0, 1)` (from a seeded CPU
//! generator), so a run is reproducible and the vocabulary never travels back.
//!
//! Semantics, shared exactly by the kernel and [`reference()`]:
//! 1. NaN and `-inf` logits are never drawn; `+inf` ranks above every finite logit
//!    and weighs as much as the largest finite f32.
//!    A row with nothing drawable yields [`NO_TOKEN`].
//! 2. Top-k (`top_k > 0`): the threshold is the k-th largest drawable logit; every
//!    token at or above it is kept, so ties at the threshold are kept (more than k
//!    tokens may survive). `-0` and `+0` are the same value.
//! 3. Each kept token has mass `exp((logit - max) / temperature)`.
//! 4. Top-p (`top_p < 1`): among the logit values of the kept tokens, the threshold is
//!    the largest value `t` whose tokens at or above `t` carry at least `top_p` of the
//!    kept mass; again every token at or above `t` is kept.
//! 5. The draw: with masses in token order, the first kept token whose running sum
//!    exceeds `u · (total kept mass)`.
//!
//! Temperature 0 (greedy) is rejected here: the caller uses [`crate::ops::argmax`].
//! The kernel runs in one workgroup. Each active threshold costs a binary search over
//! logit values of at most 32 passes over the row; the maximum and the draw take
//! three more. Greedy decoding with argmax is a single pass.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::argmax::check_row;
pub use crate::ops::argmax::NO_TOKEN;
use crate::ops::Tensor;

const SHADER: Shader = Shader {
    name: "sample.wgsl",
    source: include_str!("../../shaders/sample.wgsl"),
};

/// How to turn logits into a distribution before drawing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    /// Divides the logits; must be finite and above 0 (greedy decoding is argmax).
    pub temperature: f32,
    /// Keep only the tokens at or above the k-th largest logit; 0 turns it off.
    pub top_k: u32,
    /// Keep the smallest top set carrying this share of the mass, in (0, 1]; 1 turns it off.
    pub top_p: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    row: u32,
    cols: u32,
    slot: u32,
    top_k: u32,
    top_p: f32,
    temperature: f32,
    u: f32,
    _pad: u32,
}

impl SampleParams {
    /// Fails unless the temperature, top_p and the uniform number `u` are in range.
    pub fn validate(&self, u: f32) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Parameter {
                op: "sample",
                message,
            })
        };
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return fail(format!(
                "temperature must be finite and above 0 (use argmax for greedy decoding); got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return fail(format!(
                "top_p must lie in (0, 1], 1 meaning off; got {}",
                self.top_p
            ));
        }
        if !(0.0..1.0).contains(&u) {
            return fail(format!("the uniform number u must lie in [0, 1); got {u}"));
        }
        Ok(())
    }
}

/// Records `output[slot] = a token drawn from logits[row, ..]` under `params` with the
/// uniform number `u`. `logits` is f32 `[.., vocab]`; `output` is a u32 tensor with
/// more than `slot` elements.
// The row, the slot and u are what change from one draw to the next; grouping them
// would only move the same eight arguments into a struct literal at every call.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    logits: &Tensor,
    row: usize,
    output: &Tensor,
    slot: usize,
    params: &SampleParams,
    u: f32,
) -> Result<()> {
    check_row("sample", logits, row, output, slot)?;
    params.validate(u)?;
    let uniform = Params {
        row: row as u32,
        cols: logits.cols() as u32,
        slot: slot as u32,
        top_k: params.top_k,
        top_p: params.top_p,
        temperature: params.temperature,
        u,
        _pad: 0,
    };
    let pipeline = ctx.pipeline(SHADER, &[])?;
    let uniform = ctx.uniform("sample params", &uniform);
    let bind = ctx.bind_group(&pipeline, &[&uniform, &logits.buffer, &output.buffer]);
    ctx.dispatch(encoder, &pipeline, &bind, (1, 1, 1));
    Ok(())
}

/// Order-preserving key of a logit (the kernel's `key_of`): 0 for NaN and `-inf`.
fn key_of(x: f32) -> u32 {
    if x.is_nan() || x == f32::NEG_INFINITY {
        return 0;
    }
    let bits = if x == 0.0 { 0 } else { x.to_bits() };
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The kept tokens of `row` under `params`, in token order, with their unnormalised
/// masses (semantics in the module documentation).
fn kept_masses(row: &[f32], params: &SampleParams) -> Vec<(u32, f64)> {
    let keys: Vec<u32> = row.iter().map(|&x| key_of(x)).collect();
    let mut descending: Vec<u32> = keys.iter().copied().filter(|&k| k > 0).collect();
    descending.sort_unstable_by(|a, b| b.cmp(a));
    let Some(&top) = descending.first() else {
        return Vec::new();
    };
    let k = params.top_k as usize;
    let mut threshold = if k > 0 && descending.len() > k {
        descending[k - 1]
    } else {
        1
    };
    let max = row[keys.iter().position(|&key| key == top).unwrap_or(0)].min(f32::MAX) as f64;
    let mass = |x: f32| ((x.min(f32::MAX) as f64 - max) / params.temperature as f64).exp();
    if params.top_p < 1.0 {
        let mut by_value: Vec<(u32, f64)> = keys
            .iter()
            .zip(row)
            .filter(|(&key, _)| key >= threshold)
            .map(|(&key, &x)| (key, mass(x)))
            .collect();
        by_value.sort_unstable_by_key(|&(key, _)| std::cmp::Reverse(key));
        let target = params.top_p as f64 * by_value.iter().map(|&(_, w)| w).sum::<f64>();
        let mut running = 0.0;
        for (i, &(key, w)) in by_value.iter().enumerate() {
            running += w;
            let group_ends = by_value.get(i + 1).is_none_or(|next| next.0 != key);
            if group_ends && running >= target {
                threshold = key;
                break;
            }
        }
    }
    keys.iter()
        .zip(row)
        .enumerate()
        .filter(|(_, (&key, _))| key >= threshold)
        .map(|(i, (_, &x))| (i as u32, mass(x)))
        .collect()
}

/// The distribution `sample` draws from: kept tokens in token order with their
/// probabilities renormalised over the kept set (empty when nothing is drawable).
pub fn distribution(row: &[f32], params: &SampleParams) -> Vec<(u32, f64)> {
    let kept = kept_masses(row, params);
    let total: f64 = kept.iter().map(|&(_, w)| w).sum();
    kept.into_iter()
        .map(|(token, w)| (token, w / total))
        .collect()
}

/// CPU reference: the token `encode` draws from `row` under `params` with `u`.
pub fn reference(row: &[f32], params: &SampleParams, u: f32) -> u32 {
    let kept = kept_masses(row, params);
    let target = u as f64 * kept.iter().map(|&(_, w)| w).sum::<f64>();
    let mut running = 0.0;
    for &(token, w) in &kept {
        running += w;
        if running > target {
            return token;
        }
    }
    kept.last().map_or(NO_TOKEN, |&(token, _)| token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::params_layout::{assert_matches_wgsl, rust_params};
    use crate::ops::testing::{ctx, random_f32, rng};
    use crate::ops::Elem;
    use rand::RngExt;

    #[test]
    fn params_match_the_wgsl_struct() {
        assert_matches_wgsl(
            SHADER,
            &[],
            rust_params!(Params {
                row,
                cols,
                slot,
                top_k,
                top_p,
                temperature,
                u
            }),
        );
    }

    /// How close (as a share of the mass) u or top_p may come to a cumulative boundary
    /// before f32 sums on the GPU may legitimately round to the other side.
    const BOUNDARY: f32 = 2e-5;

    /// Runs every `(row, params, u)` draw in one submission, each into its own slot
    /// of a poisoned output with a spare slot at the end that must stay untouched.
    fn draw_all(logits: &[f32], shape: &[usize], draws: &[(usize, SampleParams, f32)]) -> Vec<u32> {
        let ctx = ctx();
        let input = Tensor::from_f32(ctx, "logits", shape, logits).unwrap();
        let output = Tensor::new(ctx, "tokens", &[draws.len() + 1], Elem::U32).unwrap();
        output.poison(ctx);
        let mut enc = ctx.encoder();
        for (slot, (row, params, u)) in draws.iter().enumerate() {
            encode(ctx, &mut enc, &input, *row, &output, slot, params, *u).unwrap();
        }
        ctx.submit("sample test", enc).unwrap();
        let mut tokens = output.read_u32(ctx).unwrap();
        assert_eq!(
            tokens.pop(),
            Some(u32::MAX),
            "sample wrote outside its slots"
        );
        tokens
    }

    /// True when the reference's answer could flip within the rounding of f32 sums:
    /// u, or top_p, lies within BOUNDARY of a cumulative boundary.
    fn near_boundary(row: &[f32], params: &SampleParams, u: f32) -> bool {
        let below = reference(row, params, (u - BOUNDARY).max(0.0));
        let above = reference(row, params, (u + BOUNDARY).min(1.0 - f32::EPSILON));
        let kept = |top_p: f32| -> Vec<u32> {
            distribution(row, &SampleParams { top_p, ..*params })
                .iter()
                .map(|&(t, _)| t)
                .collect()
        };
        below != above
            || (params.top_p < 1.0
                && kept(params.top_p - BOUNDARY) != kept((params.top_p + BOUNDARY).min(1.0)))
    }

    /// Logits with features that stress the semantics: many exact ties (values on a
    /// 0.5 grid), a few dominant tokens, and masked (-inf) or NaN entries.
    fn awkward_logits(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
        let mut logits: Vec<f32> = random_f32(rng, n, 4.0)
            .iter()
            .map(|x| (x * 2.0).round() / 2.0)
            .collect();
        for _ in 0..(n / 500).max(1) {
            logits[rng.random_range(0..n)] = rng.random_range(6.0f32..12.0).round();
        }
        if n > 3 {
            logits[rng.random_range(0..n)] = f32::NEG_INFINITY;
            logits[rng.random_range(0..n)] = f32::NAN;
        }
        logits
    }

    const SETTINGS: &[SampleParams] = &[
        SampleParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        },
        SampleParams {
            temperature: 0.7,
            top_k: 40,
            top_p: 1.0,
        },
        SampleParams {
            temperature: 1.3,
            top_k: 0,
            top_p: 0.9,
        },
        SampleParams {
            temperature: 0.5,
            top_k: 5,
            top_p: 0.8,
        },
        SampleParams {
            temperature: 2.0,
            top_k: 1,
            top_p: 1.0,
        },
        SampleParams {
            temperature: 1.0,
            top_k: 3,
            top_p: 0.35,
        },
        SampleParams {
            temperature: 0.9,
            top_k: 100000,
            top_p: 0.97,
        },
    ];

    #[test]
    fn sample_matches_reference_except_at_rounding_boundaries() {
        let mut rng = rng(21);
        let mut cases = 0;
        let mut boundary_cases = 0;
        for &(rows, vocab, draws_per_setting) in &[
            (1, 1, 3),
            (2, 7, 12),
            (3, 33, 12),
            (2, 4864, 4),
            (2, 151936, 1),
        ] {
            let logits = awkward_logits(&mut rng, rows * vocab);
            let mut draws = Vec::new();
            for params in SETTINGS {
                for _ in 0..draws_per_setting {
                    draws.push((rng.random_range(0..rows), *params, rng.random::<f32>()));
                }
            }
            let got = draw_all(&logits, &[rows, vocab], &draws);
            for (&token, &(row, params, u)) in got.iter().zip(&draws) {
                let row_logits = &logits[row * vocab..(row + 1) * vocab];
                let what = format!("vocab {vocab} row {row} {params:?} u {u}");
                cases += 1;
                if near_boundary(row_logits, &params, u) {
                    boundary_cases += 1;
                } else {
                    assert_eq!(token, reference(row_logits, &params, u), "{what}");
                }
                let widest = SampleParams {
                    top_p: (params.top_p + BOUNDARY).min(1.0),
                    ..params
                };
                assert!(
                    distribution(row_logits, &widest)
                        .iter()
                        .any(|&(t, _)| t == token),
                    "{what}: token {token} not kept"
                );
                let logit = row_logits[token as usize];
                let above = row_logits.iter().filter(|&&x| x > logit).count();
                assert!(
                    params.top_k == 0 || above < params.top_k as usize,
                    "{what}: token {token} outside top-k"
                );
            }
        }
        assert!(
            boundary_cases * 20 <= cases,
            "{boundary_cases} of {cases} draws sat on a boundary: the check is too weak"
        );
    }

    #[test]
    fn sample_frequencies_follow_the_renormalised_distribution() {
        let logits = [0.3f32, 2.0, -1.0, 1.2, 2.0, 0.8, -0.4, 1.6, 0.0, 1.1];
        let params = SampleParams {
            temperature: 0.8,
            top_k: 6,
            top_p: 0.9,
        };
        let want = distribution(&logits, &params);
        assert!(
            want.len() >= 4 && want.len() < logits.len(),
            "the setting must truncate: {want:?}"
        );
        let draws = 800;
        let mut rng = rng(3);
        let uniform_draws: Vec<_> = (0..draws)
            .map(|_| (0, params, rng.random::<f32>()))
            .collect();
        let got = draw_all(&logits, &[logits.len()], &uniform_draws);
        let mut counts = vec![0usize; logits.len()];
        for &token in &got {
            counts[token as usize] += 1;
        }
        // Pearson's chi-square of the counts against `expected` probabilities (one per
        // token); a token drawn despite probability 0 makes it infinite.
        let chi_square = |expected: &[f64]| -> f64 {
            let draws = draws as f64;
            counts
                .iter()
                .zip(expected)
                .filter(|&(&c, &p)| c > 0 || p > 0.0)
                .map(|(&c, &p)| (c as f64 - p * draws).powi(2) / (p * draws))
                .sum()
        };
        let mut expected = vec![0.0; logits.len()];
        for &(token, p) in &want {
            expected[token as usize] = p;
        }
        let untruncated = distribution(
            &logits,
            &SampleParams {
                top_k: 0,
                top_p: 1.0,
                ..params
            },
        );
        let untruncated: Vec<f64> = untruncated.iter().map(|&(_, p)| p).collect();
        // With at most 5 degrees of freedom, chi-square exceeds 30 with probability
        // below 2e-5; the untruncated softmax, a plausible bug, must fail the same bound.
        let fit = chi_square(&expected);
        assert!(
            fit < 30.0,
            "frequencies {counts:?} do not follow {want:?} (chi-square {fit})"
        );
        let wrong = chi_square(&untruncated);
        assert!(
            wrong > 30.0,
            "the bound cannot tell the untruncated softmax apart (chi-square {wrong})"
        );
    }

    #[test]
    fn sample_keeps_ties_at_both_thresholds() {
        // Masses 1, 2, 4, 2, 1 (of 10) at temperature 1: top-p groups by value carry
        // 40%, then 80% (the two tied 2s), then 100% (the two tied 1s).
        let logits: Vec<f32> = [1.0f32, 2.0, 4.0, 2.0, 1.0]
            .iter()
            .map(|m| m.ln())
            .collect();
        let cases: &[(u32, f32, &[u32])] = &[
            (0, 0.399, &[2]),
            (0, 0.401, &[1, 2, 3]),
            (0, 0.799, &[1, 2, 3]),
            (0, 0.801, &[0, 1, 2, 3, 4]),
            (1, 1.0, &[2]),
            (2, 1.0, &[1, 2, 3]),
            (4, 1.0, &[0, 1, 2, 3, 4]),
            (2, 0.3, &[2]),
        ];
        // Row 1 repeats row 0 shifted by +300, where exp without the max subtracted
        // overflows f32.
        let rows: Vec<f32> = logits
            .iter()
            .chain(&logits)
            .enumerate()
            .map(|(i, &x)| if i < 5 { x } else { x + 300.0 })
            .collect();
        let mut draws = Vec::new();
        for &(top_k, top_p, kept) in cases {
            let params = SampleParams {
                temperature: 1.0,
                top_k,
                top_p,
            };
            for row in 0..2 {
                let tokens: Vec<u32> = distribution(&rows[row * 5..][..5], &params)
                    .iter()
                    .map(|&(t, _)| t)
                    .collect();
                assert_eq!(
                    tokens, kept,
                    "reference keeps the wrong set for {params:?} on row {row}"
                );
                draws.extend((0..10).map(|i| (row, params, 0.03 + 0.1 * i as f32)));
            }
        }
        let got = draw_all(&rows, &[2, 5], &draws);
        for (&token, &(row, params, u)) in got.iter().zip(&draws) {
            assert_eq!(
                token,
                reference(&rows[row * 5..][..5], &params, u),
                "{params:?} row {row} u {u}"
            );
        }
    }

    #[test]
    fn sample_yields_no_token_for_a_row_with_nothing_drawable() {
        let mut row = vec![f32::NEG_INFINITY; 40];
        row[7] = f32::NAN;
        let params = SampleParams {
            temperature: 1.0,
            top_k: 5,
            top_p: 0.5,
        };
        assert_eq!(reference(&row, &params, 0.3), NO_TOKEN);
        assert_eq!(draw_all(&row, &[40], &[(0, params, 0.3)]), vec![NO_TOKEN]);
    }

    #[test]
    fn sample_rejects_greedy_temperature_bad_top_p_and_u() {
        let ctx = ctx();
        let logits = Tensor::new(ctx, "logits", &[2, 5], Elem::F32).unwrap();
        let output = Tensor::new(ctx, "token", &[1], Elem::U32).unwrap();
        let ok = SampleParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        };
        let err = |params: SampleParams, u: f32| {
            encode(ctx, &mut ctx.encoder(), &logits, 1, &output, 0, &params, u)
                .unwrap_err()
                .to_string()
        };
        assert!(err(
            SampleParams {
                temperature: 0.0,
                ..ok
            },
            0.5
        )
        .starts_with("sample: temperature must be finite and above 0"));
        assert!(err(
            SampleParams {
                temperature: f32::NAN,
                ..ok
            },
            0.5
        )
        .starts_with("sample: temperature"));
        assert!(err(SampleParams { top_p: 0.0, ..ok }, 0.5)
            .starts_with("sample: top_p must lie in (0, 1]"));
        assert!(err(SampleParams { top_p: 1.5, ..ok }, 0.5).starts_with("sample: top_p"));
        assert_eq!(
            err(ok, 1.0),
            "sample: the uniform number u must lie in [0, 1); got 1"
        );
        assert!(err(ok, -0.25).starts_with("sample: the uniform number u"));
        let e = encode(ctx, &mut ctx.encoder(), &logits, 2, &output, 0, &ok, 0.5).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sample: logits [2, 5] have 2 non-empty rows"),
            "{e}"
        );
    }
}
