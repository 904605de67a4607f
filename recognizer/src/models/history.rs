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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub metric_name: String,
    pub epochs: Vec<EpochRecord>,
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

    /// Two panels side by side: losses (train blue, val orange) and the validation metric (green).
    pub fn plot(&self, path: &Path) -> Result<(), ModelError> {
        let (w, h) = (640u32, 260u32);
        let mut img = RgbImage::from_pixel(2 * w, h, Rgb([255, 255, 255]));
        let losses: Vec<(f64, f64)> = self
            .epochs
            .iter()
            .map(|e| (e.train_loss, e.val_loss))
            .collect();
        let max_loss = losses
            .iter()
            .flat_map(|(a, b)| [*a, *b])
            .fold(1e-9, f64::max);
        let n = self.epochs.len();
        let series = |values: Vec<f64>, max: f64| -> Vec<(f64, f64)> {
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as f64 / (n.max(2) - 1) as f64, v / max))
                .collect()
        };
        draw_axes(&mut img, 0, w, h);
        draw_axes(&mut img, w, w, h);
        draw_series(
            &mut img,
            0,
            w,
            h,
            &series(losses.iter().map(|l| l.0).collect(), max_loss),
            Rgb([31, 119, 180]),
        );
        draw_series(
            &mut img,
            0,
            w,
            h,
            &series(losses.iter().map(|l| l.1).collect(), max_loss),
            Rgb([255, 127, 14]),
        );
        draw_series(
            &mut img,
            w,
            w,
            h,
            &series(self.epochs.iter().map(|e| e.val_metric).collect(), 1.0),
            Rgb([44, 160, 44]),
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

/// Points are `(x, y)` in `[0, 1]²`; drawn as a polyline.
fn draw_series(
    img: &mut RgbImage,
    x0: u32,
    w: u32,
    h: u32,
    points: &[(f64, f64)],
    colour: Rgb<u8>,
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
    if let [only] = points {
        let (x, y) = to_px(*only);
        img.put_pixel(x as u32, y as u32, colour);
    }
}
