//! Appending new key and value rows to a layer's preallocated KV cache.

use crate::error::{Error, Result};
use crate::gpu::{Context, Encoder, Shader};
use crate::ops::{Elem, Position, Tensor};

const SHADER: Shader = Shader {
    name: "kv_append.wgsl",
    source: include_str!("../../shaders/kv_append.wgsl"),
};

/// One layer's key and value cache: two f32 tensors of shape
/// `[kv_heads, capacity, head_dim]`, so that the keys (or values) of one head form one
/// contiguous `[capacity, head_dim]` block that attention reads row after row.
/// Position `p` of head `h` starts at element `(h * capacity + p) * head_dim`.
pub struct KvCache {
    /// Keys, `[kv_heads, capacity, head_dim]`.
    pub k: Tensor,
    /// Values, `[kv_heads, capacity, head_dim]`.
    pub v: Tensor,
}

impl KvCache {
    /// An uninitialised cache for `capacity` positions of `kv_heads` heads of `head_dim`.
    pub fn new(
        ctx: &Context,
        label: &str,
        kv_heads: usize,
        capacity: usize,
        head_dim: usize,
    ) -> Result<KvCache> {
        let shape = [kv_heads, capacity, head_dim];
        Ok(KvCache {
            k: Tensor::new(ctx, &format!("{label} keys"), &shape, Elem::F32)?,
            v: Tensor::new(ctx, &format!("{label} values"), &shape, Elem::F32)?,
        })
    }

    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.k.shape[0]
    }

    /// Number of positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.k.shape[1]
    }

    /// Length of one head's key or value vector.
    pub fn head_dim(&self) -> usize {
        self.k.shape[2]
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tokens: u32,
    kv_heads: u32,
    head_dim: u32,
    capacity: u32,
}

const WORKGROUP_SIZE: usize = 256;

/// Records writing `k` and `v` (each `[T, kv_heads * head_dim]` f32) into `cache` at
/// positions `position .. position + T`. Fails when those do not fit the capacity.
pub fn encode(
    ctx: &Context,
    encoder: &mut Encoder,
    cache: &KvCache,
    k: &Tensor,
    v: &Tensor,
    position: &Position,
) -> Result<()> {
    k.expect_elem("kv_append", "k", Elem::F32)?;
    v.expect_elem("kv_append", "v", Elem::F32)?;
    cache
        .k
        .expect_elem("kv_append", "the key cache", Elem::F32)?;
    cache
        .v
        .expect_elem("kv_append", "the value cache", Elem::F32)?;
    let (kv_heads, capacity, head_dim) = (cache.kv_heads(), cache.capacity(), cache.head_dim());
    let row_len = kv_heads * head_dim;
    if k.shape.len() != 2
        || k.cols() != row_len
        || v.shape != k.shape
        || cache.v.shape != cache.k.shape
    {
        return Err(Error::Shape {
            op: "kv_append",
            message: format!(
                "a cache of {kv_heads} heads of {head_dim} needs k and v of shape [T, {row_len}]; \
                 got k {:?}, v {:?} (value cache {:?})",
                k.shape, v.shape, cache.v.shape
            ),
        });
    }
    let tokens = k.rows();
    let pos = position.value();
    if pos + tokens > capacity {
        return Err(Error::Shape {
            op: "kv_append",
            message: format!(
                "positions {pos}..{} do not fit the KV cache capacity of {capacity} positions",
                pos + tokens
            ),
        });
    }
    if tokens == 0 {
        return Ok(());
    }
    let params = Params {
        tokens: tokens as u32,
        kv_heads: kv_heads as u32,
        head_dim: head_dim as u32,
        capacity: capacity as u32,
    };
    let pipeline = ctx.pipeline(SHADER, &[])?;
    let uniform = ctx.uniform("kv_append params", &params);
    let bind = ctx.bind_group(
        &pipeline,
        &[
            &uniform,
            position.buffer(),
            &k.buffer,
            &v.buffer,
            &cache.k.buffer,
            &cache.v.buffer,
        ],
    );
    ctx.dispatch(
        encoder,
        &pipeline,
        &bind,
        ((tokens * row_len).div_ceil(WORKGROUP_SIZE) as u32, 1, 1),
    );
    Ok(())
}

