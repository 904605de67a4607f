//! CTC decoding. Greedy (best-path): take the most likely class at each time step, merge repeats,
//! drop blanks. Beam (prefix beam search): keep the likeliest texts, summing every path that
//! spells each, weighed by a character language model ([`crate::lm`]); the winner is then
//! aligned to the steps (Viterbi) so its characters have extents as greedy ones do. Each emitted
//! character carries the probability of its best step, and the line a confidence (geometric mean
//! over the steps that emitted or held a character, so a long line is not punished for its
//! length).

use crate::lm::{BeamSearch, CharLm, History, KeyMap};
use crate::vocab::{BLANK_INDEX, Vocabulary, VocabularyError};

/// A class enters the beam at a step only within this many nats of the step's best class. On
/// the validation lines 6 costs 0.003 CER against 10 and decodes 3× faster.
const CANDIDATE_MARGIN: f32 = 6.0;

/// A step is sure when its likeliest class, the blank included, has at least this probability:
/// the network has told ink from gap there.
const SURE_PROBABILITY: f32 = 0.5;

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
    /// Set when the beam decoder's guard gave the line to greedy decoding: the network could
    /// not read it surely enough for the language model to have a say.
    pub guarded: bool,
}

/// Output steps CTC needs to emit `label`: one per symbol, and a blank between two equal
/// neighbours, which would otherwise merge. A line with fewer steps has no alignment: its loss is
/// infinite (textrec's loss zeroes it, so such a line teaches nothing).
pub fn steps_needed<T: PartialEq>(label: impl IntoIterator<Item = T>) -> usize {
    let mut steps = 0;
    let mut previous = None;
    for symbol in label {
        steps += 1 + usize::from(previous.as_ref() == Some(&symbol));
        previous = Some(symbol);
    }
    steps
}

fn check_scores(
    log_probs: &[f32],
    classes: usize,
    vocab: &Vocabulary,
) -> Result<(), VocabularyError> {
    if classes != vocab.len() || classes == 0 || !log_probs.len().is_multiple_of(classes) {
        return Err(VocabularyError::Invalid {
            reason: format!(
                "{} scores are not whole steps of {classes} classes for a vocabulary of {}",
                log_probs.len(),
                vocab.len()
            ),
        });
    }
    Ok(())
}

/// The line of `chars`, its confidence the geometric mean of the `scored_steps` probabilities
/// whose logs sum to `log_confidence` (1.0 for an empty line).
fn decoded(chars: Vec<DecodedChar>, log_confidence: f64, scored_steps: usize) -> Decoded {
    let confidence = if scored_steps == 0 {
        1.0
    } else {
        (log_confidence / scored_steps as f64).exp() as f32
    };
    Decoded {
        text: chars.iter().map(|c| c.character.as_str()).collect(),
        chars,
        confidence,
        guarded: false,
    }
}

/// Decodes `[steps][classes]` log-probabilities (log-softmax output, row-major).
pub fn greedy_decode(
    log_probs: &[f32],
    classes: usize,
    vocab: &Vocabulary,
) -> Result<Decoded, VocabularyError> {
    check_scores(log_probs, classes, vocab)?;
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
    Ok(decoded(chars, log_confidence, scored_steps))
}

/// The fraction of `[steps][classes]` log-probabilities whose likeliest class is sure (has
/// probability ½ or more); 1 for no steps. Writing on a line is mostly confident blanks between
/// confident characters; ink the network cannot read (noise, a stain, a script it never saw)
/// spreads its steps over many classes.
pub fn sure_fraction(log_probs: &[f32], classes: usize) -> f32 {
    let steps = log_probs.len() / classes.max(1);
    if steps == 0 {
        return 1.0;
    }
    let floor = SURE_PROBABILITY.ln();
    let sure = log_probs
        .chunks_exact(classes)
        .filter(|row| row.iter().any(|&v| v >= floor))
        .count();
    sure as f32 / steps as f32
}

/// Whether `search`'s guard gives a line to greedy decoding: too few sure steps (the network
/// cannot tell ink from gap: speckles, a stain), or a beam text more than `max_length_ratio`
/// times as long as greedy's plus one (the network sees next to nothing and the language model
/// and the length bonus fill the line). `beam_chars` is `None` before the beam has run. The beam
/// decoder and its calibration both decide through here.
pub fn guard_reads_greedily(
    search: &BeamSearch,
    sure: f32,
    greedy_chars: usize,
    beam_chars: Option<usize>,
) -> bool {
    if sure < search.min_sure_fraction {
        return true;
    }
    let cap = search.max_length_ratio * (greedy_chars + 1) as f32;
    search.max_length_ratio > 0.0 && beam_chars.is_some_and(|n| n as f32 > cap)
}

