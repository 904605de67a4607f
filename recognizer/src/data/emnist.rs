//! EMNIST as FSDL's labs read it, into a chars dataset: `emnist-byclass.mat` from FSDL's
//! `matlab.zip` holds `dataset`, a struct of `train` and `test` (each `images` N×784 uint8,
//! `labels` and `writers` N×1) and `mapping` (class, character code). Classes become characters
//! through the file's own mapping, so EMNIST's other splits (balanced, letters) import too;
//! characters outside the vocabulary are left out and reported.
//!
//! As FSDL does (`SAMPLE_TO_BALANCE`), each split is balanced: per class, the mean count per
//! class is drawn with replacement and de-duplicated, so frequent classes shrink to about 63%
//! of that mean and rare ones keep what the draws hit. Unlike FSDL's random 80/20, validation is
//! a set of train's writers, so a model is validated on hands it never trained on; EMNIST's own
//! test split is the test split. Everything is a function of the file and the seed.
//!
//! The file is read whole (ByClass: about 640 MB of pixels) and validated before anything is
//! written, so a bad file leaves no dataset.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::manifest::{DatasetKind, Manifest, Polarity, SplitInfo, count_classes};
use super::mat::{Array, Numeric, Variable, dims_text, read_mat_file};
use super::shard::{Sample, ShardWriter};
use super::split::{Split, stable_hash};
use super::synth::char_classes;
use super::{DataError, Observer};
use crate::vocab::Vocabulary;

/// Bumped whenever the same file and params would give different samples.
pub const IMPORTER_VERSION: u32 = 1;

/// Side of an EMNIST image.
pub const SIDE: usize = 28;
const PIXELS: usize = SIDE * SIDE;

#[derive(Debug, Clone)]
pub struct EmnistConfig {
    pub seed: u64,
    /// FSDL's `SAMPLE_TO_BALANCE`: at most the mean count per class, drawn per class.
    pub balance: bool,
    /// Share of train's writers whose characters form the validation split.
    pub val_fraction: f64,
    pub vocabulary: Vocabulary,
    /// Name under which the manifest records the file's sha256.
    pub source_name: String,
    pub shard_bytes: u64,
    pub params: serde_json::Value,
}

/// One of EMNIST's splits as the file holds it.
struct Part<'a> {
    name: &'static str,
    /// N×784, column-major: pixel `j` of image `i` is `images[j * count + i]`.
    images: &'a [u8],
    count: usize,
    /// Per sample: its character (`None`: outside the vocabulary) and writer.
    chars: Vec<Option<char>>,
    writers: Vec<u32>,
    /// Characters outside the vocabulary, by the file's character code: how many samples.
    outside: BTreeMap<u32, u64>,
}

