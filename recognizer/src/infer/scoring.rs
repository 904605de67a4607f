//! Scoring: for a classifier, the confusion matrix and what follows from it (accuracy, per-class
//! accuracy, the share a constant answer would get) and its picture; for transcriptions, edit
//! distances over characters and words (CER, WER).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::{CharClassifier, InferError};
use crate::data::{Dataset, Observer, Split};

/// Counts of `[true class][predicted class]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    labels: Vec<String>,
    index: HashMap<String, usize>,
    counts: Vec<Vec<u32>>,
}

impl Confusion {
    pub fn new(labels: Vec<String>) -> Confusion {
        let n = labels.len();
        Confusion {
            index: labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i))
                .collect(),
            labels,
            counts: vec![vec![0; n]; n],
        }
    }

    /// Records one prediction for a sample whose true label is `truth`.
    pub fn add(&mut self, truth: &str, predicted: usize) -> Result<(), InferError> {
        let t = *self.index.get(truth).ok_or_else(|| {
            InferError::Run(format!("label {truth:?} is not in the model's vocabulary"))
        })?;
        self.counts[t][predicted.min(self.labels.len() - 1)] += 1;
        Ok(())
    }

    pub fn total(&self) -> u32 {
        self.counts.iter().flatten().sum()
    }

    /// How many samples were classified right (the diagonal).
    pub fn correct(&self) -> u32 {
        (0..self.labels.len()).map(|i| self.counts[i][i]).sum()
    }

    pub fn accuracy(&self) -> f64 {
        f64::from(self.correct()) / f64::from(self.total().max(1))
    }

    /// Accuracy when a prediction also counts as right if it is the other case of a letter
    /// whose capital and small forms differ only in size (EMNIST Balanced's 15 merged letters:
    /// c i j k l m o p s u v w x y z). Isolated in a 28×28 box those are told apart by size
    /// alone, so this says how much of the error is that ambiguity, and compares with
    /// EMNIST Balanced results.
    pub fn accuracy_merging_alike_cases(&self) -> f64 {
        let key = |label: &str| -> String {
            let mut chars = label.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if "cijklmopsuvwxyz".contains(c.to_ascii_lowercase()) => {
                    c.to_ascii_lowercase().to_string()
                }
                _ => label.to_owned(),
            }
        };
        let keys: Vec<String> = self.labels.iter().map(|l| key(l)).collect();
        let correct: u32 = self
            .counts
            .iter()
            .enumerate()
            .flat_map(|(t, row)| row.iter().enumerate().map(move |(p, &n)| (t, p, n)))
            .filter(|&(t, p, _)| keys[t] == keys[p])
            .map(|(_, _, n)| n)
            .sum();
        f64::from(correct) / f64::from(self.total().max(1))
    }

    /// The `n` most frequent mistakes: (true class, predicted class, count), most first.
    pub fn top_confusions(&self, n: usize) -> Vec<(String, String, u32)> {
        let mut mistakes: Vec<(String, String, u32)> = self
            .counts
            .iter()
            .enumerate()
            .flat_map(|(t, row)| row.iter().enumerate().map(move |(p, &c)| (t, p, c)))
            .filter(|&(t, p, c)| t != p && c > 0)
            .map(|(t, p, c)| (self.labels[t].clone(), self.labels[p].clone(), c))
            .collect();
        mistakes.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        mistakes.truncate(n);
        mistakes
    }

    /// Accuracy per class that occurs.
    pub fn per_class(&self) -> BTreeMap<String, f64> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, row)| row.iter().sum::<u32>() > 0)
            .map(|(i, row)| {
                (
                    self.labels[i].clone(),
                    f64::from(row[i]) / f64::from(row.iter().sum::<u32>()),
                )
            })
            .collect()
    }

    /// The accuracy of always answering `label` (a trivial baseline).
    pub fn share_of(&self, label: &str) -> f64 {
        self.index.get(label).map_or(0.0, |&i| {
            f64::from(self.counts[i].iter().sum::<u32>()) / f64::from(self.total().max(1))
        })
    }

    /// Row-normalised matrix as a PNG, 8 px per cell, darker = more.
    pub fn write_png(&self, path: &Path) -> Result<(), InferError> {
        let n = self.labels.len() as u32;
        let cell = 8;
        let mut img = RgbImage::from_pixel(n.max(1) * cell, n.max(1) * cell, Rgb([255, 255, 255]));
        for (t, row) in self.counts.iter().enumerate() {
            let sum = row.iter().sum::<u32>().max(1) as f32;
            for (p, &count) in row.iter().enumerate() {
                let v = 255 - (255.0 * count as f32 / sum) as u8;
                for dy in 0..cell {
                    for dx in 0..cell {
                        img.put_pixel(p as u32 * cell + dx, t as u32 * cell + dy, Rgb([v, v, 255]));
                    }
                }
            }
        }
        img.save(path)
            .map_err(|e| InferError::Run(format!("write {}: {e}", path.display())))
    }
}

/// A classifier's answers on one split: over all samples, and per writer (the samples' style:
/// a font or `mnist`), since held-out writers differ far more from each other than classes do.
#[derive(Debug, Clone, PartialEq)]
pub struct CharScores {
    pub all: Confusion,
    pub by_writer: BTreeMap<String, Confusion>,
}

