//! How textrec reads and plans ONNX in tract: tract's own framework and optimiser, with two of
//! textrec's kernels in the places where tract's general ops cost the most on textrec's
//! networks (a whole-sequence LSTM, a tiling max-pool, im2col convolutions). The ONNX files stay standard: ONNX
//! Runtime and tract without these ops read them as well.

use tract_onnx::prelude::*;

use super::{im2col_conv, sequence_lstm, tiling_max_pool};

/// tract's ONNX framework with `LSTM` read as [`sequence_lstm`] reads it; every textrec model is
/// read through it.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert("LSTM", sequence_lstm::load_lstm);
    onnx
}

/// `model` typed, decluttered, its tiling max-pools and wide convolutions replaced, then
/// optimised: what `InferenceModel::into_optimized` does, plus those two rewrites.
pub fn optimized(model: InferenceModel) -> TractResult<TypedModel> {
    let mut model = model.into_typed()?.into_decluttered()?;
    tiling_max_pool::tile_max_pools(&mut model)?;
    im2col_conv::im2col_convs(&mut model)?;
    model.into_optimized()
}
