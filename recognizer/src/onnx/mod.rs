//! ONNX export: we write the graph ourselves (tract's prost types, opset 17, IR 8; docs/decisions.md 2)
//! from trained weights, and check it structurally and against the training framework's outputs.

#[cfg(feature = "train")]
mod burn_export;
#[cfg(feature = "train")]
mod char_cnn;
mod check;
mod graph;
#[cfg(feature = "train")]
mod line_ctc;
#[cfg(feature = "train")]
mod line_fcn;

#[cfg(feature = "train")]
pub use burn_export::{RELATIVE_TOLERANCE, TOLERANCE};
#[cfg(feature = "train")]
pub use char_cnn::export_char_cnn;
pub use check::{StructureError, check_structure, run_tract};
pub use graph::{Attr, GraphBuilder, IR_VERSION, Metadata, OPSET};
#[cfg(feature = "train")]
pub use line_ctc::export_line_ctc;
#[cfg(feature = "train")]
pub use line_fcn::export_line_fcn;
