//! Recording the commands of one submit, with consecutive dispatches in one compute
//! pass.

use std::sync::{Arc, OnceLock};

/// Commands being recorded for one submit ([`Context::encoder`](super::Context::encoder),
/// [`Context::submit`](super::Context::submit)).
///
/// Consecutive dispatches share one compute pass: WebGPU makes each dispatch a usage
/// scope of its own, so wgpu orders their buffer accesses inside a pass just as it
/// does across passes, and a forward step of a few hundred dispatches begins and ends
/// one pass instead of a few hundred (on Metal and in browsers each pass is an
/// encoder object of its own). A copy ends the open pass; the next dispatch begins
/// another.
pub struct Encoder {
    // Declared first so that it is dropped (ended) before the command encoder.
    pass: Option<wgpu::ComputePass<'static>>,
    commands: wgpu::CommandEncoder,
    /// Filled with the submission's index when these commands are submitted: one
    /// slot per readback recorded here, which waits for exactly that submission.
    submission_slots: Vec<SubmissionSlot>,
}

/// Where the index of the submit that carries some commands is written.
pub(crate) type SubmissionSlot = Arc<OnceLock<wgpu::SubmissionIndex>>;

impl Encoder {
    pub(crate) fn new(commands: wgpu::CommandEncoder) -> Encoder {
        Encoder {
            pass: None,
            commands,
            submission_slots: Vec::new(),
        }
    }

    /// The open compute pass, begun (without timestamps) if none is open.
    pub(crate) fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        let commands = &mut self.commands;
        self.pass.get_or_insert_with(|| {
            commands
                .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime()
        })
    }

    /// The command encoder itself, for commands outside compute passes; any open
    /// pass is ended first, so they run after the dispatches recorded before them.
    pub fn commands(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        &mut self.commands
    }

    /// Records copying `bytes` from `source` at `source_offset` to `target` at
    /// `target_offset`, after the dispatches recorded so far.
    pub fn copy_buffer_to_buffer(
        &mut self,
        source: &wgpu::Buffer,
        source_offset: u64,
        target: &wgpu::Buffer,
        target_offset: u64,
        bytes: u64,
    ) {
        self.commands()
            .copy_buffer_to_buffer(source, source_offset, target, target_offset, bytes);
    }

    /// A slot that receives the index of the submit that carries these commands.
    pub(crate) fn submission_slot(&mut self) -> SubmissionSlot {
        let slot = SubmissionSlot::default();
        self.submission_slots.push(slot.clone());
        slot
    }

    /// Ends any open pass and finishes the commands; returns them with the slots to
    /// fill with their submission's index.
    pub(crate) fn finish(mut self) -> (wgpu::CommandBuffer, Vec<SubmissionSlot>) {
        self.pass = None;
        (self.commands.finish(), self.submission_slots)
    }
}
