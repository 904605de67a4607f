//! The learned line detector: `LineFcn` trained on a `pages` dataset to mark each line's core
//! (per-pixel binary cross-entropy on the downscaled page) and to predict, on the core, the
//! distances to the line's top and bottom (L1), validated by detecting lines on the val pages
//! as inference does and scoring them against the true boxes. (Pages in a batch are padded to
//! the largest, inference pads to a 32-pixel multiple; both pad with blank paper.)

use std::path::Path;

use burn::prelude::*;
use image::{GrayImage, Luma};

use super::TrainingBackend;
use super::artifacts::{
    ModelSpec, dataset_fingerprint, expect_architecture, init_spec, load_weights,
    model_architecture, read_spec, save_model,
};
use super::fit::{Task, TrainOptions, exclusive_training, fit, with_stable_ids};
use super::{History, ModelError};
use crate::Architecture;
use crate::data::batch::Batch;
use crate::data::{Dataset, DatasetKind, Observer};
use crate::infer::{DetectionScore, DetectorMaps, LineBox, detector_input};
use crate::networks::{LineFcn, LineFcnConfig};

const ARCHITECTURE: Architecture = Architecture::LineFcn;

/// A trained line detector's spec.
pub type DetectorModelSpec = ModelSpec<LineFcnConfig>;

/// Pages as the network reads them, with their targets.
struct PageBatch {
    /// `[n, 1, height, width]` inputs, each page top-left and zero-padded.
    pixels: Vec<f32>,
    /// `[n, 1, height, width]`: 1 on line cores, 0 elsewhere.
    cores: Vec<f32>,
    /// `[n, 2, height, width]`: the distances up and down (meaningful on cores only).
    distances: Vec<f32>,
    /// 1 where a page is, 0 on padding: the loss ignores padding.
    valid: Vec<f32>,
    shape: [usize; 4],
    /// Each page's network input size, page size and true boxes.
    inputs: Vec<(usize, usize)>,
    pages: Vec<(u32, u32)>,
    truth: Vec<Vec<LineBox>>,
}

pub(super) struct DetectorTask {
    pub(super) scale: usize,
}

impl DetectorTask {
    /// Turns a batch of page samples (dark ink on light paper) into network inputs and targets
    /// (cores and distances) through the same [`detector_input`] inference uses.
    fn prepare(&self, batch: &Batch) -> PageBatch {
        let mut inputs = Vec::with_capacity(batch.len());
        let mut targets = Vec::with_capacity(batch.len());
        let mut truth = Vec::with_capacity(batch.len());
        let mut pages = Vec::with_capacity(batch.len());
        for i in 0..batch.len() {
            let (width, height) = (batch.widths[i], batch.heights[i]);
            let offset = i * batch.height * batch.width;
            let page = GrayImage::from_fn(width as u32, height as u32, |x, y| {
                let v = batch.pixels[offset + y as usize * batch.width + x as usize];
                Luma([(v * 255.0).round() as u8])
            });
            let boxes: Vec<LineBox> = batch.boxes[i]
                .iter()
                .map(|&b| LineBox::from_array(b))
                .collect();
            let input = detector_input(&page, self.scale);
            targets.push(DetectorMaps::target(
                &boxes,
                input.width,
                input.height,
                self.scale,
            ));
            inputs.push(input);
            truth.push(boxes);
            pages.push((width as u32, height as u32));
        }
        let width = inputs.iter().map(|i| i.width).max().unwrap_or(0);
        let height = inputs.iter().map(|i| i.height).max().unwrap_or(0);
        let len = batch.len() * width * height;
        let (mut pixels, mut cores, mut valid) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
        let mut distances = vec![0.0; 2 * len];
        for (i, (input, target)) in inputs.iter().zip(&targets).enumerate() {
            for y in 0..input.height {
                let row = (i * height + y) * width;
                let own = y * input.width..(y + 1) * input.width;
                pixels[row..][..input.width].copy_from_slice(&input.pixels[own.clone()]);
                cores[row..][..input.width].copy_from_slice(&target.core[own.clone()]);
                valid[row..][..input.width].fill(1.0);
                for (plane, map) in [&target.top, &target.bottom].into_iter().enumerate() {
                    let row = ((2 * i + plane) * height + y) * width;
                    distances[row..][..input.width].copy_from_slice(&map[own.clone()]);
                }
            }
        }
        PageBatch {
            pixels,
            cores,
            distances,
            valid,
            shape: [batch.len(), 1, height, width],
            inputs: inputs.iter().map(|i| (i.width, i.height)).collect(),
            pages,
            truth,
        }
    }
}

