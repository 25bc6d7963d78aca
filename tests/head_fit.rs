//! The verdict head's logistic regression against scikit-learn's on the same
//! standardised features: coefficients within 1e-3 of each other and test accuracy
//! within 1e-3, for each regularisation strength the training grid uses.
//!
//! Needs python3 with scikit-learn (pinned in `.ci/run`).

use std::io::Write;
use std::process::{Command, Stdio};

use safetyj::heads::fit::{Logistic, Standardiser};

/// A deterministic xorshift generator of standard normal values (Box–Muller).
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// `n` rows of `d` features as a judge's hidden state might give them: unequal
/// scales and offsets, the label shifting a few directions, overlapping classes.
fn dataset(normal: &mut Normal, n: usize, d: usize) -> (Vec<Vec<f32>>, Vec<bool>) {
    let labels: Vec<bool> = (0..n).map(|i| (i * 7) % 5 < 2).collect();
    let rows = labels
        .iter()
        .map(|&unsafe_| {
            (0..d)
                .map(|j| {
                    let shift = if unsafe_ && j % 5 == 0 { 0.8 } else { 0.0 };
                    ((normal.sample() + shift) * (1.0 + j as f64 * 0.3) + j as f64) as f32
                })
                .collect()
        })
        .collect();
    (rows, labels)
}

/// scikit-learn's fit: (coefficients, intercept, version).
fn sklearn_fit(x: &[Vec<f64>], y: &[bool], c: f64) -> (Vec<f64>, f64, String) {
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/heads/sklearn_fit.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let problem = serde_json::json!({ "x": x, "y": y, "c": c });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(problem.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the scikit-learn reference failed (pip install scikit-learn==1.5.2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let coef = fit["coef"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (
        coef,
        fit["intercept"].as_f64().unwrap(),
        fit["version"].as_str().unwrap().to_string(),
    )
}

fn accuracy(scores: impl Iterator<Item = f64>, labels: &[bool]) -> f64 {
    let right = scores.zip(labels).filter(|(s, &y)| (*s > 0.0) == y).count();
    right as f64 / labels.len() as f64
}

#[test]
fn the_head_fit_equals_scikit_learn_s() {
    let mut normal = Normal(0x5eed_1234_abcd);
    let (train, train_y) = dataset(&mut normal, 240, 24);
    let (test, test_y) = dataset(&mut normal, 160, 24);
    let rows: Vec<&[f32]> = train.iter().map(Vec::as_slice).collect();
    let standardiser = Standardiser::fit(&rows).unwrap();
    let x: Vec<Vec<f64>> = train.iter().map(|r| standardiser.apply(r)).collect();
    let x_test: Vec<Vec<f64>> = test.iter().map(|r| standardiser.apply(r)).collect();
    for c in [0.003, 0.03, 0.3, 1.0] {
        let ours = Logistic::fit(&x, &train_y, c).unwrap();
        let (coef, intercept, version) = sklearn_fit(&x, &train_y, c);
        let largest = coef.iter().fold(1.0f64, |m, w| m.max(w.abs()));
        let diff = ours
            .weights
            .iter()
            .zip(&coef)
            .map(|(a, b)| (a - b).abs())
            .fold((ours.bias - intercept).abs(), f64::max);
        assert!(
            diff <= 1e-3 * largest,
            "C {c}: coefficients differ by {diff} from scikit-learn {version}'s (largest {largest})"
        );
        let theirs = Logistic {
            weights: coef,
            bias: intercept,
        };
        let (a, b) = (
            accuracy(x_test.iter().map(|r| ours.score(r)), &test_y),
            accuracy(x_test.iter().map(|r| theirs.score(r)), &test_y),
        );
        assert!(
            (a - b).abs() <= 1e-3,
            "C {c}: test accuracy {a} against scikit-learn's {b}"
        );
        // Not a trivial problem: the head beats chance and is not perfect.
        assert!(a > 0.6 && a < 1.0, "C {c}: test accuracy {a}");
    }
}
