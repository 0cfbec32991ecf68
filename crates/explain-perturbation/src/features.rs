//! Features: which tokens are perturbed together. Every feature is a contiguous span of
//! token positions: single tokens, words, sentences, spans the user gives, or sliding windows
//! (occlusion). Tokens outside every feature are never perturbed.

use std::ops::Range;

use explainability_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the input's tokens are grouped into features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FeatureKind {
    /// One feature per token.
    #[default]
    Tokens,
    /// One feature per word: a token whose text starts with whitespace (or follows a token
    /// ending in whitespace) starts a new word.
    Words,
    /// One feature per sentence: a token after one ending in `.`, `!`, `?` or holding a line
    /// break starts a new sentence.
    Sentences,
    /// The given token spans (`start..end`), e.g. the documents of a prompt template.
    Spans(Vec<Range<usize>>),
    /// Sliding windows of `width` tokens every `stride` tokens (occlusion); the last window
    /// ends at the last token. A token's score is the mean over the windows covering it.
    Windows {
        /// Tokens per window (≥ 1).
        width: usize,
        /// Step between window starts (≥ 1).
        stride: usize,
    },
}

impl FeatureKind {
    /// The features of an input of `tokens.len()` tokens (`tokens`: each token's text).
    ///
    /// # Errors
    /// [`Error::SpanOutOfRange`] for an empty span or one past the input;
    /// [`Error::InvalidArgument`] for a zero window width or stride; [`Error::EmptyText`].
    pub fn spans(&self, tokens: &[String]) -> Result<Vec<Range<usize>>> {
        let n = tokens.len();
        if n == 0 {
            return Err(Error::EmptyText);
        }
        Ok(match self {
            FeatureKind::Tokens => (0..n).map(|i| i..i + 1).collect(),
            FeatureKind::Words => split(n, |i| {
                tokens[i].starts_with(char::is_whitespace)
                    || tokens[i - 1].ends_with(char::is_whitespace)
            }),
            FeatureKind::Sentences => split(n, |i| {
                let previous = tokens[i - 1].trim_end_matches([' ', '\t']);
                previous.contains('\n') || previous.ends_with(['.', '!', '?'])
            }),
            FeatureKind::Spans(spans) => {
                for s in spans {
                    if s.start >= s.end || s.end > n {
                        return Err(Error::SpanOutOfRange { start: s.start, end: s.end, len: n });
                    }
                }
                spans.clone()
            }
            &FeatureKind::Windows { width, stride } => {
                if width == 0 || stride == 0 {
                    return Err(Error::invalid_argument(
                        "occlusion windows need a width and a stride of at least 1",
                    ));
                }
                let width = width.min(n);
                let mut out: Vec<Range<usize>> =
                    (0..=n - width).step_by(stride).map(|s| s..s + width).collect();
                if out.last().is_some_and(|r| r.end < n) {
                    out.push(n - width..n);
                }
                out
            }
        })
    }
}

/// Contiguous features of `0..n`, a new one starting at each `i ≥ 1` where `starts(i)`.
fn split(n: usize, starts: impl Fn(usize) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut begin = 0;
    for i in 1..n {
        if starts(i) {
            out.push(begin..i);
            begin = i;
        }
    }
    out.push(begin..n);
    out
}

/// Per-token scores from per-feature scores: each token gets the mean score of the features
/// covering it (its group's score for a partition; Captum's `Occlusion` averaging for
/// overlapping windows), 0 when none covers it.
pub fn token_scores(features: &[Range<usize>], feature_scores: &[f64], n: usize) -> Vec<f64> {
    let mut sum = vec![0.0; n];
    let mut count = vec![0usize; n];
    for (span, &score) in features.iter().zip(feature_scores) {
        for t in span.clone() {
            sum[t] += score;
            count[t] += 1;
        }
    }
    sum.iter().zip(count).map(|(s, c)| if c == 0 { 0.0 } else { s / c as f64 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn words_sentences_windows_and_spans() {
        let t = toks(&["The", " cap", "ital", " is", " Paris", ".", " It", " is", " big", "."]);
        assert_eq!(
            FeatureKind::Words.spans(&t).unwrap(),
            vec![0..1, 1..3, 3..4, 4..6, 6..7, 7..8, 8..10]
        );
        assert_eq!(FeatureKind::Sentences.spans(&t).unwrap(), vec![0..6, 6..10]);
        assert_eq!(FeatureKind::Tokens.spans(&t).unwrap().len(), 10);
        assert_eq!(
            FeatureKind::Windows { width: 4, stride: 3 }.spans(&t).unwrap(),
            vec![0..4, 3..7, 6..10]
        );
        assert_eq!(
            FeatureKind::Windows { width: 4, stride: 4 }.spans(&t).unwrap(),
            vec![0..4, 4..8, 6..10]
        );
        assert!(matches!(
            FeatureKind::Spans(vec![0..2, 8..11]).spans(&t),
            Err(Error::SpanOutOfRange { start: 8, end: 11, len: 10 })
        ));
        assert!(matches!(
            FeatureKind::Spans(vec![0..1, 3..3]).spans(&t),
            Err(Error::SpanOutOfRange { .. })
        ));
        assert!(matches!(
            FeatureKind::Windows { width: 0, stride: 1 }.spans(&t),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(FeatureKind::Tokens.spans(&[]), Err(Error::EmptyText)));
    }

    #[test]
    fn token_scores_average_overlapping_windows() {
        let s = token_scores(&[0..2, 1..3], &[2.0, 4.0], 4);
        assert_eq!(s, vec![2.0, 3.0, 4.0, 0.0]);
    }
}
