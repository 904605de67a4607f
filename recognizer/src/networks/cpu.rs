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

/// The CPU kernels that Burn's generic ops can stand in for (see [`with_generic_kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Conv,
    Lstm,
    Ctc,
}

thread_local! {
    static GENERIC_KERNELS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// How many times each [`Kernel`] gave way to Burn's ops on this thread, so a test can tell
    /// that the generic path really ran.
    #[cfg(test)]
    static GENERIC_TAKEN: std::cell::Cell<[usize; 3]> = const { std::cell::Cell::new([0; 3]) };
}

/// Whether `kernel` must give way to Burn's generic ops on this thread (see
/// [`with_generic_kernels`]); asked only where the kernel could run.
pub(crate) fn generic_kernels(kernel: Kernel) -> bool {
    let generic = GENERIC_KERNELS.with(std::cell::Cell::get);
    #[cfg(test)]
    if generic {
        GENERIC_TAKEN.with(|taken| {
            let mut counts = taken.get();
            counts[kernel as usize] += 1;
            taken.set(counts);
        });
    }
    #[cfg(not(test))]
    let _ = kernel;
    generic
}

/// Runs `f` with this thread's convolution, LSTM recurrence and CTC loss on the CPU backend
/// taken through Burn's generic ops (and autodiff's own backward passes): the code CUDA trains
/// with, so that the CPU can check it against the kernels. Per thread, because tests run side
/// by side in one process; Burn's autodiff runs a backward pass on the thread that asks for it.
/// Also returns the kernels that gave way.
#[cfg(test)]
pub(crate) fn with_generic_kernels<R>(f: impl FnOnce() -> R) -> (R, Vec<Kernel>) {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GENERIC_KERNELS.with(|generic| generic.set(self.0));
        }
    }
    let before = GENERIC_TAKEN.with(std::cell::Cell::get);
    let result = {
        let _restore = Restore(GENERIC_KERNELS.with(|generic| generic.replace(true)));
        f()
    };
    let after = GENERIC_TAKEN.with(std::cell::Cell::get);
    let taken = [Kernel::Conv, Kernel::Lstm, Kernel::Ctc]
        .into_iter()
        .filter(|&k| after[k as usize] > before[k as usize])
        .collect();
    (result, taken)
}
