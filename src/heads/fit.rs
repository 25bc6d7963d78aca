//! Fitting a verdict head: L2-regularised logistic regression on standardised
//! features (the objective scikit-learn's `LogisticRegression(C=…)` minimises, its
//! intercept unpenalised), solved by L-BFGS; Platt calibration; stratified folds.
//!
//! Written here rather than taken from a crate: the whole fit is ~200 lines over
//! plain slices, runs unchanged in wasm (the browser trains heads), and the
//! maintained Rust options (linfa-logistic) bring ndarray and argmin for the same
//! result. Its optimum is checked against scikit-learn's in the tests.

use crate::error::{Error, Result};

/// Feature means and standard deviations (a zero deviation becomes 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Standardiser {
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
}

impl Standardiser {
    /// The mean and (population) standard deviation of each column of `rows`.
    pub fn fit(rows: &[&[f32]]) -> Result<Standardiser> {
        let first = rows
            .first()
            .ok_or_else(|| Error::InvalidInput("no rows to standardise".into()))?;
        let d = first.len();
        let n = rows.len() as f64;
        let mut mean = vec![0f64; d];
        for row in rows {
            if row.len() != d {
                return Err(Error::InvalidInput(format!(
                    "feature rows differ in length ({} and {d})",
                    row.len()
                )));
            }
            for (m, &x) in mean.iter_mut().zip(row.iter()) {
                *m += x as f64 / n;
            }
        }
        let mut var = vec![0f64; d];
        for row in rows {
            for ((v, &x), m) in var.iter_mut().zip(row.iter()).zip(&mean) {
                *v += (x as f64 - m).powi(2) / n;
            }
        }
        Ok(Standardiser {
            mean: mean.iter().map(|&m| m as f32).collect(),
            scale: var
                .iter()
                .map(|&v| if v > 1e-12 { v.sqrt() as f32 } else { 1.0 })
                .collect(),
        })
    }

    /// `row` standardised, in f64.
    pub fn apply(&self, row: &[f32]) -> Vec<f64> {
        row.iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .map(|((&x, &m), &s)| ((x - m) / s) as f64)
            .collect()
    }
}

/// A fitted logistic regression: P(y = 1) = sigmoid(w · x + b).
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub bias: f64,
}

/// Numerically stable log(1 + e^x).
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl Logistic {
    /// w · x + b.
    pub fn score(&self, x: &[f64]) -> f64 {
        self.weights.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() + self.bias
    }

    /// Minimises Σ log(1 + exp(-s_i (w·x_i + b))) + ‖w‖² / (2C) with s_i = ±1 for
    /// `labels[i]` true/false, by L-BFGS to a gradient norm below 1e-8 (relative).
    pub fn fit(x: &[Vec<f64>], labels: &[bool], c: f64) -> Result<Logistic> {
        if x.is_empty() || x.len() != labels.len() {
            return Err(Error::InvalidInput(format!(
                "{} feature rows for {} labels",
                x.len(),
                labels.len()
            )));
        }
        if !(c > 0.0 && c.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "the regularisation C must be positive, got {c}"
            )));
        }
        let d = x[0].len();
        // Parameters: d weights then the bias.
        let objective = |p: &[f64], grad: &mut [f64]| -> f64 {
            let (w, b) = (&p[..d], p[d]);
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut loss = 0.0;
            for (row, &y) in x.iter().zip(labels) {
                let sign = if y { 1.0 } else { -1.0 };
                let z = row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + b;
                loss += softplus(-sign * z);
                // d/dz softplus(-s z) = -s · sigmoid(-s z)
                let dz = -sign * sigmoid(-sign * z);
                for (g, a) in grad[..d].iter_mut().zip(row) {
                    *g += dz * a;
                }
                grad[d] += dz;
            }
            for (g, w) in grad[..d].iter_mut().zip(w) {
                *g += w / c;
            }
            loss + w.iter().map(|w| w * w).sum::<f64>() / (2.0 * c)
        };
        let p = lbfgs(vec![0.0; d + 1], objective, 2000)?;
        Ok(Logistic {
            weights: p[..d].to_vec(),
            bias: p[d],
        })
    }
}

