//! Metrics history (JSON and CSV) and a loss/metric curve PNG.

use std::path::Path;

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::ModelError;

/// One evaluation point (the end of an epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: u64,
    pub learning_rate: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    /// Accuracy for characters; 1 − CER for lines.
    pub val_metric: f64,
    /// Throughput so far; logged, not saved, so the history file is reproducible.
    #[serde(skip)]
    pub images_per_second: f64,
}

/// The mean training loss over the steps since the previous record (one per checkpoint), so a
/// run of one long epoch still has a curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    pub train_loss: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub metric_name: String,
    pub epochs: Vec<EpochRecord>,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
}

impl History {
    pub fn to_csv(&self) -> String {
        let mut csv = format!(
            "epoch,step,learning_rate,train_loss,val_loss,{}\n",
            self.metric_name
        );
        for e in &self.epochs {
            csv.push_str(&format!(
                "{},{},{:.6e},{:.6},{:.6},{:.6}\n",
                e.epoch, e.step, e.learning_rate, e.train_loss, e.val_loss, e.val_metric,
            ));
        }
        csv
    }

    /// Two panels side by side, over training steps: losses (train blue: per checkpoint where
    /// recorded, else per epoch; val orange, per epoch) and the validation metric (green). Epoch
    /// points are marked, so a one-epoch run shows its validation too.
    pub fn plot(&self, path: &Path) -> Result<(), ModelError> {
        let (w, h) = (640u32, 260u32);
        let mut img = RgbImage::from_pixel(2 * w, h, Rgb([255, 255, 255]));
        let train: Vec<(u64, f64)> = if self.steps.is_empty() {
            self.epochs.iter().map(|e| (e.step, e.train_loss)).collect()
        } else {
            self.steps.iter().map(|s| (s.step, s.train_loss)).collect()
        };
        let val: Vec<(u64, f64)> = self.epochs.iter().map(|e| (e.step, e.val_loss)).collect();
        let max_loss = train
            .iter()
            .chain(&val)
            .map(|&(_, loss)| loss)
            .filter(|l| l.is_finite())
            .fold(1e-9, f64::max);
        let last_step = train
            .iter()
            .chain(&val)
            .map(|&(s, _)| s)
            .max()
            .unwrap_or(1)
            .max(1);
        let series = |points: &[(u64, f64)], max: f64| -> Vec<(f64, f64)> {
            points
                .iter()
                .map(|&(step, v)| (step as f64 / last_step as f64, v / max))
                .collect()
        };
        let metric: Vec<(u64, f64)> = self.epochs.iter().map(|e| (e.step, e.val_metric)).collect();
        draw_axes(&mut img, 0, w, h);
        draw_axes(&mut img, w, w, h);
        draw_series(
            &mut img,
            0,
            w,
            h,
            &series(&train, max_loss),
            Rgb([31, 119, 180]),
            false,
        );
        draw_series(
            &mut img,
            0,
            w,
            h,
            &series(&val, max_loss),
            Rgb([255, 127, 14]),
            true,
        );
        draw_series(
            &mut img,
            w,
            w,
            h,
            &series(&metric, 1.0),
            Rgb([44, 160, 44]),
            true,
        );
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| ModelError::Invalid {
                reason: format!("encode curve PNG: {e}"),
            })?;
        std::fs::write(path, png).map_err(ModelError::io("write", path))
    }
}

const PAD: u32 = 24;

fn draw_axes(img: &mut RgbImage, x0: u32, w: u32, h: u32) {
    for x in x0 + PAD..x0 + w - PAD {
        img.put_pixel(x, h - PAD, Rgb([0, 0, 0]));
    }
    for y in PAD..h - PAD {
        img.put_pixel(x0 + PAD, y, Rgb([0, 0, 0]));
    }
}

/// Points are `(x, y)` in `[0, 1]²`; drawn as a polyline, each point a 5×5 square if `marked`.
fn draw_series(
    img: &mut RgbImage,
    x0: u32,
    w: u32,
    h: u32,
    points: &[(f64, f64)],
    colour: Rgb<u8>,
    marked: bool,
) {
    let to_px = |(x, y): (f64, f64)| {
        (
            x0 as f64 + PAD as f64 + x.clamp(0.0, 1.0) * (w - 2 * PAD) as f64,
            (h - PAD) as f64 - y.clamp(0.0, 1.0) * (h - 2 * PAD) as f64,
        )
    };
    for pair in points.windows(2) {
        let (a, b) = (to_px(pair[0]), to_px(pair[1]));
        let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) as usize).max(1);
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
                let (px, py) = (x as u32 + dx, y as u32 + dy);
                if px < img.width() && py < img.height() {
                    img.put_pixel(px, py, colour);
                }
            }
        }
    }
    for &point in points {
        let (x, y) = to_px(point);
        let reach: i64 = if marked { 2 } else { 0 };
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let (px, py) = (x as i64 + dx, y as i64 + dy);
                if (0..img.width() as i64).contains(&px) && (0..img.height() as i64).contains(&py) {
                    img.put_pixel(px as u32, py as u32, colour);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_epoch_run_still_draws_its_loss_curve_and_marks_its_validation() {
        let history = History {
            metric_name: "char_accuracy".into(),
            epochs: vec![EpochRecord {
                epoch: 1,
                step: 40,
                learning_rate: 1e-3,
                train_loss: 1.0,
                val_loss: 1.5,
                val_metric: 0.6,
                images_per_second: 0.0,
            }],
            steps: (1..=4)
                .map(|i| StepRecord {
                    step: 10 * i,
                    train_loss: 4.0 / i as f64,
                })
                .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        history.plot(&path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let columns_with = |colour: Rgb<u8>| {
            (0..img.width())
                .filter(|&x| (0..img.height()).any(|y| *img.get_pixel(x, y) == colour))
                .count()
        };
        // The train loss runs from step 10 to 40: three quarters of the panel's width.
        assert!(columns_with(Rgb([31, 119, 180])) > 300);
        assert!(columns_with(Rgb([255, 127, 14])) >= 5, "val loss marker");
        assert!(columns_with(Rgb([44, 160, 44])) >= 5, "val metric marker");
        let json: History =
            serde_json::from_str(&serde_json::to_string(&history).unwrap()).unwrap();
        assert_eq!(json, history);
        let old: History = serde_json::from_str(r#"{"metric_name": "m", "epochs": []}"#).unwrap();
        assert!(
            old.steps.is_empty(),
            "histories from before step records still load"
        );
    }
}
