//! Preprocessing for training and inference: samples → float batches. Pixels become `[0, 1]`
//! ink, lines of similar width are bucketed together and right-padded with paper, so a batch
//! wastes little compute on padding. Shuffling uses a bounded, seeded buffer over the stream, so
//! memory stays flat however large the dataset is.

use std::borrow::Borrow;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::shard::Sample;

/// A batch in NCHW layout (`C = 1`), ready to become a tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Padded height shared by every image of the batch (lines and characters all have one).
    pub height: usize,
    /// Padded width shared by every image of the batch.
    pub width: usize,
    /// `len × height × width` floats in `[0, 1]` (the samples' own polarity), padding 0.
    pub pixels: Vec<f32>,
    /// Each image's width before padding.
    pub widths: Vec<usize>,
    /// Each image's height before padding.
    pub heights: Vec<usize>,
    pub labels: Vec<String>,
    /// Each image's line boxes (pages), `[x0, y0, x1, y1)`.
    pub boxes: Vec<Vec<[u16; 4]>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Pads `samples` (owned or borrowed, so callers need not copy pixels) to the widest, rounded up
/// to a multiple of `multiple`, and to the tallest (pages differ in height; lines do not).
pub fn collate<S: Borrow<Sample>>(samples: &[S], multiple: usize, invert: bool) -> Batch {
    let samples: Vec<&Sample> = samples.iter().map(Borrow::borrow).collect();
    let height = samples.iter().map(|s| s.height as usize).max().unwrap_or(0);
    let widest = samples.iter().map(|s| s.width as usize).max().unwrap_or(0);
    let width = widest.div_ceil(multiple.max(1)) * multiple.max(1);
    let mut pixels = vec![0.0f32; samples.len() * height * width];
    for (i, s) in samples.iter().enumerate() {
        let w = s.width as usize;
        for y in 0..s.height as usize {
            let row = &s.pixels[y * w..(y + 1) * w];
            let out = &mut pixels[(i * height + y) * width..][..w];
            for (o, &p) in out.iter_mut().zip(row) {
                let v = f32::from(p) / 255.0;
                *o = if invert { 1.0 - v } else { v };
            }
        }
    }
    Batch {
        height,
        width,
        pixels,
        widths: samples.iter().map(|s| s.width as usize).collect(),
        heights: samples.iter().map(|s| s.height as usize).collect(),
        labels: samples.iter().map(|s| s.label.clone()).collect(),
        boxes: samples.iter().map(|s| s.boxes.clone()).collect(),
    }
}

/// Streams batches from samples: a seeded shuffle buffer of `buffer` samples, then batches of
/// `batch_size` drawn from one width bucket (`bucket_width` px wide) at a time.
#[derive(Debug)]
pub struct Batcher<I> {
    samples: I,
    buffer: Vec<Sample>,
    capacity: usize,
    batch_size: usize,
    bucket_width: usize,
    multiple: usize,
    rng: ChaCha8Rng,
}

impl<I: Iterator<Item = Sample>> Batcher<I> {
    pub fn new(
        samples: I,
        batch_size: usize,
        bucket_width: usize,
        buffer: usize,
        seed: u64,
    ) -> Self {
        Batcher {
            samples,
            buffer: Vec::with_capacity(buffer),
            capacity: buffer.max(batch_size),
            batch_size: batch_size.max(1),
            bucket_width: bucket_width.max(1),
            multiple: 4,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl<I: Iterator<Item = Sample>> Iterator for Batcher<I> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        while self.buffer.len() < self.capacity {
            match self.samples.next() {
                Some(s) => self.buffer.push(s),
                None => break,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        // A random sample picks the bucket; its bucket-mates fill the batch.
        let pivot = self.rng.random_range(0..self.buffer.len());
        let bucket = self.buffer[pivot].width as usize / self.bucket_width;
        let mut picked = Vec::with_capacity(self.batch_size);
        let mut i = 0;
        while i < self.buffer.len() && picked.len() < self.batch_size {
            if self.buffer[i].width as usize / self.bucket_width == bucket {
                picked.push(self.buffer.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Bucket too small at the end of the stream: top up with the nearest widths.
        if picked.len() < self.batch_size && self.buffer.len() < self.capacity {
            self.buffer
                .sort_by_key(|s| (s.width as usize).abs_diff(bucket * self.bucket_width));
            let take = (self.batch_size - picked.len()).min(self.buffer.len());
            picked.extend(self.buffer.drain(..take));
        }
        Some(collate(&picked, self.multiple, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(width: u16, label: &str) -> Sample {
        Sample {
            label: label.into(),
            style: "f".into(),
            width,
            height: 2,
            boxes: Vec::new(),
            pixels: vec![255; width as usize * 2],
        }
    }

    #[test]
    fn collate_pads_with_paper_and_keeps_true_widths() {
        let batch = collate(&[line(3, "a"), line(6, "b")], 4, false);
        assert_eq!(
            (batch.height, batch.width, batch.widths.clone()),
            (2, 8, vec![3, 6])
        );
        assert_eq!(
            &batch.pixels[..8],
            &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(batch.pixels.len(), 2 * 2 * 8);
    }

    #[test]
    fn batches_cover_every_sample_once_group_widths_and_repeat_with_the_seed() {
        let samples: Vec<Sample> = (0..100)
            .map(|i| line(10 + (i * 37 % 300) as u16, &i.to_string()))
            .collect();
        let run = |seed| -> Vec<Batch> {
            Batcher::new(samples.clone().into_iter(), 8, 64, 32, seed).collect()
        };
        let batches = run(1);
        let mut labels: Vec<String> = batches.iter().flat_map(|b| b.labels.clone()).collect();
        labels.sort();
        let mut expected: Vec<String> = (0..100).map(|i: i32| i.to_string()).collect();
        expected.sort();
        assert_eq!(labels, expected);
        let padding: usize = batches
            .iter()
            .map(|b| b.widths.iter().map(|w| b.width - w).sum::<usize>())
            .sum();
        let total: usize = batches.iter().map(|b| b.width * b.len()).sum();
        assert!(
            padding * 4 < total,
            "bucketing keeps padding small: {padding} of {total}"
        );
        assert_eq!(run(1), batches);
        assert_ne!(run(2), batches);
    }
}
