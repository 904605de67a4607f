//! The exported character classifier, run by tract with a fixed-shape plan (docs/decisions.md 3).

use std::path::Path;

use tract_onnx::prelude::*;

use super::InferError;
use crate::data::Sample;
use crate::data::batch::collate;
use crate::model_metadata::{MetadataError, ModelMetadata, key};

type Plan = std::sync::Arc<TypedSimplePlan>;

/// A loaded classifier: its vocabulary (from the model's metadata) and a plan per batch size.
#[derive(Debug)]
pub struct CharClassifier {
    pub vocabulary: Vec<String>,
    pub side: usize,
    batch: usize,
    plan: Plan,
}

impl CharClassifier {
    /// Loads `path` and builds a plan for batches of `batch` images.
    pub fn load(path: &Path, batch: usize) -> Result<CharClassifier, InferError> {
        let bytes = std::fs::read(path).map_err(|source| InferError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bad = |reason: String| InferError::Model {
            path: path.to_owned(),
            reason,
        };
        let read = || -> Result<(Vec<String>, usize), MetadataError> {
            let metadata = ModelMetadata::read(&bytes)?;
            Ok((
                ModelMetadata::required(metadata.vocabulary, key::VOCABULARY)?,
                ModelMetadata::required(metadata.input_height, key::INPUT_HEIGHT)?,
            ))
        };
        let (vocabulary, side) = read().map_err(|e| bad(e.to_string()))?;
        let batch = batch.max(1);
        let plan = crate::tract::read_onnx(&bytes)
            .and_then(|m| m.with_input_fact(0, f32::fact([batch, 1, side, side]).into()))
            .and_then(crate::tract::optimized)
            .and_then(|m| m.into_runnable())
            .map_err(|e| bad(format!("tract cannot load it: {e:#}")))?;
        Ok(CharClassifier {
            vocabulary,
            side,
            batch,
            plan,
        })
    }

    /// Class scores (logits) for each sample, in order.
    pub fn logits(&self, samples: &[Sample]) -> Result<Vec<Vec<f32>>, InferError> {
        let mut out = Vec::with_capacity(samples.len());
        for chunk in samples.chunks(self.batch) {
            if let Some(odd) = chunk
                .iter()
                .find(|s| s.width as usize != self.side || s.height as usize != self.side)
            {
                return Err(InferError::Run(format!(
                    "an image is {}×{}, the model reads {}×{}",
                    odd.width, odd.height, self.side, self.side
                )));
            }
            let batch = collate(chunk, 1, false);
            // The plan has a fixed batch size: pad the last chunk with blank images.
            let mut pixels = batch.pixels;
            pixels.resize(self.batch * self.side * self.side, 0.0);
            let input = tract_ndarray::Array4::from_shape_vec(
                (self.batch, 1, self.side, self.side),
                pixels,
            )
            .map_err(|e| InferError::Run(e.to_string()))?;
            let result = self
                .plan
                .run(tvec!(Tensor::from(input).into()))
                .map_err(|e| InferError::Run(format!("{e:#}")))?;
            let view = result[0]
                .to_plain_array_view::<f32>()
                .map_err(|e| InferError::Run(format!("{e:#}")))?;
            let classes = self.vocabulary.len();
            let values: Vec<f32> = view.iter().copied().collect();
            out.extend(
                values
                    .chunks(classes)
                    .take(chunk.len())
                    .map(<[f32]>::to_vec),
            );
        }
        Ok(out)
    }

    /// The most likely class index of each sample.
    pub fn classify(&self, samples: &[Sample]) -> Result<Vec<usize>, InferError> {
        Ok(self
            .logits(samples)?
            .iter()
            .map(|scores| {
                scores
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i)
            })
            .collect())
    }
}
