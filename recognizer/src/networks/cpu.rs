//! What the CPU training kernels (convolution, LSTM recurrence, CTC loss) share: f32 slices of
//! Burn's CPU tensors, and the GEMM of [`crate::kernels`].

pub(crate) use crate::kernels::matmul;

use burn::backend::flex::FlexTensor;
use burn::prelude::*;

/// The values of a contiguous f32 tensor (callers check both).
pub(crate) fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice().expect("a contiguous f32 tensor")
}

/// A tensor of `values` in `shape`.
pub(crate) fn tensor(values: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}
