//! The ONNX `LSTM` operator run as one whole-sequence op in tract.
//!
//! Why: tract lowers an ONNX `LSTM` to a `Scan` whose body (two matmuls, four slices, the
//! activations and the products) it dispatches once per time step and direction, so at the line
//! model's sizes the per-node bookkeeping outweighs the arithmetic and the model ran 2.5× slower
//! than on ONNX Runtime. Here the input projection of the whole sequence is one GEMM and the
//! recurrence is the plain-slice kernel training uses ([`crate::kernels::lstm_direction`]), so
//! the served recurrence is, operation for operation, the trained one.
//!
//! Only what textrec exports takes this path: constant `W`, `R` (and `B`), default activations,
//! no clip, no peepholes, initial states or sequence lengths, `Y` as the only output, forward or
//! bidirectional. Any other `LSTM` keeps tract's own lowering, so other models load as before.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::ops::rec::common::CommonRec;
use tract_onnx::ops::rec::lstm::LSTM;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops;

use super::op_io::{f32_input, f32_output};
use crate::kernels::{LstmShape, lstm_direction, matmul};

/// Parses an ONNX `LSTM` node as tract does, noting whether it fits the whole-sequence op.
pub(super) fn load_lstm(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let body = LSTM {
        f: Box::new(ops::nn::sigmoid()),
        g: Box::new(ops::math::tanh()),
        h: Box::new(ops::math::tanh()),
    };
    let standard = CommonRec::from_node_and_options(node, 3, 0, Box::new(body))?;
    let plain_attributes = node.attribute.iter().all(|a| match a.name.as_str() {
        "hidden_size" => true,
        "layout" => a.i == 0,
        "direction" => a.s == b"forward" || a.s == b"bidirectional",
        _ => false,
    });
    let fusable = plain_attributes
        && standard.optional_sequence_lens_input.is_none()
        && standard.optional_initial_h_input.is_none()
        && standard.optional_initial_c_input.is_none()
        && standard.optional_p_input.is_none()
        && standard.optional_y_output == Some(0)
        && standard.optional_y_h_output.is_none()
        && standard.optional_y_c_output.is_none();
    Ok((expand(LstmNode { standard, fusable }), vec![]))
}

/// An ONNX `LSTM` before typing: tract's own shape rules, and at wiring time either the
/// whole-sequence op or tract's `Scan` lowering.
#[derive(Debug, Clone)]
struct LstmNode {
    standard: CommonRec,
    fusable: bool,
}

impl Expansion for LstmNode {
    fn name(&self) -> StaticName {
        "LSTM".into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    fn nboutputs(&self) -> TractResult<usize> {
        self.standard.nboutputs()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        self.standard.rules(s, inputs, outputs)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        if self.fusable
            && let Some(op) = SequenceLstm::from_constants(model, inputs)?
        {
            return model.wire_node(prefix, op, &inputs[..1]);
        }
        self.standard.wire(prefix, model, inputs)
    }
}

/// One direction's weights, laid out for [`lstm_direction`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct DirectionWeights {
    /// `[input, 4·hidden]`: ONNX's `W` transposed.
    input: Arc<Tensor>,
    /// `[hidden, 4·hidden]`: ONNX's `R` transposed.
    recurrent: Arc<Tensor>,
    /// `[4·hidden]`: the input and recurrent biases summed.
    bias: Arc<Tensor>,
    reverse: bool,
}

/// ONNX `LSTM` over a whole `[steps, batch, input]` sequence → `Y`, `[steps, directions, batch,
/// hidden]`, zero initial state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SequenceLstm {
    hidden: usize,
    input: usize,
    directions: Vec<DirectionWeights>,
}

