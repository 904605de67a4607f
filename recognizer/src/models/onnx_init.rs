//! A textrec line model's ONNX read back into its Burn network: how a fine-tune starts from a
//! release bundle. Weights I/O, so it lives with the models; `onnx` only writes.

use burn::prelude::*;

use super::ModelError;
use crate::Architecture;
use crate::model_metadata::{ModelMetadata, key};
use crate::networks::{LineCtc, LineCtcConfig};

/// The network a textrec `line_ctc` ONNX file was exported from: its sizes, its classes, and its
/// weights in the order a module visit walks `LineCtc` (see [`LineCtcOnnx::load_into`]).
#[derive(Debug, Clone)]
pub struct LineCtcOnnx {
    pub config: LineCtcConfig,
    pub vocabulary: Vec<String>,
    values: Vec<(Vec<usize>, Vec<f32>)>,
}

/// The inverse of [`crate::onnx::export_line_ctc`]: reads a textrec line model's ONNX (a
/// release bundle's `models/lines.onnx`), so a fine-tune can start from a release. The sizes come
/// from the initializers; the ONNX recurrent bias, which Burn does not keep, is folded into the
/// input bias (the LSTM adds both). `dropout` is the default: ONNX keeps none.
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
    config.validate().map_err(|e| invalid(e.to_string()))?;
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
                    // A tensor made from data tracks no gradient: without the parameter's own
                    // flag, a fine-tune from a release would train nothing (the loss stayed
                    // flat over 600 steps).
                    Some((dims, values)) if dims == shape => {
                        Tensor::from_data(TensorData::new(values, shape), &self.device)
                            .set_require_grad(tensor.is_require_grad())
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
