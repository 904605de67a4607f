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
use crate::model_metadata::{ModelMetadata, key};
use crate::models::{LineModelSpec, ModelError};
use crate::networks::{LINE_DOWNSAMPLE, LineCtc, LineCtcConfig, LstmDirection, NetworkBackend};

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

/// The network a textrec `line_ctc` ONNX file was exported from: its sizes, its classes, and its
/// weights in the order a module visit walks `LineCtc` (see [`LineCtcOnnx::load_into`]).
#[derive(Debug, Clone)]
pub struct LineCtcOnnx {
    pub config: LineCtcConfig,
    pub vocabulary: Vec<String>,
    values: Vec<(Vec<usize>, Vec<f32>)>,
}

/// The inverse of [`export_line_ctc`]: reads a textrec line model's ONNX (a release bundle's
/// `models/lines.onnx`), so a fine-tune can start from a release. The sizes come from the
/// initializers; the ONNX recurrent bias, which Burn does not keep, is folded into the input bias
/// (the LSTM adds both). `dropout` is the default: ONNX keeps none.
pub fn read_line_ctc_onnx(bytes: &[u8]) -> Result<LineCtcOnnx, ModelError> {
    use prost::Message;
    use std::collections::HashMap;
    use tract_onnx::pb;

    let invalid = |reason: String| ModelError::Invalid { reason };
    let model =
        pb::ModelProto::decode(bytes).map_err(|e| invalid(format!("not an ONNX model: {e}")))?;
    let metadata = ModelMetadata::from_proto(&model).map_err(|e| invalid(e.to_string()))?;
    if metadata.architecture != Architecture::LineCtc {
        return Err(invalid(format!(
            "this is a {} model, not a line_ctc model",
            metadata.architecture
        )));
    }
    let vocabulary = ModelMetadata::required(metadata.vocabulary, key::VOCABULARY)
        .map_err(|e| invalid(e.to_string()))?;
    let height = ModelMetadata::required(metadata.input_height, key::INPUT_HEIGHT)
        .map_err(|e| invalid(e.to_string()))?;
    let graph = model.graph.ok_or_else(|| invalid("no graph".into()))?;
    let mut tensors: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    for t in graph.initializer {
        if t.data_type != pb::tensor_proto::DataType::Float as i32 {
            continue;
        }
        let values: Vec<f32> = if t.raw_data.is_empty() {
            t.float_data
        } else {
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        if dims.iter().product::<usize>() != values.len() {
            return Err(invalid(format!(
                "initializer {} has the wrong length",
                t.name
            )));
        }
        tensors.insert(t.name, (dims, values));
    }
    let mut take = |name: &str| {
        tensors.remove(name).ok_or_else(|| {
            invalid(format!(
                "no initializer `{name}`: not a textrec line_ctc export"
            ))
        })
    };
    let convs = [
        take("conv1.weight")?,
        take("conv2.weight")?,
        take("conv3.weight")?,
    ];
    let (r_dims, r) = take("lstm.R")?;
    let (head_dims, head) = take("head.weight")?;
    let hidden = r_dims.last().copied().unwrap_or(0);
    let mut config = LineCtcConfig::new(vocabulary.len());
    config.height = height;
    config.channels = [convs[0].0[0], convs[1].0[0], convs[2].0[0]];
    config.lstm_hidden = hidden;
    config.validate().map_err(invalid)?;
    if head_dims != [2 * hidden, vocabulary.len()] {
        return Err(invalid(format!(
            "head.weight is {head_dims:?}, not [{}, {}]",
            2 * hidden,
            vocabulary.len()
        )));
    }
    let (_, w) = take("lstm.W")?;
    let (_, b) = take("lstm.B")?;
    let features = config.step_features();
    let gates = 4 * hidden;
    if w.len() != 2 * gates * features || r.len() != 2 * gates * hidden || b.len() != 4 * gates {
        return Err(invalid(
            "lstm.W, lstm.R or lstm.B has the wrong size".into(),
        ));
    }
    // ONNX `[4h, n]` per direction → Burn's `[n, 4h]`.
    let transposed = |m: &[f32], n: usize| -> Vec<f32> {
        (0..n)
            .flat_map(|i| (0..gates).map(move |g| m[g * n + i]))
            .collect()
    };
    let direction = |d: usize| {
        let bias: Vec<f32> = (0..gates)
            .map(|g| b[d * 2 * gates + g] + b[d * 2 * gates + gates + g])
            .collect();
        [
            (
                vec![features, gates],
                transposed(&w[d * gates * features..][..gates * features], features),
            ),
            (vec![gates], bias),
            (
                vec![hidden, gates],
                transposed(&r[d * gates * hidden..][..gates * hidden], hidden),
            ),
        ]
    };
    // In the order a module visit walks `LineCtc`: convolutions, batch norms (scale, bias,
    // running mean, running variance), the LSTM's directions, the head.
    let mut values = Vec::new();
    for (i, conv) in convs.into_iter().enumerate() {
        values.push(conv);
        values.push(take(&format!("conv{}.bias", i + 1))?);
    }
    for i in 1..=3 {
        for param in ["scale", "bias", "mean", "var"] {
            values.push(take(&format!("norm{i}.{param}"))?);
        }
    }
    values.extend(direction(0));
    values.extend(direction(1));
    values.push((head_dims, head));
    values.push(take("head.bias")?);
    Ok(LineCtcOnnx {
        config,
        vocabulary,
        values,
    })
}

impl LineCtcOnnx {
    /// `network` (built from [`LineCtcOnnx::config`]) with the file's weights, each parameter's
    /// shape checked against the file's.
    pub fn load_into<B: Backend>(
        self,
        network: LineCtc<B>,
        device: &B::Device,
    ) -> Result<LineCtc<B>, ModelError> {
        use burn::module::{Module, ModuleMapper, Param};

        struct Load<B: Backend> {
            values: std::vec::IntoIter<(Vec<usize>, Vec<f32>)>,
            device: B::Device,
            mismatch: Option<String>,
        }
        impl<B: Backend> ModuleMapper<B> for Load<B> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let (id, tensor, mapper) = param.consume();
                let shape = tensor.dims().to_vec();
                let loaded = match self.values.next() {
                    Some((dims, values)) if dims == shape => {
                        Tensor::from_data(TensorData::new(values, shape), &self.device)
                    }
                    other => {
                        self.mismatch.get_or_insert(format!(
                            "a parameter of shape {shape:?} met {:?}",
                            other.map(|(dims, _)| dims)
                        ));
                        tensor
                    }
                };
                Param::from_mapped_value(id, loaded, mapper)
            }
        }
        let mut load = Load::<B> {
            values: self.values.into_iter(),
            device: device.clone(),
            mismatch: None,
        };
        let network = network.map(&mut load);
        let problem = load.mismatch.or_else(|| {
            load.values
                .next()
                .map(|(dims, _)| format!("a tensor {dims:?} was left over"))
        });
        match problem {
            Some(problem) => Err(ModelError::Invalid {
                reason: format!("the ONNX weights do not fit the network: {problem}"),
            }),
            None => Ok(network),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{Module, ModuleVisitor, Param};

    use super::*;
    use crate::models::{CpuInference as B, TrainOptions, TrainOutcome};

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
