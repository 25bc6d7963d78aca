//! Loading weights onto the GPU from a GGUF file or a Hugging Face checkpoint,
//! through one [`WeightSource`] interface, so the forward pass never knows which.

use super::arch::{split_internlm2_qkv, Arch, HfSource, QkvPart, Weight};
use super::config::ModelConfig;
use super::forward::{LayerWeights, Model};
use crate::error::{Error, Result};
use crate::formats::config::HfConfig;
use crate::formats::gguf::GgufFile;
use crate::formats::safetensors::SafetensorsCheckpoint;
use crate::formats::source::ByteSource;
use crate::gpu::Context;
use crate::ops::rope::{Rope, RopeConfig, RopePairing};
use crate::ops::{Tensor, WeightMatrix};
use crate::quant::{self, DType};

/// A matrix as stored: its type, `rows` × `cols`, and the bytes in that type's layout.
pub struct StoredMatrix {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
}

/// Where a model's configuration and weights come from.
pub trait WeightSource {
    /// The file or directory, for errors.
    fn name(&self) -> &str;
    /// The model's shape.
    fn config(&self) -> Result<ModelConfig>;
    /// Whether the checkpoint has `weight` (biases and the output head are optional).
    fn has(&self, weight: Weight) -> bool;
    /// A weight matrix, in the type it will have on the GPU.
    fn matrix(&self, weight: Weight) -> Result<StoredMatrix>;
    /// A vector (norm weights, biases) as f32.
    fn vector(&self, weight: Weight) -> Result<Vec<f32>>;
}

/// Weights straight from a GGUF file: blocks are uploaded unchanged.
pub struct GgufWeights {
    file: GgufFile,
    source: Box<dyn ByteSource>,
}

impl GgufWeights {
    /// Reads the header of `source`; tensors are read one at a time on demand.
    pub fn new(source: Box<dyn ByteSource>) -> Result<GgufWeights> {
        let file = GgufFile::read(source.as_ref())?;
        Ok(GgufWeights { file, source })
    }

    /// The parsed GGUF header (metadata, tokenizer, tensor table).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    fn invalid(&self, message: String) -> Error {
        Error::Format {
            file: self.file.name().to_string(),
            message,
        }
    }
}

impl WeightSource for GgufWeights {
    fn name(&self) -> &str {
        self.file.name()
    }

