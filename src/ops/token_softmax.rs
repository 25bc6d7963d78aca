//! token_softmax (in progress)
