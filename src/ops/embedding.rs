//! embedding (in progress)