    fn config(&self) -> Result<ModelConfig> {
        let f = &self.file;
        let arch = Arch::from_name(f.get_str("general.architecture")?)?;
        let key = |k: &str| format!("{}.{k}", arch.gguf_name());
        let get = |k: &str| f.get_u64(&key(k)).map(|v| v as usize);
        let heads = get("attention.head_count")?;
        let hidden = get("embedding_length")?;
        let head_dim =
            get("attention.key_length").unwrap_or(if heads > 0 { hidden / heads } else { 0 });
        let embedding = f.tensor(&Weight::TokenEmbedding.gguf_name())?;
        let config = ModelConfig {
            arch,
            layers: get("block_count")?,
            hidden,
            heads,
            kv_heads: get("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            ffn: get("feed_forward_length")?,
            vocab: embedding.rows() as usize,
            rms_eps: f.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base: f.get_f32(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_dims: get("rope.dimension_count").unwrap_or(head_dim),
            // llama.cpp permutes Q/K rows of llama and internlm2 checkpoints for the
            // interleaved pairing; qwen2 keeps Hugging Face's rotate-half layout.
            rope_pairing: match arch {
                Arch::Llama | Arch::InternLm2 => RopePairing::Interleaved,
                Arch::Qwen2 => RopePairing::Neox,
            },
            rope_freq_factors: match f.tensor("rope_freqs.weight") {
                Ok(info) => {
                    let bytes = f.read_tensor(self.source.as_ref(), "rope_freqs.weight")?;
                    Some(quant::dequantize_to_vec(
                        info.dtype,
                        &bytes,
                        info.elements() as usize,
                    )?)
                }
                Err(_) => None,
            },
            context: get("context_length")?,
        };
        config.validate(self.name())?;
        Ok(config)
    }

    fn has(&self, weight: Weight) -> bool {
        self.file.tensor(&weight.gguf_name()).is_ok()
    }

    fn matrix(&self, weight: Weight) -> Result<StoredMatrix> {
        let name = weight.gguf_name();
        let info = self.file.tensor(&name)?;
        if info.dims.len() != 2 {
            return Err(self.invalid(format!(
                "tensor {name} has {} dimensions, expected 2",
                info.dims.len()
            )));
        }
        let bytes = self.file.read_tensor(self.source.as_ref(), &name)?;
        Ok(StoredMatrix {
            dtype: info.dtype,
            rows: info.rows() as usize,
            cols: info.cols() as usize,
            bytes,
        })
    }

    fn vector(&self, weight: Weight) -> Result<Vec<f32>> {
        let name = weight.gguf_name();
        let info = self.file.tensor(&name)?;
        let bytes = self.file.read_tensor(self.source.as_ref(), &name)?;
        quant::dequantize_to_vec(info.dtype, &bytes, info.elements() as usize)
    }
}

/// Weights from a Hugging Face checkpoint (F32/F16/BF16 safetensors), quantized to
/// `dtype` as they load. InternLM2's fused `wqkv` is split here.
pub struct HfWeights {
    name: String,
    hf: HfConfig,
    checkpoint: SafetensorsCheckpoint,
    dtype: DType,
}

impl HfWeights {
    /// Opens `dir` (config.json plus model.safetensors or a sharded index); matrices
    /// are quantized to `dtype` on load (native only: it reads the file system).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: &std::path::Path, dtype: DType) -> Result<HfWeights> {
        let hf = HfConfig::open(dir.join("config.json"))?;
        let checkpoint = SafetensorsCheckpoint::open_dir(dir)?;
        Ok(HfWeights {
            name: dir.display().to_string(),
            hf,
            checkpoint,
            dtype,
        })
    }

    /// Opens a checkpoint given as a directory (as [`HfWeights::open`]) or as one
    /// `.safetensors` file with config.json beside it (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_path(path: &std::path::Path, dtype: DType) -> Result<HfWeights> {
        if path.is_dir() {
            return HfWeights::open(path, dtype);
        }
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let hf = HfConfig::open(dir.join("config.json"))?;
        let source = crate::formats::MmapSource::open(path)?;
        let checkpoint = SafetensorsCheckpoint::single(Box::new(source))?;
        Ok(HfWeights {
            name: path.display().to_string(),
            hf,
            checkpoint,
            dtype,
        })
    }

    /// The parsed config.json.
    pub fn hf_config(&self) -> &HfConfig {
        &self.hf
    }

    fn arch(&self) -> Result<Arch> {
        Arch::from_name(&self.hf.model_type)
    }

    /// The shape (rows, cols) of `weight`, from the safetensors headers alone.
    pub fn shape(&self, weight: Weight) -> Result<(usize, usize)> {
        let arch = self.arch()?;
        let c = &self.hf;
        let (name, part) = match weight.hf_source(arch) {
            HfSource::Whole(name) => (name, None),
            HfSource::FusedQkv { name, part } => (name, Some(part)),
        };
        let info = self.checkpoint.tensor(&name)?;
        let rows = info.shape.first().copied().unwrap_or(1) as usize;
        let cols = (info.shape.iter().skip(1).product::<u64>() as usize).max(1);
        let rows = match part {
            None => rows,
            Some(QkvPart::Q) => c.num_attention_heads * c.head_dim,
            Some(QkvPart::K | QkvPart::V) => c.num_key_value_heads * c.head_dim,
        };
        Ok((rows, cols))
    }