/// Mean binary cross-entropy of `logits` against `targets` over the `valid` pixels, in the
/// overflow-free form `max(x, 0) − x·t + ln(1 + e^−|x|)`.
fn masked_bce<B: Backend>(
    logits: Tensor<B, 4>,
    targets: Tensor<B, 4>,
    valid: Tensor<B, 4>,
) -> Tensor<B, 1> {
    let per_pixel = logits.clone().clamp_min(0.0) - logits.clone() * targets
        + logits.abs().neg().exp().add_scalar(1.0).log();
    (per_pixel * valid.clone()).sum() / valid.sum().clamp_min(1.0)
}

fn tensor<B: Backend>(values: Vec<f32>, shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// How much the distance error counts beside the core cross-entropy: finding the lines comes
/// first (at 1.0 the distances slowed the core's learning so much that a 120-step smoke run
/// marked no line at all).
const DISTANCE_WEIGHT: f32 = 0.25;

/// The detector's loss on a batch: core cross-entropy over the page plus the weighted mean
/// absolute error of the two distances over the core pixels.
fn detector_loss<B: Backend>(
    maps: Tensor<B, 4>,
    pages: &PageBatch,
    device: &B::Device,
) -> Tensor<B, 1> {
    let [n, _, height, width] = pages.shape;
    let cores = tensor::<B>(pages.cores.clone(), pages.shape, device);
    let valid = tensor::<B>(pages.valid.clone(), pages.shape, device);
    let distances = tensor::<B>(pages.distances.clone(), [n, 2, height, width], device);
    let core_loss = masked_bce(maps.clone().narrow(1, 0, 1), cores.clone(), valid);
    let misses = (maps.narrow(1, 1, 2) - distances).abs() * cores.clone();
    core_loss + misses.sum() * DISTANCE_WEIGHT / (cores.sum() * 2.0).clamp_min(1.0)
}

impl<B: TrainingBackend> Task<B> for DetectorTask {
    type Network = LineFcn<B>;

    /// Detection F1 at IoU ≥ 0.5 times the matched boxes' mean IoU: finding every line counts
    /// most, and among detectors that do, the tighter boxes win.
    fn metric_name(&self) -> &'static str {
        "detection_f1_x_iou"
    }

    fn loss(&self, network: &LineFcn<B>, batch: &Batch, device: &B::Device) -> Tensor<B, 1> {
        let pages = self.prepare(batch);
        let maps = network.forward(tensor::<B>(pages.pixels.clone(), pages.shape, device));
        detector_loss(maps, &pages, device)
    }

    fn validate(
        &self,
        network: &LineFcn<B::InnerBackend>,
        batches: &mut dyn Iterator<Item = Batch>,
        device: &B::Device,
    ) -> (f64, f64) {
        let (mut loss_sum, mut count) = (0.0, 0usize);
        let mut score = DetectionScore::default();
        for batch in batches {
            let pages = self.prepare(&batch);
            let [_, _, height, width] = pages.shape;
            let maps = network.forward(tensor::<B::InnerBackend>(
                pages.pixels.clone(),
                pages.shape,
                device,
            ));
            let values: Vec<f32> = maps
                .clone()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 maps");
            let loss: f64 = detector_loss(maps, &pages, device).into_scalar().elem();
            loss_sum += loss * batch.len() as f64;
            count += batch.len();
            for (i, ((&(w, h), &(page_w, page_h)), truth)) in pages
                .inputs
                .iter()
                .zip(&pages.pages)
                .zip(&pages.truth)
                .enumerate()
            {
                let own: Vec<f32> = (0..3 * h)
                    .flat_map(|row| {
                        let (plane, y) = (row / h, row % h);
                        values[((3 * i + plane) * height + y) * width..][..w]
                            .iter()
                            .copied()
                    })
                    .collect();
                let found =
                    DetectorMaps::from_channels(&own, w, h).boxes(self.scale, page_w, page_h);
                score.add(&DetectionScore::of(truth, &found, 0.5));
            }
        }
        (
            loss_sum / count.max(1) as f64,
            score.f1() * score.mean_iou(),
        )
    }
}

