//! Structural validation (what `onnx.checker` catches that matters to us) and running a model
//! with tract for parity checks.

use std::collections::BTreeSet;

use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Why a model is structurally invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("the model declares no default-domain opset")]
    NoOpset,
    #[error("the model has no graph")]
    NoGraph,
    #[error("node `{node}` reads `{input}`, which no input, initializer or earlier node defines")]
    UndefinedInput { node: String, input: String },
    #[error("`{name}` is defined twice")]
    DefinedTwice { name: String },
    #[error("graph output `{output}` is never produced")]
    MissingOutput { output: String },
}

/// Checks that the default opset is declared, every node input is defined before use (graph
/// inputs, initializers, earlier outputs: topological order), names are unique and every graph
/// output is produced.
pub fn check_structure(model: &pb::ModelProto) -> Result<(), StructureError> {
    if !model
        .opset_import
        .iter()
        .any(|o| o.domain.is_empty() && o.version > 0)
    {
        return Err(StructureError::NoOpset);
    }
    let graph = model.graph.as_ref().ok_or(StructureError::NoGraph)?;
    let mut defined = BTreeSet::new();
    for name in graph
        .input
        .iter()
        .map(|i| &i.name)
        .chain(graph.initializer.iter().map(|i| &i.name))
    {
        if !defined.insert(name.clone()) {
            return Err(StructureError::DefinedTwice { name: name.clone() });
        }
    }
    for node in &graph.node {
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(input) {
                return Err(StructureError::UndefinedInput {
                    node: node.name.clone(),
                    input: input.clone(),
                });
            }
        }
        for output in &node.output {
            if !defined.insert(output.clone()) {
                return Err(StructureError::DefinedTwice {
                    name: output.clone(),
                });
            }
        }
    }
    for output in &graph.output {
        if !defined.contains(&output.name) {
            return Err(StructureError::MissingOutput {
                output: output.name.clone(),
            });
        }
    }
    Ok(())
}

/// Runs an encoded model on one float input with tract; returns the first output's shape and values.
pub fn run_tract(
    model_bytes: &[u8],
    shape: &[usize],
    input: Vec<f32>,
) -> TractResult<(Vec<usize>, Vec<f32>)> {
    let model =
        crate::tract::read_onnx(model_bytes)?.with_input_fact(0, f32::fact(shape).into())?;
    let model = crate::tract::optimized(model)?.into_runnable()?;
    let input = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), input)?;
    let outputs = model.run(tvec!(Tensor::from(input).into()))?;
    let view = outputs[0].to_plain_array_view::<f32>()?;
    Ok((view.shape().to_vec(), view.iter().copied().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::graph::{Attr, GraphBuilder, Metadata};
    use prost::Message;

    fn tiny() -> pb::ModelProto {
        let mut g = GraphBuilder::new();
        g.input("x", &[Err("N"), Ok(2)])
            .weight("w", &[2, 3], &[1.0, 0.0, 2.0, 0.0, 1.0, -1.0])
            .weight("b", &[3], &[0.5, 0.5, 0.5])
            .node(
                "Gemm",
                &["x", "w", "b"],
                &["y"],
                &[("transB", Attr::Int(0))],
            )
            .output("y", &[Err("N"), Ok(3)]);
        g.build("tiny", &Metadata::default())
    }

    #[test]
    fn a_well_formed_graph_passes_and_runs_in_tract() {
        let model = tiny();
        check_structure(&model).unwrap();
        let (shape, y) = run_tract(&model.encode_to_vec(), &[1, 2], vec![1.0, 2.0]).unwrap();
        assert_eq!(shape, [1, 3]);
        assert_eq!(y, [1.5, 2.5, 0.5]);
    }

    #[test]
    fn undefined_inputs_and_missing_outputs_are_caught() {
        let mut model = tiny();
        model.graph.as_mut().unwrap().node[0].input[1] = "nope".into();
        assert!(matches!(
            check_structure(&model),
            Err(StructureError::UndefinedInput { .. })
        ));
        let mut model = tiny();
        model.graph.as_mut().unwrap().output[0].name = "z".into();
        assert!(matches!(
            check_structure(&model),
            Err(StructureError::MissingOutput { .. })
        ));
        let mut model = tiny();
        model.opset_import.clear();
        assert_eq!(check_structure(&model), Err(StructureError::NoOpset));
    }
}
