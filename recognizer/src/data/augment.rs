//! Seeded augmentation of character and line images (affine, elastic, blur, noise, erasing),
//! either on the fly in training or materialised into a new dataset by [`augment_dataset`].

use std::collections::BTreeMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::batch::Batch;
use super::manifest::{Dataset, DatasetKind, Manifest, count_classes};
use super::raster::{Affine, Ink};
use super::shard::{Sample, ShardWriter};
use super::split::{Split, stable_hash};
use super::{DataError, Observer};
use crate::setting::{InvalidSetting, require};

/// Augmentation strengths; each draw picks a value uniformly up to the maximum. Zero disables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Largest rotation, degrees.
    pub rotate_degrees: f32,
    /// Largest horizontal shear (x += shear·y).
    pub shear: f32,
    /// Scale range `[min, max]`.
    pub scale: [f32; 2],
    /// Largest shift as a fraction of the image height.
    pub translate: f32,
    /// Elastic displacement in pixels, and the smoothness of its field.
    pub elastic_alpha: f32,
    pub elastic_sigma: f32,
    /// Largest Gaussian blur sigma, pixels.
    pub blur: f32,
    /// Largest noise standard deviation (ink units, 0..1).
    pub noise: f32,
    /// Chance of erasing one rectangle, and its largest size as a fraction of each side.
    pub erase_probability: f64,
    pub erase_max_fraction: f32,
}

impl Default for Augmentation {
    fn default() -> Self {
        Augmentation {
            rotate_degrees: 4.0,
            shear: 0.2,
            scale: [0.9, 1.1],
            translate: 0.05,
            elastic_alpha: 1.0,
            elastic_sigma: 3.0,
            blur: 0.6,
            noise: 0.05,
            erase_probability: 0.1,
            erase_max_fraction: 0.2,
        }
    }
}

impl Augmentation {
    /// Checks ranges; the message names the offending field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let [lo, hi] = self.scale;
        require(
            lo > 0.0 && lo <= hi,
            "scale",
            self.scale,
            "[min, max] with 0 < min <= max",
        )?;
        require(
            (0.0..=1.0).contains(&self.erase_probability),
            "erase_probability",
            self.erase_probability,
            "in 0..=1",
        )?;
        for (name, v) in [
            ("rotate_degrees", self.rotate_degrees),
            ("shear", self.shear),
            ("translate", self.translate),
            ("elastic_alpha", self.elastic_alpha),
            ("elastic_sigma", self.elastic_sigma),
            ("blur", self.blur),
            ("noise", self.noise),
            ("erase_max_fraction", self.erase_max_fraction),
        ] {
            require(v >= 0.0 && v.is_finite(), name, v, "a finite number >= 0")?;
        }
        Ok(())
    }

    /// One augmented copy of `image` (same size).
    pub fn apply(&self, image: &Ink, rng: &mut impl Rng) -> Ink {
        let (w, h) = (image.width as f32, image.height as f32);
        let scale = rng.random_range(self.scale[0]..=self.scale[1]);
        let angle = symmetric(rng, self.rotate_degrees).to_radians();
        let shear = symmetric(rng, self.shear);
        let (dx, dy) = (
            symmetric(rng, self.translate * h),
            symmetric(rng, self.translate * h),
        );
        let transform = Affine::translate(-w / 2.0, -h / 2.0)
            .then(&Affine::pose(scale, scale, shear, angle))
            .then(&Affine::translate(w / 2.0 + dx, h / 2.0 + dy));
        let mut out = image.warp_affine(&transform, image.width, image.height);
        if self.elastic_alpha > 0.0 {
            out = out.elastic(
                rng.random_range(0.0..=self.elastic_alpha),
                self.elastic_sigma.max(0.5),
                rng,
            );
        }
        out.blur(rng.random_range(0.0..=self.blur));
        let noise = rng.random_range(0.0..=self.noise);
        out.add_noise(noise, rng);
        if self.erase_probability > 0.0 && rng.random_bool(self.erase_probability) {
            let ew = (rng.random_range(0.0..=self.erase_max_fraction) * w) as usize;
            let eh = (rng.random_range(0.0..=self.erase_max_fraction) * h) as usize;
            let x0 = rng.random_range(0..=image.width - ew.min(image.width));
            let y0 = rng.random_range(0..=image.height - eh.min(image.height));
            for y in y0..(y0 + eh).min(image.height) {
                for x in x0..(x0 + ew).min(image.width) {
                    out.data[y * image.width + x] = 0.0;
                }
            }
        }
        out
    }
}