impl SequenceLstm {
    /// The op for `inputs` (`X`, `W`, `R`, optional `B`), or `None` when a weight is not a
    /// constant f32 tensor of the expected shape.
    fn from_constants(model: &TypedModel, inputs: &[OutletId]) -> TractResult<Option<Self>> {
        if model.outlet_fact(inputs[0])?.datum_type != f32::datum_type() {
            return Ok(None);
        }
        let constant = |slot: usize| -> TractResult<Option<Vec<f32>>> {
            let Some(&outlet) = inputs.get(slot) else {
                return Ok(None);
            };
            let fact = model.outlet_fact(outlet)?;
            match &fact.konst {
                Some(k) if k.datum_type() == f32::datum_type() => Ok(Some(
                    k.to_plain_array_view::<f32>()?.iter().copied().collect(),
                )),
                _ => Ok(None),
            }
        };
        let w_shape = model
            .outlet_fact(inputs[1])?
            .shape
            .as_concrete()
            .map(<[usize]>::to_vec);
        let r_shape = model
            .outlet_fact(inputs[2])?
            .shape
            .as_concrete()
            .map(<[usize]>::to_vec);
        let (Some(w), Some(r), Some(w_shape), Some(r_shape)) =
            (constant(1)?, constant(2)?, w_shape, r_shape)
        else {
            return Ok(None);
        };
        let &[directions, gates, input] = w_shape.as_slice() else {
            return Ok(None);
        };
        let hidden = gates / 4;
        if gates != 4 * hidden || r_shape != [directions, gates, hidden] || directions > 2 {
            return Ok(None);
        }
        let bias = match inputs.len() > 3 {
            true => match constant(3)? {
                Some(b) if b.len() == directions * 8 * hidden => b,
                _ => return Ok(None),
            },
            false => vec![0.0; directions * 8 * hidden],
        };
        let transposed = |m: &[f32], rows: usize, cols: usize| -> TractResult<Arc<Tensor>> {
            let t: Vec<f32> = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| m[r * cols + c]))
                .collect();
            Ok(Arc::new(Tensor::from_shape(&[cols, rows], &t)?))
        };
        let directions = (0..directions)
            .map(|d| {
                let b = &bias[d * 8 * hidden..(d + 1) * 8 * hidden];
                let summed: Vec<f32> = (0..gates).map(|g| b[g] + b[gates + g]).collect();
                Ok(DirectionWeights {
                    input: transposed(
                        &w[d * gates * input..(d + 1) * gates * input],
                        gates,
                        input,
                    )?,
                    recurrent: transposed(
                        &r[d * gates * hidden..(d + 1) * gates * hidden],
                        gates,
                        hidden,
                    )?,
                    bias: Arc::new(Tensor::from_shape(&[gates], &summed)?),
                    reverse: d == 1,
                })
            })
            .collect::<TractResult<_>>()?;
        Ok(Some(SequenceLstm {
            hidden,
            input,
            directions,
        }))
    }
}

impl Op for SequenceLstm {
    fn name(&self) -> StaticName {
        "SequenceLstm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "hidden={} input={} directions={}",
            self.hidden,
            self.input,
            self.directions.len()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    tract_onnx::tract_core::op_as_typed_op!();
}

impl EvalOp for SequenceLstm {
    tract_onnx::tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let ([steps, batch, input], x) = f32_input(&inputs[0], "SequenceLstm")?;
        let x = &*x;
        ensure!(
            input == self.input,
            "SequenceLstm: input size {input} is not {}",
            self.input
        );
        let h = self.hidden;
        let shape = LstmShape {
            steps,
            batch,
            hidden: h,
        };
        let rows = steps * batch;
        let dirs = self.directions.len();
        let mut y = vec![0.0f32; rows * dirs * h];
        let mut gates = Vec::with_capacity(rows * 4 * h);
        let mut hidden = vec![0.0f32; rows * h];
        let mut cells = vec![0.0f32; rows * h];
        for (d, weights) in self.directions.iter().enumerate() {
            let bias = weights.bias.try_as_plain_ram()?.as_slice::<f32>()?;
            // Each step's gates start as the bias.
            gates.clear();
            for _ in 0..rows {
                gates.extend_from_slice(bias);
            }
            let w = weights.input.try_as_plain_ram()?.as_slice::<f32>()?;
            matmul(
                rows,
                4 * h,
                input,
                &mut gates,
                true,
                (x, input, 1),
                (w, 4 * h, 1),
            );
            let r = weights.recurrent.try_as_plain_ram()?.as_slice::<f32>()?;
            lstm_direction(
                shape,
                &mut gates,
                r,
                weights.reverse,
                &mut hidden,
                &mut cells,
            );
            for t in 0..steps {
                let from = &hidden[t * batch * h..(t + 1) * batch * h];
                let at = (t * dirs + d) * batch * h;
                y[at..at + batch * h].copy_from_slice(from);
            }
        }
        f32_output([steps, dirs, batch, h], y)
    }
}

