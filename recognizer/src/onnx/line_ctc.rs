//! `LineCtc` → ONNX: convolutions, the bidirectional LSTM as ONNX's own `LSTM` operator, and a
//! log-softmax head; checked against Burn's forward pass on real test lines.
//!
//! Input `image` `[batch, 1, height, width]` (both batch and width symbolic; tract wants a
//! concrete batch, see docs/decisions.md 3), output `log_probs` `[batch, width / 4, classes]`.

use burn::prelude::*;

use burn::nn::BatchNorm;

use super::burn_export::{
    add_conv, add_linear, check_parity, encode_checked, metadata, parity_batch, values,
};
use super::graph::{Attr, GraphBuilder};
use crate::Architecture;
use crate::data::Sample;
use crate::model_metadata::ModelMetadata;
use crate::models::{LineModelSpec, ModelError};
use crate::networks::{LINE_DOWNSAMPLE, LineCtc, LstmDirection, NetworkBackend};

/// One direction's ONNX `LSTM` inputs.
struct OnnxLstm {
    w: Vec<f32>,
    r: Vec<f32>,
    b: Vec<f32>,
}

/// ONNX `W`, `R` and `B` of one direction: Burn keeps `[in, 4h]` and `[h, 4h]`, ONNX wants the
/// transposes, and the recurrent bias (none in Burn) is zero.
fn lstm_direction<B: Backend>(
    direction: &LstmDirection<B>,
    hidden: usize,
) -> Result<OnnxLstm, ModelError> {
    let w = values(direction.input.weight.val().transpose()).1;
    let r = values(direction.recurrent.weight.val().transpose()).1;
    let mut b = direction
        .input
        .bias
        .as_ref()
        .map(|b| values(b.val()).1)
        .ok_or_else(|| ModelError::Invalid {
            reason: "the LSTM input projection has no bias".into(),
        })?;
    b.extend(std::iter::repeat_n(0.0, 4 * hidden));
    Ok(OnnxLstm { w, r, b })
}

/// Adds `NAME.scale`, `NAME.bias`, `NAME.mean` and `NAME.var` (inference uses the running stats).
fn add_batch_norm<B: Backend>(g: &mut GraphBuilder, name: &str, norm: &BatchNorm<B>) {
    for (param, tensor) in [
        ("scale", norm.gamma.val()),
        ("bias", norm.beta.val()),
        ("mean", norm.running_mean.value()),
        ("var", norm.running_var.value()),
    ] {
        let (dims, v) = values(tensor);
        g.weight(&format!("{name}.{param}"), &dims, &v);
    }
}

fn network_epsilon<B: Backend>(network: &LineCtc<B>, block: usize) -> f32 {
    [&network.norm1, &network.norm2, &network.norm3][block].epsilon as f32
}

