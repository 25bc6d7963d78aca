//! Causal grouped-query attention of new queries over a layer's [`KvCache`], with an
//! online (flash-style) softmax so that no `[queries, keys]` score matrix is stored.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::kv_append::KvCache;
use crate::ops::{Elem, Position, Tensor};

const SHADER: Shader = Shader {
    name: "attention.wgsl",
    source: include_str!("../../shaders/attention.wgsl"),
};

/// Largest head dimension the kernels hold per invocation.
pub const MAX_HEAD_DIM: usize = 256;

/// Query rows (query × head-of-group pairs) per prefill workgroup; `ROWS` in the shader.
const PREFILL_ROWS: usize = 8;
/// Key tile sizes the prefill kernel tries, largest first, until its tiles fit the
/// device's workgroup memory. Each is a multiple of the shader's 16 lanes per row.
const PREFILL_KEY_TILES: [usize; 3] = [64, 32, 16];
/// Keys one decode workgroup covers; longer contexts are split over workgroups and
/// merged by the combine pass.
const DECODE_SPLIT_KEYS: usize = 256;
/// Values per split record in the decode partials: running max, running sum, then
/// the unnormalised output vector.
const PARTIAL_HEADER: usize = 2;

/// Which kernel computes the attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Tiles of queries per workgroup, sharing K/V tiles staged in workgroup memory.
    Prefill,
    /// Keys spread over a workgroup and split over several, then a combine pass.
    Decode,
}

