//! `CharCnn` → ONNX, with the parity check against Burn's own forward pass.

use burn::prelude::*;
use prost::Message;

use super::check::{check_structure, run_tract};
use super::graph::{Attr, GraphBuilder, Metadata};
use crate::data::Sample;
use crate::data::batch::collate;
use crate::models::{CharModelSpec, ModelError};
use crate::networks::{CHAR_SIDE, CharCnn};

/// Parity tolerance between tract and Burn on the same inputs.
pub const TOLERANCE: f32 = 1e-4;

fn tensor<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data");
    (dims, values)
}

/// Adds `NAME.weight` and `NAME.bias` initializers.
fn add_layer(
    g: &mut GraphBuilder,
    name: &str,
    (weight_dims, weight): (Vec<usize>, Vec<f32>),
    bias: Option<(Vec<usize>, Vec<f32>)>,
) -> Result<(), ModelError> {
    let (bias_dims, bias) = bias.ok_or_else(|| ModelError::Invalid {
        reason: format!("{name} has no bias"),
    })?;
    g.weight(&format!("{name}.weight"), &weight_dims, &weight);
    g.weight(&format!("{name}.bias"), &bias_dims, &bias);
    Ok(())
}

/// Writes the network as ONNX (input `image` `[N, 1, 28, 28]`, output `logits` `[N, classes]`),
/// validates its structure and checks tract's outputs against Burn's on `parity_samples`.
/// Returns the encoded model and the largest absolute difference seen.
pub fn export_char_cnn<B: Backend>(
    network: &CharCnn<B>,
    spec: &CharModelSpec,
    parity_samples: &[Sample],
    device: &B::Device,
) -> Result<(Vec<u8>, f32), ModelError> {
    let mut g = GraphBuilder::new();
    let side = CHAR_SIDE as i64;
    g.input("image", &[Err("N"), Ok(1), Ok(side), Ok(side)]);
    // Conv weights are [out, in, kh, kw] as in ONNX; Burn stores Linear weights as [in, out],
    // hence Gemm with transB = 0 below.
    let layers = [
        (
            "conv1",
            network.conv1.weight.val(),
            network.conv1.bias.as_ref().map(|b| b.val()),
        ),
        (
            "conv2",
            network.conv2.weight.val(),
            network.conv2.bias.as_ref().map(|b| b.val()),
        ),
    ];
    for (name, weight, bias) in layers {
        add_layer(&mut g, name, tensor(weight), bias.map(tensor))?;
    }
    let dense = [
        (
            "fc1",
            network.fc1.weight.val(),
            network.fc1.bias.as_ref().map(|b| b.val()),
        ),
        (
            "fc2",
            network.fc2.weight.val(),
            network.fc2.bias.as_ref().map(|b| b.val()),
        ),
    ];
    for (name, weight, bias) in dense {
        add_layer(&mut g, name, tensor(weight), bias.map(tensor))?;
    }
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
    let metadata = Metadata::default()
        .with("textrec.architecture", "char_cnn")
        .with(
            "textrec.vocabulary",
            serde_json::to_string(&spec.vocabulary).expect("strings serialise"),
        )
        .with("textrec.input_height", CHAR_SIDE.to_string())
        .with("textrec.input_width", CHAR_SIDE.to_string())
        .with("textrec.normalisation", spec.normalisation.clone())
        .with("textrec.model_version", env!("CARGO_PKG_VERSION"))
        .with(
            "textrec.training_data_sha256",
            spec.dataset_manifest_sha256.clone(),
        );
    let model = g.build("char_cnn", &metadata);
    check_structure(&model).map_err(|e| ModelError::Invalid {
        reason: format!("exported graph: {e}"),
    })?;
    let bytes = model.encode_to_vec();

    if parity_samples.is_empty() {
        return Err(ModelError::Invalid {
            reason: "the parity check needs at least one sample".into(),
        });
    }
    let batch = collate(parity_samples, 1, false);
    let shape = [batch.len(), 1, batch.height, batch.width];
    let reference = network.forward(Tensor::<B, 4>::from_data(
        TensorData::new(batch.pixels.clone(), shape),
        device,
    ));
    let (_, reference) = tensor(reference);
    let (_, got) = run_tract(&bytes, &shape, batch.pixels).map_err(|e| ModelError::Invalid {
        reason: format!("tract cannot run the exported model: {e:#}"),
    })?;
    let max_diff = got
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    if got.len() != reference.len() || max_diff >= TOLERANCE {
        return Err(ModelError::Parity {
            max_abs_diff: max_diff,
            tolerance: TOLERANCE,
        });
    }
    Ok((bytes, max_diff))
}
