//! Network architectures, and nothing else: no loss, no optimiser, no data (FSDL's split).
//! Generic over the Burn backend so one definition trains on CPU or CUDA.

mod char_cnn;

pub use char_cnn::{CharCnn, CharCnnConfig, SIDE as CHAR_SIDE};