/// Imports the EMNIST MAT-file `mat` into the chars dataset `out` (shards + manifest).
pub fn import_emnist(
    mat: &Path,
    config: &EmnistConfig,
    out: &Path,
    observer: &dyn Observer,
) -> Result<Manifest, DataError> {
    observer.message(&format!("reading {}", mat.display()));
    let (variables, sha256) = read_mat_file(mat)?;
    let dataset = find_dataset(mat, &variables)?;
    let classes = char_classes(&config.vocabulary);
    let mapping = read_mapping(mat, field(mat, dataset, "dataset", "mapping")?)?;
    let parts = ["train", "test"]
        .into_iter()
        .map(|name| read_part(mat, dataset, name, &mapping, &classes))
        .collect::<Result<Vec<_>, _>>()?;

    let mut skipped = Vec::new();
    let mut chosen = Vec::new();
    for part in &parts {
        if !part.outside.is_empty() {
            let text = outside_note(part);
            observer.warn(&text);
            skipped.push(text);
        }
        let (indices, balance_note) = choose(part, config);
        if let Some(text) = balance_note {
            observer.log(&text);
            skipped.push(text);
        }
        if indices.is_empty() {
            return Err(DataError::format(
                mat,
                format!("`dataset.{}` has no character in the vocabulary", part.name),
            ));
        }
        chosen.push(indices);
    }
    let val_writers = val_writers(mat, &parts[0], &chosen[0], config)?;

    observer.total(chosen.iter().map(|c| c.len() as u64).sum());
    std::fs::create_dir_all(out).map_err(DataError::io("create", out))?;
    let mut writers: BTreeMap<Split, ShardWriter> = Split::ALL
        .into_iter()
        .map(|s| (s, ShardWriter::new(out, s, config.shard_bytes)))
        .collect();
    let mut infos: BTreeMap<Split, (SplitInfo, BTreeSet<String>)> = BTreeMap::new();
    for (part, indices) in parts.iter().zip(&chosen) {
        let pixels = gather(part, indices);
        // A seeded order, so a shuffle buffer downstream sees every class in every stretch.
        let mut order: Vec<usize> = (0..indices.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(stable_hash(
            config.seed,
            format!("emnist/{}/order", part.name).as_bytes(),
        )));
        for k in order {
            let i = indices[k];
            let writer = part.writers[i];
            let split = match part.name {
                "test" => Split::Test,
                _ if val_writers.contains(&writer) => Split::Val,
                _ => Split::Train,
            };
            let sample = Sample {
                label: part.chars[i]
                    .expect("only characters in the vocabulary are chosen")
                    .to_string(),
                style: format!("emnist/{writer}"),
                width: SIDE as u16,
                height: SIDE as u16,
                boxes: Vec::new(),
                pixels: pixels[k * PIXELS..(k + 1) * PIXELS].to_vec(),
            };
            let (info, seen) = infos.entry(split).or_default();
            count_classes(DatasetKind::Chars, &sample.label, &mut info.class_counts);
            info.count += 1;
            seen.insert(sample.style.clone());
            writers
                .get_mut(&split)
                .expect("a writer per split")
                .push(&sample)?;
            observer.advance(1);
        }
    }
    let mut splits = BTreeMap::new();
    for (split, writer) in writers {
        let shards = writer.finish()?;
        let (mut info, seen) = infos.remove(&split).unwrap_or_default();
        info.shards = shards;
        info.fonts = seen.into_iter().collect();
        splits.insert(split, info);
    }
    let manifest = Manifest {
        kind: DatasetKind::Chars,
        vocabulary: classes.iter().map(char::to_string).collect(),
        seed: config.seed,
        generator_version: IMPORTER_VERSION,
        polarity: Polarity::InkWhite,
        height: Some(SIDE as u16),
        width: Some(SIDE as u16),
        sources: BTreeMap::from([(config.source_name.clone(), sha256)]),
        splits,
        params: config.params.clone(),
        skipped,
    };
    manifest.write(out)?;
    Ok(manifest)
}

fn find_dataset<'a>(mat: &Path, variables: &'a [Variable]) -> Result<&'a Array, DataError> {
    let dataset = variables
        .iter()
        .find(|v| v.name == "dataset")
        .ok_or_else(|| {
            DataError::format(
                mat,
                format!(
                    "no variable `dataset` (EMNIST's layout); the file holds: {}",
                    listing(variables.iter().map(|v| v.name.as_str()))
                ),
            )
        })?;
    Ok(&dataset.value)
}

fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

/// Field `name` of the 1×1 struct `array` found at `path`.
fn field<'a>(mat: &Path, array: &'a Array, path: &str, name: &str) -> Result<&'a Array, DataError> {
    match array {
        Array::Struct {
            fields, elements, ..
        } if elements.len() == 1 => array.field(name).ok_or_else(|| {
            DataError::format(
                mat,
                format!(
                    "`{path}` has no field `{name}`; its fields: {}",
                    listing(fields.iter().map(String::as_str))
                ),
            )
        }),
        other => Err(DataError::format(
            mat,
            format!("`{path}` is {}, not a 1×1 struct", other.describe()),
        )),
    }
}

/// `values` as whole numbers, or why not.
fn whole_numbers(values: &Numeric) -> Result<Vec<i64>, String> {
    (0..values.len())
        .map(|i| {
            let v = values.get(i).expect("in range");
            if v.fract() == 0.0 && v.abs() < 1e15 {
                Ok(v as i64)
            } else {
                Err(format!("value {} is {v}, not a whole number", i + 1))
            }
        })
        .collect()
}