/// Minimises `f` (which writes its gradient) from `start` by L-BFGS (memory 10)
/// with a backtracking Armijo line search.
fn lbfgs(
    start: Vec<f64>,
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    max_iterations: usize,
) -> Result<Vec<f64>> {
    const MEMORY: usize = 10;
    let n = start.len();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut x = start;
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let g0 = dot(&g, &g).sqrt().max(1.0);
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    for _ in 0..max_iterations {
        if dot(&g, &g).sqrt() <= 1e-8 * g0 {
            return Ok(x);
        }
        // Two-loop recursion: direction = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let alpha = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(q, y)| *q -= alpha * y);
            alphas.push(alpha);
        }
        if let Some((s, y, _)) = history.last() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|q| *q *= gamma);
        }
        for ((s, y, rho), alpha) in history.iter().zip(alphas.iter().rev()) {
            let beta = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(q, s)| *q += (alpha - beta) * s);
        }
        let mut direction: Vec<f64> = q.iter().map(|q| -q).collect();
        let mut slope = dot(&g, &direction);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from the gradient.
            history.clear();
            direction = g.iter().map(|g| -g).collect();
            slope = dot(&g, &direction);
        }
        let mut step = 1.0;
        let mut next = vec![0.0; n];
        let mut next_g = vec![0.0; n];
        let next_f = loop {
            next.iter_mut()
                .zip(&x)
                .zip(&direction)
                .for_each(|((n, x), d)| *n = x + step * d);
            let value = f(&next, &mut next_g);
            if value <= fx + 1e-4 * step * slope {
                break value;
            }
            step *= 0.5;
            if step < 1e-20 {
                // No further progress is possible at this precision.
                return Ok(x);
            }
        };
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = next_g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if history.len() == MEMORY {
                history.remove(0);
            }
            history.push((s, y, 1.0 / sy));
        }
        x = next;
        g = next_g;
        fx = next_f;
    }
    if x.iter().all(|v| v.is_finite()) {
        Ok(x)
    } else {
        Err(Error::InvalidInput(
            "the logistic regression diverged (non-finite weights)".into(),
        ))
    }
}

/// Platt calibration of raw scores: (a, b) with P(y = 1) = sigmoid(a·score + b),
/// fitted by (lightly regularised) logistic regression of the labels on the scores.
pub fn platt(scores: &[f64], labels: &[bool]) -> Result<(f64, f64)> {
    let x: Vec<Vec<f64>> = scores.iter().map(|&s| vec![s]).collect();
    let fit = Logistic::fit(&x, labels, 1e4)?;
    Ok((fit.weights[0], fit.bias))
}

/// `folds` stratified folds of the indices 0..labels.len(): each label's indices
/// shuffled by `seed` and dealt round-robin, so every fold gets both labels in
/// proportion.
pub fn stratified_folds(labels: &[bool], folds: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); folds.max(1)];
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        // Fisher–Yates with splitmix64.
        for i in (1..idx.len()).rev() {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            idx.swap(i, (z % (i as u64 + 1)) as usize);
        }
        let offset = out.iter().map(Vec::len).sum::<usize>();
        for (k, i) in idx.into_iter().enumerate() {
            let len = out.len();
            out[(k + offset) % len].push(i);
        }
    }
    out.iter_mut().for_each(|f| f.sort_unstable());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lbfgs_reaches_the_optimum_where_the_gradient_vanishes() {
        // Two overlapping classes: a finite optimum.
        let x: Vec<Vec<f64>> = (0..40)
            .map(|i| vec![(i as f64 * 0.37).sin(), (i as f64 * 0.11).cos()])
            .collect();
        let y: Vec<bool> = (0..40).map(|i| (i * 7) % 5 < 2).collect();
        let fit = Logistic::fit(&x, &y, 0.5).unwrap();
        // The gradient of the objective at the fit is ~0.
        let mut grad = [0.0f64; 3];
        for (row, &label) in x.iter().zip(&y) {
            let p = sigmoid(fit.score(row));
            let r = p - if label { 1.0 } else { 0.0 };
            grad[0] += r * row[0];
            grad[1] += r * row[1];
            grad[2] += r;
        }
        grad[0] += fit.weights[0] / 0.5;
        grad[1] += fit.weights[1] / 0.5;
        assert!(grad.iter().all(|g| g.abs() < 1e-6), "{grad:?}");
    }

    #[test]
    fn folds_are_stratified_and_cover_every_index_once() {
        let labels: Vec<bool> = (0..23).map(|i| i % 3 == 0).collect();
        let folds = stratified_folds(&labels, 5, 7);
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        for fold in &folds {
            let positives = fold.iter().filter(|&&i| labels[i]).count();
            assert!((1..=2).contains(&positives), "{folds:?}");
        }
        assert_eq!(folds, stratified_folds(&labels, 5, 7));
        assert_ne!(folds, stratified_folds(&labels, 5, 8));
    }

    #[test]
    fn platt_recovers_a_known_calibration() {
        // Labels drawn deterministically with P = sigmoid(2 s - 1).
        let mut state = 12345u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let scores: Vec<f64> = (0..4000).map(|i| (i as f64 / 4000.0) * 6.0 - 3.0).collect();
        let labels: Vec<bool> = scores
            .iter()
            .map(|&s| uniform() < sigmoid(2.0 * s - 1.0))
            .collect();
        let (a, b) = platt(&scores, &labels).unwrap();
        assert!(
            (a - 2.0).abs() < 0.25 && (b + 1.0).abs() < 0.2,
            "a {a} b {b}"
        );
    }
}
