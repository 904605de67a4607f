//! The label set: CTC blank at index 0, then space, digits, upper- and lower-case letters and
//! FSDL's punctuation marks (80 tokens; FSDL's 83 add start/end/padding tokens that CTC does not
//! need). It travels with every exported model so inference never guesses.

use serde::{Deserialize, Serialize};

/// The CTC blank's printable name.
pub const BLANK: &str = "<B>";

/// Index of the blank; fixed so that decoders and exported models agree.
pub const BLANK_INDEX: usize = 0;

const PUNCTUATION: &str = "!\"#&'()*+,-./:;?";

/// An ordered set of single-character tokens plus the blank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocabulary {
    /// Index → token; index 0 is [`BLANK`].
    tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabularyError {
    #[error("character {character:?} at position {position} is not in the vocabulary")]
    UnknownCharacter { character: char, position: usize },
    #[error("token {index} is out of range for a vocabulary of {len}")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("invalid vocabulary: {reason}")]
    Invalid { reason: String },
}

impl Default for Vocabulary {
    fn default() -> Self {
        let chars = std::iter::once(' ')
            .chain('0'..='9')
            .chain('A'..='Z')
            .chain('a'..='z')
            .chain(PUNCTUATION.chars());
        Vocabulary::from_chars(chars).expect("the default vocabulary is valid")
    }
}

impl Vocabulary {
    /// A vocabulary of the blank followed by `chars`, in order; duplicates are an error.
    pub fn from_chars(
        chars: impl IntoIterator<Item = char>,
    ) -> Result<Vocabulary, VocabularyError> {
        let mut tokens = vec![BLANK.to_owned()];
        for c in chars {
            let token = c.to_string();
            if tokens.contains(&token) {
                return Err(VocabularyError::Invalid {
                    reason: format!("{c:?} appears twice"),
                });
            }
            tokens.push(token);
        }
        Ok(Vocabulary { tokens })
    }

    /// A vocabulary from its tokens as stored in manifests and model metadata: the blank first,
    /// then distinct single characters.
    pub fn from_tokens(tokens: Vec<String>) -> Result<Vocabulary, VocabularyError> {
        if tokens.first().map(String::as_str) != Some(BLANK) {
            return Err(VocabularyError::Invalid {
                reason: format!("token 0 must be the blank {BLANK:?}"),
            });
        }
        let mut chars = Vec::with_capacity(tokens.len() - 1);
        for token in &tokens[1..] {
            let mut it = token.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => chars.push(c),
                _ => {
                    return Err(VocabularyError::Invalid {
                        reason: format!("token {token:?} is not a single character"),
                    });
                }
            }
        }
        Vocabulary::from_chars(chars)
    }

    /// Number of classes a model predicts, blank included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false: the blank is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn index_of(&self, c: char) -> Option<usize> {
        let mut buf = [0u8; 4];
        let needle: &str = c.encode_utf8(&mut buf);
        self.tokens
            .iter()
            .skip(1)
            .position(|t| t == needle)
            .map(|i| i + 1)
    }

    /// Text → class indices (never the blank).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>, VocabularyError> {
        text.chars()
            .enumerate()
            .map(|(position, character)| {
                self.index_of(character)
                    .ok_or(VocabularyError::UnknownCharacter {
                        character,
                        position,
                    })
            })
            .collect()
    }

    /// Class indices → text; blanks are dropped.
    pub fn decode(&self, indices: &[usize]) -> Result<String, VocabularyError> {
        let mut text = String::with_capacity(indices.len());
        for &index in indices {
            if index == BLANK_INDEX {
                continue;
            }
            let token = self
                .tokens
                .get(index)
                .ok_or(VocabularyError::IndexOutOfRange {
                    index,
                    len: self.tokens.len(),
                })?;
            text.push_str(token);
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_vocabulary_has_blank_first_and_fsdl_characters() {
        let vocab = Vocabulary::default();
        assert_eq!(vocab.len(), 80);
        assert_eq!(vocab.tokens()[BLANK_INDEX], BLANK);
        assert_eq!(vocab.index_of(' '), Some(1));
        assert_eq!(vocab.index_of('0'), Some(2));
        assert_eq!(vocab.index_of('A'), Some(12));
        assert_eq!(vocab.index_of('a'), Some(38));
        assert_eq!(vocab.index_of('?'), Some(79));
        assert_eq!(vocab.index_of('é'), None);
    }

    #[test]
    fn text_round_trips_and_unknown_characters_are_located() {
        let vocab = Vocabulary::default();
        let text = "Call me at 555-0142, please!";
        assert_eq!(vocab.decode(&vocab.encode(text).unwrap()).unwrap(), text);
        assert_eq!(
            vocab.encode("ok ü"),
            Err(VocabularyError::UnknownCharacter {
                character: 'ü',
                position: 3
            })
        );
        assert_eq!(
            vocab.decode(&[200]),
            Err(VocabularyError::IndexOutOfRange {
                index: 200,
                len: 80
            })
        );
        assert!(Vocabulary::from_chars("abca".chars()).is_err());
    }
}