/// `dataset.mapping`: class → character (K×2: class, character code).
fn read_mapping(mat: &Path, array: &Array) -> Result<BTreeMap<i64, char>, DataError> {
    let fail = |reason: String| DataError::format(mat, format!("`dataset.mapping` {reason}"));
    let Array::Numeric { dims, values } = array else {
        return Err(fail(format!(
            "is {}, not a K×2 numeric array",
            array.describe()
        )));
    };
    if dims.len() != 2 || dims[1] != 2 || dims[0] == 0 {
        return Err(fail(format!(
            "is {}; expected K×2 (class, character code)",
            dims_text(dims)
        )));
    }
    let numbers = whole_numbers(values).map_err(&fail)?;
    let rows = dims[0];
    let mut mapping = BTreeMap::new();
    for r in 0..rows {
        // Column-major: the classes, then the codes.
        let (class, code) = (numbers[r], numbers[rows + r]);
        let c = u32::try_from(code)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| {
                fail(format!(
                    "maps class {class} to {code}, not a character code"
                ))
            })?;
        if mapping.insert(class, c).is_some() {
            return Err(fail(format!("lists class {class} twice")));
        }
    }
    Ok(mapping)
}

/// `dataset.NAME`: its images checked, its classes mapped, its writers read.
fn read_part<'a>(
    mat: &Path,
    dataset: &'a Array,
    name: &'static str,
    mapping: &BTreeMap<i64, char>,
    classes: &[char],
) -> Result<Part<'a>, DataError> {
    let path = format!("dataset.{name}");
    let part = field(mat, dataset, "dataset", name)?;
    let fail = |reason: String| DataError::format(mat, reason);
    let images = field(mat, part, &path, "images")?;
    let (count, images) = match images {
        Array::Numeric {
            dims,
            values: Numeric::U8(bytes),
        } if dims.len() == 2 && dims[1] == PIXELS => (dims[0], bytes.as_slice()),
        other => {
            return Err(fail(format!(
                "`{path}.images` is {}; expected N×784 8-bit (one 28×28 image a row)",
                other.describe()
            )));
        }
    };
    let column = |field_name: &str| -> Result<Vec<i64>, DataError> {
        match field(mat, part, &path, field_name)? {
            Array::Numeric { dims, values }
                if dims.len() == 2 && dims.contains(&1) && values.len() == count =>
            {
                whole_numbers(values).map_err(|e| fail(format!("`{path}.{field_name}`: {e}")))
            }
            other => Err(fail(format!(
                "`{path}.{field_name}` is {}; expected {count}×1, one per image",
                other.describe()
            ))),
        }
    };
    let labels = column("labels")?;
    let writers = column("writers")?
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            u32::try_from(w)
                .map_err(|_| fail(format!("`{path}.writers`: image {} has writer {w}", i + 1)))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let mut outside = BTreeMap::new();
    let mut chars = Vec::with_capacity(count);
    for (i, label) in labels.iter().enumerate() {
        let c = *mapping.get(label).ok_or_else(|| {
            fail(format!(
                "`{path}.labels`: image {} has class {label}, which `dataset.mapping` does not list ({} classes)",
                i + 1,
                mapping.len()
            ))
        })?;
        if classes.contains(&c) {
            chars.push(Some(c));
        } else {
            *outside.entry(c as u32).or_default() += 1;
            chars.push(None);
        }
    }
    Ok(Part {
        name,
        images,
        count,
        chars,
        writers,
        outside,
    })
}

/// `train: 30 images of 2 characters outside the vocabulary left out: 'é' (20), '€' (10)`.
fn outside_note(part: &Part<'_>) -> String {
    let total: u64 = part.outside.values().sum();
    let mut by_count: Vec<(&u32, &u64)> = part.outside.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let examples: Vec<String> = by_count
        .iter()
        .take(10)
        .map(|(code, n)| {
            let shown = char::from_u32(**code)
                .map_or_else(|| format!("U+{code:04X}"), |c| format!("{c:?}"));
            format!("{shown} ({n})")
        })
        .collect();
    format!(
        "{}: {total} images of {} characters outside the vocabulary left out: {}{}",
        part.name,
        part.outside.len(),
        examples.join(", "),
        if by_count.len() > 10 { ", …" } else { "" }
    )
}