/// `ln(e^a + e^b)`, exact when either is `-∞`.
fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let high = a.max(b);
    high + ((a - high).exp() + (b - high).exp()).ln()
}

/// A prefix in the beam: the log-probability of its paths ending in a blank and in its last
/// character.
#[derive(Debug, Clone, Copy)]
struct PrefixScore {
    blank: f64,
    last: f64,
}

impl PrefixScore {
    const NONE: PrefixScore = PrefixScore {
        blank: f64::NEG_INFINITY,
        last: f64::NEG_INFINITY,
    };

    fn paths(&self) -> f64 {
        log_add(self.blank, self.last)
    }
}

/// A prefix as a node of a tree (its parent plus one symbol), so extending and merging prefixes
/// never copies text, and its language-model log-probability is looked up once, not every step
/// it stays in the beam (the lookups miss the cache and dominated decoding); node 0 is the empty
/// prefix.
#[derive(Debug, Clone, Copy)]
struct PrefixNode {
    parent: u32,
    symbol: u8,
    len: u32,
    history: History,
    lm: f64,
}

struct PrefixTree {
    nodes: Vec<PrefixNode>,
    children: KeyMap<u64, u32>,
}

impl PrefixTree {
    fn new() -> PrefixTree {
        PrefixTree {
            nodes: vec![PrefixNode {
                parent: 0,
                symbol: crate::lm::BOUNDARY,
                len: 0,
                history: History::default(),
                lm: 0.0,
            }],
            children: KeyMap::default(),
        }
    }

    /// The node of `parent`'s prefix plus `symbol`, made on first use.
    fn child(&mut self, parent: u32, symbol: u8, lm: &CharLm) -> u32 {
        let key = (u64::from(parent) << 8) | u64::from(symbol);
        if let Some(&node) = self.children.get(&key) {
            return node;
        }
        let of = self.nodes[parent as usize];
        let node = self.nodes.len() as u32;
        self.nodes.push(PrefixNode {
            parent,
            symbol,
            len: of.len + 1,
            history: lm.push(of.history, symbol),
            lm: of.lm + f64::from(lm.log_prob_after(of.history, symbol)),
        });
        self.children.insert(key, node);
        node
    }

    /// The prefix's labels, first to last.
    fn labels(&self, mut node: u32) -> Vec<usize> {
        let mut labels = Vec::with_capacity(self.nodes[node as usize].len as usize);
        while node != 0 {
            let n = self.nodes[node as usize];
            labels.push(usize::from(n.symbol));
            node = n.parent;
        }
        labels.reverse();
        labels
    }
}

/// Prefix beam search over `[steps][classes]` log-probabilities with `lm` weighed by `search`
/// (usually the model's own [`CharLm::search`]; decoding calibration tries others), then a
/// Viterbi alignment of the winner for character extents and confidences. A line the guard
/// gives to greedy decoding is read greedily: see [`guard_reads_greedily`].
pub fn beam_decode(
    log_probs: &[f32],
    classes: usize,
    vocab: &Vocabulary,
    lm: &CharLm,
    search: BeamSearch,
) -> Result<Decoded, VocabularyError> {
    check_scores(log_probs, classes, vocab)?;
    let sure = sure_fraction(log_probs, classes);
    let guarded = |greedy: Decoded| Decoded {
        guarded: true,
        ..greedy
    };
    if guard_reads_greedily(&search, sure, 0, None) {
        return greedy_decode(log_probs, classes, vocab).map(guarded);
    }
    let winner = prefix_search(log_probs, classes, lm, search);
    let read = match align(log_probs, classes, &winner) {
        Some(steps) => decoded_from_alignment(log_probs, classes, vocab, &winner, &steps)?,
        // Unreachable for a prefix the search built step by step; greedy is the safe answer.
        None => return greedy_decode(log_probs, classes, vocab),
    };
    if search.max_length_ratio > 0.0 {
        let greedy = greedy_decode(log_probs, classes, vocab)?;
        let lengths = (greedy.chars.len(), read.chars.len());
        if guard_reads_greedily(&search, sure, lengths.0, Some(lengths.1)) {
            return Ok(guarded(greedy));
        }
    }
    Ok(read)
}

