//! Text for lines and pages: WordNet example sentences, fortune-cookie lines and plain text
//! files, cleaned to the vocabulary, chunked to line length and de-duplicated.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::DataError;

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