/// CPU reference: writes the rows of `new` (`[T, kv_heads * head_dim]`) into `cache`
/// (`[kv_heads, capacity, head_dim]`) at positions `pos .. pos + T`.
pub fn reference(
    cache: &mut [f32],
    new: &[f32],
    kv_heads: usize,
    capacity: usize,
    head_dim: usize,
    pos: usize,
) {
    for (t, row) in new.chunks(kv_heads * head_dim).enumerate() {
        for (head, values) in row.chunks(head_dim).enumerate() {
            let start = (head * capacity + pos + t) * head_dim;
            cache[start..start + head_dim].copy_from_slice(values);
        }
    }
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
                tokens,
                kv_heads,
                head_dim,
                capacity
            }),
        );
    }

    #[test]
    fn kv_append_writes_only_the_new_positions() {
        let ctx = ctx();
        let mut rng = rng(11);
        // One position buffer set before each case, as a session sets it per step.
        let mut position = Position::new(ctx, 0).unwrap();
        for &(kv_heads, capacity, head_dim, pos, tokens) in &[
            (2, 40, 64, 0, 7),
            (2, 40, 64, 7, 1),
            (1, 9, 40, 0, 9),
            (4, 300, 72, 250, 50),
            (3, 5, 2, 4, 1),
        ] {
            let cache_len = kv_heads * capacity * head_dim;
            let mut want_k = random_f32(&mut rng, cache_len, 1.0);
            let mut want_v = random_f32(&mut rng, cache_len, 1.0);
            let cache = KvCache {
                k: Tensor::from_f32(ctx, "k cache", &[kv_heads, capacity, head_dim], &want_k)
                    .unwrap(),
                v: Tensor::from_f32(ctx, "v cache", &[kv_heads, capacity, head_dim], &want_v)
                    .unwrap(),
            };
            let k_new = random_f32(&mut rng, tokens * kv_heads * head_dim, 2.0);
            let v_new = random_f32(&mut rng, tokens * kv_heads * head_dim, 2.0);
            let k = Tensor::from_f32(ctx, "k", &[tokens, kv_heads * head_dim], &k_new).unwrap();
            let v = Tensor::from_f32(ctx, "v", &[tokens, kv_heads * head_dim], &v_new).unwrap();
            position.set(ctx, pos).unwrap();
            let mut enc = ctx.encoder();
            encode(ctx, &mut enc, &cache, &k, &v, &position).unwrap();
            ctx.submit("kv_append test", enc).unwrap();
            reference(&mut want_k, &k_new, kv_heads, capacity, head_dim, pos);
            reference(&mut want_v, &v_new, kv_heads, capacity, head_dim, pos);
            let what = format!(
                "kv_append heads {kv_heads} capacity {capacity} dim {head_dim} at {pos}+{tokens}"
            );
            // A copy: exact.
            assert_close(
                &format!("{what} keys"),
                &cache.k.read_f32(ctx).unwrap(),
                &want_k,
                0.0,
                0.0,
            );
            assert_close(
                &format!("{what} values"),
                &cache.v.read_f32(ctx).unwrap(),
                &want_v,
                0.0,
                0.0,
            );
        }
    }

    #[test]
    fn kv_append_rejects_overflow_and_bad_shapes() {
        let ctx = ctx();
        let cache = KvCache::new(ctx, "cache", 2, 8, 4).unwrap();
        let k = Tensor::new(ctx, "k", &[3, 8], Elem::F32).unwrap();
        let v = Tensor::new(ctx, "v", &[3, 8], Elem::F32).unwrap();
        let at = |pos| Position::new(ctx, pos).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &cache, &k, &v, &at(6)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kv_append: positions 6..9 do not fit the KV cache capacity of 8 positions"
        );
        encode(ctx, &mut ctx.encoder(), &cache, &k, &v, &at(5)).unwrap();

        let narrow = Tensor::new(ctx, "k", &[3, 6], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &cache, &narrow, &narrow, &at(0)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("kv_append: a cache of 2 heads of 4 needs k and v of shape [T, 8]"),
            "{err}"
        );
        let short_v = Tensor::new(ctx, "v", &[2, 8], Elem::F32).unwrap();
        let err = encode(ctx, &mut ctx.encoder(), &cache, &k, &short_v, &at(0)).unwrap_err();
        assert!(err.to_string().contains("got k [3, 8], v [2, 8]"), "{err}");
    }
}
