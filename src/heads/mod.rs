//! Training verdict heads from labelled dialogues: features from the judge's
//! verdict pass (cached on disk, resumable), a held-out split by content hash,
//! logistic regression with layer and regularisation chosen by cross-validation,
//! Platt calibration, and figures on the held-out part only.

#[cfg(not(target_arch = "wasm32"))]
pub mod extract;
#[cfg(not(target_arch = "wasm32"))]
pub mod features;
pub mod fit;
pub mod split;
pub mod train;
