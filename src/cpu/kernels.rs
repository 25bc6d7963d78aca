//! The CPU engine's non-matmul steps over f32 rows: RMS norm, rotary embedding,
//! causal attention over the KV cache and SwiGLU, parallel over rows or heads with
//! rayon. Each computes what the GPU op of the same name does (see `crate::ops`).

use rayon::prelude::*;

use crate::ops::rope::{RopeConfig, RopePairing};

/// Rows of `cols` values: each divided by its root mean square (summed in f64, as
/// the GPU op) and scaled by `weight`, into `out`.
pub fn rms_norm(input: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let cols = weight.len();
    out.par_chunks_mut(cols)
        .zip(input.par_chunks(cols))
        .for_each(|(y, x)| {
            let mean_sq = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / cols as f64;
            let scale = (1.0 / (mean_sq + eps as f64).sqrt()) as f32;
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(weight) {
                *y = x * scale * w;
            }
        });
}

/// The rotation of each (row, frequency) of a step: `(cos, sin)` of position × the
/// frequency, computed in f64 and stored as f32, `rotary_dim / 2` per row.
pub struct RopeTable {
    half: usize,
    cos_sin: Vec<(f32, f32)>,
}

impl RopeTable {
    /// The table for `rows` tokens from position `first`.
    pub fn new(config: &RopeConfig, first: usize, rows: usize) -> RopeTable {
        let half = config.rotary_dim / 2;
        let freqs: Vec<f64> = (0..half).map(|i| config.inv_freq(i)).collect();
        let cos_sin = (first..first + rows)
            .flat_map(|p| {
                freqs.iter().map(move |f| {
                    let (sin, cos) = (p as f64 * f).sin_cos();
                    (cos as f32, sin as f32)
                })
            })
            .collect();
        RopeTable { half, cos_sin }
    }

    /// Rotates `x` (rows of `heads` × `config.head_dim`) in place.
    pub fn apply(&self, config: &RopeConfig, x: &mut [f32], heads: usize) {
        let half = self.half;
        x.par_chunks_mut(heads * config.head_dim)
            .zip(self.cos_sin.par_chunks(half))
            .for_each(|(row, table)| {
                for head in row.chunks_mut(config.head_dim) {
                    for (i, &(cos, sin)) in table.iter().enumerate() {
                        let (a, b) = match config.pairing {
                            RopePairing::Interleaved => (2 * i, 2 * i + 1),
                            RopePairing::Neox => (i, i + half),
                        };
                        let (x0, x1) = (head[a], head[b]);
                        head[a] = x0 * cos - x1 * sin;
                        head[b] = x0 * sin + x1 * cos;
                    }
                }
            });
    }
}

/// One layer's cached keys and values, `[kv_heads, capacity, head_dim]` each.
pub struct KvCache {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// The shape of attention: heads, KV heads, dims per head, cache capacity.
#[derive(Clone, Copy)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub capacity: usize,
}

impl KvCache {
    /// An empty cache (zeroed pages are only touched as positions fill).
    pub fn new(s: AttentionShape) -> KvCache {
        let n = s.kv_heads * s.capacity * s.head_dim;
        KvCache {
            k: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// Writes rows of `k` and `v` (`[tokens, kv_heads * head_dim]`) at positions
    /// from `first`.
    pub fn append(&mut self, s: AttentionShape, k: &[f32], v: &[f32], first: usize) {
        let width = s.kv_heads * s.head_dim;
        for (t, (k_row, v_row)) in k.chunks(width).zip(v.chunks(width)).enumerate() {
            for h in 0..s.kv_heads {
                let at = (h * s.capacity + first + t) * s.head_dim;
                let from = h * s.head_dim..(h + 1) * s.head_dim;
                self.k[at..at + s.head_dim].copy_from_slice(&k_row[from.clone()]);
                self.v[at..at + s.head_dim].copy_from_slice(&v_row[from]);
            }
        }
    }
}

/// Dot product with eight independent sums, so the compiler vectorizes it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Causal attention of `q` (`[tokens, heads * head_dim]`, token `t` at position
/// `first + t`) over the cache's positions up to each token's own, softmax in f32,
/// into `out` (same shape as `q`). Query head `h` reads KV head
/// `h / (heads / kv_heads)`.
pub fn attention(
    s: AttentionShape,
    cache: &KvCache,
    q: &[f32],
    first: usize,
    scale: f32,
    out: &mut [f32],
) {
    let group = s.heads / s.kv_heads;
    let d = s.head_dim;
    out.par_chunks_mut(d)
        .zip(q.par_chunks(d))
        .enumerate()
        .for_each_init(Vec::new, |scores, (i, (o, qh))| {
            let (t, head) = (i / s.heads, i % s.heads);
            let keys = first + t + 1;
            let base = (head / group) * s.capacity * d;
            let k = &cache.k[base..base + keys * d];
            let v = &cache.v[base..base + keys * d];
            scores.clear();
            scores.extend(k.chunks_exact(d).map(|kp| dot(qh, kp) * scale));
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for w in scores.iter_mut() {
                *w = (*w - max).exp();
                total += *w;
            }
            o.fill(0.0);
            for (&w, vp) in scores.iter().zip(v.chunks_exact(d)) {
                for (o, &x) in o.iter_mut().zip(vp) {
                    *o += w * x;
                }
            }
            let inv = 1.0 / total;
            o.iter_mut().for_each(|o| *o *= inv);
        });
}

/// `silu(gate) * up`, element by element, into `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    gate.par_chunks_mut(4096)
        .zip(up.par_chunks(4096))
        .for_each(|(g, u)| {
            for (g, &u) in g.iter_mut().zip(u) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
        });
}
