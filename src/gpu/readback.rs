//! Copies from GPU buffers back to the CPU: recorded into a step's encoder, awaited
//! after its submit.

use super::encoder::SubmissionSlot;
use super::{Context, Encoder};
use crate::error::{Error, Result};

/// A copy to the CPU recorded into an encoder ([`Context::record_readback`]), read
/// with [`Context::finish_readback`] after the submit.
pub struct Readback {
    staging: wgpu::Buffer,
    bytes: u64,
    /// The submit that carries the copy, once it is made.
    submission: SubmissionSlot,
}

impl Context {
    /// Copies `bytes` from `buffer` at `offset` back to the CPU and waits for them.
    pub async fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        let mut encoder = self.encoder();
        let readback = self.record_readback(&mut encoder, buffer, offset, bytes)?;
        self.submit("copying a buffer for readback", encoder)?;
        self.finish_readback(readback).await
    }

    /// Records copying `bytes` from `buffer` at `offset` into `encoder`, after the
    /// work recorded so far, so that a step and the read of its result are one
    /// submit; [`Context::finish_readback`] waits for the bytes once it is submitted.
    pub fn record_readback(
        &self,
        encoder: &mut Encoder,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Readback> {
        let size = bytes.next_multiple_of(4);
        let staging = self.scoped("allocating a readback buffer", || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: size.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        Ok(Readback {
            staging,
            bytes,
            submission: encoder.submission_slot(),
        })
    }

    /// Waits for a readback recorded with [`Context::record_readback`] into an
    /// encoder that has been submitted, and returns its bytes. Work submitted after
    /// that encoder is not waited for: it may run on while the caller reads.
    pub async fn finish_readback(&self, readback: Readback) -> Result<Vec<u8>> {
        let label = "readback";
        let Readback {
            staging,
            bytes,
            submission,
        } = readback;
        let Some(submission) = submission.get().cloned() else {
            return Err(Error::Readback {
                label: label.into(),
                message: "the commands holding the copy were never submitted".into(),
            });
        };
        let (sender, receiver) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            // The receiver is only gone if the caller stopped waiting.
            let _ = sender.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| Error::Readback {
                label: label.into(),
                message: e.to_string(),
            })?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        receiver
            .await
            .map_err(|_| Error::Readback {
                label: label.into(),
                message: "wgpu dropped the map request without answering it".into(),
            })?
            .map_err(|e| Error::Readback {
                label: label.into(),
                message: e.to_string(),
            })?;
        self.check_alive()?;
        // On the web, errors of earlier calls arrive asynchronously; by now the GPU
        // has run everything before this copy, so a result is never read from a
        // computation that failed.
        self.take_uncaptured("running GPU work before a readback")?;
        let data = staging.get_mapped_range(..).map_err(|e| Error::Readback {
            label: label.into(),
            message: e.to_string(),
        })?[..bytes as usize]
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Reads `len` f32 values starting at element `offset` (native, blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<f32>> {
        let bytes = pollster::block_on(self.read_bytes(buffer, offset as u64 * 4, len as u64 * 4))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads `len` u32 values starting at element `offset` (native, blocking).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32(&self, buffer: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<u32>> {
        let bytes = pollster::block_on(self.read_bytes(buffer, offset as u64 * 4, len as u64 * 4))?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
