//! GPU errors as typed [`Error`]s: error scopes natively, the uncaptured-error slot
//! on the web, and device loss.

use super::Context;
use crate::error::{Error, Result};

/// A wgpu error reduced to its kind and message: unlike `wgpu::Error` on the web, it
/// can be kept by the (`Send`) uncaptured-error handler.
pub(super) enum GpuFault {
    OutOfMemory(String),
    Validation(String),
}

impl From<wgpu::Error> for GpuFault {
    fn from(error: wgpu::Error) -> Self {
        match error {
            wgpu::Error::OutOfMemory { source } => GpuFault::OutOfMemory(source.to_string()),
            wgpu::Error::Validation { description, .. }
            | wgpu::Error::Internal { description, .. } => GpuFault::Validation(description),
        }
    }
}

impl Context {
    /// Fails with [`Error::DeviceLost`] once the device is gone.
    pub fn check_alive(&self) -> Result<()> {
        match self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(reason) => Err(Error::DeviceLost(reason)),
            None => Ok(()),
        }
    }

    /// Runs `f` and turns any wgpu validation or out-of-memory error it raised into a
    /// typed [`Error`] that names `context`.
    pub fn scoped<T>(&self, context: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        #[cfg(not(target_arch = "wasm32"))]
        let (value, error) = {
            let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let value = f();
            let error = pollster::block_on(validation.pop())
                .or(pollster::block_on(oom.pop()))
                .map(GpuFault::from);
            (value, error)
        };
        #[cfg(target_arch = "wasm32")]
        let (value, error) = {
            let value = f();
            (
                value,
                self.uncaptured
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            )
        };
        match error {
            None => Ok(value),
            Some(e) => Err(Self::typed(context, e)),
        }
    }

    fn typed(context: &str, fault: GpuFault) -> Error {
        match fault {
            GpuFault::OutOfMemory(message) => Error::OutOfMemory {
                context: context.to_string(),
                message,
            },
            GpuFault::Validation(message) => Error::Validation {
                context: context.to_string(),
                message,
            },
        }
    }

    /// Errors raised outside any scope (for example by a failed submit on the web).
    pub fn take_uncaptured(&self, context: &str) -> Result<()> {
        match self
            .uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(Self::typed(context, e)),
            None => Ok(()),
        }
    }
}