/// The images of `part` to keep, ascending, with a note on balancing when it applied.
fn choose(part: &Part<'_>, config: &EmnistConfig) -> (Vec<usize>, Option<String>) {
    let mut by_class: BTreeMap<char, Vec<usize>> = BTreeMap::new();
    for (i, c) in part.chars.iter().enumerate() {
        if let Some(c) = c {
            by_class.entry(*c).or_default().push(i);
        }
    }
    let usable: usize = by_class.values().map(Vec::len).sum();
    if !config.balance || by_class.is_empty() {
        let all = (0..part.count)
            .filter(|&i| part.chars[i].is_some())
            .collect();
        return (all, None);
    }
    // FSDL: `num_to_sample = int(np.bincount(y).mean())`, then per class
    // `np.unique(np.random.choice(inds, num_to_sample))`.
    let draws = usable / by_class.len();
    let mut rng = ChaCha8Rng::seed_from_u64(stable_hash(
        config.seed,
        format!("emnist/{}/balance", part.name).as_bytes(),
    ));
    let mut kept = BTreeSet::new();
    for indices in by_class.values() {
        for _ in 0..draws {
            kept.insert(indices[rng.random_range(0..indices.len())]);
        }
    }
    let note = format!(
        "{}: balanced as FSDL does ({draws} draw{} with replacement per class, the mean \
         count): {} of {usable} images kept",
        part.name,
        if draws == 1 { "" } else { "s" },
        kept.len()
    );
    (kept.into_iter().collect(), Some(note))
}

/// The writers of train whose images form the validation split: `val_fraction` of the writers
/// among the chosen images (at least one), picked by a seeded hash of the writer.
fn val_writers(
    mat: &Path,
    train: &Part<'_>,
    chosen: &[usize],
    config: &EmnistConfig,
) -> Result<BTreeSet<u32>, DataError> {
    if config.val_fraction <= 0.0 {
        return Ok(BTreeSet::new());
    }
    let mut writers: Vec<u32> = chosen
        .iter()
        .map(|&i| train.writers[i])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if writers.len() < 2 {
        return Err(DataError::format(
            mat,
            format!(
                "`dataset.train` has {} writer(s): a validation split of other writers needs two or more",
                writers.len()
            ),
        ));
    }
    writers.sort_by_key(|w| stable_hash(config.seed, format!("emnist/writer/{w}").as_bytes()));
    let n =
        ((config.val_fraction * writers.len() as f64).round() as usize).clamp(1, writers.len() - 1);
    Ok(writers.into_iter().take(n).collect())
}

/// The pixels of `indices` (ascending), each 28×28 row-major as a person sees it. EMNIST stores
/// images transposed: image row `y`, column `x` is matrix column `x * 28 + y` (FSDL:
/// `reshape(-1, 28, 28).swapaxes(1, 2)`). Blocks of neighbouring images are gathered column by
/// column, so the reads stay within a few kilobytes of each column.
fn gather(part: &Part<'_>, indices: &[usize]) -> Vec<u8> {
    const BLOCK: usize = 1024;
    let mut pixels = vec![0u8; indices.len() * PIXELS];
    pixels
        .par_chunks_mut(BLOCK * PIXELS)
        .zip(indices.par_chunks(BLOCK))
        .for_each(|(out, block)| {
            for x in 0..SIDE {
                for y in 0..SIDE {
                    let column = &part.images[(x * SIDE + y) * part.count..][..part.count];
                    for (k, &i) in block.iter().enumerate() {
                        out[k * PIXELS + y * SIDE + x] = column[i];
                    }
                }
            }
        });
    pixels
}