fn symmetric(rng: &mut impl Rng, max: f32) -> f32 {
    if max > 0.0 {
        rng.random_range(-max..=max)
    } else {
        0.0
    }
}

/// The random generator for copy `copy` of sample `index` of `split`.
pub fn augment_rng(seed: u64, split: Split, index: u64, copy: u32) -> ChaCha8Rng {
    let key = format!("augment/{}/{index}/{copy}", split.name());
    ChaCha8Rng::seed_from_u64(stable_hash(seed, key.as_bytes()))
}

/// Augments every image of a training batch in place (within its own width and height; the
/// padding stays paper), each from a generator of its own keyed by `seed`, the training `step`
/// and its position in the batch.
pub fn augment_batch(batch: &mut Batch, augmentation: &Augmentation, seed: u64, step: u64) {
    let (height, width) = (batch.height, batch.width);
    for i in 0..batch.len() {
        let (w, h) = (batch.widths[i], batch.heights[i]);
        let mut image = Ink {
            width: w,
            height: h,
            data: vec![0.0; w * h],
        };
        for y in 0..h {
            image.data[y * w..(y + 1) * w]
                .copy_from_slice(&batch.pixels[(i * height + y) * width..][..w]);
        }
        let key = format!("augment-step/{step}/{i}");
        let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(seed, key.as_bytes()));
        let augmented = augmentation.apply(&image, &mut rng);
        for y in 0..h {
            batch.pixels[(i * height + y) * width..][..w]
                .copy_from_slice(&augmented.data[y * w..(y + 1) * w]);
        }
    }
}

/// How to materialise augmented copies of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AugmentPlan {
    pub augmentation: Augmentation,
    pub seed: u64,
    /// Augmented copies per original sample of the chosen splits.
    pub copies: u32,
    pub splits: Vec<Split>,
    pub shard_bytes: u64,
}

