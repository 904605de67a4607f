//! Several datasets of one kind as one, with weights: real lines oversampled beside synthetic
//! ones, as FSDL mixes IAM with synthetic lines. A weight is how many times a dataset's train
//! split is drawn (2.5: every sample twice, and half of them a third time); validation and test
//! splits are taken once each, so a model is validated on every source it trains on. Train
//! samples are interleaved at random in proportion to what each source has left, streamed shard
//! by shard, so a shuffle buffer downstream sees every source in every stretch and memory stays
//! flat however large the sources are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::manifest::{Dataset, Manifest, SplitInfo, count_classes};
use super::shard::{Sample, ShardWriter};
use super::split::{Split, stable_hash};
use super::{DataError, Observer};

/// Bumped whenever the same inputs would give different samples.
pub const MIX_VERSION: u32 = 1;

#[derive(Debug, Clone)]
pub struct MixConfig {
    /// Each dataset directory with its train weight (> 0).
    pub inputs: Vec<(PathBuf, f64)>,
    pub seed: u64,
    pub shard_bytes: u64,
    pub params: serde_json::Value,
}

/// One source's train samples as drawn: whole passes, then a seeded subset for the fraction.
struct Draws<'a> {
    dataset: &'a Dataset,
    /// Sample indices still to come in the current pass, and the passes left after it.
    remaining: u64,
    /// Per pass: the samples kept (`None`: all of them).
    passes: Vec<Option<BTreeSet<u64>>>,
    current: Option<Box<dyn Iterator<Item = Result<Sample, DataError>> + 'a>>,
    index: u64,
}

impl<'a> Draws<'a> {
    fn new(dataset: &'a Dataset, weight: f64, seed: u64, source: usize) -> Draws<'a> {
        let count = dataset.split(Split::Train).map_or(0, |s| s.count);
        let whole = weight.floor() as usize;
        let fraction = weight - weight.floor();
        let mut passes: Vec<Option<BTreeSet<u64>>> = vec![None; whole];
        let extra = (fraction * count as f64).round() as u64;
        if extra > 0 {
            // A seeded choice of `extra` of the samples for the last, partial pass.
            let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(
                seed,
                format!("mix/{source}/fraction").as_bytes(),
            ));
            let mut order: Vec<u64> = (0..count).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            passes.push(Some(order.into_iter().take(extra as usize).collect()));
        }
        let remaining = passes
            .iter()
            .map(|p| p.as_ref().map_or(count, |kept| kept.len() as u64))
            .sum();
        passes.reverse();
        Draws {
            dataset,
            remaining,
            passes,
            current: None,
            index: 0,
        }
    }

    /// The next drawn sample.
    fn next(&mut self) -> Option<Result<Sample, DataError>> {
        loop {
            if self.current.is_none() {
                self.passes.last()?;
                self.current = Some(Box::new(self.dataset.samples(Split::Train)));
                self.index = 0;
            }
            let kept = self.passes.last().expect("a pass in progress");
            match self.current.as_mut().expect("a pass in progress").next() {
                Some(sample) => {
                    let index = self.index;
                    self.index += 1;
                    if kept.as_ref().is_none_or(|kept| kept.contains(&index)) {
                        self.remaining -= 1;
                        return Some(sample);
                    }
                }
                None => {
                    self.passes.pop();
                    self.current = None;
                }
            }
        }
    }
}