/// Writes the network as ONNX, validates its structure and checks tract's outputs against
/// Burn's on `parity_samples` (padded into one batch). Returns the encoded model and the largest
/// absolute difference seen.
pub fn export_line_ctc<B: NetworkBackend>(
    network: &LineCtc<B>,
    spec: &LineModelSpec,
    parity_samples: &[Sample],
    device: &B::Device,
) -> Result<(Vec<u8>, f32), ModelError> {
    let config = &spec.network;
    let hidden = config.lstm_hidden;
    let features = config.step_features();
    let classes = spec.vocabulary.len();
    let mut g = GraphBuilder::new();
    g.input(
        "image",
        &[Err("batch"), Ok(1), Ok(config.height as i64), Err("width")],
    );
    for (i, (conv, norm)) in [
        (&network.conv1, &network.norm1),
        (&network.conv2, &network.norm2),
        (&network.conv3, &network.norm3),
    ]
    .into_iter()
    .enumerate()
    {
        add_conv(&mut g, &format!("conv{}", i + 1), conv)?;
        add_batch_norm(&mut g, &format!("norm{}", i + 1), norm);
    }
    add_linear(&mut g, "head", &network.head)?;
    let forward = lstm_direction(&network.lstm.forward, hidden)?;
    let backward = lstm_direction(&network.lstm.backward, hidden)?;
    g.weight(
        "lstm.W",
        &[2, 4 * hidden, features],
        &[forward.w, backward.w].concat(),
    )
    .weight(
        "lstm.R",
        &[2, 4 * hidden, hidden],
        &[forward.r, backward.r].concat(),
    )
    .weight(
        "lstm.B",
        &[2, 8 * hidden],
        &[forward.b, backward.b].concat(),
    )
    .int64s("keep_two_flatten_rest", &[0, 0, -1]);

    let conv_attrs = || {
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
        ]
    };
    let pool = |kernel: Vec<i64>| {
        vec![
            ("kernel_shape", Attr::Ints(kernel.clone())),
            ("strides", Attr::Ints(kernel)),
        ]
    };
    let mut previous = "image".to_owned();
    for (i, kernel) in [vec![2, 2], vec![2, 2], vec![2, 1]].into_iter().enumerate() {
        let name = format!("conv{}", i + 1);
        let norm = format!("norm{}", i + 1);
        let inputs = ["scale", "bias", "mean", "var"].map(|p| format!("{norm}.{p}"));
        g.node(
            "Conv",
            &[
                &previous,
                &format!("{name}.weight"),
                &format!("{name}.bias"),
            ],
            &[&name],
            &conv_attrs(),
        )
        .node(
            "BatchNormalization",
            &[&name, &inputs[0], &inputs[1], &inputs[2], &inputs[3]],
            &[&norm],
            &[("epsilon", Attr::Float(network_epsilon(network, i)))],
        )
        .node("Relu", &[&norm], &[&format!("relu{}", i + 1)], &[])
        .node(
            "MaxPool",
            &[&format!("relu{}", i + 1)],
            &[&format!("pool{}", i + 1)],
            &pool(kernel),
        );
        previous = format!("pool{}", i + 1);
    }
    // [batch, channels, height, steps] → [steps, batch, channels·height], as Burn reshapes.
    g.node(
        "Transpose",
        &[&previous],
        &["columns"],
        &[("perm", Attr::Ints(vec![3, 0, 1, 2]))],
    )
    .node(
        "Reshape",
        &["columns", "keep_two_flatten_rest"],
        &["sequence"],
        &[],
    )
    .node(
        "LSTM",
        &["sequence", "lstm.W", "lstm.R", "lstm.B"],
        &["lstm_states"],
        &[
            ("hidden_size", Attr::Int(hidden as i64)),
            ("direction", Attr::String("bidirectional".into())),
        ],
    )
    // Y is [steps, directions, batch, hidden] → [steps, batch, 2·hidden].
    .node(
        "Transpose",
        &["lstm_states"],
        &["states_by_batch"],
        &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
    )
    .node(
        "Reshape",
        &["states_by_batch", "keep_two_flatten_rest"],
        &["states"],
        &[],
    )
    .node("MatMul", &["states", "head.weight"], &["head_product"], &[])
    .node("Add", &["head_product", "head.bias"], &["scores"], &[])
    .node(
        "LogSoftmax",
        &["scores"],
        &["step_log_probs"],
        &[("axis", Attr::Int(2))],
    )
    .node(
        "Transpose",
        &["step_log_probs"],
        &["log_probs"],
        &[("perm", Attr::Ints(vec![1, 0, 2]))],
    )
    .output(
        "log_probs",
        &[Err("batch"), Err("steps"), Ok(classes as i64)],
    );
    let model = g.build(
        Architecture::LineCtc.name(),
        &(&ModelMetadata {
            downsample: Some(LINE_DOWNSAMPLE),
            ..metadata(spec)
        })
            .into(),
    );
    let bytes = encode_checked(&model)?;
    let batch = parity_batch(parity_samples, LINE_DOWNSAMPLE)?;
    let shape = [batch.len(), 1, batch.height, batch.width];
    let reference = network
        .forward(Tensor::<B, 4>::from_data(
            TensorData::new(batch.pixels.clone(), shape),
            device,
        ))
        .swap_dims(0, 1);
    let max_diff = check_parity(&bytes, &shape, batch.pixels, &values(reference).1)?;
    Ok((bytes, max_diff))
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor, Param};

    use super::*;
    use crate::models::{
        CpuInference as B, CpuTraining, TrainOptions, TrainOutcome, read_line_ctc_onnx,
    };
    use crate::networks::LineCtcConfig;

    /// Every parameter's values, in visiting order.
    fn parameters(network: &LineCtc<B>) -> Vec<Vec<f32>> {
        struct Flatten(Vec<Vec<f32>>);
        impl ModuleVisitor<B> for Flatten {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.push(values(param.val()).1);
            }
        }
        let mut flat = Flatten(Vec::new());
        network.visit(&mut flat);
        flat.0
    }

    #[test]
    fn an_exported_line_model_reads_back_into_the_same_network() {
        let device = Default::default();
        let vocabulary = crate::vocab::Vocabulary::default().tokens().to_vec();
        let mut config = LineCtcConfig::new(vocabulary.len());
        (config.channels, config.lstm_hidden) = ([4, 6, 8], 10);
        let _seeded = crate::models::seeded_exclusively::<B>(&device, 21);
        let mut network: LineCtc<B> = config.init(&device);
        // Running statistics and an LSTM bias that are not their initial values, so a swap or a
        // skipped tensor shows.
        network = network.map(&mut Perturb(0));
        let spec = LineModelSpec {
            architecture: crate::Architecture::LineCtc,
            network: config.clone(),
            vocabulary: vocabulary.clone(),
            input_height: config.height,
            input_width: None,
            normalisation: String::new(),
            train: TrainOptions::default(),
            outcome: TrainOutcome {
                steps: 0,
                epochs_run: 0,
                best_epoch: 0,
                best_metric: 0.0,
                stopped_early: false,
                resumed_from: None,
                seconds: 0.0,
                images_per_second: 0.0,
            },
            dataset_manifest_sha256: String::new(),
        };
        let sample = Sample {
            label: String::new(),
            style: String::new(),
            width: 40,
            height: 32,
            boxes: Vec::new(),
            pixels: (0..40 * 32).map(|i| (i * 37 % 256) as u8).collect(),
        };
        let (bytes, _) = export_line_ctc(&network, &spec, &[sample], &device).unwrap();

        let onnx = read_line_ctc_onnx(&bytes).unwrap();
        assert_eq!(onnx.config.channels, [4, 6, 8]);
        assert_eq!(onnx.config.lstm_hidden, 10);
        assert_eq!(onnx.vocabulary, vocabulary);
        let fresh: LineCtc<B> = onnx.config.init(&device);
        let loaded = onnx.load_into(fresh, &device).unwrap();
        assert_eq!(parameters(&loaded), parameters(&network));

        // Loaded for training, a weight is trainable where a fresh network's is (the batch
        // norms' running statistics are not): a fine-tune must be able to move it.
        struct Frozen(usize);
        impl burn::module::ModuleVisitor<CpuTraining> for Frozen {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuTraining, D>>) {
                self.0 += usize::from(!param.val().is_require_grad());
            }
        }
        let frozen = |network: &LineCtc<CpuTraining>| {
            let mut frozen = Frozen(0);
            network.visit(&mut frozen);
            frozen.0
        };
        let onnx = read_line_ctc_onnx(&bytes).unwrap();
        let trainable: LineCtc<CpuTraining> = onnx.config.init(&device);
        let fresh_frozen = frozen(&trainable);
        let trainable = onnx.load_into(trainable, &device).unwrap();
        assert_eq!(
            frozen(&trainable),
            fresh_frozen,
            "weights loaded without gradients"
        );

        let error = read_line_ctc_onnx(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(error.to_string().contains("not an ONNX model"), "{error}");
    }

    /// Adds a different small offset to every parameter.
    struct Perturb(usize);
    impl burn::module::ModuleMapper<B> for Perturb {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            self.0 += 1;
            Param::from_mapped_value(id, tensor.add_scalar(0.01 * self.0 as f32), mapper)
        }
    }
}
