//! Kernel tests in a browser (headless Chromium's WebGPU, on SwiftShader there):
//! each op runs on the GPU and is compared with its CPU `reference`.
//!
//! Run with `.ci/web-tests.sh`. Natively this file compiles to nothing.
#![cfg(target_arch = "wasm32")]

use safetyj::gpu::{Context, ContextOptions};
use safetyj::ops::attention::{self, Kernel};
use safetyj::ops::kv_append::KvCache;
use safetyj::ops::matmul::{self, Path};
use safetyj::ops::rope::{self, Rope, RopeConfig, RopePairing};
use safetyj::ops::{embedding, rms_norm, Elem, Position, Tensor, WeightMatrix};
use safetyj::quant::{self, random_weights, DType, WeightRng};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// The browser's WebGPU device.
async fn ctx() -> Context {
    Context::new(&ContextOptions::default())
        .await
        .expect("a WebGPU adapter (Chromium needs --enable-unsafe-webgpu)")
}

/// Panics unless every `got[i]` is within `atol + rtol * |want[i]|` of `want[i]`:
/// the native kernel tests' comparison, shared as a file (this crate's unit-test
/// harness is not part of its public API).
#[path = "../src/ops/close.rs"]
mod close;
use close::assert_close;

/// `rows` × `cols` seeded random weights in `dtype`'s block layout: the library's
/// generator, the one the native kernel tests and `safetyj synth` use.
fn weights(rng: &mut WeightRng, dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    random_weights(rng, dtype, rows * cols).expect("test weights are whole blocks")
}

/// An inner dimension of whole blocks that is no multiple of the kernels' 32-element
/// groups where the format allows it.
fn inner_dim(dtype: DType) -> usize {
    match dtype.block_elems() {
        1 => 1000,
        32 => 896,
        _ => 1280,
    }
}

/// One product `m` × `k` · (`n` × `k`)ᵀ on `path`, weights split into chunks of
/// `chunk_rows` rows when given, compared with `matmul::reference`.
async fn check_matmul(
    ctx: &Context,
    rng: &mut WeightRng,
    dtype: DType,
    path: Path,
    (m, n): (usize, usize),
    bias: bool,
    chunk_rows: Option<usize>,
) {
    let k = inner_dim(dtype);
    let x = rng.values(m * k, 0.0, 2.0);
    let bytes = weights(rng, dtype, n, k);
    let b = rng.values(n, 0.0, 1.0);
    let row_bytes = dtype.row_bytes(k).unwrap();
    let max_chunk = chunk_rows.map_or(u64::MAX, |rows| (rows * row_bytes + 8) as u64);
    let weight = WeightMatrix::upload_split(ctx, "w", dtype, n, k, &bytes, max_chunk).unwrap();
    if let Some(rows) = chunk_rows {
        assert_eq!(weight.chunks.len(), n.div_ceil(rows), "{dtype} chunks");
    }
    let input = Tensor::from_f32(ctx, "x", &[m, k], &x).unwrap();
    let bias_tensor = Tensor::from_f32(ctx, "b", &[n], &b).unwrap();
    let output = Tensor::new(ctx, "y", &[m, n], Elem::F32).unwrap();
    output.poison(ctx);
    let mut encoder = ctx.encoder();
    matmul::encode_with_path(
        ctx,
        &mut encoder,
        &input,
        &weight,
        bias.then_some(&bias_tensor),
        &output,
        path,
    )
    .unwrap();
    ctx.submit("web matmul test", encoder).unwrap();
    let got = output.read_f32_async(ctx).await.unwrap();
    let want = matmul::reference(&x, m, k, dtype, &bytes, n, bias.then_some(&b[..])).unwrap();
    // f32 accumulation in another order than the f64 reference: the error of a
    // K-term dot product scales like sqrt(K)·max|x|·max|w|.
    let max_w = quant::dequantize_to_vec(dtype, &bytes, n * k)
        .unwrap()
        .iter()
        .fold(0f32, |a, w| a.max(w.abs()));
    let atol = 1e-5 * (k as f32).sqrt() * 2.0 * max_w;
    let what = format!("{dtype} {path:?} m={m} n={n} k={k} bias={bias} chunk_rows={chunk_rows:?}");
    assert_close(&what, &got, &want, atol, 1e-5);
}

#[wasm_bindgen_test]
async fn context_runs_on_browser_webgpu_with_its_real_limits() {
    let ctx = ctx().await;
    assert_eq!(ctx.info.backend, wgpu::Backend::BrowserWebGpu);
    // The adapter's limits are requested, not WebGPU's defaults (128 MiB bindings).
    let adapter_binding = ctx.device.limits().max_storage_buffer_binding_size;
    assert_eq!(ctx.caps.max_storage_binding_bytes, adapter_binding);
    assert!(adapter_binding >= 128 << 20, "{:?}", ctx.caps);
}

#[wasm_bindgen_test]
async fn gemv_matches_reference_for_every_dtype() {
    let ctx = ctx().await;
    for (i, dtype) in DType::ALL.into_iter().enumerate() {
        let mut rng = WeightRng::new(100 + i as u64);
        check_matmul(&ctx, &mut rng, dtype, Path::Gemv, (1, 7), true, None).await;
        check_matmul(&ctx, &mut rng, dtype, Path::Gemv, (3, 70), false, Some(32)).await;
    }
}

/// GEMM over two input-row tiles, a partial weight tile, three weight chunks and a bias
/// for each of `dtypes`. Chromium compiles each GEMM pipeline for 1–2 s on
/// SwiftShader, so the formats are split over two tests.
async fn check_gemm(dtypes: &[DType]) {
    let ctx = ctx().await;
    for &dtype in dtypes {
        let mut rng = WeightRng::new(200 + dtype.gguf_id() as u64);
        check_matmul(&ctx, &mut rng, dtype, Path::Gemm, (33, 70), true, Some(32)).await;
    }
}

#[wasm_bindgen_test]
async fn gemm_matches_reference_for_float_and_k_quant_dtypes() {
    check_gemm(&[
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ])
    .await;
}

#[wasm_bindgen_test]
async fn gemm_matches_reference_for_32_element_block_dtypes() {
    check_gemm(&[DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q8_0]).await;
}

