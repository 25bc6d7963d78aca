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
}

impl WeightSource for GgufWeights {
    fn name(&self) -> &str {
        self.file.name()
    }

    fn config(&self) -> Result<ModelConfig> {
        let rope_freqs = match self.file.tensor(ROPE_FREQS) {
            Ok(_) => Some(self.file.read_tensor(self.source.as_ref(), ROPE_FREQS)?),
            Err(_) => None,
        };
        gguf_config(&self.file, rope_freqs.as_deref())
    }

    fn has(&self, weight: Weight) -> bool {
        self.file.tensor(&weight.gguf_name()).is_ok()
    }

    fn matrix(&self, weight: Weight) -> Result<StoredMatrix> {
        let bytes = self
            .file
            .read_tensor(self.source.as_ref(), &weight.gguf_name())?;
        gguf_matrix(&self.file, weight, bytes)
    }

    fn vector(&self, weight: Weight) -> Result<Vec<f32>> {
        let bytes = self
            .file
            .read_tensor(self.source.as_ref(), &weight.gguf_name())?;
        gguf_vector(&self.file, weight, &bytes)
    }
}

/// The GGUF tensor of per-frequency RoPE factors (llama 3 style), read by
/// [`gguf_config`] when a file has it.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// The model configuration a GGUF header describes. `rope_freqs` are the stored bytes
/// of the [`ROPE_FREQS`] tensor when the file has one (a header alone cannot hold them).
pub fn gguf_config(file: &GgufFile, rope_freqs: Option<&[u8]>) -> Result<ModelConfig> {
    let f = file;
    let arch = Arch::from_name(f.get_str("general.architecture")?)?;
    let key = |k: &str| format!("{}.{k}", arch.gguf_name());
    let get = |k: &str| f.get_u64(&key(k)).map(|v| v as usize);
    let heads = get("attention.head_count")?;
    let hidden = get("embedding_length")?;
    let head_dim = get("attention.key_length").unwrap_or(hidden.checked_div(heads).unwrap_or(0));
    let embedding = f.tensor(&Weight::TokenEmbedding.gguf_name())?;
    let rope_freq_factors = match (f.tensor(ROPE_FREQS), rope_freqs) {
        (Ok(info), Some(bytes)) => Some(quant::dequantize_to_vec(
            info.dtype,
            bytes,
            info.elements() as usize,
        )?),
        (Ok(_), None) => {
            return Err(format_error(
                f,
                format!("the bytes of tensor {ROPE_FREQS} are needed to configure the model"),
            ))
        }
        (Err(_), _) => None,
    };
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
        // interleaved pairing; qwen2 and qwen3 keep Hugging Face's rotate-half layout.
        rope_pairing: match arch {
            Arch::Llama | Arch::InternLm2 => RopePairing::Interleaved,
            Arch::Qwen2 | Arch::Qwen3 => RopePairing::Neox,
        },
        rope_freq_factors,
        context: get("context_length")?,
    };
    config.validate(f.name())?;
    Ok(config)
}

/// The stored bytes of GGUF tensor `weight` (from `file`'s tensor table) as a
/// matrix in its stored type; fails unless the tensor has two dimensions.
pub fn gguf_matrix(file: &GgufFile, weight: Weight, bytes: Vec<u8>) -> Result<StoredMatrix> {
    let name = weight.gguf_name();
    let info = file.tensor(&name)?;
    if info.dims.len() != 2 {
        return Err(format_error(
            file,
            format!(
                "tensor {name} has {} dimensions, expected 2",
                info.dims.len()
            ),
        ));
    }
    Ok(StoredMatrix {
        dtype: info.dtype,
        rows: info.rows() as usize,
        cols: info.cols() as usize,
        bytes,
    })
}

/// The stored bytes of GGUF tensor `weight` as f32 values (norm weights, biases).
pub fn gguf_vector(file: &GgufFile, weight: Weight, bytes: &[u8]) -> Result<Vec<f32>> {
    let info = file.tensor(&weight.gguf_name())?;
    quant::dequantize_to_vec(info.dtype, bytes, info.elements() as usize)
}

