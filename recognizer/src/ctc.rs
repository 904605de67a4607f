//! CTC greedy (best-path) decoding: take the most likely class at each time step, merge repeats,
//! drop blanks. Each emitted character carries the probability of its best step, and the line a
//! confidence (geometric mean over the steps that emitted or held a character, so a long line is not
//! punished for its length).

use crate::vocab::{BLANK_INDEX, Vocabulary, VocabularyError};

/// One decoded character.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedChar {
    pub character: String,
    /// Highest probability among the steps that produced it.
    pub confidence: f32,
    /// First and last time step (inclusive) that produced it: its horizontal extent on the line.
    pub steps: (usize, usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub text: String,
    pub chars: Vec<DecodedChar>,
    /// Geometric mean of the winning probabilities over all non-blank steps; 1.0 for an empty line.
    pub confidence: f32,
}

/// Decodes `[steps][classes]` log-probabilities (log-softmax output, row-major).
pub fn greedy_decode(
    log_probs: &[f32],
    classes: usize,
    vocab: &Vocabulary,
) -> Result<Decoded, VocabularyError> {
    if classes != vocab.len() || !log_probs.len().is_multiple_of(classes) {
        return Err(VocabularyError::Invalid {
            reason: format!(
                "{} scores are not whole steps of {classes} classes for a vocabulary of {}",
                log_probs.len(),
                vocab.len()
            ),
        });
    }
    let mut chars: Vec<DecodedChar> = Vec::new();
    let mut previous = BLANK_INDEX;
    let mut log_confidence = 0.0f64;
    let mut scored_steps = 0usize;
    for (step, row) in log_probs.chunks_exact(classes).enumerate() {
        let (best, &score) = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("classes > 0 since the vocabulary always has the blank");
        let probability = score.exp();
        if best != BLANK_INDEX {
            log_confidence += f64::from(score);
            scored_steps += 1;
            if best == previous {
                let last = chars
                    .last_mut()
                    .expect("a repeat follows an emitted character");
                last.confidence = last.confidence.max(probability);
                last.steps.1 = step;
            } else {
                chars.push(DecodedChar {
                    character: vocab.decode(&[best])?,
                    confidence: probability,
                    steps: (step, step),
                });
            }
        }
        previous = best;
    }
    let text = chars.iter().map(|c| c.character.as_str()).collect();
    let confidence = if scored_steps == 0 {
        1.0
    } else {
        (log_confidence / scored_steps as f64).exp() as f32
    };
    Ok(Decoded {
        text,
        chars,
        confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step whose winner is `class` with probability `p`, the rest shared evenly.
    fn step(classes: usize, class: usize, p: f32) -> Vec<f32> {
        let rest = (1.0 - p) / (classes - 1) as f32;
        (0..classes)
            .map(|c| if c == class { p } else { rest }.ln())
            .collect()
    }

    #[test]
    fn repeats_merge_unless_a_blank_separates_them() {
        let vocab = Vocabulary::from_chars("lo".chars()).unwrap(); // <B>=0, l=1, o=2
        let path = [1, 1, 0, 1, 2, 2, 0];
        let scores: Vec<f32> = path.iter().flat_map(|&c| step(3, c, 0.9)).collect();
        let decoded = greedy_decode(&scores, 3, &vocab).unwrap();
        assert_eq!(decoded.text, "llo");
        assert_eq!(decoded.chars[0].steps, (0, 1));
        assert_eq!(decoded.chars[1].steps, (3, 3));
        assert_eq!(decoded.chars[2].steps, (4, 5));
        assert!((decoded.confidence - 0.9).abs() < 1e-5);
    }

    #[test]
    fn confidence_is_the_geometric_mean_of_non_blank_steps() {
        let vocab = Vocabulary::from_chars("ab".chars()).unwrap();
        let scores: Vec<f32> = [(1, 0.8), (0, 0.99), (2, 0.5)]
            .iter()
            .flat_map(|&(c, p)| step(3, c, p))
            .collect();
        let decoded = greedy_decode(&scores, 3, &vocab).unwrap();
        assert_eq!(decoded.text, "ab");
        assert!((decoded.confidence - (0.8f32 * 0.5).sqrt()).abs() < 1e-5);
        assert!((decoded.chars[0].confidence - 0.8).abs() < 1e-5);
        let blank_only: Vec<f32> = step(3, 0, 0.9).repeat(4);
        assert_eq!(greedy_decode(&blank_only, 3, &vocab).unwrap().text, "");
        assert!(
            greedy_decode(&scores[..5], 3, &vocab).is_err(),
            "partial steps are rejected"
        );
        assert!(
            greedy_decode(&scores, 4, &vocab).is_err(),
            "class count must match the vocabulary"
        );
    }
}