/// Writes the mix of `config.inputs` into `out` (shards + manifest).
pub fn mix_datasets(
    config: &MixConfig,
    out: &Path,
    observer: &dyn Observer,
) -> Result<Manifest, DataError> {
    let datasets: Vec<Dataset> = config
        .inputs
        .iter()
        .map(|(dir, _)| Dataset::open(dir))
        .collect::<Result<_, _>>()?;
    let (first, rest) = datasets
        .split_first()
        .ok_or_else(|| DataError::invalid("nothing to mix"))?;
    for other in rest {
        let (a, b) = (&first.manifest, &other.manifest);
        let differs = if a.kind != b.kind {
            Some(format!("{} and {}", a.kind.name(), b.kind.name()))
        } else if a.vocabulary != b.vocabulary {
            Some("different vocabularies".to_owned())
        } else if a.height != b.height || a.width != b.width || a.polarity != b.polarity {
            Some(format!(
                "images {:?}×{:?} ({:?}) and {:?}×{:?} ({:?})",
                a.width, a.height, a.polarity, b.width, b.height, b.polarity
            ))
        } else {
            None
        };
        if let Some(differs) = differs {
            return Err(DataError::invalid(format!(
                "{} and {} cannot be mixed: {differs}",
                first.dir.display(),
                other.dir.display()
            )));
        }
    }
    std::fs::create_dir_all(out).map_err(DataError::io("create", out))?;
    let kind = first.manifest.kind;
    let mut splits = BTreeMap::new();

    // Train: interleaved draws.
    let mut draws: Vec<Draws> = datasets
        .iter()
        .zip(&config.inputs)
        .enumerate()
        .map(|(i, (dataset, (_, weight)))| Draws::new(dataset, *weight, config.seed, i))
        .collect();
    let total: u64 = draws.iter().map(|d| d.remaining).sum();
    let val_test: u64 = datasets
        .iter()
        .flat_map(|d| [Split::Val, Split::Test].map(|s| d.split(s).map_or(0, |i| i.count)))
        .sum();
    observer.total(total + val_test);
    let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(config.seed, b"mix/train"));
    let mut writer = ShardWriter::new(out, Split::Train, config.shard_bytes);
    let mut info = SplitInfo::default();
    let mut writers = BTreeSet::new();
    loop {
        let left: u64 = draws.iter().map(|d| d.remaining).sum();
        if left == 0 {
            break;
        }
        // A source in proportion to what it has left: every stretch of the output holds each
        // source at about its share.
        let mut pick = rng.random_range(0..left);
        let source = draws
            .iter()
            .position(|d| {
                if pick < d.remaining {
                    true
                } else {
                    pick -= d.remaining;
                    false
                }
            })
            .expect("a source with samples left");
        let sample = draws[source].next().ok_or_else(|| {
            DataError::invalid(format!(
                "{} has fewer train samples than its manifest says",
                datasets[source].dir.display()
            ))
        })??;
        write(&sample, kind, &mut writer, &mut info, &mut writers)?;
        observer.advance(1);
    }
    info.shards = writer.finish()?;
    info.fonts = writers.into_iter().collect();
    splits.insert(Split::Train, info);

    // Validation and test: each source once, in order.
    for split in [Split::Val, Split::Test] {
        let mut writer = ShardWriter::new(out, split, config.shard_bytes);
        let mut info = SplitInfo::default();
        let mut writers = BTreeSet::new();
        for dataset in &datasets {
            for sample in dataset.samples(split) {
                write(&sample?, kind, &mut writer, &mut info, &mut writers)?;
                observer.advance(1);
            }
        }
        info.shards = writer.finish()?;
        info.fonts = writers.into_iter().collect();
        splits.insert(split, info);
    }

    let mut sources = BTreeMap::new();
    let mut skipped = Vec::new();
    for dataset in &datasets {
        sources.extend(dataset.manifest.sources.clone());
        skipped.extend(dataset.manifest.skipped.iter().cloned());
    }
    let manifest = Manifest {
        kind,
        vocabulary: first.manifest.vocabulary.clone(),
        seed: config.seed,
        generator_version: MIX_VERSION,
        polarity: first.manifest.polarity,
        height: first.manifest.height,
        width: first.manifest.width,
        sources,
        splits,
        params: config.params.clone(),
        skipped,
    };
    manifest.write(out)?;
    Ok(manifest)
}