impl Kernel {
    /// The kernel [`encode`] uses for `queries` new tokens. This is the one place the
    /// choice is made: a single query (token-by-token generation) has no query tile to
    /// share K/V loads with, so it takes the decode kernel, which instead spreads the
    /// keys over many invocations; two or more queries take the prefill kernel.
    pub fn for_queries(queries: usize) -> Kernel {
        if queries == 1 {
            Kernel::Decode
        } else {
            Kernel::Prefill
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    queries: u32,
    n_heads: u32,
    group: u32,
    capacity: u32,
    split_keys: u32,
    scale: f32,
}

/// Records `out = softmax(scale · q Kᵀ + causal mask) V` for every head. `q` and `out`
/// are `[T, n_heads * head_dim]` f32; query row `t` sits at position `position + t`
/// and attends to cache positions `0 ..= position + t`, which must already hold
/// keys and values (see `kv_append`). Head `h` reads kv head `h / (n_heads / kv_heads)`.
/// The kernel is picked by [`Kernel::for_queries`].
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    q: &Tensor,
    cache: &KvCache,
    out: &Tensor,
    position: &Position,
    scale: f32,
) -> Result<()> {
    encode_with(
        ctx,
        encoder,
        Kernel::for_queries(q.rows()),
        q,
        cache,
        out,
        position,
        scale,
    )
}

/// [`encode`] with the kernel given instead of chosen (both accept any number of queries).
#[allow(clippy::too_many_arguments)]
pub fn encode_with(
    ctx: &Context,
    encoder: &mut Encoder,
    kernel: Kernel,
    q: &Tensor,
    cache: &KvCache,
    out: &Tensor,
    position: &Position,
    scale: f32,
) -> Result<()> {
    q.expect_elem("attention", "q", Elem::F32)?;
    out.expect_elem("attention", "out", Elem::F32)?;
    let (kv_heads, capacity, head_dim) = (cache.kv_heads(), cache.capacity(), cache.head_dim());
    let shape_error = |message: String| Error::Shape {
        op: "attention",
        message,
    };
    if head_dim == 0 || head_dim > MAX_HEAD_DIM || kv_heads == 0 {
        return Err(shape_error(format!(
            "the KV cache {:?} needs 1 to {MAX_HEAD_DIM} values per head and at least one head",
            cache.k.shape
        )));
    }
    let n_heads = q.cols() / head_dim;
    if q.shape.len() != 2
        || !q.cols().is_multiple_of(head_dim)
        || n_heads == 0
        || !n_heads.is_multiple_of(kv_heads)
    {
        return Err(shape_error(format!(
            "q {:?} must be [T, n_heads * {head_dim}] with n_heads a multiple of the cache's {kv_heads} kv heads",
            q.shape
        )));
    }
    if out.shape != q.shape || cache.v.shape != cache.k.shape {
        return Err(shape_error(format!(
            "q {:?} needs an out of the same shape and equal key and value caches; got out {:?}, caches {:?} and {:?}",
            q.shape, out.shape, cache.k.shape, cache.v.shape
        )));
    }
    let queries = q.rows();
    let pos_offset = position.value();
    if pos_offset + queries > capacity {
        return Err(shape_error(format!(
            "queries at positions {pos_offset}..{} do not fit the KV cache capacity of {capacity} positions",
            pos_offset + queries
        )));
    }
    if queries == 0 {
        return Ok(());
    }
    let kv_len = pos_offset + queries;
    let splits = kv_len.div_ceil(DECODE_SPLIT_KEYS);
    let params = Params {
        queries: queries as u32,
        n_heads: n_heads as u32,
        group: (n_heads / kv_heads) as u32,
        capacity: capacity as u32,
        split_keys: DECODE_SPLIT_KEYS as u32,
        scale,
    };
    let uniform = ctx.uniform("attention params", &params);
    let head_define = ("HEAD_DIM", head_dim.to_string());
    match kernel {
        Kernel::Prefill => {
            let key_tile = prefill_key_tile(ctx, head_dim)?;
            let pipeline = ctx.pipeline(
                SHADER,
                &[
                    ("PREFILL", String::new()),
                    head_define,
                    ("KEY_TILE", key_tile.to_string()),
                ],
            )?;
            let bind = ctx.bind_group(
                &pipeline,
                &[
                    &uniform,
                    position.buffer(),
                    &q.buffer,
                    &cache.k.buffer,
                    &cache.v.buffer,
                    &out.buffer,
                ],
            );
            let row_tiles = (queries * n_heads / kv_heads).div_ceil(PREFILL_ROWS);
            ctx.dispatch(
                encoder,
                &pipeline,
                &bind,
                ((row_tiles * kv_heads) as u32, 1, 1),
            );
        }
        Kernel::Decode => {
            let records = queries * n_heads * splits;
            let partial_bytes = (records * (head_dim + PARTIAL_HEADER) * 4) as u64;
            ctx.check_binding("attention decode partials", partial_bytes)?;
            let partial = ctx.scratch_buffer("attention decode partials", partial_bytes)?;
            let decode = ctx.pipeline(SHADER, &[("DECODE", String::new()), head_define.clone()])?;
            let bind = ctx.bind_group(
                &decode,
                &[
                    &uniform,
                    position.buffer(),
                    &q.buffer,
                    &cache.k.buffer,
                    &cache.v.buffer,
                    &partial,
                ],
            );
            ctx.dispatch(encoder, &decode, &bind, (records as u32, 1, 1));
            let combine = ctx.pipeline(SHADER, &[("COMBINE", String::new()), head_define])?;
            let bind = ctx.bind_group(
                &combine,
                &[&uniform, position.buffer(), &partial, &out.buffer],
            );
            ctx.dispatch(encoder, &combine, &bind, ((queries * n_heads) as u32, 1, 1));
        }
    }
    Ok(())
}

/// The largest prefill key tile whose workgroup memory (query tile, padded K/V tile and
/// scores) fits the device, or a limit error naming the smallest one's need.
fn prefill_key_tile(ctx: &Context, head_dim: usize) -> Result<usize> {
    let bytes = |key_tile: usize| {
        4 * (PREFILL_ROWS * head_dim + key_tile * (head_dim + 1) + PREFILL_ROWS * key_tile) as u64
    };
    let limit = ctx.caps.max_workgroup_storage_bytes as u64;
    match PREFILL_KEY_TILES.iter().find(|&&tile| bytes(tile) <= limit) {
        Some(&tile) => Ok(tile),
        None => Err(Error::Limit {
            what: format!("attention prefill tiles for head_dim {head_dim}"),
            needed: bytes(PREFILL_KEY_TILES[PREFILL_KEY_TILES.len() - 1]),
            limit,
            limit_name: "max_compute_workgroup_storage_size",
        }),
    }
}

/// CPU reference with a full softmax in f64. `q` is `[T, n_heads * head_dim]`; the
/// caches are `[kv_heads, capacity, head_dim]` (see [`KvCache`]); returns `[T, n_heads * head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    n_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    pos_offset: usize,
    scale: f32,
) -> Vec<f32> {
    let capacity = k_cache.len() / (kv_heads * head_dim);
    let group = n_heads / kv_heads;
    let mut out = Vec::with_capacity(q.len());
    for (t, q_row) in q.chunks(n_heads * head_dim).enumerate() {
        let keys = pos_offset + t + 1;
        for (head, qh) in q_row.chunks(head_dim).enumerate() {
            let base = (head / group) * capacity * head_dim;
            let row = |cache: &[f32], p: usize| {
                cache[base + p * head_dim..base + (p + 1) * head_dim].to_vec()
            };
            let scores: Vec<f64> = (0..keys)
                .map(|p| {
                    let dot: f64 = qh
                        .iter()
                        .zip(row(k_cache, p))
                        .map(|(&a, b)| a as f64 * b as f64)
                        .sum();
                    dot * scale as f64
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut acc = vec![0f64; head_dim];
            for (p, w) in weights.iter().enumerate() {
                for (a, v) in acc.iter_mut().zip(row(v_cache, p)) {
                    *a += w * v as f64;
                }
            }
            out.extend(acc.iter().map(|a| (a / total) as f32));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::kv_append;
    use crate::ops::params_layout::{assert_matches_wgsl, rust_params};
    use crate::ops::testing::{assert_close, ctx, random_f32, rng};

    #[test]
    fn params_match_the_wgsl_struct() {
        assert_matches_wgsl(
            SHADER,
            &[
                ("PREFILL", String::new()),
                ("HEAD_DIM", "64".to_string()),
                ("KEY_TILE", "16".to_string()),
            ],
            rust_params!(Params {
                queries,
                n_heads,
                group,
                capacity,
                split_keys,
                scale
            }),
        );
    }

    /// Both kernels accumulate in f32 in another order than the f64 reference.
    const ATOL: f32 = 2e-5;
    const RTOL: f32 = 1e-4;

    /// (n_heads, kv_heads) pairs: Qwen2-0.5B 14/2, 12/2, plain multi-head, multi-query.
    const HEAD_GROUPS: [(usize, usize); 4] = [(14, 2), (12, 2), (4, 4), (8, 1)];
    const HEAD_DIMS: [usize; 3] = [64, 128, 40];

    /// Runs `kernel` on random q and a random cache filled to its whole capacity (so any
    /// read past the causal limit changes the result) and compares with the reference.
    fn check(
        kernel: Kernel,
        heads: (usize, usize),
        head_dim: usize,
        queries: usize,
        pos_offset: usize,
        seed: u64,
    ) {
        let ctx = ctx();
        let mut rng = rng(seed);
        let (n_heads, kv_heads) = heads;
        let capacity = pos_offset + queries + 3;
        let cache_shape = [kv_heads, capacity, head_dim];
        let k_host = random_f32(&mut rng, kv_heads * capacity * head_dim, 1.0);
        let v_host = random_f32(&mut rng, kv_heads * capacity * head_dim, 1.0);
        let q_host = random_f32(&mut rng, queries * n_heads * head_dim, 1.0);
        let cache = KvCache {
            k: Tensor::from_f32(ctx, "k cache", &cache_shape, &k_host).unwrap(),
            v: Tensor::from_f32(ctx, "v cache", &cache_shape, &v_host).unwrap(),
        };
        let q = Tensor::from_f32(ctx, "q", &[queries, n_heads * head_dim], &q_host).unwrap();
        let out = Tensor::new(ctx, "out", &[queries, n_heads * head_dim], Elem::F32).unwrap();
        out.poison(ctx);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let position = Position::new(ctx, pos_offset).unwrap();
        let mut enc = ctx.encoder();
        encode_with(ctx, &mut enc, kernel, &q, &cache, &out, &position, scale).unwrap();
        ctx.submit("attention test", enc).unwrap();
        let want = reference(
            &q_host, &k_host, &v_host, n_heads, kv_heads, head_dim, pos_offset, scale,
        );
        let what = format!(
            "{kernel:?} heads {n_heads}/{kv_heads} dim {head_dim} T {queries} at {pos_offset}"
        );
        assert_close(&what, &out.read_f32(ctx).unwrap(), &want, ATOL, RTOL);
    }

    #[test]
    fn prefill_matches_reference() {
        let mut seed = 0;
        for heads in HEAD_GROUPS {
            for head_dim in HEAD_DIMS {
                for queries in [1, 7, 33] {
                    for pos_offset in [0, 45] {
                        seed += 1;
                        check(Kernel::Prefill, heads, head_dim, queries, pos_offset, seed);
                    }
                }
            }
        }
    }

    #[test]
    fn decode_matches_reference() {
        let mut seed = 100;
        for heads in HEAD_GROUPS {
            for head_dim in HEAD_DIMS {
                for kv_len in [1, 7, 300, 1000] {
                    seed += 1;
                    check(Kernel::Decode, heads, head_dim, 1, kv_len - 1, seed);
                }
            }
        }
    }

    /// Many queries through the decode kernel (several splits, empty splits), and the
    /// smallest and largest head dims through both. With lavapipe's 32 KiB of
    /// workgroup memory, head dims 64, 128 and 256 take prefill key tiles 64, 32 and 16,
    /// so the tests above and here cover every tile size.
    #[test]
    fn decode_kernel_handles_several_queries_and_extreme_dims() {
        check(Kernel::Decode, (14, 2), 64, 7, 0, 201);
        check(Kernel::Decode, (12, 2), 128, 33, 290, 202);
        check(Kernel::Decode, (4, 4), 2, 5, 511, 203);
        check(Kernel::Prefill, (4, 4), 2, 5, 511, 204);
        check(Kernel::Prefill, (8, 1), 256, 9, 20, 205);
        check(Kernel::Decode, (8, 1), 256, 2, 20, 206);
    }

    #[test]
    fn one_query_decodes_and_more_prefill() {
        assert_eq!(Kernel::for_queries(1), Kernel::Decode);
        assert_eq!(Kernel::for_queries(2), Kernel::Prefill);
        assert_eq!(Kernel::for_queries(33), Kernel::Prefill);
    }

    /// A prompt prefilled in two chunks, then tokens decoded one at a time, each step
    /// appending its keys and values first, as the forward pass does.
    #[test]
    fn kv_append_then_attention_follows_a_generation() {
        let ctx = ctx();
        let mut rng = rng(300);
        let (n_heads, kv_heads, head_dim, capacity) = (14, 2, 64, 48);
        let row = kv_heads * head_dim;
        let cache = KvCache::new(ctx, "cache", kv_heads, capacity, head_dim).unwrap();
        let mut k_host = vec![0f32; kv_heads * capacity * head_dim];
        let mut v_host = k_host.clone();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut pos = 0;
        let mut position = Position::new(ctx, 0).unwrap();
        for tokens in [33, 7, 1, 1, 1] {
            let k_new = random_f32(&mut rng, tokens * row, 1.0);
            let v_new = random_f32(&mut rng, tokens * row, 1.0);
            let q_host = random_f32(&mut rng, tokens * n_heads * head_dim, 1.0);
            let k = Tensor::from_f32(ctx, "k", &[tokens, row], &k_new).unwrap();
            let v = Tensor::from_f32(ctx, "v", &[tokens, row], &v_new).unwrap();
            let q = Tensor::from_f32(ctx, "q", &[tokens, n_heads * head_dim], &q_host).unwrap();
            let out = Tensor::new(ctx, "out", &[tokens, n_heads * head_dim], Elem::F32).unwrap();
            out.poison(ctx);
            position.set(ctx, pos).unwrap();
            let mut enc = ctx.encoder();
            kv_append::encode(ctx, &mut enc, &cache, &k, &v, &position).unwrap();
            encode(ctx, &mut enc, &q, &cache, &out, &position, scale).unwrap();
            ctx.submit("generation step", enc).unwrap();
            kv_append::reference(&mut k_host, &k_new, kv_heads, capacity, head_dim, pos);
            kv_append::reference(&mut v_host, &v_new, kv_heads, capacity, head_dim, pos);
            let want = reference(
                &q_host, &k_host, &v_host, n_heads, kv_heads, head_dim, pos, scale,
            );
            assert_close(
                &format!("step of {tokens} at {pos}"),
                &out.read_f32(ctx).unwrap(),
                &want,
                ATOL,
                RTOL,
            );
            pos += tokens;
        }
    }

    #[test]
    fn attention_rejects_bad_shapes_and_overflow() {
        let ctx = ctx();
        let cache = KvCache::new(ctx, "cache", 2, 16, 8).unwrap();
        let at = |pos| Position::new(ctx, pos).unwrap();
        let run = |q: &Tensor, out: &Tensor, pos_offset: usize| {
            encode(
                ctx,
                &mut ctx.encoder(),
                q,
                &cache,
                out,
                &at(pos_offset),
                0.5,
            )
            .unwrap_err()
            .to_string()
        };
        let q = Tensor::new(ctx, "q", &[3, 48], Elem::F32).unwrap();
        let out = Tensor::new(ctx, "out", &[3, 48], Elem::F32).unwrap();
        assert_eq!(
            run(&q, &out, 14),
            "attention: queries at positions 14..17 do not fit the KV cache capacity of 16 positions"
        );
        encode(ctx, &mut ctx.encoder(), &q, &cache, &out, &at(13), 0.5).unwrap();

        let odd_heads = Tensor::new(ctx, "q", &[3, 24], Elem::F32).unwrap();
        let err = run(&odd_heads, &odd_heads, 0);
        assert!(
            err.starts_with(
                "attention: q [3, 24] must be [T, n_heads * 8] with n_heads a multiple"
            ),
            "{err}"
        );
        let ragged = Tensor::new(ctx, "q", &[3, 44], Elem::F32).unwrap();
        assert!(run(&ragged, &ragged, 0).contains("q [3, 44] must be"));
        let short_out = Tensor::new(ctx, "out", &[2, 48], Elem::F32).unwrap();
        assert!(run(&q, &short_out, 0).contains("got out [2, 48]"));

        let wide = KvCache::new(ctx, "wide", 1, 4, MAX_HEAD_DIM + 2).unwrap();
        let q_wide = Tensor::new(ctx, "q", &[1, MAX_HEAD_DIM + 2], Elem::F32).unwrap();
        let err = encode(
            ctx,
            &mut ctx.encoder(),
            &q_wide,
            &wide,
            &q_wide,
            &at(0),
            0.5,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs 1 to 256 values per head"), "{err}");
    }
}
