//! silu_mul (in progress)