impl TypedOp for SequenceLstm {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = &inputs[0].shape;
        ensure!(x.rank() == 3, "SequenceLstm expects a rank-3 input");
        Ok(tvec!(f32::fact([
            x[0].clone(),
            self.directions.len().to_dim(),
            x[1].clone(),
            self.hidden.to_dim(),
        ])))
    }
}

#[cfg(test)]
mod tests {
    use crate::onnx::{Attr, GraphBuilder, Metadata};
    use crate::tract::run_model;
    use prost::Message;

    const STEPS: usize = 7;
    const BATCH: usize = 3;
    const INPUT: usize = 5;
    const HIDDEN: usize = 4;

    /// Weights and inputs with every element different, of either sign, some gates saturating.
    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.71 + seed).sin() * 1.3)
            .collect()
    }

    /// An ONNX `LSTM` over `[STEPS, BATCH, INPUT]` with `attributes` beyond `hidden_size`.
    fn lstm_model(directions: usize, attributes: &[(&str, Attr)]) -> Vec<u8> {
        let gates = 4 * HIDDEN;
        let mut g = GraphBuilder::new();
        let mut attrs = vec![("hidden_size", Attr::Int(HIDDEN as i64))];
        attrs.extend(attributes.iter().cloned());
        g.input("x", &[Ok(STEPS as i64), Ok(BATCH as i64), Ok(INPUT as i64)])
            .weight(
                "W",
                &[directions, gates, INPUT],
                &values(directions * gates * INPUT, 0.1),
            )
            .weight(
                "R",
                &[directions, gates, HIDDEN],
                &values(directions * gates * HIDDEN, 0.2),
            )
            .weight(
                "B",
                &[directions, 2 * gates],
                &values(directions * 2 * gates, 0.3),
            )
            .node("LSTM", &["x", "W", "R", "B"], &["y"], &attrs)
            .output(
                "y",
                &[
                    Ok(STEPS as i64),
                    Ok(directions as i64),
                    Ok(BATCH as i64),
                    Ok(HIDDEN as i64),
                ],
            );
        g.build("lstm", &Metadata::default()).encode_to_vec()
    }

    /// The output and the names of the optimised plan's ops.
    fn run(textrec: bool, bytes: &[u8]) -> (Vec<f32>, Vec<String>) {
        let x = values(STEPS * BATCH * INPUT, 0.4);
        let (shape, y, ops) = run_model(bytes, (&[STEPS, BATCH, INPUT], x), textrec);
        assert_eq!([shape[0], shape[2], shape[3]], [STEPS, BATCH, HIDDEN]);
        (y, ops)
    }

    fn max_difference(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn the_whole_sequence_op_matches_tracts_own_lstm_both_ways() {
        for (directions, direction) in [(2, "bidirectional"), (1, "forward")] {
            let bytes = lstm_model(directions, &[("direction", Attr::String(direction.into()))]);
            let (fused, fused_ops) = run(true, &bytes);
            let (standard, standard_ops) = run(false, &bytes);
            assert!(
                fused_ops.iter().any(|op| op == "SequenceLstm"),
                "{fused_ops:?}"
            );
            assert!(!standard_ops.iter().any(|op| op == "SequenceLstm"));
            let diff = max_difference(&fused, &standard);
            assert!(
                diff < 1e-5,
                "{direction}: differs from tract's LSTM by {diff}"
            );
        }
    }

    #[test]
    fn an_lstm_the_op_does_not_cover_keeps_tracts_lowering() {
        // A clip too wide to bind: same numbers, but not the plain LSTM the op implements.
        let bytes = lstm_model(2, &[("clip", Attr::Float(100.0))]);
        let (fused, ops) = run(true, &bytes);
        assert!(!ops.iter().any(|op| op == "SequenceLstm"), "{ops:?}");
        let (standard, _) = run(false, &bytes);
        assert_eq!(fused, standard);
    }
}