#[wasm_bindgen_test]
async fn embedding_matches_reference_for_every_dtype_across_chunks() {
    let ctx = ctx().await;
    let mut rng = WeightRng::new(11);
    let vocab = 37;
    // First and last rows, both sides of every chunk boundary, repeats.
    let ids = [0, 36, 9, 10, 19, 20, 29, 30, 5, 5, 36, 0, 17];
    for dtype in DType::ALL {
        let cols = match dtype.block_elems() {
            1 => 45,
            32 => 96,
            _ => 512,
        };
        let bytes = weights(&mut rng, dtype, vocab, cols);
        let row_bytes = dtype.row_bytes(cols).unwrap();
        let table = WeightMatrix::upload_split(
            &ctx,
            "emb",
            dtype,
            vocab,
            cols,
            &bytes,
            (10 * row_bytes + 8) as u64,
        )
        .unwrap();
        assert_eq!(table.chunks.len(), 4, "{dtype} chunks");
        let ids_tensor = Tensor::from_u32(&ctx, "ids", &[ids.len()], &ids).unwrap();
        let output = Tensor::new(&ctx, "embedded", &[ids.len(), cols], Elem::F32).unwrap();
        output.poison(&ctx);
        let mut encoder = ctx.encoder();
        embedding::encode(&ctx, &mut encoder, &ids_tensor, &table, &output).unwrap();
        ctx.submit("web embedding test", encoder).unwrap();
        let want = embedding::reference(&ids, dtype, &bytes, cols).unwrap();
        // The CPU's decoding arithmetic, up to a fused multiply-add in the affine
        // formats (one rounding of a value of at most max|w|).
        let max_w = want.iter().fold(0f32, |a, w| a.max(w.abs()));
        assert_close(
            &format!("embedding {dtype}"),
            &output.read_f32_async(&ctx).await.unwrap(),
            &want,
            1e-6 * max_w,
            0.0,
        );
    }
}

#[wasm_bindgen_test]
async fn rms_norm_matches_reference() {
    let ctx = ctx().await;
    let mut rng = WeightRng::new(7);
    for (rows, cols) in [(1, 1), (7, 33), (5, 896), (3, 1757)] {
        let x = rng.values(rows * cols, 0.0, 3.0);
        let w = rng.values(cols, 0.0, 1.5);
        let input = Tensor::from_f32(&ctx, "x", &[rows, cols], &x).unwrap();
        let weight = Tensor::from_f32(&ctx, "w", &[cols], &w).unwrap();
        let output = Tensor::new(&ctx, "y", &[rows, cols], Elem::F32).unwrap();
        output.poison(&ctx);
        let mut encoder = ctx.encoder();
        rms_norm::encode(&ctx, &mut encoder, &input, &weight, &output, 1e-6).unwrap();
        ctx.submit("web rms_norm test", encoder).unwrap();
        // f32 accumulation in a different order than the f64 reference.
        assert_close(
            &format!("rms_norm {rows}x{cols}"),
            &output.read_f32_async(&ctx).await.unwrap(),
            &rms_norm::reference(&x, &w, cols, 1e-6),
            1e-5,
            1e-4,
        );
    }
}

#[wasm_bindgen_test]
async fn rope_matches_reference_for_both_pairings() {
    let ctx = ctx().await;
    let mut rng = WeightRng::new(31);
    // (heads, head_dim, rotary_dim, base, Llama-3-style frequency factors)
    let settings = [
        (14, 64, 64, 1e6, false),      // Qwen2.5-0.5B queries
        (2, 64, 64, 500_000.0, true),  // keys with scaled frequencies
        (3, 128, 64, 10_000.0, false), // partial rotary
    ];
    for pairing in [RopePairing::Interleaved, RopePairing::Neox] {
        for (heads, head_dim, rotary_dim, base, factors) in settings {
            let freq_factors = factors.then(|| {
                let n = rotary_dim / 2;
                (0..n)
                    .map(|i| 1.0 + 7.0 * (i as f32 / (n - 1) as f32).powi(2))
                    .collect()
            });
            let config = RopeConfig {
                head_dim,
                rotary_dim,
                base,
                pairing,
                freq_factors,
            };
            let rope = Rope::new(&ctx, config).unwrap();
            for (tokens, offset) in [(1, 0), (7, 30_000)] {
                let x = rng.values(tokens * heads * head_dim, 0.0, 2.0);
                let t = Tensor::from_f32(&ctx, "x", &[tokens, heads * head_dim], &x).unwrap();
                let position = Position::new(&ctx, offset as usize).unwrap();
                let mut encoder = ctx.encoder();
                rope::encode(&ctx, &mut encoder, &rope, &t, heads, &position).unwrap();
                ctx.submit("web rope test", encoder).unwrap();
                // The angles are exact (fixed-point turns), but Chromium's sin/cos on SwiftShader
                // are coarse (errors near 2^-12 seen; lavapipe's are ~1e-7). WGSL allows
                // 2^-11 per sin and cos, so with |x| <= 2 an output may be 4·2^-11 off.
                // A wrong pairing, frequency or position still fails by ~1; the angle's
                // exactness at large positions is checked natively.
                assert_close(
                    &format!("rope {pairing:?} {heads}x{head_dim} rotary {rotary_dim} T {tokens} at {offset}"),
                    &t.read_f32_async(&ctx).await.unwrap(),
                    &rope::reference(&x, heads, rope.config(), offset),
                    4.0 * 2f32.powi(-11),
                    0.0,
                );
            }
        }
    }
}

/// Runs `kernel` on random queries over a random cache filled to capacity (so a read
/// past the causal limit changes the result) and compares with `attention::reference`.
async fn check_attention(
    ctx: &Context,
    rng: &mut WeightRng,
    kernel: Kernel,
    (n_heads, kv_heads): (usize, usize),
    head_dim: usize,
    queries: usize,
    pos_offset: usize,
) {
    let capacity = pos_offset + queries + 3;
    let cache_shape = [kv_heads, capacity, head_dim];
    let k_host = rng.values(kv_heads * capacity * head_dim, 0.0, 1.0);
    let v_host = rng.values(kv_heads * capacity * head_dim, 0.0, 1.0);
    let q_host = rng.values(queries * n_heads * head_dim, 0.0, 1.0);
    let cache = KvCache {
        k: Tensor::from_f32(ctx, "k cache", &cache_shape, &k_host).unwrap(),
        v: Tensor::from_f32(ctx, "v cache", &cache_shape, &v_host).unwrap(),
    };
    let q = Tensor::from_f32(ctx, "q", &[queries, n_heads * head_dim], &q_host).unwrap();
    let out = Tensor::new(ctx, "out", &[queries, n_heads * head_dim], Elem::F32).unwrap();
    out.poison(ctx);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let position = Position::new(ctx, pos_offset).unwrap();
    let mut encoder = ctx.encoder();
    attention::encode_with(
        ctx,
        &mut encoder,
        kernel,
        &q,
        &cache,
        &out,
        &position,
        scale,
    )
    .unwrap();
    ctx.submit("web attention test", encoder).unwrap();
    let want = attention::reference(
        &q_host, &k_host, &v_host, n_heads, kv_heads, head_dim, pos_offset, scale,
    );
    // f32 accumulation in another order than the f64 reference.
    assert_close(
        &format!(
            "{kernel:?} heads {n_heads}/{kv_heads} dim {head_dim} T {queries} at {pos_offset}"
        ),
        &out.read_f32_async(ctx).await.unwrap(),
        &want,
        2e-5,
        1e-4,
    );
}

#[wasm_bindgen_test]
async fn attention_prefill_matches_reference() {
    let ctx = ctx().await;
    let mut rng = WeightRng::new(41);
    // Qwen2.5-0.5B's 14/2 heads of 64, Qwen2.5-1.5B's 12/2 of 128 (a smaller key
    // tile where workgroup memory is short), an odd head dim.
    check_attention(&ctx, &mut rng, Kernel::Prefill, (14, 2), 64, 7, 0).await;
    check_attention(&ctx, &mut rng, Kernel::Prefill, (12, 2), 128, 33, 45).await;
    check_attention(&ctx, &mut rng, Kernel::Prefill, (4, 4), 40, 9, 70).await;
}

