//! How textrec reads and plans ONNX in tract: tract's own framework and optimiser, with
//! textrec's kernels in the places where tract's general ops cost the most on textrec's
//! networks (a whole-sequence LSTM, a tiling max-pool, convolutions fused with the pool after
//! them, a one-pass log-softmax). The ONNX files stay standard: ONNX Runtime and tract without these ops read
//! them as well.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::bail;

mod conv_block;
mod log_softmax;
mod op_io;
mod sequence_lstm;
mod tiling_max_pool;

/// tract's ONNX framework with `LSTM` read as `sequence_lstm` reads it; every textrec model is
/// read through it.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert("LSTM", sequence_lstm::load_lstm);
    onnx
}

/// The ONNX model in `bytes`, read by [`onnx`]: a model file may come from anywhere (a bundle's
/// manifest can be made to match any bytes), and tract panics on some malformed graphs (a node
/// input that nothing produces, say), so a panic is an error like any other.
pub fn read_onnx(bytes: &[u8]) -> TractResult<InferenceModel> {
    without_panics("reading", || {
        onnx().model_for_read(&mut std::io::Cursor::new(bytes))
    })
}

/// `model` typed, decluttered, its tiling max-pools, convolutions and log-softmaxes replaced,
/// then optimised: what `InferenceModel::into_optimized` does, plus those rewrites. A panic in
/// tract is an error, as in [`read_onnx`].
pub fn optimized(model: InferenceModel) -> TractResult<TypedModel> {
    without_panics("planning", || {
        let mut model = model.into_typed()?.into_decluttered()?;
        tiling_max_pool::tile_max_pools(&mut model)?;
        conv_block::conv_blocks(&mut model)?;
        log_softmax::fuse_log_softmaxes(&mut model)?;
        model.into_optimized()
    })
}

/// `work`'s result, or an error carrying its panic message. Nothing outlives a failed `work` (its
/// model is dropped with it), so no broken state can be observed after the unwind.
pub(crate) fn without_panics<T>(
    doing: &str,
    work: impl FnOnce() -> TractResult<T>,
) -> TractResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        bail!("tract panicked {doing} the model: {message}")
    })
}

/// Test support: `bytes` planned by textrec ([`optimized`]) or by tract alone, run on `input`:
/// the output's shape and values, and the names of the plan's ops.
#[cfg(test)]
fn run_model(
    bytes: &[u8],
    input: (&[usize], Vec<f32>),
    textrec: bool,
) -> (Vec<usize>, Vec<f32>, Vec<String>) {
    let framework = if textrec { onnx() } else { tract_onnx::onnx() };
    let model = framework
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .unwrap();
    let plan = if textrec {
        optimized(model).unwrap()
    } else {
        model.into_optimized().unwrap()
    };
    let ops = plan
        .nodes()
        .iter()
        .map(|n| n.op.name().to_string())
        .collect();
    let x = tract_ndarray::ArrayD::from_shape_vec(input.0.to_vec(), input.1).unwrap();
    let y = plan
        .into_runnable()
        .unwrap()
        .run(tvec!(Tensor::from(x).into()))
        .unwrap();
    let y = y[0].to_plain_array_view::<f32>().unwrap();
    (y.shape().to_vec(), y.iter().copied().collect(), ops)
}
