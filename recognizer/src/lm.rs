//! A character n-gram language model over the recognizer's vocabulary (interpolated Witten–Bell
//! smoothing), counted from training transcriptions. The CTC beam decoder weighs each candidate
//! text by it, which is what Tesseract's dictionaries and DeepSpeech's scorer do for their
//! recognizers: the network says what the ink looks like, the model what text is likely.
//!
//! Symbols are vocabulary indices; index 0 (the CTC blank, never a character) stands for the
//! line boundary, both as the padding before a line and as its end. The file (`.lm`) holds the
//! counts, sorted, so the same lines give the same bytes, and the decoder's tuned defaults, as
//! DeepSpeech's scorer package carries its alpha and beta.

use std::collections::HashMap;

use crate::setting::{InvalidSetting, require};
use crate::vocab::{BLANK_INDEX, Vocabulary, VocabularyError};

/// The first bytes of a `.lm` file.
pub const MAGIC: &[u8; 8] = b"TXTRCLM1";

/// Longest n-gram: eight 7-bit symbols and a length marker fit a `u64` key.
pub const MAX_ORDER: usize = 8;

/// Symbols must fit 7 bits.
const MAX_SYMBOLS: usize = 128;

/// The line boundary symbol: before the first character and after the last.
pub const BOUNDARY: u8 = BLANK_INDEX as u8;

#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error("language model order {order} is outside 1..={MAX_ORDER}")]
    Order { order: usize },
    #[error("a vocabulary of {len} tokens is more than a language model's {MAX_SYMBOLS}")]
    Vocabulary { len: usize },
    #[error("line {line}: {source}")]
    Text {
        line: usize,
        #[source]
        source: VocabularyError,
    },
    #[error("not a textrec language model: {reason}")]
    Format { reason: String },
    #[error(
        "the language model's vocabulary ({lm} tokens) is not the line model's ({model} tokens)"
    )]
    Mismatch { lm: usize, model: usize },
}

/// How the beam decoder uses the model: `log P(ink | text) + lm_weight · log P(text) +
/// length_bonus · characters`, keeping the `beam_width` best prefixes per step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeamSearch {
    pub beam_width: usize,
    pub lm_weight: f32,
    /// Per character, so the model's preference for short texts does not drop characters.
    pub length_bonus: f32,
    /// The guard against text the network did not read (see [`crate::ctc::guard_reads_greedily`]):
    /// the beam reads a line only when at least this fraction of its steps are sure; 0 lets it
    /// read every line.
    pub min_sure_fraction: f32,
    /// The other half of the guard: the beam's text may be at most this many times as long as
    /// greedy's plus one character; longer, and greedy's reading stands. 0: no cap.
    pub max_length_ratio: f32,
}

impl Default for BeamSearch {
    fn default() -> Self {
        // Tuned on 1,000 validation lines for an early line model (CER 0.344 greedy → 0.265);
        // a surer model wants a lighter language model and a wider beam, which pipeline.yaml sets.
        BeamSearch {
            beam_width: 32,
            lm_weight: 0.8,
            length_bonus: 1.0,
            min_sure_fraction: 0.0,
            max_length_ratio: 0.0,
        }
    }
}

impl BeamSearch {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        require(
            self.beam_width >= 1,
            "beam_width",
            self.beam_width,
            "at least 1",
        )?;
        require(
            self.lm_weight.is_finite() && self.lm_weight >= 0.0,
            "lm_weight",
            self.lm_weight,
            "a finite number >= 0",
        )?;
        require(
            self.length_bonus.is_finite(),
            "length_bonus",
            self.length_bonus,
            "a finite number",
        )?;
        require(
            (0.0..=1.0).contains(&self.min_sure_fraction),
            "min_sure_fraction",
            self.min_sure_fraction,
            "a fraction from 0 to 1",
        )?;
        require(
            self.max_length_ratio.is_finite() && self.max_length_ratio >= 0.0,
            "max_length_ratio",
            self.max_length_ratio,
            "a finite number >= 0 (0: no cap)",
        )
    }
}

/// The last `order − 1` symbols before a position, newest in the low 7 bits; all zeros (line
/// boundaries) at the start of a line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct History(u64);

fn low_bits(symbols: usize) -> u64 {
    (1u64 << (7 * symbols)) - 1
}