fn format_error(file: &GgufFile, message: String) -> Error {
    Error::Format {
        file: file.name().to_string(),
        message,
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
        let rope_freq_factors = c
            .rope_scaling
            .as_ref()
            .map(|s| super::rope_scaling::freq_factors(&self.name, s, c.rope_theta, c.head_dim))
            .transpose()?;
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
            rope_freq_factors,
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

/// How the forward pass holds a weight: a matrix in its stored type, or an f32 vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightKind {
    /// A `rows` × `cols` matrix (rows are output features).
    Matrix { rows: usize, cols: usize },
    /// A vector of `len` values (norm weights, biases).
    Vector { len: usize },
}

/// One weight a model needs: which, its shape, and whether a checkpoint may lack it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeededWeight {
    pub weight: Weight,
    pub kind: WeightKind,
    /// Biases and the output head (tied to the embedding when absent).
    pub optional: bool,
}

/// Fails unless `need` is a matrix of `rows` × `cols`; `file` names the model in the
/// error.
pub fn check_matrix_shape(file: &str, need: NeededWeight, rows: usize, cols: usize) -> Result<()> {
    let name = need.weight.gguf_name();
    let message = match need.kind {
        WeightKind::Matrix {
            rows: want_rows,
            cols: want_cols,
        } if (rows, cols) == (want_rows, want_cols) => return Ok(()),
        WeightKind::Matrix {
            rows: want_rows,
            cols: want_cols,
        } => format!(
            "tensor {name} is {rows}×{cols} but the configuration needs {want_rows}×{want_cols}"
        ),
        WeightKind::Vector { .. } => format!("tensor {name} is a matrix where a vector is needed"),
    };
    Err(Error::Format {
        file: file.to_string(),
        message,
    })
}

/// Every weight a model of configuration `c` needs, in load order.
pub fn needed_weights(c: &ModelConfig) -> Vec<NeededWeight> {
    let (q_width, kv_width) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let matrix = |weight, rows, cols| NeededWeight {
        weight,
        kind: WeightKind::Matrix { rows, cols },
        optional: false,
    };
    let vector = |weight, len| NeededWeight {
        weight,
        kind: WeightKind::Vector { len },
        optional: false,
    };
    let bias = |weight, len| NeededWeight {
        optional: true,
        ..vector(weight, len)
    };
    let mut needed = vec![matrix(Weight::TokenEmbedding, c.vocab, c.hidden)];
    for i in 0..c.layers {
        needed.extend([
            vector(Weight::AttnNorm(i), c.hidden),
            matrix(Weight::Q(i), q_width, c.hidden),
            matrix(Weight::K(i), kv_width, c.hidden),
            matrix(Weight::V(i), kv_width, c.hidden),
            bias(Weight::QBias(i), q_width),
            bias(Weight::KBias(i), kv_width),
            bias(Weight::VBias(i), kv_width),
        ]);
        if c.arch.has_qk_norm() {
            needed.extend([
                vector(Weight::QNorm(i), c.head_dim),
                vector(Weight::KNorm(i), c.head_dim),
            ]);
        }
        needed.extend([
            matrix(Weight::AttnOutput(i), c.hidden, q_width),
            vector(Weight::FfnNorm(i), c.hidden),
            matrix(Weight::FfnGate(i), c.ffn, c.hidden),
            matrix(Weight::FfnUp(i), c.ffn, c.hidden),
            matrix(Weight::FfnDown(i), c.hidden, c.ffn),
        ]);
    }
    needed.push(vector(Weight::OutputNorm, c.hidden));
    needed.push(NeededWeight {
        optional: true,
        ..matrix(Weight::Output, c.vocab, c.hidden)
    });
    needed
}

/// A weight checked and uploaded to the GPU.
enum Uploaded {
    Matrix(WeightMatrix),
    Vector(Tensor),
}