    /// The f32 values and shape (rows, cols) of `weight`.
    pub fn read_f32(&self, weight: Weight) -> Result<(Vec<f32>, usize, usize)> {
        let arch = self.arch()?;
        let c = &self.hf;
        match weight.hf_source(arch) {
            HfSource::Whole(name) => {
                let info = self.checkpoint.tensor(&name)?;
                let rows = info.shape.first().copied().unwrap_or(1) as usize;
                let cols = info.shape[1..].iter().product::<u64>() as usize;
                Ok((self.checkpoint.read_tensor_f32(&name)?, rows, cols.max(1)))
            }
            HfSource::FusedQkv { name, part } => {
                let info = self.checkpoint.tensor(&name)?;
                let cols = info.shape[1..].iter().product::<u64>().max(1) as usize;
                let fused = self.checkpoint.read_tensor_f32(&name)?;
                let part_values = split_internlm2_qkv(
                    &fused,
                    cols,
                    c.num_attention_heads,
                    c.num_key_value_heads,
                    c.head_dim,
                    part,
                )?;
                let rows = part_values.len() / cols;
                Ok((part_values, rows, cols))
            }
        }
    }
}

impl WeightSource for HfWeights {
    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> Result<ModelConfig> {
        let c = &self.hf;
        let arch = self.arch()?;
        if arch == Arch::InternLm2 && c.attention_bias {
            return Err(Error::Unsupported(format!(
                "{}: InternLM2 with attention biases (config \"bias\": true) is not supported",
                self.name
            )));
        }
        if c.rope_scaling.is_some() {
            return Err(Error::Unsupported(format!(
                "{}: rope_scaling is not supported for Hugging Face checkpoints yet",
                self.name
            )));
        }
        let config = ModelConfig {
            arch,
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            ffn: c.intermediate_size,
            vocab: c.vocab_size,
            rms_eps: c.rms_norm_eps as f32,
            rope_base: c.rope_theta as f32,
            rope_dims: c.head_dim,
            rope_pairing: RopePairing::Neox,
            rope_freq_factors: None,
            context: c.max_position_embeddings,
        };
        config.validate(&self.name)?;
        Ok(config)
    }

    fn has(&self, weight: Weight) -> bool {
        let Ok(arch) = self.arch() else { return false };
        match weight.hf_source(arch) {
            HfSource::Whole(name) | HfSource::FusedQkv { name, .. } => {
                self.checkpoint.tensor(&name).is_ok()
            }
        }
    }

    fn matrix(&self, weight: Weight) -> Result<StoredMatrix> {
        let (values, rows, cols) = self.read_f32(weight)?;
        // Norms and embeddings of odd widths cannot be block-quantized: keep them F32.
        let dtype = if cols % self.dtype.block_elems() == 0 {
            self.dtype
        } else {
            DType::F32
        };
        let bytes = quant::quantize(dtype, &values)?;
        Ok(StoredMatrix {
            dtype,
            rows,
            cols,
            bytes,
        })
    }

    fn vector(&self, weight: Weight) -> Result<Vec<f32>> {
        Ok(self.read_f32(weight)?.0)
    }
}

