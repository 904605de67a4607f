//! A small builder over `tract_onnx::pb` for the graphs textrec exports.

use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto,
};

use crate::model_metadata::ModelMetadata;

pub const OPSET: i64 = 17;
/// ONNX Runtime 1.31 refuses IR > 13 and tract's schema is IR 8.
pub const IR_VERSION: i64 = 8;

/// `metadata_props` every exported model carries, so inference never guesses.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub entries: Vec<(String, String)>,
}

impl Metadata {
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.entries.push((key.to_owned(), value.into()));
        self
    }
}

impl From<&ModelMetadata> for Metadata {
    fn from(metadata: &ModelMetadata) -> Metadata {
        Metadata {
            entries: metadata.entries(),
        }
    }
}

#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
}

/// One attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    String(String),
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A float input or output; `None` dims are symbolic (named by `symbol`).
    fn value_info(name: &str, dims: &[Result<i64, &str>]) -> pb::ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| pb::tensor_shape_proto::Dimension {
                value: Some(match d {
                    Ok(v) => dimension::Value::DimValue(*v),
                    Err(symbol) => dimension::Value::DimParam((*symbol).to_owned()),
                }),
                ..Default::default()
            })
            .collect();
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: pb::tensor_proto::DataType::Float as i32,
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Declares a graph input; `Err("N")` marks a symbolic dimension.
    pub fn input(&mut self, name: &str, dims: &[Result<i64, &str>]) -> &mut Self {
        self.inputs.push(Self::value_info(name, dims));
        self
    }

    pub fn output(&mut self, name: &str, dims: &[Result<i64, &str>]) -> &mut Self {
        self.outputs.push(Self::value_info(name, dims));
        self
    }

    /// A float constant (weights).
    pub fn weight(&mut self, name: &str, dims: &[usize], values: &[f32]) -> &mut Self {
        assert_eq!(
            dims.iter().product::<usize>(),
            values.len(),
            "shape of `{name}`"
        );
        self.initializers.push(pb::TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        self
    }

    /// An int64 constant (shapes, axes).
    pub fn int64s(&mut self, name: &str, values: &[i64]) -> &mut Self {
        self.initializers.push(pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        self
    }

    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> &mut Self {
        let attribute = attrs
            .iter()
            .map(|(name, value)| {
                let mut a = pb::AttributeProto {
                    name: (*name).to_owned(),
                    ..Default::default()
                };
                match value {
                    Attr::Int(i) => {
                        a.r#type = AttributeType::Int as i32;
                        a.i = *i;
                    }
                    Attr::Ints(v) => {
                        a.r#type = AttributeType::Ints as i32;
                        a.ints = v.clone();
                    }
                    Attr::Float(f) => {
                        a.r#type = AttributeType::Float as i32;
                        a.f = *f;
                    }
                    Attr::String(s) => {
                        a.r#type = AttributeType::String as i32;
                        a.s = s.clone().into_bytes();
                    }
                }
                a
            })
            .collect();
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name: outputs
                .first()
                .map(|o| format!("{op}_{o}"))
                .unwrap_or_default(),
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs.iter().map(|s| (*s).to_owned()).collect(),
            attribute,
            ..Default::default()
        });
        self
    }

    pub fn build(self, name: &str, metadata: &Metadata) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "textrec".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(pb::GraphProto {
                name: name.into(),
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .entries
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}
