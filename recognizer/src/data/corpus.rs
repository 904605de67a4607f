//! Text for lines and pages: WordNet example sentences, fortune-cookie lines and plain text
//! files, cleaned to the vocabulary, divided between splits sentence by sentence, chunked to
//! line length and de-duplicated.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::DataError;
use super::split::Split;

/// What a text source file is, recognised by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TextFormat {
    /// `data.noun|verb|adj|adv` from WordNet: the quoted examples in each gloss.
    WordNet,
    /// A file in a `fortunes/` directory without extension: entries separated by `%` lines.
    Fortune,
    /// `*.txt`: one sentence per line.
    Lines,
}

fn format_of(path: &Path) -> Option<TextFormat> {
    let name = path.file_name()?.to_str()?;
    if matches!(name, "data.noun" | "data.verb" | "data.adj" | "data.adv") {
        return Some(TextFormat::WordNet);
    }
    if path.extension().is_some_and(|e| e == "txt") {
        return Some(TextFormat::Lines);
    }
    let in_fortunes = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "fortunes");
    (in_fortunes && path.extension().is_none()).then_some(TextFormat::Fortune)
}

/// Every sentence found under `paths` (files or directories), normalised and in a stable order.
/// Sentences with characters outside `allowed` are dropped; the count dropped is returned too.
pub fn load_sentences(
    paths: &[PathBuf],
    allowed: &dyn Fn(char) -> bool,
) -> Result<(Vec<String>, usize), DataError> {
    let mut files = Vec::new();
    for path in paths {
        collect_text_files(path, &mut files)?;
    }
    files.sort();
    let mut sentences = BTreeSet::new();
    let mut dropped = 0;
    for (file, format) in &files {
        let bytes = fs::read(file).map_err(DataError::io("read", file))?;
        let text = String::from_utf8_lossy(&bytes);
        let raw: Vec<String> = match format {
            TextFormat::WordNet => text
                .lines()
                .filter(|l| !l.starts_with("  "))
                .filter_map(|l| l.split_once(" | ").map(|(_, gloss)| gloss))
                .flat_map(quoted)
                .collect(),
            TextFormat::Fortune => text
                .lines()
                .filter(|l| l.trim() != "%")
                .map(str::to_owned)
                .collect(),
            TextFormat::Lines => text.lines().map(str::to_owned).collect(),
        };
        for sentence in raw {
            let clean = normalise(&sentence);
            if clean.is_empty() {
                continue;
            }
            if clean.chars().all(allowed) {
                sentences.insert(clean);
            } else {
                dropped += 1;
            }
        }
    }
    Ok((sentences.into_iter().collect(), dropped))
}

fn quoted(gloss: &str) -> Vec<String> {
    gloss
        .split(';')
        .map(str::trim)
        .filter_map(|part| part.strip_prefix('"'))
        .map(|part| part.trim_end().trim_end_matches('"').to_owned())
        .collect()
}