/// Collects a model's weights on the GPU one at a time, in any order, checking each
/// against the configuration, and assembles the [`Model`] once all are there. Every
/// loader (a [`WeightSource`], or tensors streamed by HTTP range) goes through it.
pub struct ModelBuilder<'a> {
    ctx: &'a Context,
    name: String,
    config: ModelConfig,
    needed: Vec<NeededWeight>,
    uploaded: Vec<Option<Uploaded>>,
}

impl<'a> ModelBuilder<'a> {
    /// A builder for a model of `config`; `name` (the file or URL) is used in errors.
    pub fn new(ctx: &'a Context, name: &str, config: ModelConfig) -> ModelBuilder<'a> {
        let needed = needed_weights(&config);
        ModelBuilder {
            ctx,
            name: name.to_string(),
            uploaded: needed.iter().map(|_| None).collect(),
            config,
            needed,
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The weights to supply, indexed as [`ModelBuilder::put_matrix`] and
    /// [`ModelBuilder::put_vector`] expect.
    pub fn needed(&self) -> &[NeededWeight] {
        &self.needed
    }

    fn invalid(&self, message: String) -> Error {
        Error::Format {
            file: self.name.clone(),
            message,
        }
    }

    /// Fails unless needed weight `index` is a matrix of `rows` × `cols` (callers can
    /// check a tensor table before fetching any data).
    pub fn check_matrix(&self, index: usize, rows: usize, cols: usize) -> Result<()> {
        check_matrix_shape(&self.name, self.need(index)?, rows, cols)
    }

    fn need(&self, index: usize) -> Result<NeededWeight> {
        self.needed.get(index).copied().ok_or_else(|| {
            Error::InvalidInput(format!(
                "weight {index} is out of range: the model needs {}",
                self.needed.len()
            ))
        })
    }

    /// Checks and uploads needed weight `index`, a matrix.
    pub fn put_matrix(&mut self, index: usize, m: StoredMatrix) -> Result<()> {
        self.check_matrix(index, m.rows, m.cols)?;
        let name = self.needed[index].weight.gguf_name();
        check_finite(&name, m.dtype, &m.bytes).map_err(|e| self.invalid(e))?;
        let uploaded = WeightMatrix::upload(self.ctx, &name, m.dtype, m.rows, m.cols, &m.bytes)?;
        self.uploaded[index] = Some(Uploaded::Matrix(uploaded));
        Ok(())
    }

    /// Checks and uploads needed weight `index`, a vector.
    pub fn put_vector(&mut self, index: usize, values: Vec<f32>) -> Result<()> {
        let need = self.need(index)?;
        let name = need.weight.gguf_name();
        let WeightKind::Vector { len } = need.kind else {
            return Err(self.invalid(format!(
                "tensor {name} is a vector where a matrix is needed"
            )));
        };
        if values.len() != len {
            return Err(self.invalid(format!(
                "tensor {name} has {} values but the configuration needs {len}",
                values.len()
            )));
        }
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            return Err(self.invalid(format!(
                "tensor {name} holds a non-finite value at element {i}"
            )));
        }
        let uploaded = Tensor::from_f32(self.ctx, &name, &[len], &values)?;
        self.uploaded[index] = Some(Uploaded::Vector(uploaded));
        Ok(())
    }

    /// The model, once every required weight is uploaded; fails naming the first
    /// missing one.
    pub fn finish(self) -> Result<Model> {
        let c = self.config.clone();
        let ctx = self.ctx;
        let mut slots = Slots {
            name: self.name,
            slots: self.needed.into_iter().zip(self.uploaded).collect(),
        };
        let token_embedding = slots.matrix(Weight::TokenEmbedding)?;
        let layers = (0..c.layers)
            .map(|i| {
                Ok(LayerWeights {
                    attn_norm: slots.vector(Weight::AttnNorm(i))?,
                    q: slots.matrix(Weight::Q(i))?,
                    k: slots.matrix(Weight::K(i))?,
                    v: slots.matrix(Weight::V(i))?,
                    q_bias: slots.optional_vector(Weight::QBias(i))?,
                    k_bias: slots.optional_vector(Weight::KBias(i))?,
                    v_bias: slots.optional_vector(Weight::VBias(i))?,
                    qk_norm: if c.arch.has_qk_norm() {
                        Some((
                            slots.vector(Weight::QNorm(i))?,
                            slots.vector(Weight::KNorm(i))?,
                        ))
                    } else {
                        None
                    },
                    attn_output: slots.matrix(Weight::AttnOutput(i))?,
                    ffn_norm: slots.vector(Weight::FfnNorm(i))?,
                    ffn_gate: slots.matrix(Weight::FfnGate(i))?,
                    ffn_up: slots.matrix(Weight::FfnUp(i))?,
                    ffn_down: slots.matrix(Weight::FfnDown(i))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output_norm = slots.vector(Weight::OutputNorm)?;
        let output = slots.optional_matrix(Weight::Output)?;
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
            config: c,
            token_embedding,
            layers,
            output_norm,
            output,
            rope,
        })
    }
}

/// The uploaded weights of a [`ModelBuilder`], taken out one by one to assemble a model.
struct Slots {
    name: String,
    slots: Vec<(NeededWeight, Option<Uploaded>)>,
}

impl Slots {
    /// The upload of `weight`; `None` for an optional weight that was not supplied.
    fn take(&mut self, weight: Weight) -> Result<Option<Uploaded>> {
        let missing = || Error::Format {
            file: self.name.clone(),
            message: format!("tensor {} was not loaded", weight.gguf_name()),
        };
        let Some((need, slot)) = self.slots.iter_mut().find(|(n, _)| n.weight == weight) else {
            return Err(missing());
        };
        match slot.take() {
            Some(uploaded) => Ok(Some(uploaded)),
            None if need.optional => Ok(None),
            None => Err(missing()),
        }
    }

    fn optional_matrix(&mut self, weight: Weight) -> Result<Option<WeightMatrix>> {
        match self.take(weight)? {
            Some(Uploaded::Matrix(m)) => Ok(Some(m)),
            Some(Uploaded::Vector(_)) => Err(self.wrong_kind(weight)),
            None => Ok(None),
        }
    }

    fn matrix(&mut self, weight: Weight) -> Result<WeightMatrix> {
        self.optional_matrix(weight)?
            .ok_or_else(|| self.wrong_kind(weight))
    }

    fn optional_vector(&mut self, weight: Weight) -> Result<Option<Tensor>> {
        match self.take(weight)? {
            Some(Uploaded::Vector(v)) => Ok(Some(v)),
            Some(Uploaded::Matrix(_)) => Err(self.wrong_kind(weight)),
            None => Ok(None),
        }
    }

    fn vector(&mut self, weight: Weight) -> Result<Tensor> {
        self.optional_vector(weight)?
            .ok_or_else(|| self.wrong_kind(weight))
    }

    fn wrong_kind(&self, weight: Weight) -> Error {
        Error::Format {
            file: self.name.clone(),
            message: format!("tensor {} was loaded as the wrong kind", weight.gguf_name()),
        }
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
        let mut builder = ModelBuilder::new(ctx, source.name(), source.config()?);
        let needed = builder.needed().to_vec();
        for (index, need) in needed.iter().enumerate() {
            if !need.optional || source.has(need.weight) {
                match need.kind {
                    WeightKind::Matrix { .. } => {
                        builder.put_matrix(index, source.matrix(need.weight)?)?
                    }
                    WeightKind::Vector { .. } => {
                        builder.put_vector(index, source.vector(need.weight)?)?
                    }
                }
            }
            progress(index + 1, needed.len());
        }
        builder.finish()
    }
}

/// Fails when a weight's stored values include NaN or infinity: the f16 scales of
/// quantized blocks, or the elements of float types.
pub(crate) fn check_finite(
    name: &str,
    dtype: DType,
    bytes: &[u8],
) -> std::result::Result<(), String> {
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
