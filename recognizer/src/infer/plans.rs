//! tract plans with concrete input shapes, built on first use and cached: fixed shapes let tract
//! fix every intermediate shape and pick its kernels ahead (docs/decisions.md 3), and callers pad their
//! inputs to a few buckets so few plans are ever built.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use super::InferError;

pub(crate) type Plan = Arc<TypedSimplePlan>;

/// Past this many cached plans (inputs of unusual sizes) the cache starts again.
const MAX_PLANS: usize = 256;

/// One ONNX model and its plans, keyed by the `[N, C, H, W]` shape of its single input.
#[derive(Debug)]
pub(crate) struct Plans {
    path: PathBuf,
    model: InferenceModel,
    plans: Mutex<HashMap<[usize; 4], Plan>>,
}

impl Plans {
    /// Reads the model; `origin` names it in errors.
    pub(crate) fn read(bytes: &[u8], origin: &Path) -> Result<Plans, InferError> {
        let model = crate::tract::read_onnx(bytes).map_err(|e| InferError::Model {
            path: origin.to_owned(),
            reason: format!("tract cannot read it: {e:#}"),
        })?;
        Ok(Plans {
            path: origin.to_owned(),
            model,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// The optimised plan for inputs of `shape`, built once.
    pub(crate) fn get(&self, shape: [usize; 4]) -> Result<Plan, InferError> {
        if let Some(plan) = self.plans.lock().expect("plan cache").get(&shape) {
            return Ok(plan.clone());
        }
        let plan = self
            .model
            .clone()
            .with_input_fact(0, f32::fact(shape).into())
            .and_then(crate::tract::optimized)
            .and_then(|m| m.into_runnable())
            .map_err(|e| InferError::Model {
                path: self.path.clone(),
                reason: format!("tract cannot plan an input of shape {shape:?}: {e:#}"),
            })?;
        let mut plans = self.plans.lock().expect("plan cache");
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(shape, plan.clone());
        Ok(plan)
    }

    /// Runs the plan for `shape` on `pixels`: the first output's shape and values. Failures name
    /// the model, since a page runs two.
    pub(crate) fn run(
        &self,
        shape: [usize; 4],
        pixels: Vec<f32>,
    ) -> Result<(Vec<usize>, Vec<f32>), InferError> {
        let failed = |reason: String| InferError::Model {
            path: self.path.clone(),
            reason: format!("inference failed: {reason}"),
        };
        let input = tract_ndarray::Array4::from_shape_vec(shape, pixels)
            .map_err(|e| failed(e.to_string()))?;
        let result = self
            .get(shape)?
            .run(tvec!(Tensor::from(input).into()))
            .map_err(|e| failed(format!("{e:#}")))?;
        let view = result[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| failed(format!("{e:#}")))?;
        Ok((view.shape().to_vec(), view.iter().copied().collect()))
    }

    /// The model's origin, for errors.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
