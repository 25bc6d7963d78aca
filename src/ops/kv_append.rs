//! kv_append (in progress)