fn write(
    sample: &Sample,
    kind: super::manifest::DatasetKind,
    writer: &mut ShardWriter,
    info: &mut SplitInfo,
    writers: &mut BTreeSet<String>,
) -> Result<(), DataError> {
    count_classes(kind, &sample.label, &mut info.class_counts);
    info.count += 1;
    writers.insert(sample.style.clone());
    writer.push(sample)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::manifest::{DatasetKind, Polarity};
    use crate::data::{ShardWriter, Unobserved};

    /// A lines dataset of `train` and `val` samples labelled `NAME-i`, written by `style`.
    fn dataset(dir: &Path, name: &str, train: u64, val: u64, height: u16) -> PathBuf {
        let out = dir.join(name);
        std::fs::create_dir_all(&out).unwrap();
        let mut splits = BTreeMap::new();
        for (split, count) in [(Split::Train, train), (Split::Val, val), (Split::Test, 0)] {
            let mut writer = ShardWriter::new(&out, split, 1 << 20);
            let mut info = SplitInfo::default();
            for i in 0..count {
                let sample = Sample {
                    label: format!("{name}-{i}"),
                    style: name.to_owned(),
                    width: 8,
                    height,
                    boxes: Vec::new(),
                    pixels: vec![i as u8; 8 * usize::from(height)],
                };
                count_classes(DatasetKind::Lines, &sample.label, &mut info.class_counts);
                info.count += 1;
                writer.push(&sample).unwrap();
            }
            info.shards = writer.finish().unwrap();
            splits.insert(split, info);
        }
        Manifest {
            kind: DatasetKind::Lines,
            vocabulary: vec!["<B>".into(), "a".into()],
            seed: 0,
            generator_version: 1,
            polarity: Polarity::InkWhite,
            height: Some(height),
            width: None,
            sources: BTreeMap::from([(name.to_owned(), "0".repeat(64))]),
            splits,
            params: serde_json::Value::Null,
            skipped: Vec::new(),
        }
        .write(&out)
        .unwrap();
        out
    }

    fn labels(dir: &Path, split: Split) -> Vec<String> {
        Dataset::open(dir)
            .unwrap()
            .samples(split)
            .map(|s| s.unwrap().label)
            .collect()
    }

    #[test]
    fn weights_repeat_a_source_interleaved_and_val_takes_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let synthetic = dataset(dir.path(), "synth", 20, 2, 32);
        let real = dataset(dir.path(), "real", 4, 1, 32);
        let config = MixConfig {
            inputs: vec![(synthetic, 1.0), (real, 2.5)],
            seed: 7,
            shard_bytes: 1 << 20,
            params: serde_json::Value::Null,
        };
        let mix = |name: &str| {
            let out = dir.path().join(name);
            let manifest = mix_datasets(&config, &out, &Unobserved).unwrap();
            (
                manifest,
                labels(&out, Split::Train),
                std::fs::read(out.join("train-00000.shard")).ok(),
            )
        };
        let (manifest, train, bytes) = mix("a");
        // 20 synthetic once, 4 real lines 2.5 times: 10.
        assert_eq!(train.len(), 30);
        assert_eq!(manifest.splits[&Split::Train].count, 30);
        let real: Vec<&String> = train.iter().filter(|l| l.starts_with("real")).collect();
        assert_eq!(real.len(), 10);
        for i in 0..4 {
            let n = real.iter().filter(|l| **l == &format!("real-{i}")).count();
            assert!((2..=3).contains(&n), "real-{i} drawn {n} times: {train:?}");
        }
        // Interleaved: the real lines are not all at one end.
        let first_half = train[..15].iter().filter(|l| l.starts_with("real")).count();
        assert!((2..=8).contains(&first_half), "{train:?}");
        assert_eq!(
            labels(&dir.path().join("a"), Split::Val),
            ["synth-0", "synth-1", "real-0"]
        );
        assert_eq!(manifest.splits[&Split::Train].fonts, ["real", "synth"]);
        assert_eq!(manifest.sources.len(), 2);
        // Same seed, same bytes.
        let (_, again, again_bytes) = mix("b");
        assert_eq!(train, again);
        assert_eq!(bytes, again_bytes);
    }

    #[test]
    fn datasets_that_differ_in_image_size_are_not_mixed() {
        let dir = tempfile::tempdir().unwrap();
        let config = MixConfig {
            inputs: vec![
                (dataset(dir.path(), "a", 2, 0, 32), 1.0),
                (dataset(dir.path(), "b", 2, 0, 48), 1.0),
            ],
            seed: 1,
            shard_bytes: 1 << 20,
            params: serde_json::Value::Null,
        };
        let error = mix_datasets(&config, &dir.path().join("out"), &Unobserved)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot be mixed: images"), "{error}");
        assert!(!dir.path().join("out/manifest.json").exists());
    }
}
