//! Training verdict heads from labelled dialogues: features from the judge's
//! verdict pass, a held-out split by content hash, logistic regression chosen by
//! cross-validation, Platt calibration, and held-out figures.

pub mod fit;