/// Trains a line detector on the pages dataset in `dataset_dir` and writes `weights.mpk`,
/// `model.json`, `history.json`, `history.csv` and `curves.png` into `out`.
#[allow(clippy::too_many_arguments)]
pub fn train_detector_model<B: TrainingBackend>(
    dataset_dir: &Path,
    options: &TrainOptions,
    network_config: Option<LineFcnConfig>,
    init: Option<&Path>,
    out: &Path,
    resume_dir: &Path,
    observer: &dyn Observer,
    device: &B::Device,
) -> Result<(DetectorModelSpec, History), ModelError> {
    let dataset = Dataset::open(dataset_dir)?;
    if dataset.manifest.kind != DatasetKind::Pages {
        return Err(ModelError::Invalid {
            reason: format!(
                "{} is a {} dataset; the line detector trains on pages",
                dataset_dir.display(),
                dataset.manifest.kind.name()
            ),
        });
    }
    let config = match init {
        Some(dir) => init_spec::<LineFcnConfig>(dir, ARCHITECTURE, dataset_dir, &[])?.network,
        None => network_config.unwrap_or_default(),
    };
    config.validate()?;
    let _exclusive = exclusive_training(observer);
    B::seed(device, options.seed);
    let mut network: LineFcn<B> = with_stable_ids(config.init(device));
    if let Some(dir) = init {
        network = load_weights(dir, network, device)?;
    }
    let scale = config.scale;
    let task = DetectorTask { scale };
    let (kept, history, outcome) = fit(
        &task, network, &dataset, options, resume_dir, observer, device,
    )?;
    let spec = DetectorModelSpec {
        architecture: ARCHITECTURE,
        network: config,
        vocabulary: Vec::new(),
        input_height: 32,
        input_width: None,
        normalisation: format!(
            "page contrast-stretched from its paper and ink levels to ink = 1, area-averaged \
             down {scale}×; any size (tract plans per 32-pixel multiple of the shrunk page)"
        ),
        train: options.clone(),
        outcome,
        dataset_manifest_sha256: dataset_fingerprint(dataset_dir)?,
    };
    save_model(out, kept, &spec, &history)?;
    Ok((spec, history))
}

/// Loads a trained line detector from a directory written by [`train_detector_model`].
pub fn load_detector_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(DetectorModelSpec, LineFcn<B>), ModelError> {
    expect_architecture(dir, model_architecture(dir)?, ARCHITECTURE)?;
    let spec: DetectorModelSpec = read_spec(dir)?;
    let network = load_weights(dir, spec.network.init::<B>(device), device)?;
    Ok((spec, network))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::CpuInference;

    #[test]
    fn masked_bce_matches_the_formula_and_ignores_padding() {
        let device = Default::default();
        let t = |v: Vec<f32>| tensor::<CpuInference>(v, [1, 1, 1, 3], &device);
        let loss: f32 = masked_bce(
            t(vec![2.0, -1.0, 50.0]),
            t(vec![1.0, 0.0, 0.0]),
            t(vec![1.0, 1.0, 0.0]),
        )
        .into_scalar()
        .elem();
        // ln(1 + e^-2) for a confident hit, ln(1 + e^-1) for a hesitant right call; the padded pixel's
        // huge loss does not count.
        let expected = ((1.0f32 + (-2.0f32).exp()).ln() + (1.0f32 + (-1.0f32).exp()).ln()) / 2.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    }

    #[test]
    fn distance_errors_count_on_core_pixels_only() {
        let device = Default::default();
        // One page of two pixels: a core pixel whose distances are off by 0.5 and 0.25, and a
        // background pixel whose (meaningless) distances are far off.
        let pages = PageBatch {
            pixels: vec![0.0; 2],
            cores: vec![1.0, 0.0],
            distances: vec![1.0, 1.0, 1.0, 1.0],
            valid: vec![1.0, 1.0],
            shape: [1, 1, 1, 2],
            inputs: vec![(2, 1)],
            pages: vec![(8, 4)],
            truth: vec![Vec::new()],
        };
        let maps = tensor::<CpuInference>(
            vec![30.0, -30.0, 1.5, 9.0, 0.75, -9.0],
            [1, 3, 1, 2],
            &device,
        );
        let loss: f32 = detector_loss(maps, &pages, &device).into_scalar().elem();
        // Both core logits are confidently right (cross-entropy ≈ 0); L1 = (0.5 + 0.25) / 2.
        assert!((loss - 0.375 * DISTANCE_WEIGHT).abs() < 1e-4, "{loss}");
    }
}