#[cfg(test)]
mod tests {
    use super::super::mat::writer::{
        Char, Class, Value, byclass_mapping, emnist_mapping, emnist_mat, emnist_split, letter_f,
        mat_file,
    };
    use super::*;
    use crate::data::{Dataset, Unobserved};

    fn config() -> EmnistConfig {
        EmnistConfig {
            seed: 3,
            balance: false,
            val_fraction: 0.25,
            vocabulary: Vocabulary::default(),
            source_name: "emnist".into(),
            shard_bytes: 1 << 20,
            params: serde_json::Value::Null,
        }
    }

    /// `per_class[c]` images of class `c` (ByClass numbering), writers cycling through
    /// `writers`, each marked by its running number.
    fn chars(per_class: &[(u32, usize)], writers: u32) -> Vec<Char> {
        let mut out = Vec::new();
        for &(class, n) in per_class {
            for _ in 0..n {
                let k = out.len();
                out.push(Char {
                    class,
                    writer: 100 + k as u32 % writers,
                    pixels: letter_f(k as u8),
                });
            }
        }
        out
    }

    fn import(dir: &Path, bytes: &[u8], config: &EmnistConfig) -> Result<Manifest, DataError> {
        let mat = dir.join("emnist-byclass.mat");
        std::fs::write(&mat, bytes).unwrap();
        import_emnist(&mat, config, &dir.join("out"), &Unobserved)
    }

    fn samples(dir: &Path, split: Split) -> Vec<Sample> {
        Dataset::open(&dir.join("out"))
            .unwrap()
            .samples(split)
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn images_come_out_upright_labelled_by_the_files_mapping() {
        for compressed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            // ByClass 15 is `F`, 36 is `a`; classes 10 and 11 (`A`, `B`) have no image.
            let train = chars(&[(15, 6), (36, 2)], 4);
            let test = chars(&[(15, 1), (1, 2)], 1);
            let bytes = emnist_mat(&train, &test, &byclass_mapping(), compressed);
            let manifest = import(dir.path(), &bytes, &config()).unwrap();
            assert_eq!(manifest.kind, DatasetKind::Chars);
            assert_eq!(manifest.vocabulary.len(), 78);
            assert_eq!((manifest.width, manifest.height), (Some(28), Some(28)));
            assert_eq!(manifest.polarity, Polarity::InkWhite);
            assert_eq!(
                manifest.sources["emnist"],
                crate::data::download::sha256_bytes(&bytes)
            );
            let count = |s: Split| manifest.splits[&s].count;
            assert_eq!(count(Split::Train) + count(Split::Val), 8);
            assert_eq!(count(Split::Test), 3);
            assert_eq!(
                manifest.splits[&Split::Test].class_counts,
                BTreeMap::from([("1".to_owned(), 2), ("F".to_owned(), 1)])
            );
            let all: Vec<Sample> = [Split::Train, Split::Val]
                .into_iter()
                .flat_map(|s| samples(dir.path(), s))
                .collect();
            for sample in &all {
                let k = train
                    .iter()
                    .position(|c| c.pixels == sample.pixels)
                    .expect("every image as drawn, upright");
                let expected = if train[k].class == 15 { "F" } else { "a" };
                assert_eq!(sample.label, expected);
                assert_eq!(sample.style, format!("emnist/{}", train[k].writer));
            }
            // The F as a person sees it: the stem on the left, the long bar at the top.
            let f = &all[0].pixels;
            assert_eq!(f[4 * 28 + 20], 255, "top bar, right end");
            assert_eq!(f[23 * 28 + 6], 255, "stem, bottom");
            assert_eq!(f[20 * 28 + 4], 0, "nothing left of the stem");
            assert_eq!(f[23 * 28 + 20], 0, "no bottom bar");
            assert_eq!(f[13 * 28 + 15], 200, "middle bar");
        }
    }