/// Writes `input` to `out` with `plan.copies` augmented versions of every sample of the chosen
/// splits (each original is kept, first); other splits are copied unchanged.
pub fn augment_dataset(
    input: &Dataset,
    out: &Path,
    plan: &AugmentPlan,
    observer: &dyn Observer,
) -> Result<Manifest, DataError> {
    if input.manifest.kind == DatasetKind::Pages {
        return Err(DataError::invalid(
            "pages carry line boxes that an image-only augmentation would falsify; augment chars or lines",
        ));
    }
    let augmentation = &plan.augmentation;
    augmentation
        .validate()
        .map_err(|e| DataError::invalid(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(DataError::io("create", out))?;
    let total: u64 = input.manifest.splits.values().map(|s| s.count).sum();
    observer.total(total);
    let mut manifest = input.manifest.clone();
    for (&split, info) in &mut manifest.splits {
        let n_copies = if plan.splits.contains(&split) {
            plan.copies
        } else {
            0
        };
        let mut writer = ShardWriter::new(out, split, plan.shard_bytes);
        let mut count = 0;
        let mut class_counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut batch = Vec::with_capacity(1024);
        let mut index = 0u64;
        let mut samples = input.samples(split).peekable();
        while samples.peek().is_some() {
            batch.clear();
            for sample in samples.by_ref().take(1024) {
                batch.push((index, sample?));
                index += 1;
            }
            let produced: Vec<Vec<Sample>> = batch
                .par_iter()
                .map(|(i, sample)| {
                    let image = Ink::from_u8(
                        sample.width as usize,
                        sample.height as usize,
                        &sample.pixels,
                    );
                    let mut out = vec![sample.clone()];
                    for copy in 0..n_copies {
                        let mut rng = augment_rng(plan.seed, split, *i, copy);
                        out.push(Sample {
                            pixels: augmentation.apply(&image, &mut rng).to_u8(),
                            ..sample.clone()
                        });
                    }
                    out
                })
                .collect();
            for sample in produced.iter().flatten() {
                writer.push(sample)?;
                count += 1;
                count_classes(input.manifest.kind, &sample.label, &mut class_counts);
            }
            observer.advance(batch.len() as u64);
        }
        info.count = count;
        info.class_counts = class_counts;
        info.shards = writer.finish()?;
    }
    manifest.params = serde_json::json!({
        "generated": input.manifest.params,
        "augment": plan,
    });
    manifest.write(out)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar() -> Ink {
        let mut img = Ink::new(28, 28);
        for y in 6..22 {
            for x in 12..16 {
                img.data[y * 28 + x] = 1.0;
            }
        }
        img
    }

    #[test]
    fn same_seed_same_pixels_other_seed_other_pixels() {
        let aug = Augmentation::default();
        let a = aug
            .apply(&bar(), &mut augment_rng(1, Split::Train, 5, 0))
            .to_u8();
        let b = aug
            .apply(&bar(), &mut augment_rng(1, Split::Train, 5, 0))
            .to_u8();
        let c = aug
            .apply(&bar(), &mut augment_rng(2, Split::Train, 5, 0))
            .to_u8();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn all_zero_strengths_leave_the_image_alone() {
        let aug = Augmentation {
            rotate_degrees: 0.0,
            shear: 0.0,
            scale: [1.0, 1.0],
            translate: 0.0,
            elastic_alpha: 0.0,
            elastic_sigma: 3.0,
            blur: 0.0,
            noise: 0.0,
            erase_probability: 0.0,
            erase_max_fraction: 0.0,
        };
        let out = aug.apply(&bar(), &mut augment_rng(1, Split::Train, 0, 0));
        assert_eq!(out.to_u8(), bar().to_u8());
    }

    #[test]
    fn a_batch_is_augmented_per_step_and_position_inside_each_image_only() {
        let line = |width: u16| Sample {
            label: "l".into(),
            style: "w".into(),
            width,
            height: 8,
            pixels: (0..8 * width as usize)
                .map(|i| (i % 7 * 30) as u8)
                .collect(),
            boxes: Vec::new(),
        };
        let batch = crate::data::batch::collate(&[line(20), line(12)], 4, false);
        let aug = Augmentation::default();
        let augmented = |seed, step| {
            let mut b = batch.clone();
            augment_batch(&mut b, &aug, seed, step);
            b
        };
        let (a, again) = (augmented(1, 7), augmented(1, 7));
        assert_eq!(a, again, "same seed and step, same pixels");
        assert_ne!(a.pixels, augmented(1, 8).pixels, "another step draws anew");
        assert_ne!(a.pixels, augmented(2, 7).pixels, "another seed draws anew");
        assert_ne!(a.pixels, batch.pixels);
        // The shorter line's padding (columns 12..20) stays paper; sizes and labels stay.
        for y in 0..8 {
            assert!(
                a.pixels[(8 + y) * 20 + 12..(8 + y) * 20 + 20]
                    .iter()
                    .all(|&p| p == 0.0)
            );
        }
        assert_eq!(
            (a.widths.clone(), a.labels.clone()),
            (batch.widths, batch.labels)
        );
    }

    #[test]
    fn bad_ranges_name_the_field() {
        let aug = Augmentation {
            scale: [1.2, 0.8],
            ..Augmentation::default()
        };
        assert_eq!(aug.validate().unwrap_err().setting, "scale");
    }
}
