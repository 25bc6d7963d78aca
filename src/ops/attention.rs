//! attention (in progress)