/// SplitMix64's finaliser: keys are packed symbols, so their low bits alone (what picks a
/// bucket) say little; this mixes every bit into every bit at a fraction of SipHash's cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, value: u64) {
        let mut z = (self.0 ^ value).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = z ^ (z >> 31);
    }
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }
}

/// A map keyed by [`KeyHasher`].
pub type KeyMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Counts of one context: how often it was followed by anything, and by how many symbols.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Context {
    total: u32,
    types: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CharLm {
    order: usize,
    tokens: Vec<String>,
    /// n-gram key → count, every order from 1 to `order`.
    counts: KeyMap<u64, u32>,
    /// Context key (the n-gram less its last symbol) → its totals; derived from `counts`.
    contexts: KeyMap<u64, Context>,
    pub search: BeamSearch,
}

/// `1` followed by 7 bits per symbol, so lengths never collide.
fn key(symbols: &[u8]) -> u64 {
    symbols.iter().fold(1u64, |k, &s| (k << 7) | u64::from(s))
}

/// Symbols in a key (the length marker excluded).
fn key_len(key: u64) -> usize {
    (63 - key.leading_zeros() as usize) / 7
}

impl CharLm {
    /// Counts every n-gram up to `order` in `lines` (each padded with boundaries).
    pub fn count<S: AsRef<str>>(
        vocabulary: &Vocabulary,
        order: usize,
        lines: impl IntoIterator<Item = S>,
        search: BeamSearch,
    ) -> Result<CharLm, LmError> {
        check_shape(order, vocabulary.len())?;
        let mut counts: KeyMap<u64, u32> = KeyMap::default();
        let mut symbols = Vec::new();
        for (index, line) in lines.into_iter().enumerate() {
            let encoded = vocabulary
                .encode(line.as_ref())
                .map_err(|source| LmError::Text {
                    line: index + 1,
                    source,
                })?;
            symbols.clear();
            symbols.resize(order - 1, BOUNDARY);
            symbols.extend(encoded.iter().map(|&i| i as u8));
            symbols.push(BOUNDARY);
            for end in order - 1..symbols.len() {
                for n in 1..=order {
                    *counts.entry(key(&symbols[end + 1 - n..=end])).or_default() += 1;
                }
            }
        }
        Ok(CharLm::from_counts(
            order,
            vocabulary.tokens().to_vec(),
            counts,
            search,
        ))
    }

    fn from_counts(
        order: usize,
        tokens: Vec<String>,
        counts: KeyMap<u64, u32>,
        search: BeamSearch,
    ) -> CharLm {
        let mut contexts: KeyMap<u64, Context> = KeyMap::default();
        for (&k, &count) in &counts {
            let context = contexts.entry(k >> 7).or_default();
            context.total += count;
            context.types += 1;
        }
        CharLm {
            order,
            tokens,
            counts,
            contexts,
            search,
        }
    }

    pub fn order(&self) -> usize {
        self.order
    }

    /// Distinct n-grams of every order.
    pub fn ngrams(&self) -> usize {
        self.counts.len()
    }

    /// Fails unless the model was counted over `vocabulary`.
    pub fn check_vocabulary(&self, vocabulary: &Vocabulary) -> Result<(), LmError> {
        if self.tokens == vocabulary.tokens() {
            Ok(())
        } else {
            Err(LmError::Mismatch {
                lm: self.tokens.len(),
                model: vocabulary.len(),
            })
        }
    }

    /// `ln P(next | history)`; only the last `order − 1` symbols of `history` count, and a
    /// history shorter than that is taken to follow line boundaries.
    pub fn log_prob(&self, history: &[u8], next: u8) -> f32 {
        let packed = history
            .iter()
            .fold(History::default(), |h, &s| self.push(h, s));
        self.log_prob_after(packed, next)
    }

    /// `history` with `symbol` appended (and the oldest symbol dropped past `order − 1`).
    pub fn push(&self, history: History, symbol: u8) -> History {
        History(((history.0 << 7) | u64::from(symbol)) & low_bits(self.order - 1))
    }

    /// `ln P(next | history)`, interpolating every context length from none to `order − 1`.
    pub fn log_prob_after(&self, history: History, next: u8) -> f32 {
        let mut p = 1.0 / self.tokens.len() as f64;
        for n in 0..self.order {
            // The last n symbols behind a length marker; boundaries pad a short history as 0s.
            let context = (1u64 << (7 * n)) | (history.0 & low_bits(n));
            let Some(totals) = self.contexts.get(&context) else {
                break;
            };
            let total = f64::from(totals.total);
            let seen = self
                .counts
                .get(&((context << 7) | u64::from(next)))
                .copied()
                .unwrap_or(0);
            let lambda = total / (total + f64::from(totals.types));
            p = lambda * f64::from(seen) / total + (1.0 - lambda) * p;
        }
        p.ln() as f32
    }

    /// Mean `-log2 P` per symbol (end of line included) over `lines`: lower is better.
    pub fn bits_per_char<S: AsRef<str>>(
        &self,
        vocabulary: &Vocabulary,
        lines: impl IntoIterator<Item = S>,
    ) -> Result<f64, LmError> {
        let (mut bits, mut symbols) = (0.0f64, 0usize);
        for (index, line) in lines.into_iter().enumerate() {
            let encoded = vocabulary
                .encode(line.as_ref())
                .map_err(|source| LmError::Text {
                    line: index + 1,
                    source,
                })?;
            let mut history = History::default();
            for next in encoded.iter().map(|&i| i as u8).chain([BOUNDARY]) {
                bits -= f64::from(self.log_prob_after(history, next)) / std::f64::consts::LN_2;
                history = self.push(history, next);
                symbols += 1;
            }
        }
        Ok(if symbols == 0 {
            0.0
        } else {
            bits / symbols as f64
        })
    }

    /// The `.lm` file: magic, a JSON header (order, vocabulary, search defaults), then the
    /// n-grams sorted by key as `u64 key, u32 count`, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&Header {
            order: self.order,
            tokens: self.tokens.clone(),
            search: self.search,
            ngrams: self.counts.len(),
        })
        .expect("the header serialises");
        let mut entries: Vec<(u64, u32)> = self.counts.iter().map(|(&k, &c)| (k, c)).collect();
        entries.sort_unstable();
        let mut bytes = Vec::with_capacity(16 + header.len() + 12 * entries.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        for (k, c) in entries {
            bytes.extend_from_slice(&k.to_le_bytes());
            bytes.extend_from_slice(&c.to_le_bytes());
        }
        bytes
    }

    /// Whether `bytes` start like a `.lm` file.
    pub fn sniff(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Reads a `.lm` file, checking every entry.
    pub fn from_bytes(bytes: &[u8]) -> Result<CharLm, LmError> {
        let bad = |reason: String| LmError::Format { reason };
        if !CharLm::sniff(bytes) {
            return Err(bad("it does not start with the language model magic".into()));
        }
        let rest = &bytes[MAGIC.len()..];
        let header_len = rest
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| bad("the header length is cut off".into()))?;
        let header: Header = rest
            .get(4..4 + header_len)
            .ok_or_else(|| bad("the header is cut off".into()))
            .and_then(|h| serde_json::from_slice(h).map_err(|e| bad(format!("header: {e}"))))?;
        check_shape(header.order, header.tokens.len())?;
        header.search.validate().map_err(|e| bad(e.to_string()))?;
        let body = &rest[4 + header_len..];
        // The count comes from the file: a product that wraps could match a short body and
        // then size the map below.
        if header.ngrams.checked_mul(12) != Some(body.len()) {
            return Err(bad(format!(
                "{} bytes of n-grams for the {} the header declares",
                body.len(),
                header.ngrams
            )));
        }
        let mut counts = KeyMap::with_capacity_and_hasher(header.ngrams, Default::default());
        let mut previous = 0u64;
        for entry in body.chunks_exact(12) {
            let k = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
            let count = u32::from_le_bytes(entry[8..].try_into().expect("4 bytes"));
            let len = key_len(k);
            let symbols_ok = (0..len).all(|i| ((k >> (7 * i)) & 0x7f) < header.tokens.len() as u64);
            if k <= previous || count == 0 || len == 0 || len > header.order || !symbols_ok {
                return Err(bad(format!(
                    "n-gram entry {k:#x} is out of order or invalid"
                )));
            }
            previous = k;
            counts.insert(k, count);
        }
        Ok(CharLm::from_counts(
            header.order,
            header.tokens,
            counts,
            header.search,
        ))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    order: usize,
    tokens: Vec<String>,
    search: BeamSearch,
    ngrams: usize,
}