/// The labels of the text the prefix beam search ranks best.
fn prefix_search(log_probs: &[f32], classes: usize, lm: &CharLm, search: BeamSearch) -> Vec<usize> {
    let (weight, bonus) = (f64::from(search.lm_weight), f64::from(search.length_bonus));
    let mut tree = PrefixTree::new();
    let ranked = |tree: &PrefixTree, node: u32, score: &PrefixScore| {
        let prefix = &tree.nodes[node as usize];
        score.paths() + weight * prefix.lm + bonus * f64::from(prefix.len)
    };
    let mut beam: Vec<(u32, PrefixScore)> = vec![(
        0,
        PrefixScore {
            blank: 0.0,
            ..PrefixScore::NONE
        },
    )];
    let mut next: KeyMap<u32, PrefixScore> = KeyMap::default();
    let mut candidates: Vec<(usize, f64)> = Vec::with_capacity(classes);
    for row in log_probs.chunks_exact(classes) {
        let best = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        candidates.clear();
        candidates.extend(
            row.iter()
                .enumerate()
                .filter(|&(_, &v)| v >= best - CANDIDATE_MARGIN)
                .map(|(class, &v)| (class, f64::from(v))),
        );
        next.clear();
        for &(node, score) in &beam {
            let paths = score.paths();
            let last = tree.nodes[node as usize];
            for &(class, value) in &candidates {
                if class == BLANK_INDEX {
                    let entry = next.entry(node).or_insert(PrefixScore::NONE);
                    entry.blank = log_add(entry.blank, paths + value);
                    continue;
                }
                let symbol = class as u8;
                // Repeating the last character without a blank between only holds it.
                let extends_from = if node != 0 && last.symbol == symbol {
                    let held = next.entry(node).or_insert(PrefixScore::NONE);
                    held.last = log_add(held.last, score.last + value);
                    score.blank
                } else {
                    paths
                };
                let longer = tree.child(node, symbol, lm);
                let entry = next.entry(longer).or_insert(PrefixScore::NONE);
                entry.last = log_add(entry.last, extends_from + value);
            }
        }
        beam.clear();
        beam.extend(next.drain());
        // Best first; ties by node (creation order) so the result never depends on hash order.
        beam.sort_by(|a, b| {
            ranked(&tree, b.0, &b.1)
                .total_cmp(&ranked(&tree, a.0, &a.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        beam.truncate(search.beam_width);
    }
    let finished = |&(node, score): &(u32, PrefixScore)| {
        let history = tree.nodes[node as usize].history;
        ranked(&tree, node, &score)
            + weight * f64::from(lm.log_prob_after(history, crate::lm::BOUNDARY))
    };
    beam.iter()
        .max_by(|a, b| {
            finished(a)
                .total_cmp(&finished(b))
                .then_with(|| b.0.cmp(&a.0))
        })
        .map(|&(node, _)| tree.labels(node))
        .unwrap_or_default()
}

/// The most likely CTC path that spells `labels`: for each step, the index into the
/// blank-interleaved labels (`2k + 1` is `labels[k]`, even indices blanks), or `None` when the
/// steps are too few to spell it.
fn align(log_probs: &[f32], classes: usize, labels: &[usize]) -> Option<Vec<usize>> {
    let steps = log_probs.len() / classes;
    let states = 2 * labels.len() + 1;
    let label = |s: usize| {
        if s.is_multiple_of(2) {
            BLANK_INDEX
        } else {
            labels[s / 2]
        }
    };
    let mut score = vec![f64::NEG_INFINITY; states];
    let mut from = vec![0usize; steps * states];
    if steps == 0 {
        return labels.is_empty().then(Vec::new);
    }
    score[0] = f64::from(log_probs[label(0)]);
    if states > 1 {
        score[1] = f64::from(log_probs[label(1)]);
    }
    for t in 1..steps {
        let row = &log_probs[t * classes..][..classes];
        let mut next = vec![f64::NEG_INFINITY; states];
        for s in 0..states {
            let mut best = (score[s], s);
            if s >= 1 && score[s - 1] > best.0 {
                best = (score[s - 1], s - 1);
            }
            if s >= 2 && s % 2 == 1 && label(s) != label(s - 2) && score[s - 2] > best.0 {
                best = (score[s - 2], s - 2);
            }
            if best.0 > f64::NEG_INFINITY {
                next[s] = best.0 + f64::from(row[label(s)]);
                from[t * states + s] = best.1;
            }
        }
        score = next;
    }
    let last = states - 1;
    let end = if states > 1 && score[last - 1] > score[last] {
        last - 1
    } else {
        last
    };
    if score[end] == f64::NEG_INFINITY {
        return None;
    }
    let mut path = vec![0; steps];
    let mut s = end;
    for t in (0..steps).rev() {
        path[t] = s;
        if t > 0 {
            s = from[t * states + s];
        }
    }
    Some(path)
}

fn decoded_from_alignment(
    log_probs: &[f32],
    classes: usize,
    vocab: &Vocabulary,
    labels: &[usize],
    path: &[usize],
) -> Result<Decoded, VocabularyError> {
    let mut chars: Vec<DecodedChar> = Vec::with_capacity(labels.len());
    let mut log_confidence = 0.0f64;
    let mut scored_steps = 0usize;
    for (step, &state) in path.iter().enumerate() {
        if state % 2 == 0 {
            continue;
        }
        let k = state / 2;
        let score = log_probs[step * classes + labels[k]];
        log_confidence += f64::from(score);
        scored_steps += 1;
        let probability = score.exp();
        if chars.len() == k + 1 {
            let last = chars.last_mut().expect("k + 1 characters");
            last.confidence = last.confidence.max(probability);
            last.steps.1 = step;
        } else {
            chars.push(DecodedChar {
                character: vocab.decode(&[labels[k]])?,
                confidence: probability,
                steps: (step, step),
            });
        }
    }
    Ok(decoded(chars, log_confidence, scored_steps))
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

    fn rows(classes: usize, steps: &[&[(usize, f32)]]) -> Vec<f32> {
        steps
            .iter()
            .flat_map(|step| {
                let named: f32 = step.iter().map(|&(_, p)| p).sum();
                let rest = (1.0 - named) / (classes - step.len()) as f32;
                (0..classes).map(move |c| {
                    step.iter()
                        .find(|&&(class, _)| class == c)
                        .map_or(rest, |&(_, p)| p)
                        .ln()
                })
            })
            .collect()
    }

    /// "thc" by a hair: sure steps, but the last letter reads c 0.45, e 0.40.
    fn thc_by_a_hair(vocab: &Vocabulary) -> Vec<f32> {
        let [c, e, h, t] = ['c', 'e', 'h', 't'].map(|ch| vocab.index_of(ch).unwrap());
        rows(
            vocab.len(),
            &[
                &[(t, 0.9)],
                &[(0, 0.9)],
                &[(h, 0.9)],
                &[(0, 0.9)],
                &[(c, 0.45), (e, 0.4)],
                &[(0, 0.9)],
            ],
        )
    }

    fn lm(vocab: &Vocabulary, lines: &[&str], lm_weight: f32, length_bonus: f32) -> CharLm {
        let search = crate::lm::BeamSearch {
            beam_width: 8,
            lm_weight,
            length_bonus,
            min_sure_fraction: 0.0,
            max_length_ratio: 0.0,
        };
        CharLm::count(vocab, 3, lines, search).unwrap()
    }

    #[test]
    fn the_beam_sums_the_paths_of_a_text_where_greedy_takes_one() {
        let vocab = Vocabulary::from_chars("a".chars()).unwrap();
        // Blank wins each step (0.6), but "a" has three paths (aa, a-, -a) worth 0.64 to "" 's 0.36.
        let scores = rows(2, &[&[(0, 0.6), (1, 0.4)], &[(0, 0.6), (1, 0.4)]]);
        assert_eq!(greedy_decode(&scores, 2, &vocab).unwrap().text, "");
        let flat = lm(&vocab, &["a"], 0.0, 0.0);
        let decoded = beam_decode(&scores, 2, &vocab, &flat, flat.search).unwrap();
        assert_eq!(decoded.text, "a");
        assert_eq!(
            decoded.chars[0].steps,
            (0, 0),
            "its best path is a then blank"
        );
    }

    #[test]
    fn the_language_model_picks_between_look_alikes() {
        let vocab = Vocabulary::from_chars("ceht".chars()).unwrap();
        let scores = thc_by_a_hair(&vocab);
        assert_eq!(greedy_decode(&scores, 5, &vocab).unwrap().text, "thc");
        let english = lm(&vocab, &["the", "the", "tee", "he"], 1.0, 0.0);
        let decoded = beam_decode(&scores, 5, &vocab, &english, english.search).unwrap();
        assert_eq!(decoded.text, "the");
        let steps: Vec<_> = decoded.chars.iter().map(|ch| ch.steps).collect();
        assert_eq!(steps, [(0, 0), (2, 2), (4, 4)]);
        assert!((decoded.chars[2].confidence - 0.4).abs() < 1e-5);
        // With no weight on the model the network's own reading stands.
        let ignored = lm(&vocab, &["the"], 0.0, 0.0);
        assert_eq!(
            beam_decode(&scores, 5, &vocab, &ignored, ignored.search)
                .unwrap()
                .text,
            "thc"
        );
    }

    #[test]
    fn lines_the_network_cannot_read_are_read_greedily_not_written_by_the_language_model() {
        let vocab = Vocabulary::from_chars("abcdefghijklmnopqrstuvwxyz ".chars()).unwrap();
        let classes = vocab.len();
        // 120 steps of scores spread over every class, as a network gives for noise.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = Vec::new();
        for _ in 0..120 {
            let logits: Vec<f32> = (0..classes)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 * 3.0
                })
                .collect();
            let norm = logits.iter().map(|v| v.exp()).sum::<f32>().ln();
            noise.extend(logits.iter().map(|v| v - norm));
        }
        assert!(sure_fraction(&noise, classes) < 0.1);
        let sentences = [
            "the cat sat on the mat",
            "a man and his dog went to the sea",
            "she sells sea shells on the sea shore",
        ];
        let mut english = CharLm::count(&vocab, 4, sentences, BeamSearch::default()).unwrap();
        english.search = BeamSearch {
            beam_width: 16,
            lm_weight: 0.4,
            length_bonus: 1.5,
            min_sure_fraction: 0.0,
            max_length_ratio: 0.0,
        };
        let greedy = greedy_decode(&noise, classes, &vocab).unwrap();
        let written = beam_decode(&noise, classes, &vocab, &english, english.search).unwrap();
        assert_ne!(
            written.text, greedy.text,
            "the language model writes its own text"
        );
        let guarded = BeamSearch {
            min_sure_fraction: 0.5,
            ..english.search
        };
        let read = beam_decode(&noise, classes, &vocab, &english, guarded).unwrap();
        assert!(read.guarded && !written.guarded);
        assert_eq!((read.text, read.chars), (greedy.text, greedy.chars));

        // Steps the network is sure are gaps, with a little of every letter: greedy reads
        // nothing, and a large enough bonus makes the beam fill the line anyway, unless its
        // text may be at most four times greedy's plus one.
        let faint = 0.2 / (classes - 1) as f32;
        let gaps: Vec<f32> = (0..60)
            .flat_map(|_| (0..classes).map(|c| if c == 0 { 0.8f32 } else { faint }.ln()))
            .collect();
        assert!(sure_fraction(&gaps, classes) > 0.99);
        let eager = BeamSearch {
            length_bonus: 5.0,
            ..english.search
        };
        assert_eq!(greedy_decode(&gaps, classes, &vocab).unwrap().text, "");
        let filled = beam_decode(&gaps, classes, &vocab, &english, eager).unwrap();
        assert!(filled.text.len() > 4, "{:?}", filled.text);
        let capped = BeamSearch {
            max_length_ratio: 4.0,
            ..eager
        };
        assert_eq!(
            beam_decode(&gaps, classes, &vocab, &english, capped)
                .unwrap()
                .text,
            ""
        );

        // Writing the network reads surely is still the beam's: it mends a look-alike.
        let clear = thc_by_a_hair(&vocab);
        assert!(sure_fraction(&clear, classes) > 0.8);
        assert_eq!(greedy_decode(&clear, classes, &vocab).unwrap().text, "thc");
        let both = BeamSearch {
            max_length_ratio: 4.0,
            ..guarded
        };
        let read = beam_decode(&clear, classes, &vocab, &english, both).unwrap();
        assert_eq!(read.text, "the");
        assert!(!read.guarded);
    }

    #[test]
    fn alignment_holds_repeats_apart_with_a_blank() {
        let vocab = Vocabulary::from_chars("lo".chars()).unwrap();
        let path = [1, 1, 0, 1, 2, 2, 0];
        let scores: Vec<f32> = path.iter().flat_map(|&c| step(3, c, 0.9)).collect();
        let flat = lm(&vocab, &["llo"], 0.0, 0.0);
        let decoded = beam_decode(&scores, 3, &vocab, &flat, flat.search).unwrap();
        assert_eq!(decoded, greedy_decode(&scores, 3, &vocab).unwrap());
        assert_eq!(
            align(&scores[..12], 3, &[1, 1, 2, 2]),
            None,
            "4 steps cannot spell l-l-o-o"
        );
        assert_eq!(
            beam_decode(&[], 3, &vocab, &flat, flat.search)
                .unwrap()
                .text,
            ""
        );
    }
}