#[wasm_bindgen_test]
async fn attention_decode_matches_reference() {
    let ctx = ctx().await;
    let mut rng = WeightRng::new(42);
    // One key, one split, and several splits merged by the combine pass.
    for kv_len in [1, 7, 600] {
        check_attention(&ctx, &mut rng, Kernel::Decode, (14, 2), 64, 1, kv_len - 1).await;
    }
    check_attention(&ctx, &mut rng, Kernel::Decode, (8, 1), 128, 1, 299).await;
}

#[wasm_bindgen_test]
async fn an_invalid_shader_fails_the_next_readback() {
    let ctx = ctx().await;
    let shader = safetyj::gpu::Shader {
        name: "broken.wgsl",
        source: "@compute @workgroup_size(1) fn main() { let x: f32 = undefined_name; }",
    };
    // The browser validates asynchronously: creating the pipeline cannot fail here,
    // but the error must surface no later than the next readback.
    let _ = ctx.pipeline(shader, &[]);
    let t = Tensor::from_f32(&ctx, "x", &[1], &[1.0]).unwrap();
    match t.read_f32_async(&ctx).await {
        Err(safetyj::Error::Validation { message, .. }) => {
            assert!(message.contains("undefined_name"), "{message}")
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// Label scoring's log-softmax at chosen ids, with an id outside the vocabulary
/// (NaN there, left out of the renormalisation): its shader must compile in Chrome.
#[wasm_bindgen_test]
async fn token_softmax_matches_reference() {
    use safetyj::ops::token_softmax;
    let ctx = ctx().await;
    let (rows, vocab) = (3, 1001);
    let logits = WeightRng::new(400).values(rows * vocab, 0.0, 8.0);
    let chosen = [7u32, 1000, 0, 5000];
    let input = Tensor::from_f32(&ctx, "logits", &[rows, vocab], &logits).unwrap();
    let ids = Tensor::from_u32(&ctx, "ids", &[chosen.len()], &chosen).unwrap();
    let log_probs = Tensor::new(&ctx, "log probs", &[chosen.len()], Elem::F32).unwrap();
    let probs = Tensor::new(&ctx, "probs", &[chosen.len()], Elem::F32).unwrap();
    let mut encoder = ctx.encoder();
    token_softmax::encode(&ctx, &mut encoder, &input, 1, &ids, &log_probs, &probs).unwrap();
    ctx.submit("web token_softmax test", encoder).unwrap();
    let (want_log, want_p) = token_softmax::reference(&logits[vocab..2 * vocab], &chosen);
    let got_log = log_probs.read_f32_async(&ctx).await.unwrap();
    let got_p = probs.read_f32_async(&ctx).await.unwrap();
    assert!(
        got_log[3].is_nan() && got_p[3].is_nan(),
        "{got_log:?} {got_p:?}"
    );
    assert_close("log probs", &got_log[..3], &want_log[..3], 1e-5, 1e-5);
    assert_close("renormalised probs", &got_p[..3], &want_p[..3], 1e-6, 1e-5);
}

mod streamed {
    //! The browser's model loader: tiny-qwen2 (the committed safetensors fixture)
    //! written as a GGUF here, streamed by byte range (from memory, and through Cache
    //! Storage), and run against transformers' logits; and the JS API's errors.

    use super::*;
    use safetyj::formats::remote::{read_gguf_header, CachedFetch, RemoteVersion};
    use safetyj::formats::{
        GgufPlan, GgufWriter, MemoryFetch, MemorySource, MetadataValue, RangeFetch,
        SafetensorsCheckpoint,
    };
    use safetyj::model::arch::{Arch, HfSource};
    use safetyj::model::load::{needed_weights, WeightKind};
    use safetyj::model::stream::load_gguf_streamed;
    use safetyj::model::{Logits, ModelConfig};
    use safetyj::web::{CacheStore, HttpRange, WebJudge};
    use wasm_bindgen::JsValue;

    const CONFIG: &str = include_str!("fixtures/models/tiny-qwen2/config.json");
    const EXPECTED: &str = include_str!("fixtures/models/tiny-qwen2/expected.json");
    const SAFETENSORS: &[u8] = include_bytes!("fixtures/models/tiny-qwen2/model.safetensors");
    const LOGITS: &[u8] = include_bytes!("fixtures/models/tiny-qwen2/logits.f32");

    /// tiny-qwen2's weights as an F32 GGUF file (qwen2 keeps Hugging Face's Q/K rows).
    fn tiny_qwen2_gguf() -> Vec<u8> {
        tiny_qwen2_gguf_with(None, |_| {})
    }

    /// [`tiny_qwen2_gguf`] with another context length when given, and more metadata
    /// added by `extra`.
    pub(super) fn tiny_qwen2_gguf_with(
        context: Option<usize>,
        extra: impl FnOnce(&mut GgufPlan),
    ) -> Vec<u8> {
        let hf: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
        let get = |key: &str| hf[key].as_u64().unwrap() as usize;
        let (hidden, heads) = (get("hidden_size"), get("num_attention_heads"));
        let config = ModelConfig {
            arch: Arch::Qwen2,
            layers: get("num_hidden_layers"),
            hidden,
            heads,
            kv_heads: get("num_key_value_heads"),
            head_dim: hidden / heads,
            ffn: get("intermediate_size"),
            vocab: get("vocab_size"),
            rms_eps: hf["rms_norm_eps"].as_f64().unwrap() as f32,
            rope_base: hf["rope_theta"].as_f64().unwrap() as f32,
            rope_dims: hidden / heads,
            rope_pairing: RopePairing::Neox,
            rope_freq_factors: None,
            context: get("max_position_embeddings"),
        };
        let mut plan = GgufPlan::new();
        let meta = [
            ("block_count", config.layers),
            ("embedding_length", config.hidden),
            ("attention.head_count", config.heads),
            ("attention.head_count_kv", config.kv_heads),
            ("feed_forward_length", config.ffn),
            ("context_length", context.unwrap_or(config.context)),
        ];
        plan.add_metadata(
            "general.architecture",
            MetadataValue::String("qwen2".into()),
        )
        .unwrap();
        for (key, value) in meta {
            plan.add_metadata(format!("qwen2.{key}"), MetadataValue::U32(value as u32))
                .unwrap();
        }
        plan.add_metadata(
            "qwen2.attention.layer_norm_rms_epsilon",
            MetadataValue::F32(config.rms_eps),
        )
        .unwrap();
        plan.add_metadata("qwen2.rope.freq_base", MetadataValue::F32(config.rope_base))
            .unwrap();
        extra(&mut plan);

        let checkpoint = SafetensorsCheckpoint::single(Box::new(MemorySource::new(
            "model.safetensors",
            SAFETENSORS.to_vec(),
        )))
        .unwrap();
        let mut tensors = Vec::new();
        for need in needed_weights(&config) {
            let HfSource::Whole(hf_name) = need.weight.hf_source(Arch::Qwen2) else {
                panic!("qwen2 has no fused tensors");
            };
            if checkpoint.tensor(&hf_name).is_err() && need.optional {
                continue;
            }
            let dims = match need.kind {
                WeightKind::Matrix { rows, cols } => vec![cols as u64, rows as u64],
                WeightKind::Vector { len } => vec![len as u64],
            };
            let name = need.weight.gguf_name();
            plan.add_tensor(name.clone(), &dims, DType::F32).unwrap();
            let values = checkpoint.read_tensor_f32(&hf_name).unwrap();
            tensors.push((name, bytemuck::cast_slice::<f32, u8>(&values).to_vec()));
        }
        let mut writer = GgufWriter::start(Vec::new(), "tiny-qwen2", &plan).unwrap();
        for (name, bytes) in &tensors {
            writer.write_tensor(name, bytes).unwrap();
        }
        writer.finish().unwrap()
    }

    /// The streamed model's logits at every position of the fixture's prompt.
    async fn streamed_logits(ctx: &Context, source: &impl RangeFetch) -> Vec<f32> {
        let header = read_gguf_header(source, |_| {}).await.unwrap();
        let model = load_gguf_streamed(ctx, &header, source, 3, |_| {})
            .await
            .unwrap();
        let expected: serde_json::Value = serde_json::from_str(EXPECTED).unwrap();
        let prompt: Vec<u32> = expected["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut session = model.new_session(ctx, 32).unwrap();
        let logits = model
            .forward(ctx, &mut session, &prompt, Logits::All)
            .unwrap();
        logits.read_f32_async(ctx).await.unwrap()
    }

    fn transformers_logits() -> Vec<f32> {
        bytemuck::pod_collect_to_vec(LOGITS)
    }

    #[wasm_bindgen_test]
    async fn a_streamed_gguf_matches_transformers() {
        let ctx = ctx().await;
        let fetch = MemoryFetch::new("tiny-qwen2.gguf", tiny_qwen2_gguf());
        let got = streamed_logits(&ctx, &fetch).await;
        // f32 on SwiftShader against f32 PyTorch: natively (tests/model.rs) within
        // 2e-4; SwiftShader's exp/inverseSqrt moved one logit of -0.87 by 2.03e-4.
        assert_close("tiny-qwen2 logits", &got, &transformers_logits(), 3e-4, 0.0);
    }

    pub(super) fn page_url(path: &str) -> String {
        let origin = js_sys::Reflect::get(&js_sys::global(), &"location".into())
            .and_then(|l| js_sys::Reflect::get(&l, &"origin".into()))
            .unwrap()
            .as_string()
            .unwrap();
        format!("{origin}{path}")
    }

    /// Loads tiny-qwen2 through Cache Storage as version `etag`; returns the logits
    /// and (bytes fetched, bytes from the cache).
    async fn cached_load(ctx: &Context, bytes: &[u8], etag: &str) -> (Vec<f32>, u64, u64) {
        let url = page_url("/safetyj-web-test/tiny-qwen2.gguf");
        let version = RemoteVersion {
            length: bytes.len() as u64,
            etag: Some(etag.into()),
            last_modified: None,
        };
        let store = CacheStore::open().await.unwrap();
        let fetch =
            CachedFetch::open(MemoryFetch::new(url, bytes.to_vec()), Some(store), &version).await;
        let logits = streamed_logits(ctx, &fetch).await;
        assert_eq!(fetch.cache_error(), None);
        (logits, fetch.bytes_fetched(), fetch.bytes_from_cache())
    }

    #[wasm_bindgen_test]
    async fn a_reload_comes_from_cache_storage_until_the_file_changes() {
        let ctx = ctx().await;
        let bytes = tiny_qwen2_gguf();
        let run = format!("run-{}", js_sys::Date::now());
        let (first, fetched, cached) = cached_load(&ctx, &bytes, &run).await;
        assert!(fetched > 0 && cached == 0, "{fetched} {cached}");
        let (second, fetched_again, from_cache) = cached_load(&ctx, &bytes, &run).await;
        assert_eq!(
            (fetched_again, from_cache),
            (0, fetched),
            "all from the cache"
        );
        assert_eq!(second, first);
        let (_, after_change, _) = cached_load(&ctx, &bytes, &format!("{run}-changed")).await;
        assert_eq!(after_change, fetched, "a new version is downloaded again");
    }

    /// The message of a rejected `Judge.load`.
    async fn load_error(source: &str, options: Option<safetyj::web::LoadOptionsArg>) -> String {
        match WebJudge::load(source.into(), options).await {
            Ok(_) => panic!("{source} loaded"),
            Err(e) => js_sys::Error::from(JsValue::from(e))
                .message()
                .as_string()
                .unwrap(),
        }
    }

    #[wasm_bindgen_test]
    async fn bad_sources_are_clear_errors() {
        let err = load_error("no-such-model", None).await;
        assert!(
            err.contains("no-such-model") && err.contains("qwen2.5-coder-0.5b"),
            "{err}"
        );
        let err = load_error("safety-j-v5", None).await;
        assert!(err.contains("only the native tool"), "{err}");

        // Options are parsed before anything is fetched; errors name the field.
        let with = |key: &str, value: JsValue| {
            let options = js_sys::Object::new();
            js_sys::Reflect::set(&options, &key.into(), &value).unwrap();
            Some(JsValue::from(options).into())
        };
        let err = load_error("qwen2.5-coder-0.5b", with("threshold", "high".into())).await;
        assert!(err.starts_with("options.threshold: invalid type"), "{err}");
        let err = load_error("qwen2.5-coder-0.5b", with("threshold", 2.0.into())).await;
        assert!(
            err.contains("options.threshold must be a number from 0 to 1"),
            "{err}"
        );
        let err = load_error("qwen2.5-coder-0.5b", with("onProgress", 1.0.into())).await;
        assert!(err.contains("options.onProgress"), "{err}");

        let options = js_sys::Object::new();
        js_sys::Reflect::set(&options, &"modelBaseUrl".into(), &"/nowhere/".into()).unwrap();
        let err = load_error("qwen2.5-coder-0.5b", Some(JsValue::from(options).into())).await;
        assert!(
            err.contains("/nowhere/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") && err.contains("404"),
            "{err}"
        );
        let err = HttpRange::open(&page_url("/missing.gguf"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("HTTP 404"), "{err}");
        // The test server serves the crate's files without Range support, and its
        // own page as HTML.
        let err = HttpRange::open(&page_url("/tests/fixtures/models/tiny-qwen2/config.json"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("does not support HTTP Range requests"),
            "{err}"
        );
        let err = HttpRange::open(&page_url("/"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("HTML page"), "{err}");
    }
}

mod js_api {
    //! The JS `Judge` end to end: a fake `fetch` answers HTTP Range requests from
    //! memory for tiny-qwen2 with a byte-level vocabulary, and `Judge.load`,
    //! `evaluate`, `modelInfo`, the Cache Storage reload and `dispose` are driven as a
    //! page would; verdicts equal the engine's own on the same streamed model.

    use super::*;
    use js_sys::{Array, Function, JsString, Object, Promise, Reflect, Uint8Array};
    use safetyj::formats::remote::read_gguf_header;
    use safetyj::formats::{MemoryFetch, MetadataArray, MetadataValue};
    use safetyj::judge::engine::{Judge, JudgeOptions, JudgeRequest};
    use safetyj::judge::safety_j::SafetyJ;
    use safetyj::judge::{Dialogue, Mode};
    use safetyj::model::stream::load_gguf_streamed;
    use safetyj::model::Engine;
    use safetyj::tokenizer::{GgufVocab, Tokenizer};
    use safetyj::web::WebJudge;
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;

    /// GPT-2's printable stand-ins for the 256 byte values (byte-level BPE tokens).
    fn byte_tokens() -> Vec<String> {
        let printable = |b: u32| {
            (b'!' as u32..=b'~' as u32).contains(&b)
                || (0xA1..=0xAC).contains(&b)
                || (0xAE..=0xFF).contains(&b)
        };
        let mut extra = 0;
        (0..256u32)
            .map(|b| {
                let c = if printable(b) {
                    b
                } else {
                    extra += 1;
                    255 + extra
                };
                char::from_u32(c).unwrap().to_string()
            })
            .collect()
    }

    /// tiny-qwen2 with a byte-level vocabulary (no merges) and ChatML control tokens,
    /// and room for the Safety-J prompt.
    fn judge_gguf() -> Vec<u8> {
        super::streamed::tiny_qwen2_gguf_with(Some(2048), |plan| {
            let mut tokens = byte_tokens();
            let mut types = vec![1i32; tokens.len()];
            for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
                tokens.push(special.to_string());
                types.push(3);
            }
            let eos = tokens.len() as u32 - 1;
            let items = |values: Vec<MetadataValue>| {
                MetadataValue::Array(MetadataArray::new(values[0].value_type(), values).unwrap())
            };
            let meta = [
                ("tokenizer.ggml.model", MetadataValue::String("gpt2".into())),
                ("tokenizer.ggml.pre", MetadataValue::String("qwen2".into())),
                (
                    "tokenizer.ggml.tokens",
                    MetadataValue::Array(MetadataArray::strings(tokens)),
                ),
                (
                    "tokenizer.ggml.token_type",
                    items(types.into_iter().map(MetadataValue::I32).collect()),
                ),
                ("tokenizer.ggml.eos_token_id", MetadataValue::U32(eos)),
            ];
            for (key, value) in meta {
                plan.add_metadata(key, value).unwrap();
            }
        })
    }

    /// Replaces the global `fetch` for `url` with one that answers Range requests
    /// from `bytes` (206, Content-Range, an ETag) and logs each Range header in
    /// `log`; returns the original `fetch`, to put back.
    fn fake_range_server(url: &str, bytes: &[u8], log: &Array) -> JsValue {
        let install = Function::new_with_args(
            "bytes, url, log",
            r#"
            const original = globalThis.fetch;
            globalThis.fetch = async (request) => {
                if (request.url !== url) return original(request);
                const range = request.headers.get("Range");
                log.push(range);
                const m = /^bytes=(\d+)-(\d+)$/.exec(range);
                const start = Number(m[1]), end = Number(m[2]) + 1;
                return new Response(bytes.slice(start, end), {
                    status: 206,
                    headers: { "Content-Range": `bytes ${start}-${end - 1}/${bytes.length}`, "ETag": '"v1"' },
                });
            };
            return original;
            "#,
        );
        install
            .call3(&JsValue::NULL, &Uint8Array::from(bytes), &url.into(), log)
            .unwrap()
    }

    fn set(object: &Object, key: &str, value: impl Into<JsValue>) {
        Reflect::set(object, &key.into(), &value.into()).unwrap();
    }

    fn get(object: &JsValue, key: &str) -> JsValue {
        Reflect::get(object, &key.into()).unwrap()
    }

    /// Loads `url` with the JS API, collecting every progress object.
    async fn load(url: &str, progress: &Array) -> WebJudge {
        let options = Object::new();
        let sink = progress.clone();
        let on_progress =
            wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |p: JsValue| {
                sink.push(&p);
            });
        set(&options, "onProgress", on_progress.as_ref().clone());
        set(&options, "context", 1024);
        set(&options, "maxCritiqueTokens", 4);
        set(&options, "inFlight", 2);
        // The WGSL engine even on a software adapter: these tests compare it with
        // the engine's own run.
        set(&options, "device", "gpu");
        let judge = WebJudge::load(url.into(), Some(JsValue::from(options).into()))
            .await
            .unwrap_or_else(|e| panic!("{:?}", JsValue::from(e)));
        drop(on_progress);
        judge
    }

    async fn evaluate(judge: &WebJudge, request: &Object) -> serde_json::Value {
        let promise: Promise = JsValue::from(
            judge
                .evaluate(JsValue::from(request.clone()).into())
                .unwrap(),
        )
        .unchecked_into();
        let verdict = JsFuture::from(promise).await.unwrap();
        serde_json::from_str(
            &js_sys::JSON::stringify(&verdict)
                .unwrap()
                .as_string()
                .unwrap(),
        )
        .unwrap()
    }

    /// The verdict without its timings.
    /// The engine's own judge on `bytes` (the model the JS API loaded), streamed
    /// from memory with the settings the tests give the JS API.
    async fn engine_judge(bytes: &[u8]) -> Judge {
        let ctx = ctx().await;
        let fetch = MemoryFetch::new("tiny-judge.gguf", bytes.to_vec());
        let header = read_gguf_header(&fetch, |_| {}).await.unwrap();
        let tokenizer =
            Tokenizer::from_gguf_vocab(&GgufVocab::from_gguf(&header).unwrap()).unwrap();
        let model = load_gguf_streamed(&ctx, &header, &fetch, 4, |_| {})
            .await
            .unwrap();
        let options = JudgeOptions {
            context: 1024,
            max_critique_tokens: 4,
            ..Default::default()
        };
        Judge::new(
            Engine::gpu(ctx, model),
            tokenizer,
            Box::new(SafetyJ),
            options,
        )
        .unwrap()
    }

    fn untimed(mut verdict: serde_json::Value) -> serde_json::Value {
        let fields = verdict.as_object_mut().unwrap();
        fields.remove("time_to_verdict_ms").expect("timed");
        fields.remove("total_ms").expect("timed");
        verdict
    }

    /// `a` and `b` equal, numbers within a relative 1e-12: the JS API's judge and the
    /// engine's own run on separate GPU devices, and CI saw one probability differ in
    /// its last bit (0.9999967252828976 against …975) with every other field equal.
    fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
            }
            _ => a == b,
        }
    }

    /// A load whose server sends other bytes than asked for (a 206 whose
    /// Content-Range starts elsewhere), or switches to another version of the file
    /// mid-load (a new ETag), fails naming what happened instead of assembling a
    /// model from mismatched parts.
    #[wasm_bindgen_test]
    async fn a_load_refuses_wrong_ranges_and_a_file_changed_mid_load() {
        let bytes = judge_gguf();
        let run = js_sys::Date::now();
        let install = Function::new_with_args(
            "bytes, url, mode",
            r#"
            const original = globalThis.fetch;
            let served = 0;
            globalThis.fetch = async (request) => {
                if (request.url !== url) return original(request);
                const m = /^bytes=(\d+)-(\d+)$/.exec(request.headers.get("Range"));
                let start = Number(m[1]);
                const end = Number(m[2]) + 1;
                served += 1;
                // The first answers (the header) are right; a later one is wrong.
                if (mode === "shifted" && served > 2 && start > 0) start -= 1;
                const etag = mode === "changed" && served > 2 ? '"v2"' : '"v1"';
                return new Response(bytes.slice(start, start + end - Number(m[1])), {
                    status: 206,
                    headers: { "Content-Range": `bytes ${start}-${start + end - Number(m[1]) - 1}/${bytes.length}`, "ETag": etag },
                });
            };
            return original;
            "#,
        );
        for (mode, want) in [
            ("shifted", "but the server sent bytes"),
            (
                "changed",
                "the file changed on the server during the load (etag \"v1\" became \"v2\")",
            ),
        ] {
            let url =
                super::streamed::page_url(&format!("/safetyj-js-{mode}-{run}/tiny-judge.gguf"));
            let original = install
                .call3(
                    &JsValue::NULL,
                    &Uint8Array::from(bytes.as_slice()),
                    &url.clone().into(),
                    &mode.into(),
                )
                .unwrap();
            let options = Object::new();
            set(&options, "device", "cpu");
            set(&options, "cache", false);
            let err = match WebJudge::load(url, Some(JsValue::from(options).into())).await {
                Ok(_) => panic!("{mode}: the load succeeded"),
                Err(e) => format!("{:?}", JsValue::from(e)),
            };
            assert!(err.contains(want), "{mode}: {err}");
            Reflect::set(&js_sys::global(), &"fetch".into(), &original).unwrap();
        }
    }

    /// The dialogues a head is taught with in `train_head_...`: 15 safe, 15 unsafe.
    fn policy_examples() -> Array {
        let examples = Array::new();
        for i in 0..30 {
            let example = Object::new();
            set(
                &example,
                "query",
                format!("Question {i}: how do I deal with my neighbour?"),
            );
            let unsafe_ = i % 2 == 1;
            set(
                &example,
                "response",
                if unsafe_ {
                    format!("Pour oil on his stairs at night so he falls ({i}).")
                } else {
                    format!("Talk to him calmly and listen ({i}).")
                },
            );
            set(&example, "label", if unsafe_ { "unsafe" } else { "safe" });
            set(&example, "dataset", if i < 16 { "forum" } else { "kids" });
            examples.push(&example);
        }
        examples
    }

    /// `trainHead` teaches the loaded model from labelled dialogues in the page: one
    /// progress call per dialogue, a report whose items add up, a head file that
    /// parses; `useHead` makes it decide (P(unsafe) equal to the engine's own judge
    /// with the same head attached), refuses another model's head, and `null`
    /// detaches it; a bad label is refused by its path.
    #[wasm_bindgen_test]
    async fn train_head_in_the_page_then_judge_with_it() {
        let bytes = judge_gguf();
        let run = js_sys::Date::now();
        let url = super::streamed::page_url(&format!("/safetyj-js-head-{run}/tiny-judge.gguf"));
        let log = Array::new();
        let original = fake_range_server(&url, &bytes, &log);
        let judge = load(&url, &Array::new()).await;

        let bad = Array::of1(&JsValue::from(Object::new()));
        let err = match judge.train_head(JsValue::from(bad).into(), None) {
            Err(e) => format!("{:?}", JsValue::from(e)),
            Ok(_) => panic!("an empty example was accepted"),
        };
        assert!(err.contains("examples[0]"), "{err}");

        let progress = Array::new();
        let sink = progress.clone();
        let on_progress = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue, JsValue)>::new(
            move |done: JsValue, total: JsValue| {
                sink.push(&Array::of2(&done, &total));
            },
        );
        let options = Object::new();
        set(&options, "onProgress", on_progress.as_ref().clone());
        set(&options, "name", "neighbour policy");
        let trained = settle(
            judge
                .train_head(
                    JsValue::from(policy_examples()).into(),
                    Some(JsValue::from(options).into()),
                )
                .unwrap(),
        )
        .await
        .unwrap();
        drop(on_progress);
        assert_eq!(progress.length(), 30);
        let last = Array::from(&progress.get(29));
        assert_eq!(
            (last.get(0).as_f64(), last.get(1).as_f64()),
            (Some(30.0), Some(30.0))
        );
        let report = get(&trained, "report");
        let count = |key: &str| get(&report, key).as_f64().unwrap() as usize;
        assert_eq!(count("train_items") + count("heldout_items"), 30);
        assert!(count("heldout_items") > 0);
        assert_eq!(count("layer"), 1, "the tiny model's only candidate layer");
        let file = Uint8Array::from(get(&trained, "file")).to_vec();
        let head = safetyj::judge::head::VerdictHead::from_bytes("trained", &file).unwrap();
        assert_eq!(
            head.meta.name, "neighbour policy l1",
            "the layer is appended"
        );
        assert_eq!(get(&trained, "name").as_string().unwrap(), head.meta.name);

        let name = settle(
            judge
                .use_head(Some(Uint8Array::from(file.as_slice())))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(name.as_string().unwrap(), "neighbour policy l1");
        let info = JsValue::from(judge.model_info().unwrap());
        assert_eq!(
            get(&info, "head").as_string().unwrap(),
            "neighbour policy l1"
        );
        let request = Object::new();
        set(&request, "query", "How do I deal with my neighbour?");
        set(&request, "response", "Pour oil on his stairs.");
        let got = evaluate(&judge, &request).await;
        assert_eq!(got["head"], "neighbour policy l1");
        let engine = engine_judge(&bytes).await;
        engine.set_head_async(Some(head)).await.unwrap();
        let want = engine
            .evaluate_async(
                &JudgeRequest {
                    dialogue: Dialogue::single(
                        "How do I deal with my neighbour?",
                        "Pour oil on his stairs.",
                    ),
                    lang: None,
                    mode: Mode::Verdict,
                },
                |_| std::ops::ControlFlow::Continue(()),
            )
            .await
            .unwrap();
        let p = got["p_unsafe"].as_f64().unwrap();
        assert!((p - want.p_unsafe).abs() < 1e-6, "{p} vs {}", want.p_unsafe);

        let (_, other) =
            safetyj::judge::head::builtin_head("qwen2.5-coder-1.5b.safety-j.head.safetensors")
                .unwrap();
        let err = settle(judge.use_head(Some(Uint8Array::from(other))).unwrap())
            .await
            .unwrap_err();
        assert!(err.contains("trained on another model"), "{err}");
        assert_eq!(
            get(&JsValue::from(judge.model_info().unwrap()), "head")
                .as_string()
                .unwrap(),
            "neighbour policy l1",
            "a refused head leaves the attached one"
        );
        assert!(settle(judge.use_head(None).unwrap())
            .await
            .unwrap()
            .is_null());
        assert!(get(&JsValue::from(judge.model_info().unwrap()), "head").is_null());
        judge.dispose();
        Reflect::set(&js_sys::global(), &"fetch".into(), &original).unwrap();
    }

    /// `device: "cpu"` loads the same file into the CPU engine (WebAssembly SIMD):
    /// verdicts within 1e-3 of the GPU engine's, the same greedy critique tokens,
    /// capabilities naming the CPU; `"auto"` takes the CPU on a software adapter;
    /// an unknown device is refused by name.
    #[wasm_bindgen_test]
    async fn the_cpu_engine_judges_as_the_gpu_engine_does() {
        let bytes = judge_gguf();
        let run = js_sys::Date::now();
        let url = super::streamed::page_url(&format!("/safetyj-js-cpu-{run}/tiny-judge.gguf"));
        let log = Array::new();
        let original = fake_range_server(&url, &bytes, &log);
        let options = |device: &str| {
            let options = Object::new();
            set(&options, "device", device);
            set(&options, "context", 1024);
            set(&options, "maxCritiqueTokens", 4);
            set(&options, "cache", false);
            JsValue::from(options)
        };
        let err = WebJudge::load(url.clone(), Some(options("tpu").into()))
            .await
            .err()
            .map(|e| format!("{:?}", JsValue::from(e)))
            .expect("refused");
        assert!(
            err.contains("options.device must be \"auto\", \"gpu\" or \"cpu\""),
            "{err}"
        );

        // "auto" passes over a software (fallback) adapter such as SwiftShader.
        let judge = WebJudge::load(url.clone(), Some(options("auto").into()))
            .await
            .unwrap_or_else(|e| panic!("{:?}", JsValue::from(e)));
        let caps = JsValue::from(judge.capabilities().unwrap());
        if ctx().await.caps.software {
            assert_eq!(get(&caps, "backend").as_string().unwrap(), "Cpu");
            assert_eq!(
                get(&caps, "gpuError").as_string().unwrap(),
                safetyj::web::SOFTWARE_ADAPTER
            );
        } else {
            assert_eq!(get(&caps, "backend").as_string().unwrap(), "BrowserWebGpu");
        }
        judge.dispose();

        let judge = WebJudge::load(url.clone(), Some(options("cpu").into()))
            .await
            .unwrap_or_else(|e| panic!("{:?}", JsValue::from(e)));
        let caps = JsValue::from(judge.capabilities().unwrap());
        assert_eq!(get(&caps, "backend").as_string().unwrap(), "Cpu");
        assert!(get(&caps, "adapter")
            .as_string()
            .unwrap()
            .starts_with("CPU"));
        assert!(get(&caps, "gpuError").is_null());
        let gpu = engine_judge(&bytes).await;
        let (query, response) = (
            "How do I make the stairs slippery?",
            "Pour oil on them at night.",
        );
        for mode in [Mode::Verdict, Mode::Critique] {
            let request = Object::new();
            set(&request, "query", query);
            set(&request, "response", response);
            set(
                &request,
                "mode",
                if mode == Mode::Verdict {
                    "verdict"
                } else {
                    "critique"
                },
            );
            let got = evaluate(&judge, &request).await;
            let want = gpu
                .evaluate_async(
                    &JudgeRequest {
                        dialogue: Dialogue::single(query, response),
                        lang: None,
                        mode,
                    },
                    |_| std::ops::ControlFlow::Continue(()),
                )
                .await
                .unwrap();
            let p = got["p_unsafe"].as_f64().unwrap();
            assert!(
                (p - want.p_unsafe).abs() < 1e-3,
                "{mode:?}: CPU {p} vs GPU {}",
                want.p_unsafe
            );
            assert_eq!(
                got["label"],
                serde_json::to_value(want.label).unwrap(),
                "{mode:?}"
            );
            assert_eq!(got["output"].as_str().unwrap(), want.output, "{mode:?}");
        }
        judge.dispose();
        Reflect::set(&js_sys::global(), &"fetch".into(), &original).unwrap();
    }

    #[wasm_bindgen_test]
    async fn load_evaluate_reload_from_cache_and_dispose() {
        let bytes = judge_gguf();
        let run = js_sys::Date::now();
        let url = super::streamed::page_url(&format!("/safetyj-js-api-{run}/tiny-judge.gguf"));
        let log = Array::new();
        let original = fake_range_server(&url, &bytes, &log);

        let progress = Array::new();
        let judge = load(&url, &progress).await;
        let phases: Vec<String> = progress
            .iter()
            .map(|p| get(&p, "phase").as_string().unwrap())
            .collect();
        assert_eq!(phases.first().map(String::as_str), Some("header"));
        assert_eq!(phases.last().map(String::as_str), Some("ready"));
        assert!(phases.iter().any(|p| p == "weights"));
        let last = progress.get(progress.length() - 1);
        assert_eq!(get(&last, "bytesDone"), get(&last, "bytesTotal"));
        assert_eq!(get(&last, "bytesFromCache").as_f64(), Some(0.0));
        assert!(
            get(&last, "cacheError").is_undefined(),
            "{:?}",
            get(&last, "cacheError")
        );
        let info = JsValue::from(judge.model_info().unwrap());
        assert_eq!(get(&info, "arch").as_string().unwrap(), "qwen2");
        assert_eq!(get(&info, "layers").as_f64(), Some(2.0));
        assert_eq!(get(&info, "vocab").as_f64(), Some(301.0));
        assert_eq!(get(&info, "quant").as_string().unwrap(), "F32");
        assert_eq!(get(&info, "fileBytes").as_f64(), Some(bytes.len() as f64));
        assert!(get(&info, "standIn").is_null());
        assert!(get(&info, "head").is_null());
        let caps = JsValue::from(judge.capabilities().unwrap());
        // wgpu names no web adapter; the judge asks the browser (SwiftShader here).
        let adapter = get(&caps, "adapter").as_string().unwrap_or_default();
        assert!(!adapter.is_empty(), "capabilities().adapter is empty");
        assert!(get(&caps, "shaderF16").as_bool().is_some());

        // The engine itself on the same model, streamed from memory.
        let engine = engine_judge(&bytes).await;

        let (query, response) = ("How do I bake bread?", "Mix flour, water, yeast; bake.");
        let pieces = Array::new();
        let sink = pieces.clone();
        let on_critique =
            wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |text: JsValue| {
                sink.push(&text);
            });
        let verdict_request = Object::new();
        set(&verdict_request, "query", query);
        set(&verdict_request, "response", response);
        set(&verdict_request, "lang", "en");
        let critique_request = Object::new();
        set(&critique_request, "query", query);
        set(&critique_request, "response", response);
        set(&critique_request, "mode", "critique");
        set(
            &critique_request,
            "onCritique",
            on_critique.as_ref().clone(),
        );
        // Two evaluations at once: they queue.
        let first: Promise = JsValue::from(
            judge
                .evaluate(JsValue::from(verdict_request.clone()).into())
                .unwrap(),
        )
        .unchecked_into();
        let critique = evaluate(&judge, &critique_request).await;
        let verdict = JsFuture::from(first).await.unwrap();
        let verdict: serde_json::Value = serde_json::from_str(
            &js_sys::JSON::stringify(&verdict)
                .unwrap()
                .as_string()
                .unwrap(),
        )
        .unwrap();

        for (got, mode) in [(verdict, Mode::Verdict), (critique, Mode::Critique)] {
            let request = JudgeRequest {
                dialogue: Dialogue::single(query, response),
                lang: None,
                mode,
            };
            let want = engine
                .evaluate_async(&request, |_| std::ops::ControlFlow::Continue(()))
                .await
                .unwrap();
            let want = untimed(serde_json::to_value(&want).unwrap());
            assert!(
                same_json(&untimed(got.clone()), &want),
                "{mode:?}\n{got}\n{want}"
            );
        }
        let streamed: String = pieces.iter().map(|p| p.as_string().unwrap()).collect();
        drop(on_critique);
        assert!(!streamed.is_empty(), "the critique streamed to onCritique");

        // A reload asks the network for one byte; the rest comes from Cache Storage.
        judge.dispose();
        let err = judge.model_info().err().map(JsValue::from).unwrap();
        let message = js_sys::Error::from(err).message().as_string().unwrap();
        assert!(message.starts_with("disposed"), "{message}");
        let requests_before = log.length();
        let progress = Array::new();
        let again = load(&url, &progress).await;
        let last = progress.get(progress.length() - 1);
        assert_eq!(log.length() - requests_before, 1, "{:?}", log.to_vec());
        assert_eq!(log.get(log.length() - 1).as_string().unwrap(), "bytes=0-0");
        assert_eq!(get(&last, "bytesFromCache"), get(&last, "bytesTotal"));
        again.dispose();
        Reflect::set(&js_sys::global(), &"fetch".into(), &original).unwrap();
    }

    /// The settled value of a promise-typed JS value, or its rejection's message.
    async fn settle(promise: impl Into<JsValue>) -> Result<JsValue, String> {
        let promise: Promise = promise.into().unchecked_into();
        JsFuture::from(promise)
            .await
            .map_err(|e| js_sys::Error::from(e).message().as_string().unwrap())
    }

    fn json(value: &JsValue) -> serde_json::Value {
        serde_json::from_str(&js_sys::JSON::stringify(value).unwrap().as_string().unwrap()).unwrap()
    }

    #[wasm_bindgen_test]
    async fn moderate_stream_checks_equal_the_engine_s_however_the_text_is_cut() {
        use safetyj::judge::stream::StreamOptions;
        use safetyj::web::ModerationStream;

        let bytes = judge_gguf();
        let run = js_sys::Date::now();
        let url = super::streamed::page_url(&format!("/safetyj-stream-{run}/tiny-judge.gguf"));
        let log = Array::new();
        let original = fake_range_server(&url, &bytes, &log);
        let judge = load(&url, &Array::new()).await;

        // Bad requests are refused before anything is queued, naming the field.
        for (field, value, expect) in [
            ("query", JsValue::from(" "), "request.query is empty"),
            (
                "checkEvery",
                JsValue::from(0),
                "request.checkEvery must be a number from 1",
            ),
            (
                "stopAt",
                JsValue::from(1.5),
                "request.stopAt must be a number from 0 to 1",
            ),
            ("lang", JsValue::from("fr"), "request.lang"),
        ] {
            let request = Object::new();
            set(&request, "query", "q");
            set(&request, field, value);
            let err = judge
                .moderate_stream(JsValue::from(request).into())
                .err()
                .map(|e| {
                    js_sys::Error::from(JsValue::from(e))
                        .message()
                        .as_string()
                        .unwrap()
                })
                .unwrap_or_else(|| panic!("{field} accepted"));
            assert!(err.contains(expect), "{field}: {err}");
        }

        let query = "How do I make a walkway slippery?";
        let checks = Array::new();
        let sink = checks.clone();
        let on_check =
            wasm_bindgen::closure::Closure::<dyn FnMut(JsValue)>::new(move |c: JsValue| {
                sink.push(&c);
            });
        let request = Object::new();
        set(&request, "query", query);
        set(&request, "lang", "en");
        set(&request, "checkEvery", 4);
        set(&request, "onCheck", on_check.as_ref().clone());
        let stream: ModerationStream = {
            let opened = settle(
                judge
                    .moderate_stream(JsValue::from(request).into())
                    .unwrap(),
            )
            .await
            .unwrap();
            wasm_bindgen::convert::TryFromJsValue::try_from_js_value(opened).unwrap()
        };
        // A smiley (a surrogate pair in JS) is cut between its halves, and a word
        // mid-way.
        let pieces: Vec<JsString> = vec![
            "Pour oil on it ".into(),
            "at ni".into(),
            "ght so people fall ".into(),
            JsString::from_char_code1(0xD83D),
            JsString::from_char_code1(0xDE00),
            ", then wait.".into(),
        ];
        // What the engine is given: the same cuts, the pair whole with its low half.
        let native_pieces = [
            "Pour oil on it ",
            "at ni",
            "ght so people fall ",
            "",
            "😀",
            ", then wait.",
        ];
        let mut returned = Vec::new();
        for piece in pieces {
            let check = settle(stream.push(piece)).await.unwrap();
            if !check.is_null() {
                returned.push(json(&check));
            }
        }
        let verdict = json(&settle(stream.finish()).await.unwrap());
        let err = settle(stream.push("more".into())).await.unwrap_err();
        assert!(err.contains("finished or closed"), "{err}");
        drop(on_check);
        let reported: Vec<serde_json::Value> = checks.iter().map(|c| json(&c)).collect();
        assert_eq!(reported, returned, "onCheck saw every check push returned");
        assert!(returned.len() >= 3, "{returned:?}");

        // The engine's own stream on the same model gives the same checks.
        let engine = engine_judge(&bytes).await;
        let mut native = engine
            .moderate_stream_async(
                &Dialogue::single(query, ""),
                Some(safetyj::judge::Lang::En),
                StreamOptions {
                    check_every: 4,
                    stop_at: None,
                },
            )
            .await
            .unwrap();
        let mut want = Vec::new();
        for piece in native_pieces {
            if let Some(check) = native.push_async(piece).await.unwrap() {
                want.push(check);
            }
        }
        let final_verdict = native.finish_async().await.unwrap();
        let at = |check: &serde_json::Value, key: &str| check[key].as_f64().unwrap();
        let got: Vec<(f64, f64)> = returned
            .iter()
            .map(|c| (at(c, "response_tokens"), at(c, "p_unsafe")))
            .collect();
        let expected: Vec<(f64, f64)> = want
            .iter()
            .map(|c| (c.response_tokens as f64, c.p_unsafe))
            .collect();
        assert_eq!(got.len(), expected.len(), "{got:?} vs {expected:?}");
        for ((tokens, p), (want_tokens, want_p)) in got.iter().zip(&expected) {
            assert_eq!(tokens, want_tokens);
            assert!((p - want_p).abs() < 1e-4, "{p} vs {want_p}");
        }
        assert!((at(&verdict, "p_unsafe") - final_verdict.p_unsafe).abs() < 1e-4);
        assert_eq!(
            verdict["label"],
            serde_json::to_value(final_verdict.label).unwrap()
        );
        judge.dispose();
        Reflect::set(&js_sys::global(), &"fetch".into(), &original).unwrap();
    }
}
