//! matmul (in progress)
