//! `CharCnn` → ONNX, with the parity check against Burn's own forward pass.

use burn::prelude::*;

use super::burn_export::{
    add_conv, add_linear, check_parity, encode_checked, metadata, parity_batch, values,
};
use super::graph::{Attr, GraphBuilder};
use crate::Architecture;
use crate::data::Sample;
use crate::models::{CharModelSpec, ModelError};
use crate::networks::{CHAR_SIDE, CharCnn, ConvBackend};

/// Writes the network as ONNX (input `image` `[N, 1, 28, 28]`, output `logits` `[N, classes]`),
/// validates its structure and checks tract's outputs against Burn's on `parity_samples`.
/// Returns the encoded model and the largest absolute difference seen.
pub fn export_char_cnn<B: ConvBackend>(
    network: &CharCnn<B>,
    spec: &CharModelSpec,
    parity_samples: &[Sample],
    device: &B::Device,
) -> Result<(Vec<u8>, f32), ModelError> {
    let mut g = GraphBuilder::new();
    let side = CHAR_SIDE as i64;
    g.input("image", &[Err("N"), Ok(1), Ok(side), Ok(side)]);
    add_conv(&mut g, "conv1", &network.conv1)?;
    add_conv(&mut g, "conv2", &network.conv2)?;
    // Burn stores Linear weights as [in, out], hence Gemm with transB = 0 below.
    add_linear(&mut g, "fc1", &network.fc1)?;
    add_linear(&mut g, "fc2", &network.fc2)?;
    let kernel = ("kernel_shape", Attr::Ints(vec![3, 3]));
    g.node(
        "Conv",
        &["image", "conv1.weight", "conv1.bias"],
        &["conv1"],
        std::slice::from_ref(&kernel),
    )
    .node("Relu", &["conv1"], &["relu1"], &[])
    .node(
        "Conv",
        &["relu1", "conv2.weight", "conv2.bias"],
        &["conv2"],
        &[kernel],
    )
    .node("Relu", &["conv2"], &["relu2"], &[])
    .node(
        "MaxPool",
        &["relu2"],
        &["pool"],
        &[
            ("kernel_shape", Attr::Ints(vec![2, 2])),
            ("strides", Attr::Ints(vec![2, 2])),
        ],
    )
    .node("Flatten", &["pool"], &["flat"], &[("axis", Attr::Int(1))])
    .node(
        "Gemm",
        &["flat", "fc1.weight", "fc1.bias"],
        &["fc1"],
        &[("transB", Attr::Int(0))],
    )
    .node("Relu", &["fc1"], &["relu3"], &[])
    .node(
        "Gemm",
        &["relu3", "fc2.weight", "fc2.bias"],
        &["logits"],
        &[("transB", Attr::Int(0))],
    )
    .output("logits", &[Err("N"), Ok(spec.vocabulary.len() as i64)]);
    let model = g.build(Architecture::CharCnn.name(), &(&metadata(spec)).into());
    let bytes = encode_checked(&model)?;
    let batch = parity_batch(parity_samples, 1)?;
    let shape = [batch.len(), 1, batch.height, batch.width];
    let reference = network.forward(Tensor::<B, 4>::from_data(
        TensorData::new(batch.pixels.clone(), shape),
        device,
    ));
    let max_diff = check_parity(&bytes, &shape, batch.pixels, &values(reference).1)?;
    Ok((bytes, max_diff))
}
