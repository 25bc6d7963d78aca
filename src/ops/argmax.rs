//! argmax (in progress)
