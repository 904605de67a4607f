//! `LineFcn` (the learned line detector) → ONNX: dilated convolutions and ReLUs over an input of
//! any size, with the parity check against Burn on real pages.

use burn::prelude::*;
use image::GrayImage;

use super::burn_export::{add_conv, check_parity, encode_checked, metadata, values};
use super::graph::{Attr, GraphBuilder};
use crate::Architecture;
use crate::data::Sample;
use crate::infer::detector_input;
use crate::model_metadata::ModelMetadata;
use crate::models::{DetectorModelSpec, ModelError};
use crate::networks::{ConvBackend, LINE_FCN_DILATIONS, LineFcn};

/// Writes the network as ONNX (input `image` `[N, 1, H, W]`, output `maps` `[N, 3, H, W]`: core
/// logit, distances up and down;
/// `textrec.scale` metadata says how much pages are shrunk first), validates its structure and
/// checks tract's outputs against Burn's on the first of `parity_samples` pages.
pub fn export_line_fcn<B: ConvBackend>(
    network: &LineFcn<B>,
    spec: &DetectorModelSpec,
    parity_samples: &[Sample],
    device: &B::Device,
) -> Result<(Vec<u8>, f32), ModelError> {
    let mut g = GraphBuilder::new();
    let free = [Err("N"), Ok(1), Err("H"), Err("W")];
    g.input("image", &free);
    let mut previous = "image".to_owned();
    for (i, (conv, dilation)) in network.convs.iter().zip(LINE_FCN_DILATIONS).enumerate() {
        let name = format!("conv{}", i + 1);
        add_conv(&mut g, &name, conv)?;
        let d = dilation as i64;
        let relu = format!("relu{}", i + 1);
        g.node(
            "Conv",
            &[
                &previous,
                &format!("{name}.weight"),
                &format!("{name}.bias"),
            ],
            &[&name],
            &[
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("dilations", Attr::Ints(vec![d, d])),
                ("pads", Attr::Ints(vec![d, d, d, d])),
            ],
        )
        .node("Relu", &[&name], &[&relu], &[]);
        previous = relu;
    }
    add_conv(&mut g, "head", &network.head)?;
    g.node(
        "Conv",
        &[&previous, "head.weight", "head.bias"],
        &["maps"],
        &[("kernel_shape", Attr::Ints(vec![1, 1]))],
    )
    .output("maps", &[Err("N"), Ok(3), Err("H"), Err("W")]);
    let model = g.build(
        Architecture::LineFcn.name(),
        &(&ModelMetadata {
            scale: Some(spec.network.scale),
            ..metadata(spec)
        })
            .into(),
    );
    let bytes = encode_checked(&model)?;

    let page = parity_samples
        .iter()
        .find_map(|s| GrayImage::from_raw(s.width.into(), s.height.into(), s.pixels.clone()))
        .ok_or_else(|| ModelError::Invalid {
            reason: "the parity check needs at least one page".into(),
        })?;
    let input = detector_input(&page, spec.network.scale);
    let shape = [1, 1, input.height, input.width];
    let reference = network.forward(Tensor::<B, 4>::from_data(
        TensorData::new(input.pixels.clone(), shape),
        device,
    ));
    let max_diff = check_parity(&bytes, &shape, input.pixels, &values(reference).1)?;
    Ok((bytes, max_diff))
}