    #[test]
    fn balancing_draws_the_mean_per_class_and_depends_on_the_seed_alone() {
        let dir = tempfile::tempdir().unwrap();
        // 60 `0`s, 30 `1`s, 6 `2`s: a mean of 32 draws per class.
        let train = chars(&[(0, 60), (1, 30), (2, 6)], 12);
        let test = chars(&[(0, 9), (1, 3)], 2);
        let bytes = emnist_mat(&train, &test, &byclass_mapping(), true);
        let balanced = EmnistConfig {
            balance: true,
            ..config()
        };
        let manifest = import(dir.path(), &bytes, &balanced).unwrap();
        let mut per_class: BTreeMap<String, u64> = BTreeMap::new();
        for split in [Split::Train, Split::Val] {
            for (c, n) in &manifest.splits[&split].class_counts {
                *per_class.entry(c.clone()).or_default() += n;
            }
        }
        // 32 draws from 60 hit about 25 distinct images, from 30 about 21; all 6 `2`s are
        // hit (32 draws), bar a chance of about 6 × (5/6)^32.
        assert!((20..=29).contains(&per_class["0"]), "{per_class:?}");
        assert!((16..=25).contains(&per_class["1"]), "{per_class:?}");
        assert_eq!(per_class["2"], 6, "{per_class:?}");
        // Test: a mean of 6 draws per class.
        let test_counts = &manifest.splits[&Split::Test].class_counts;
        assert!(
            test_counts.values().all(|&n| (1..=6).contains(&n)),
            "{test_counts:?}"
        );
        assert!(
            manifest
                .skipped
                .iter()
                .any(|s| s.starts_with("train: balanced as FSDL does (32 draws")),
            "{:?}",
            manifest.skipped
        );

        let train_bytes = |dir: &Path| std::fs::read(dir.join("out/train-00000.shard")).unwrap();
        let again = tempfile::tempdir().unwrap();
        import(again.path(), &bytes, &balanced).unwrap();
        assert_eq!(train_bytes(dir.path()), train_bytes(again.path()));
        let other = tempfile::tempdir().unwrap();
        import(
            other.path(),
            &bytes,
            &EmnistConfig {
                seed: 4,
                ..balanced
            },
        )
        .unwrap();
        assert_ne!(train_bytes(dir.path()), train_bytes(other.path()));
    }

    #[test]
    fn validation_holds_a_fraction_of_trains_writers_and_none_of_their_images_train() {
        let dir = tempfile::tempdir().unwrap();
        let train = chars(&[(3, 40), (40, 40)], 20);
        let bytes = emnist_mat(&train, &chars(&[(3, 2)], 1), &byclass_mapping(), false);
        let manifest = import(dir.path(), &bytes, &config()).unwrap();
        let writers = |split| -> BTreeSet<String> {
            samples(dir.path(), split)
                .into_iter()
                .map(|s| s.style)
                .collect()
        };
        let (train_writers, val_writers) = (writers(Split::Train), writers(Split::Val));
        assert_eq!(val_writers.len(), 5, "a quarter of 20 writers");
        assert_eq!(train_writers.len(), 15);
        assert!(train_writers.is_disjoint(&val_writers));
        assert_eq!(manifest.splits[&Split::Val].count, 20);
        assert_eq!(manifest.splits[&Split::Val].fonts.len(), 5);
        let other = tempfile::tempdir().unwrap();
        import(
            other.path(),
            &bytes,
            &EmnistConfig {
                seed: 9,
                ..config()
            },
        )
        .unwrap();
        let val_other: BTreeSet<String> = samples(other.path(), Split::Val)
            .into_iter()
            .map(|s| s.style)
            .collect();
        assert_ne!(
            val_writers, val_other,
            "another seed holds out other writers"
        );
    }

