//! Loading a GGUF model for the CPU engine by byte range (the browser without
//! WebGPU): tensors arrive through the GPU's streamed loader
//! ([`crate::model::stream::fetch_needed`]) and are kept as fetched, each matrix in its
//! block type, then assembled by [`CpuModel::load`] — the same checks as a file load.

use std::cell::RefCell;

use super::model::CpuModel;
use crate::error::{Error, Result};
use crate::formats::gguf::GgufFile;
use crate::formats::remote::RangeFetch;
use crate::model::arch::Weight;
use crate::model::load::{needed_weights, StoredMatrix, WeightSource};
use crate::model::stream::{fetch_needed, streamed_config, FetchedTensor, StreamProgress};
use crate::model::ModelConfig;

/// The tensors fetched for one model: each is handed out once, to the loader that
/// converts it, so no tensor is held twice for long.
struct FetchedWeights {
    name: String,
    config: ModelConfig,
    tensors: RefCell<Vec<(Weight, Option<FetchedTensor>)>>,
}

impl FetchedWeights {
    /// Takes `weight`'s tensor out of the set.
    fn take(&self, weight: Weight) -> Result<FetchedTensor> {
        let mut tensors = self.tensors.borrow_mut();
        tensors
            .iter_mut()
            .find(|(w, _)| *w == weight)
            .and_then(|(_, tensor)| tensor.take())
            .ok_or_else(|| Error::Format {
                file: self.name.clone(),
                message: format!("tensor {} was not fetched", weight.gguf_name()),
            })
    }
}

impl WeightSource for FetchedWeights {
    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> Result<ModelConfig> {
        Ok(self.config.clone())
    }

    fn has(&self, weight: Weight) -> bool {
        self.tensors
            .borrow()
            .iter()
            .any(|(w, tensor)| *w == weight && tensor.is_some())
    }

    fn matrix(&self, weight: Weight) -> Result<StoredMatrix> {
        match self.take(weight)? {
            FetchedTensor::Matrix(m) => Ok(m),
            FetchedTensor::Vector(_) => Err(Error::Format {
                file: self.name.clone(),
                message: format!(
                    "tensor {} is a vector where a matrix is needed",
                    weight.gguf_name()
                ),
            }),
        }
    }

    fn vector(&self, weight: Weight) -> Result<Vec<f32>> {
        match self.take(weight)? {
            FetchedTensor::Vector(v) => Ok(v),
            FetchedTensor::Matrix(_) => Err(Error::Format {
                file: self.name.clone(),
                message: format!(
                    "tensor {} is a matrix where a vector is needed",
                    weight.gguf_name()
                ),
            }),
        }
    }
}

impl CpuModel {
    /// Loads the model whose header is `file` from `source` (the same file) with up to
    /// `in_flight` requests at once; `progress` is called before the first and after
    /// each tensor. Equal, weight for weight, to [`CpuModel::load`] of the file.
    pub async fn load_streamed<F: RangeFetch>(
        file: &GgufFile,
        source: &F,
        in_flight: usize,
        progress: impl FnMut(StreamProgress),
    ) -> Result<CpuModel> {
        let config = streamed_config(file, source).await?;
        let needed = needed_weights(&config);
        let mut tensors: Vec<(Weight, Option<FetchedTensor>)> =
            needed.iter().map(|need| (need.weight, None)).collect();
        fetch_needed(
            file,
            source,
            &needed,
            in_flight,
            progress,
            |index, tensor| {
                tensors[index].1 = Some(tensor);
                Ok(())
            },
        )
        .await?;
        let fetched = FetchedWeights {
            name: file.name().to_string(),
            config,
            tensors: RefCell::new(tensors),
        };
        CpuModel::load(&fetched, |_, _| {})
    }
}
