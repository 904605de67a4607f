//! How textrec reads and plans ONNX in tract: tract's own framework and optimiser, with two of
//! textrec's kernels in the places where tract's general ops cost the most on textrec's
//! networks (a whole-sequence LSTM, a tiling max-pool, im2col convolutions). The ONNX files stay standard: ONNX
//! Runtime and tract without these ops read them as well.

use std::borrow::Cow;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::bail;

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

/// An f32 input of textrec's ops: its shape, checked to be of rank `R`, and its values in
/// row-major order (borrowed when they already are).
pub(super) fn f32_input<'a, const R: usize>(
    value: &'a TValue,
    op: &str,
) -> TractResult<([usize; R], Cow<'a, [f32]>)> {
    let view = value.to_plain_array_view::<f32>()?;
    let Ok(shape) = <[usize; R]>::try_from(view.shape()) else {
        bail!("{op} expects a rank-{R} input, got {:?}", view.shape());
    };
    let values = match view.to_slice() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(view.iter().copied().collect()),
    };
    Ok((shape, values))
}
