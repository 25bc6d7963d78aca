//! add (in progress)