fn check_shape(order: usize, tokens: usize) -> Result<(), LmError> {
    if !(1..=MAX_ORDER).contains(&order) {
        return Err(LmError::Order { order });
    }
    if tokens > MAX_SYMBOLS {
        return Err(LmError::Vocabulary { len: tokens });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        Vocabulary::from_chars("abc ".chars()).unwrap()
    }

    #[test]
    fn probabilities_follow_the_counts_and_sum_to_one() {
        let vocab = vocabulary();
        let lm = CharLm::count(&vocab, 3, ["abc", "abc", "abb"], BeamSearch::default()).unwrap();
        let symbol = |c: char| vocab.index_of(c).unwrap() as u8;
        let ab = [symbol('a'), symbol('b')];
        // After "ab", 'c' was seen twice and 'b' once.
        let p = |next| lm.log_prob(&ab, next).exp();
        assert!(p(symbol('c')) > p(symbol('b')));
        assert!(p(symbol('b')) > p(symbol(' ')), "seen beats unseen");
        // Every history's distribution over the vocabulary (boundary included) sums to 1.
        for history in [&ab[..], &[], &[symbol(' '), symbol(' ')]] {
            let total: f32 = (0..vocab.len() as u8)
                .map(|s| lm.log_prob(history, s).exp())
                .sum();
            assert!((total - 1.0).abs() < 1e-5, "{history:?} sums to {total}");
        }
        // A line starts with 'a' every time: the boundary padding is a context like any other.
        assert!(lm.log_prob(&[], symbol('a')).exp() > 0.5);
    }

    #[test]
    fn the_file_round_trips_byte_for_byte_and_rejects_damage() {
        let vocab = vocabulary();
        let search = BeamSearch {
            beam_width: 4,
            lm_weight: 0.7,
            length_bonus: 1.0,
            min_sure_fraction: 0.5,
            max_length_ratio: 4.0,
        };
        let lines = ["a b c", "cab", "abba"];
        let lm = CharLm::count(&vocab, 4, lines, search).unwrap();
        let bytes = lm.to_bytes();
        let again = CharLm::count(&vocab, 4, lines, search).unwrap().to_bytes();
        assert_eq!(bytes, again, "same lines, same bytes");
        let read = CharLm::from_bytes(&bytes).unwrap();
        assert_eq!(read, lm);
        assert_eq!(read.search, search);
        assert!(read.check_vocabulary(&vocab).is_ok());
        assert!(matches!(
            read.check_vocabulary(&Vocabulary::default()),
            Err(LmError::Mismatch { .. })
        ));
        assert!(CharLm::from_bytes(&bytes[..bytes.len() - 3]).is_err());
        assert!(CharLm::from_bytes(b"PK\x03\x04").is_err());
        let mut swapped = bytes.clone();
        let n = swapped.len();
        swapped[n - 24..].rotate_left(12);
        assert!(CharLm::from_bytes(&swapped).is_err(), "unsorted entries");
    }

    #[test]
    fn bad_input_is_named() {
        let vocab = vocabulary();
        let err = CharLm::count(&vocab, 3, ["abc", "abd"], BeamSearch::default()).unwrap_err();
        assert!(matches!(err, LmError::Text { line: 2, .. }), "{err}");
        assert!(matches!(
            CharLm::count(&vocab, 9, ["a"], BeamSearch::default()),
            Err(LmError::Order { order: 9 })
        ));
    }

    #[test]
    fn a_model_of_the_text_it_saw_predicts_it_better_than_chance() {
        let vocab = Vocabulary::default();
        let train = ["the cat sat on the mat", "the dog sat on the log"];
        let lm = CharLm::count(&vocab, 4, train, BeamSearch::default()).unwrap();
        let seen = lm
            .bits_per_char(&vocab, ["the cat sat on the log"])
            .unwrap();
        let unseen = lm.bits_per_char(&vocab, ["QZX 9?! kjw"]).unwrap();
        let uniform = (vocab.len() as f64).log2();
        assert!(seen < 2.0, "{seen} bits per char");
        assert!(unseen > uniform, "{unseen} vs uniform {uniform}");
    }
}
