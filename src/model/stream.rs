//! Loading a GGUF model by byte range: the header first, then each tensor's range
//! fetched (a few requests in flight) and uploaded straight into its GPU buffers,
//! so at most a bounded window of tensor bytes is ever in memory. The per-weight
//! checks and the assembly are [`ModelBuilder`]'s, shared with [`Model::load`].

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;

use super::forward::Model;
use super::load::{gguf_config, gguf_matrix, gguf_vector, ModelBuilder, WeightKind, ROPE_FREQS};
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

/// One tensor to fetch: its index in the builder's needed weights and its bytes.
struct Job {
    index: usize,
    range: Range<u64>,
}

type Pending<'a> = Pin<Box<dyn Future<Output = (usize, u64, Result<Vec<u8>>)> + 'a>>;

/// Loads the model whose header is `file` from `source` (the same file): every
/// tensor the configuration needs is checked against the header first (missing
/// tensors, shapes), then fetched with up to `in_flight` requests and
/// [`WINDOW_BYTES`] at once and uploaded as it arrives. `progress` is called after
/// each tensor.
pub async fn load_gguf_streamed<F: RangeFetch>(
    ctx: &Context,
    file: &GgufFile,
    source: &F,
    in_flight: usize,
    mut progress: impl FnMut(StreamProgress),
) -> Result<Model> {
    let rope_freqs = match file.tensor(ROPE_FREQS) {
        Ok(info) => Some(fetch_exact(source, info.file_range()).await?),
        Err(_) => None,
    };
    let config = gguf_config(file, rope_freqs.as_deref())?;
    let mut builder = ModelBuilder::new(ctx, file.name(), config);

    let mut jobs = Vec::new();
    for (index, need) in builder.needed().iter().enumerate() {
        let info = match file.tensor(&need.weight.gguf_name()) {
            Ok(info) => info,
            Err(_) if need.optional => continue,
            Err(e) => return Err(e),
        };
        if let WeightKind::Matrix { .. } = need.kind {
            if info.dims.len() == 2 {
                builder.check_matrix(index, info.rows() as usize, info.cols() as usize)?;
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
        let need = builder.needed()[index];
        match need.kind {
            WeightKind::Matrix { .. } => {
                builder.put_matrix(index, gguf_matrix(file, need.weight, bytes)?)?
            }
            WeightKind::Vector { .. } => {
                builder.put_vector(index, gguf_vector(file, need.weight, &bytes)?)?
            }
        }
        status.bytes_done += len;
        status.tensors_done += 1;
        progress(status);
    }
    builder.finish()
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
