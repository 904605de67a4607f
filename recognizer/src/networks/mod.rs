//! Network architectures, and nothing else: no loss, no optimiser, no data (FSDL's split).
//! Generic over the Burn backend so one definition trains on CPU or CUDA.

mod batch_norm;
mod char_cnn;
mod conv;
pub(crate) mod cpu;
mod line_ctc;
mod line_fcn;
mod lstm;
mod recurrence;

pub use char_cnn::{CharCnn, CharCnnConfig, SIDE as CHAR_SIDE};
pub use conv::{ConvBackend, conv2d};
pub use line_ctc::{DOWNSAMPLE as LINE_DOWNSAMPLE, LineCtc, LineCtcConfig};
pub use line_fcn::{DILATIONS as LINE_FCN_DILATIONS, LineFcn, LineFcnConfig};
pub use lstm::{BiLstm, BiLstmConfig, LstmDirection};
pub use recurrence::LstmBackend;

/// A backend every network runs on: Burn's ops unless it brings faster kernels.
pub trait NetworkBackend: ConvBackend + LstmBackend {}

impl<B: ConvBackend + LstmBackend> NetworkBackend for B {}
