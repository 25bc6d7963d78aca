//! Loading a GGUF model by byte range: the header first, then each tensor's range
//! fetched (a few requests in flight) and handed on as it arrives — uploaded straight
//! into its GPU buffers here ([`load_gguf_streamed`]), or kept in its block type for
//! the CPU engine (`crate::cpu::CpuModel::load_streamed`) — so at most a bounded
//! window of raw tensor bytes is in flight. The GPU's per-weight checks and assembly
//! are [`ModelBuilder`]'s, shared with [`Model::load`].

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;

use super::config::ModelConfig;
use super::forward::Model;
use super::load::{
    check_matrix_shape, gguf_config, gguf_matrix, gguf_vector, ModelBuilder, NeededWeight,
    StoredMatrix, WeightKind, ROPE_FREQS,
};
use crate::error::Result;
use crate::formats::gguf::GgufFile;
use crate::formats::remote::{fetch_exact, RangeFetch};
use crate::gpu::Context;

/// Where a streamed load stands: tensor data bytes and tensors done of those needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub tensors_done: usize,
    pub tensors_total: usize,
}

/// Tensor bytes requested at once: further requests wait while this much is in
/// flight, though one request always goes (a tensor larger than this comes alone).
pub const WINDOW_BYTES: u64 = 64 << 20;

/// One tensor to fetch: its index in the needed weights and its bytes.
struct Job {
    index: usize,
    range: Range<u64>,
}

type Pending<'a> = Pin<Box<dyn Future<Output = (usize, u64, Result<Vec<u8>>)> + 'a>>;

/// Loads the model whose header is `file` from `source` (the same file) into GPU
/// buffers: every tensor is fetched by [`fetch_needed`] and uploaded as it arrives.
/// `progress` is called after each tensor.
pub async fn load_gguf_streamed<F: RangeFetch>(
    ctx: &Context,
    file: &GgufFile,
    source: &F,
    in_flight: usize,
    progress: impl FnMut(StreamProgress),
) -> Result<Model> {
    let config = streamed_config(file, source).await?;
    let mut builder = ModelBuilder::new(ctx, file.name(), config);
    let needed = builder.needed().to_vec();
    fetch_needed(
        file,
        source,
        &needed,
        in_flight,
        progress,
        |index, tensor| match tensor {
            FetchedTensor::Matrix(m) => builder.put_matrix(index, m),
            FetchedTensor::Vector(v) => builder.put_vector(index, v),
        },
    )
    .await?;
    builder.finish()
}

/// The configuration `file` describes, with its RoPE frequency factors fetched from
/// `source` when the file has them.
pub async fn streamed_config<F: RangeFetch>(file: &GgufFile, source: &F) -> Result<ModelConfig> {
    let rope_freqs = match file.tensor(ROPE_FREQS) {
        Ok(info) => Some(fetch_exact(source, info.file_range()).await?),
        Err(_) => None,
    };
    gguf_config(file, rope_freqs.as_deref())
}

/// A fetched tensor, decoded as its needed weight's kind asks.
pub enum FetchedTensor {
    /// A matrix in its stored type.
    Matrix(StoredMatrix),
    /// A vector as f32.
    Vector(Vec<f32>),
}

/// Fetches every tensor of `needed` that `file` has (an optional one may be absent)
/// from `source`, after checking each matrix's shape against the header, with up to
/// `in_flight` requests and [`WINDOW_BYTES`] at once; `put(index, tensor)` receives
/// each as it arrives, so at most that window of raw bytes is held. `progress` is
/// called before the first and after each tensor.
pub async fn fetch_needed<F: RangeFetch>(
    file: &GgufFile,
    source: &F,
    needed: &[NeededWeight],
    in_flight: usize,
    mut progress: impl FnMut(StreamProgress),
    mut put: impl FnMut(usize, FetchedTensor) -> Result<()>,
) -> Result<()> {
    let mut jobs = Vec::new();
    for (index, need) in needed.iter().enumerate() {
        let info = match file.tensor(&need.weight.gguf_name()) {
            Ok(info) => info,
            Err(_) if need.optional => continue,
            Err(e) => return Err(e),
        };
        if let WeightKind::Matrix { .. } = need.kind {
            if info.dims.len() == 2 {
                check_matrix_shape(
                    file.name(),
                    *need,
                    info.rows() as usize,
                    info.cols() as usize,
                )?;
            }
        }
        jobs.push(Job {
            index,
            range: info.file_range(),
        });
    }
    let mut status = StreamProgress {
        bytes_total: jobs.iter().map(|j| j.range.end - j.range.start).sum(),
        tensors_total: jobs.len(),
        ..Default::default()
    };
    progress(status);

    let in_flight = in_flight.max(1);
    let mut queue = jobs.into_iter().peekable();
    let mut pending: Vec<Pending<'_>> = Vec::new();
    let mut pending_bytes = 0u64;
    loop {
        while let Some(job) = queue.peek() {
            let len = job.range.end - job.range.start;
            let room = pending.is_empty()
                || (pending.len() < in_flight && pending_bytes + len <= WINDOW_BYTES);
            if !room {
                break;
            }
            let Job { index, range } = queue.next().expect("peeked");
            pending_bytes += len;
            pending.push(Box::pin(async move {
                (index, len, fetch_exact(source, range).await)
            }));
        }
        if pending.is_empty() {
            break;
        }
        let (index, len, bytes) = next_finished(&mut pending).await;
        pending_bytes -= len;
        let bytes = bytes?;
        let need = needed[index];
        let tensor = match need.kind {
            WeightKind::Matrix { .. } => {
                FetchedTensor::Matrix(gguf_matrix(file, need.weight, bytes)?)
            }
            WeightKind::Vector { .. } => {
                FetchedTensor::Vector(gguf_vector(file, need.weight, &bytes)?)
            }
        };
        put(index, tensor)?;
        status.bytes_done += len;
        status.tensors_done += 1;
        progress(status);
    }
    Ok(())
}

/// Waits for whichever of `pending` finishes first, removes it and returns its output.
async fn next_finished<T>(pending: &mut Vec<Pin<Box<dyn Future<Output = T> + '_>>>) -> T {
    std::future::poll_fn(|cx| {
        for i in 0..pending.len() {
            if let Poll::Ready(value) = pending[i].as_mut().poll(cx) {
                drop(pending.swap_remove(i));
                return Poll::Ready(value);
            }
        }
        Poll::Pending
    })
    .await
}