/// Classifies every sample of `split`, streaming, and returns the confusion matrices.
pub fn score_chars(
    classifier: &CharClassifier,
    dataset: &Dataset,
    split: Split,
    observer: &dyn Observer,
) -> Result<CharScores, InferError> {
    let count = dataset
        .split(split)
        .ok_or_else(|| InferError::Run(format!("the dataset has no {} split", split.name())))?
        .count;
    observer.total(count);
    let mut scores = CharScores {
        all: Confusion::new(classifier.vocabulary.clone()),
        by_writer: BTreeMap::new(),
    };
    let mut samples = dataset.samples(split).peekable();
    let mut chunk = Vec::new();
    while samples.peek().is_some() {
        chunk.clear();
        for sample in samples.by_ref().take(1024) {
            chunk.push(sample?);
        }
        for (sample, predicted) in chunk.iter().zip(classifier.classify(&chunk)?) {
            scores.all.add(&sample.label, predicted)?;
            scores
                .by_writer
                .entry(sample.style.clone())
                .or_insert_with(|| Confusion::new(classifier.vocabulary.clone()))
                .add(&sample.label, predicted)?;
        }
        observer.advance(chunk.len() as u64);
    }
    Ok(scores)
}

/// Levenshtein distance (insertions, deletions and substitutions all cost 1).
pub fn edit_distance<T: PartialEq>(truth: &[T], predicted: &[T]) -> usize {
    let mut previous: Vec<usize> = (0..=predicted.len()).collect();
    let mut current = vec![0; predicted.len() + 1];
    for (i, t) in truth.iter().enumerate() {
        current[0] = i + 1;
        for (j, p) in predicted.iter().enumerate() {
            let substitution = previous[j] + usize::from(t != p);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[predicted.len()]
}

/// Character and word error counts of transcriptions against the truth, summed over lines, so
/// CER = character edits / truth characters (as jiwer and FSDL compute it, not a mean of ratios).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TextErrors {
    pub lines: u64,
    pub char_edits: u64,
    pub chars: u64,
    pub word_edits: u64,
    pub words: u64,
}

impl TextErrors {
    pub fn of(truth: &str, predicted: &str) -> TextErrors {
        let t: Vec<char> = truth.chars().collect();
        let p: Vec<char> = predicted.chars().collect();
        let tw: Vec<&str> = truth.split_whitespace().collect();
        let pw: Vec<&str> = predicted.split_whitespace().collect();
        TextErrors {
            lines: 1,
            char_edits: edit_distance(&t, &p) as u64,
            chars: t.len() as u64,
            word_edits: edit_distance(&tw, &pw) as u64,
            words: tw.len() as u64,
        }
    }

    pub fn add(&mut self, other: TextErrors) {
        self.lines += other.lines;
        self.char_edits += other.char_edits;
        self.chars += other.chars;
        self.word_edits += other.word_edits;
        self.words += other.words;
    }

    /// Character error rate; 0 for no text at all.
    pub fn cer(&self) -> f64 {
        self.char_edits as f64 / self.chars.max(1) as f64
    }

    /// Word error rate (words split on whitespace).
    pub fn wer(&self) -> f64 {
        self.word_edits as f64 / self.words.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances_and_rates_match_hand_counts() {
        let chars = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(edit_distance(&chars("kitten"), &chars("sitting")), 3);
        assert_eq!(edit_distance(&chars(""), &chars("abc")), 3);
        assert_eq!(edit_distance(&chars("abc"), &chars("")), 3);
        assert_eq!(edit_distance(&chars("flaw"), &chars("lawn")), 2);
        let mut total = TextErrors::of("the cat sat", "the bat sat");
        assert_eq!((total.char_edits, total.chars), (1, 11));
        assert_eq!((total.word_edits, total.words), (1, 3));
        total.add(TextErrors::of("on a mat", ""));
        assert_eq!(total.cer(), 9.0 / 19.0, "summed edits over summed lengths");
        assert_eq!(total.wer(), 4.0 / 6.0);
        assert_eq!(total.lines, 2);
    }

    #[test]
    fn accuracy_per_class_and_baseline_follow_the_counts() {
        let mut c = Confusion::new(vec!["a".into(), "b".into()]);
        for (truth, predicted) in [("a", 0), ("a", 0), ("a", 1), ("b", 1)] {
            c.add(truth, predicted).unwrap();
        }
        assert_eq!(c.accuracy(), 0.75);
        assert_eq!(c.per_class()["a"], 2.0 / 3.0);
        assert_eq!(c.share_of("a"), 0.75);
        assert!(c.add("z", 0).is_err());
    }

    #[test]
    fn alike_cases_merge_only_letters_told_apart_by_size() {
        let labels = ["o", "O", "0", "a", "A"].map(String::from).to_vec();
        let mut c = Confusion::new(labels);
        // o↔O merge; O→0 and a→A do not (0 is a digit, a and A differ in shape).
        for (truth, predicted) in [("o", 1), ("O", 0), ("O", 2), ("a", 4), ("A", 4), ("O", 2)] {
            c.add(truth, predicted).unwrap();
        }
        assert_eq!(c.accuracy(), 1.0 / 6.0);
        assert_eq!(c.accuracy_merging_alike_cases(), 3.0 / 6.0);
        assert_eq!(
            c.top_confusions(2),
            vec![("O".into(), "0".into(), 2), ("O".into(), "o".into(), 1)]
        );
    }
}