impl Model {
    /// Uploads every weight of `source` to the GPU, checking each shape against the
    /// configuration. `progress` is called with (tensors done, tensors total).
    pub fn load(
        ctx: &Context,
        source: &dyn WeightSource,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Model> {
        let config = source.config()?;
        let c = &config;
        let total = 3 + c.layers * 12;
        let mut done = 0;
        let mut step = |progress: &mut dyn FnMut(usize, usize)| {
            done += 1;
            progress(done.min(total), total);
        };
        let invalid = |message: String| Error::Format {
            file: source.name().to_string(),
            message,
        };
        let matrix = |weight: Weight, rows: usize, cols: usize| -> Result<WeightMatrix> {
            let m = source.matrix(weight)?;
            let name = weight.gguf_name();
            if m.rows != rows || m.cols != cols {
                return Err(invalid(format!(
                    "tensor {name} is {}×{} but the configuration needs {rows}×{cols}",
                    m.rows, m.cols
                )));
            }
            check_finite(&name, m.dtype, &m.bytes).map_err(invalid)?;
            WeightMatrix::upload(ctx, &name, m.dtype, rows, cols, &m.bytes)
        };
        let vector = |weight: Weight, len: usize| -> Result<Tensor> {
            let name = weight.gguf_name();
            let v = source.vector(weight)?;
            if v.len() != len {
                return Err(invalid(format!(
                    "tensor {name} has {} values but the configuration needs {len}",
                    v.len()
                )));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(invalid(format!(
                    "tensor {name} holds a non-finite value at element {i}"
                )));
            }
            Tensor::from_f32(ctx, &name, &[len], &v)
        };
        let optional_vector = |weight: Weight, len: usize| {
            if source.has(weight) {
                vector(weight, len).map(Some)
            } else {
                Ok(None)
            }
        };

        let (q_width, kv_width) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        let token_embedding = matrix(Weight::TokenEmbedding, c.vocab, c.hidden)?;
        step(&mut progress);
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            layers.push(LayerWeights {
                attn_norm: vector(Weight::AttnNorm(i), c.hidden)?,
                q: matrix(Weight::Q(i), q_width, c.hidden)?,
                k: matrix(Weight::K(i), kv_width, c.hidden)?,
                v: matrix(Weight::V(i), kv_width, c.hidden)?,
                q_bias: optional_vector(Weight::QBias(i), q_width)?,
                k_bias: optional_vector(Weight::KBias(i), kv_width)?,
                v_bias: optional_vector(Weight::VBias(i), kv_width)?,
                attn_output: matrix(Weight::AttnOutput(i), c.hidden, q_width)?,
                ffn_norm: vector(Weight::FfnNorm(i), c.hidden)?,
                ffn_gate: matrix(Weight::FfnGate(i), c.ffn, c.hidden)?,
                ffn_up: matrix(Weight::FfnUp(i), c.ffn, c.hidden)?,
                ffn_down: matrix(Weight::FfnDown(i), c.hidden, c.ffn)?,
            });
            for _ in 0..12 {
                step(&mut progress);
            }
        }
        let output_norm = vector(Weight::OutputNorm, c.hidden)?;
        step(&mut progress);
        let output = if source.has(Weight::Output) {
            Some(matrix(Weight::Output, c.vocab, c.hidden)?)
        } else {
            None
        };
        step(&mut progress);
        let rope = Rope::new(
            ctx,
            RopeConfig {
                head_dim: c.head_dim,
                rotary_dim: c.rope_dims,
                base: c.rope_base as f64,
                pairing: c.rope_pairing,
                freq_factors: c.rope_freq_factors.clone(),
            },
        )?;
        Ok(Model {
            config,
            token_embedding,
            layers,
            output_norm,
            output,
            rope,
        })
    }
}

/// Fails when a weight's stored values include NaN or infinity: the f16 scales of
/// quantized blocks, or the elements of float types.
fn check_finite(name: &str, dtype: DType, bytes: &[u8]) -> std::result::Result<(), String> {
    let f16_at = |i: usize| half::f16::from_le_bytes([bytes[i], bytes[i + 1]]).to_f32();
    let bad = |index: usize| {
        Err(format!(
            "tensor {name} ({dtype}) holds a non-finite value in block {index}"
        ))
    };
    let scale_offsets: &[usize] = match dtype {
        DType::F32 => {
            return match bytes
                .chunks_exact(4)
                .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
            {
                Some(i) => bad(i),
                None => Ok(()),
            }
        }
        DType::F16 => &[0],
        DType::BF16 => {
            return match bytes
                .chunks_exact(2)
                .position(|b| !half::bf16::from_le_bytes([b[0], b[1]]).to_f32().is_finite())
            {
                Some(i) => bad(i),
                None => Ok(()),
            }
        }
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q6_K => &[208],
    };
    let bb = dtype.block_bytes();
    for (index, start) in (0..bytes.len()).step_by(bb).enumerate() {
        if scale_offsets
            .iter()
            .any(|&o| !f16_at(start + o).is_finite())
        {
            return bad(index);
        }
    }
    Ok(())
}