    #[test]
    fn characters_outside_the_vocabulary_are_left_out_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut mapping = byclass_mapping();
        mapping.push((62, 'é' as u32));
        mapping.push((63, '€' as u32));
        let train = chars(&[(62, 5), (63, 2), (20, 8)], 4);
        let bytes = emnist_mat(&train, &chars(&[(20, 1)], 1), &mapping, true);
        let manifest = import(dir.path(), &bytes, &config()).unwrap();
        let kept = manifest.splits[&Split::Train].count + manifest.splits[&Split::Val].count;
        assert_eq!(kept, 8);
        assert!(
            manifest.skipped.contains(
                &"train: 7 images of 2 characters outside the vocabulary left out: 'é' (5), '€' (2)"
                    .to_owned()
            ),
            "{:?}",
            manifest.skipped
        );
    }

    #[test]
    fn bad_files_are_named_and_leave_no_dataset() {
        let train = chars(&[(15, 4)], 2);
        let split = || emnist_split(&train);
        let mapping = || emnist_mapping(&byclass_mapping());
        let dataset = |fields: Vec<(&str, Value)>| {
            mat_file(
                &[(
                    "dataset",
                    Value::Struct(fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect()),
                )],
                true,
            )
        };
        let with_field = |name: &str, value: Value| {
            let Value::Struct(mut fields) = split() else {
                unreachable!()
            };
            fields.iter_mut().find(|(n, _)| n == name).unwrap().1 = value;
            Value::Struct(fields)
        };
        let full = emnist_mat(&train, &train, &byclass_mapping(), false);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("truncated", full[..full.len() - 100].to_vec(), "truncated"),
            (
                "not a MAT-file",
                b"PK\x03\x04 a zip, say".repeat(10),
                "not a MATLAB v5 MAT-file",
            ),
            (
                "no dataset",
                mat_file(&[("images", Value::Text("x".into()))], false),
                "no variable `dataset` (EMNIST's layout); the file holds: `images`",
            ),
            (
                "no test split",
                dataset(vec![("train", split()), ("mapping", mapping())]),
                "`dataset` has no field `test`; its fields: `train`, `mapping`",
            ),
            (
                "no writers",
                dataset(vec![
                    ("train", split()),
                    ("test", {
                        let Value::Struct(mut f) = split() else {
                            unreachable!()
                        };
                        f.retain(|(n, _)| n != "writers");
                        Value::Struct(f)
                    }),
                    ("mapping", mapping()),
                ]),
                "`dataset.test` has no field `writers`",
            ),
            (
                "32×32 images",
                dataset(vec![
                    (
                        "train",
                        with_field(
                            "images",
                            Value::Bytes {
                                rows: 4,
                                cols: 1024,
                                data: vec![0; 4096],
                            },
                        ),
                    ),
                    ("test", split()),
                    ("mapping", mapping()),
                ]),
                "`dataset.train.images` is a 4×1024 8-bit array; expected N×784",
            ),
            (
                "a label outside the mapping",
                dataset(vec![
                    (
                        "train",
                        with_field(
                            "labels",
                            Value::Numbers {
                                rows: 4,
                                cols: 1,
                                class: Class::Double,
                                data: vec![15.0, 15.0, 70.0, 15.0],
                            },
                        ),
                    ),
                    ("test", split()),
                    ("mapping", mapping()),
                ]),
                "`dataset.train.labels`: image 3 has class 70, which `dataset.mapping` does not list (62 classes)",
            ),
            (
                "labels for another count of images",
                dataset(vec![
                    ("train", split()),
                    (
                        "test",
                        with_field(
                            "labels",
                            Value::Numbers {
                                rows: 3,
                                cols: 1,
                                class: Class::Double,
                                data: vec![15.0; 3],
                            },
                        ),
                    ),
                    ("mapping", mapping()),
                ]),
                "`dataset.test.labels` is a 3×1 numeric array; expected 4×1, one per image",
            ),
            (
                "a mapping of one column",
                dataset(vec![
                    ("train", split()),
                    ("test", split()),
                    (
                        "mapping",
                        Value::Numbers {
                            rows: 2,
                            cols: 1,
                            class: Class::Double,
                            data: vec![48.0, 49.0],
                        },
                    ),
                ]),
                "`dataset.mapping` is 2×1; expected K×2",
            ),
        ];
        for (what, bytes, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let error = import(dir.path(), &bytes, &config())
                .expect_err(what)
                .to_string();
            assert!(
                error.contains("emnist-byclass.mat: ") && error.contains(expected),
                "{what}: {error}"
            );
            assert!(
                !dir.path().join("out").exists(),
                "{what}: output was written"
            );
        }
    }
}
