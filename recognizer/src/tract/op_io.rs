//! What textrec's tract ops share: their f32 inputs read, their outputs made, their input
//! shapes checked. Below the ops and the planner that registers them, so neither imports the
//! other's module.

use std::borrow::Cow;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{TractErrorContext, bail};

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

/// An op's f32 output of `shape`, moved into a tensor without a copy.
pub(super) fn f32_output<const R: usize>(
    shape: [usize; R],
    values: Vec<f32>,
) -> TractResult<TVec<TValue>> {
    let array = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), values)?;
    Ok(tvec!(array.into_tensor().into_tvalue()))
}

/// The concrete `[N, C, H, W]` of an op's input fact.
pub(super) fn concrete_nchw(fact: &TypedFact, op: &str) -> TractResult<[usize; 4]> {
    let shape = fact
        .shape
        .as_concrete()
        .with_context(|| format!("{op} needs a concrete input shape"))?;
    let Ok(shape) = <[usize; 4]>::try_from(shape) else {
        bail!("{op} expects [N, C, H, W], got {shape:?}");
    };
    Ok(shape)
}
