//! What the CPU kernels (convolution, LSTM recurrence, CTC loss) share: f32 slices of Burn's CPU
//! tensors and one GEMM, single-threaded because every caller already splits its work over
//! images, directions or lines.

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

/// `dst[m×n] = (dst +) lhs[m×k] · rhs[k×n]`; each operand is `(data, row stride, column stride)`,
/// so a transposed operand is just swapped strides.
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) {
    let extent = |rows: usize, cols: usize, (data, rs, cs): (&[f32], usize, usize)| {
        let last = (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs;
        assert!(
            rows == 0 || cols == 0 || last < data.len(),
            "matmul operand out of range"
        );
    };
    extent(m, k, lhs);
    extent(k, n, rhs);
    assert_eq!(dst.len(), m * n, "matmul destination size");
    // SAFETY: every index gemm reads or writes is inside the slices, checked above; the
    // destination is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