/// Typographic quotes and dashes to ASCII, tabs and runs of spaces to one space.
pub fn normalise(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' | '`' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            '\u{2013}' | '\u{2014}' => '-',
            '\t' => ' ',
            other => other,
        })
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits sentences into line texts of at most `max_chars` at word boundaries (a longer single
/// word is dropped), keeps those with at least `min_chars`, and removes duplicates.
pub fn line_texts(sentences: &[String], min_chars: usize, max_chars: usize) -> Vec<String> {
    let mut out = BTreeSet::new();
    for sentence in sentences {
        let mut line = String::new();
        for word in sentence.split(' ') {
            if word.chars().count() > max_chars {
                line.clear();
                continue;
            }
            let would_be =
                line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
            if would_be > max_chars && !line.is_empty() {
                if line.chars().count() >= min_chars {
                    out.insert(std::mem::take(&mut line));
                }
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if line.chars().count() >= min_chars {
            out.insert(line);
        }
    }
    out.into_iter().collect()
}

/// The line texts of one split, and what their split costs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitTexts {
    pub texts: Vec<String>,
    /// Source sentences assigned to the split.
    pub sentences: u64,
    /// Line texts that an earlier split also cut, from other sentences, left out here.
    pub shared_left_out: u64,
}

/// Line texts per split. Whole sentences go to one split, chosen by `split_of` from their
/// [`fold`]ed form, and are then cut into lines ([`line_texts`]), so no sentence, in any case or
/// punctuation, lends lines to two splits. A line whose folded text train (or val) also cut
/// from another sentence is left out of the later split: val and test must not hold text that
/// training saw.
pub fn split_line_texts(
    sentences: &[String],
    min_chars: usize,
    max_chars: usize,
    split_of: impl Fn(&[u8]) -> Split,
) -> BTreeMap<Split, SplitTexts> {
    let mut by_split: BTreeMap<Split, Vec<String>> = BTreeMap::new();
    for sentence in sentences {
        let split = split_of(fold(sentence).as_bytes());
        by_split.entry(split).or_default().push(sentence.clone());
    }
    let mut seen = BTreeSet::new();
    let mut out = BTreeMap::new();
    for split in Split::ALL {
        let sentences = by_split.remove(&split).unwrap_or_default();
        let cut = line_texts(&sentences, min_chars, max_chars);
        let folded: Vec<String> = cut.iter().map(|t| fold(t)).collect();
        let mut texts = SplitTexts {
            sentences: sentences.len() as u64,
            ..SplitTexts::default()
        };
        for (text, key) in cut.into_iter().zip(&folded) {
            if seen.contains(key) {
                texts.shared_left_out += 1;
            } else {
                texts.texts.push(text);
            }
        }
        seen.extend(folded);
        out.insert(split, texts);
    }
    out
}

/// Text as a split compares it: lower case, letters, digits and single spaces only.
pub fn fold(text: &str) -> String {
    let kept: String = text
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn collect_text_files(path: &Path, out: &mut Vec<(PathBuf, TextFormat)>) -> Result<(), DataError> {
    let meta = fs::metadata(path).map_err(DataError::io("stat", path))?;
    if meta.is_file() {
        if let Some(format) = format_of(path) {
            out.push((path.to_owned(), format));
        }
        return Ok(());
    }
    for entry in fs::read_dir(path).map_err(DataError::io("list", path))? {
        let entry = entry.map_err(DataError::io("list", path))?;
        collect_text_files(&entry.path(), out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wordnet_examples_and_fortunes_are_extracted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("data.verb"),
            "  1 This software and database is being provided\n\
             00004032 29 v 02 sigh 0 | heave or utter a sigh; breathe deeply; \"She sighed sadly\"  \n\
             00004227 29 v 03 exhale 0 | expel air; \"Exhale when you lift the weight\"; \"Don\u{2019}t\"  \n",
        )
        .unwrap();
        fs::create_dir(dir.path().join("fortunes")).unwrap();
        fs::write(
            dir.path().join("fortunes/fortunes"),
            "A gift of a flower.\n%\nLine one\tand  two\n%\n",
        )
        .unwrap();
        fs::write(dir.path().join("fortunes/fortunes.dat"), "binary").unwrap();
        let (sentences, dropped) =
            load_sentences(&[dir.path().to_owned()], &|c| c.is_ascii()).unwrap();
        assert_eq!(
            sentences,
            [
                "A gift of a flower.",
                "Don't",
                "Exhale when you lift the weight",
                "Line one and two",
                "She sighed sadly"
            ]
        );
        assert_eq!(dropped, 0);
    }

    #[test]
    fn sentences_outside_the_vocabulary_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("t.txt"), "caf\u{e9} au lait\nplain text\n").unwrap();
        let (sentences, dropped) =
            load_sentences(&[dir.path().to_owned()], &|c| c.is_ascii()).unwrap();
        assert_eq!((sentences, dropped), (vec!["plain text".to_owned()], 1));
    }

    #[test]
    fn a_sentence_lends_lines_to_one_split_whatever_its_case() {
        // Sentence i is made of words that name it, so every line says where it came from;
        // each comes twice, once in capitals and with other punctuation, and each begins with
        // the same line, which only train may keep.
        let mut sentences = Vec::new();
        for i in 0..300 {
            let words: Vec<String> = (0..6).map(|w| format!("s{i}w{w}")).collect();
            sentences.push(format!("the common end {}", words.join(" ")));
            sentences.push(format!(
                "The Common End {}!",
                words.join(", ").to_uppercase()
            ));
        }
        let fractions = super::super::split::Fractions {
            val: 0.2,
            test: 0.2,
        };
        let splits = split_line_texts(&sentences, 3, 14, |key| fractions.split_of(9, key));
        let mut split_of_sentence = BTreeMap::new();
        for (&split, texts) in &splits {
            assert!(texts.sentences > 100, "{split:?}: {}", texts.sentences);
            for text in &texts.texts {
                let Some(id) = text.to_lowercase().split('w').next().map(str::to_owned) else {
                    continue;
                };
                if id.starts_with('s') {
                    let first = split_of_sentence.entry(id.clone()).or_insert(split);
                    assert_eq!(*first, split, "sentence {id} lent lines to two splits");
                }
            }
        }
        assert_eq!(split_of_sentence.len(), 300);
        let common = |split| {
            splits[&split]
                .texts
                .iter()
                .filter(|t| fold(t) == "the common end")
                .count()
        };
        // Both spellings stay in train; val and test leave both out.
        assert_eq!(common(Split::Train), 2);
        assert_eq!((common(Split::Val), common(Split::Test)), (0, 0));
        assert_eq!(splits[&Split::Val].shared_left_out, 2);
        assert_eq!(splits[&Split::Test].shared_left_out, 2);
    }

    #[test]
    fn lines_break_at_words_and_respect_bounds() {
        let lines = line_texts(
            &[
                "the quick brown fox jumps over the lazy dog".to_owned(),
                "a".to_owned(),
            ],
            3,
            15,
        );
        assert_eq!(lines, ["fox jumps over", "the lazy dog", "the quick brown"]);
        assert!(lines.iter().all(|l| l.len() <= 15));
    }
}
