//! Model comparison: several models that share a vocabulary on the same text — each model's
//! prediction, confidence and top-k, who disagrees with the majority, and the Jensen–Shannon
//! divergence between their next-token distributions; over a dataset, agreement rates, mean
//! divergences and how similar their explanations are (Spearman, top-k Jaccard) per method.

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use explainability_core::{
    Error, ForwardOptions, Hooks, LanguageModel, Result, Target, TargetToken, TokenPrediction,
};

use crate::framework::{Framework, ranks};

/// Ids whose strings are compared to decide that two vocabularies are the same.
const VOCABULARY_PROBES: usize = 512;

/// Compares named models on the same inputs.
///
/// # Examples
/// ```no_run
/// use explainability::{ModelComparison, LoadOptions, Precision, load, load_with, smollm2_gguf_path};
/// let fp32 = load(smollm2_gguf_path())?;
/// let bf16 = load_with(smollm2_gguf_path(), LoadOptions::default().precision(Precision::Bf16))?;
/// let comparison = ModelComparison::new(vec![("fp32", &fp32 as _), ("bf16", &bf16 as _)])?;
/// let result = comparison.compare("The capital of France is")?;
/// println!("all agree: {}", result.all_agree);
/// # Ok::<(), explainability::Error>(())
/// ```
pub struct ModelComparison<'m> {
    models: Vec<(String, &'m dyn LanguageModel)>,
    top_k: usize,
    jaccard_k: usize,
    progress: bool,
}

impl std::fmt::Debug for ModelComparison<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.models.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ModelComparison").field("models", &names).finish()
    }
}

impl<'m> ModelComparison<'m> {
    /// Models under the names reports use. Checks that they share a vocabulary (same size,
    /// same token strings on a spread of ids).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no models or repeated names;
    /// [`Error::VocabularyMismatch`] naming the two models that differ.
    pub fn new(models: Vec<(impl Into<String>, &'m dyn LanguageModel)>) -> Result<Self> {
        let models: Vec<(String, &'m dyn LanguageModel)> =
            models.into_iter().map(|(n, m)| (n.into(), m)).collect();
        let Some((first_name, first)) = models.first() else {
            return Err(Error::invalid_argument("a model comparison needs at least one model"));
        };
        for (i, (name, _)) in models.iter().enumerate() {
            if models[..i].iter().any(|(n, _)| n == name) {
                return Err(Error::invalid_argument(format!("model name {name:?} is used twice")));
            }
        }
        let vocab = first.info().vocab_size;
        let step = (vocab / VOCABULARY_PROBES).max(1);
        let probes: Vec<i64> =
            (0..vocab).step_by(step).chain(vocab.checked_sub(1)).map(|i| i as i64).collect();
        let reference = first.token_strings(&probes)?;
        for (name, model) in &models[1..] {
            let mismatch = |reason: String| Error::VocabularyMismatch {
                first: first_name.clone(),
                second: name.clone(),
                reason,
            };
            if model.info().vocab_size != vocab {
                return Err(mismatch(format!(
                    "{} tokens versus {}",
                    vocab,
                    model.info().vocab_size
                )));
            }
            let strings = model.token_strings(&probes)?;
            if let Some(i) = (0..probes.len()).find(|&i| strings[i] != reference[i]) {
                return Err(mismatch(format!(
                    "token {} is {:?} versus {:?}",
                    probes[i], reference[i], strings[i]
                )));
            }
        }
        Ok(Self { models, top_k: 5, jaccard_k: 3, progress: true })
    }

    /// Candidates listed per model (default 5).
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k.max(1);
        self
    }

    /// `k` of the top-k Jaccard similarity of explanations (default 3).
    pub fn jaccard_k(mut self, k: usize) -> Self {
        self.jaccard_k = k.max(1);
        self
    }

    /// Show a progress bar over datasets (default on).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Model names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Each model's next-token prediction after `text`, the majority, who disagrees, and the
    /// pairwise Jensen–Shannon divergence (nats) between the next-token distributions.
    ///
    /// # Errors
    /// [`Error::EmptyText`], [`Error::VocabularyMismatch`] when the models tokenise `text`
    /// differently, model errors.
    pub fn compare(&self, text: &str) -> Result<TextComparison> {
        Ok(self.compare_with_distributions(text)?.0)
    }

    fn compare_with_distributions(&self, text: &str) -> Result<(TextComparison, Vec<i64>)> {
        let (first_name, first) = &self.models[0];
        let ids = first.encode(text, true)?;
        let tokens = first.token_strings(&ids)?;
        let mut predictions = Vec::with_capacity(self.models.len());
        let mut distributions = Vec::with_capacity(self.models.len());
        for (name, model) in &self.models {
            let own = model.encode(text, true)?;
            if own != ids {
                return Err(Error::VocabularyMismatch {
                    first: first_name.clone(),
                    second: name.clone(),
                    reason: format!("{text:?} tokenises to {ids:?} versus {own:?}"),
                });
            }
            let log_probs = next_token_log_probs(*model, &ids)?;
            predictions.push(prediction(name, *model, &log_probs, self.top_k)?);
            distributions.push(log_probs);
        }
        let n = self.models.len();
        let mut js = Array2::<f64>::zeros((n, n));
        for a in 0..n {
            for b in a + 1..n {
                let d = jensen_shannon(&distributions[a], &distributions[b])?;
                js[[a, b]] = d;
                js[[b, a]] = d;
            }
        }
        // Majority: most votes; ties go to the higher summed probability.
        let mut votes: Vec<(i64, usize, f64)> = Vec::new();
        for p in &predictions {
            match votes.iter_mut().find(|(id, _, _)| *id == p.prediction.id) {
                Some(v) => {
                    v.1 += 1;
                    v.2 += p.prediction.probability;
                }
                None => votes.push((p.prediction.id, 1, p.prediction.probability)),
            }
        }
        votes.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)));
        let (majority_id, majority_votes, _) = votes[0];
        let majority = predictions
            .iter()
            .find(|p| p.prediction.id == majority_id)
            .map(|p| p.prediction.token.clone())
            .unwrap_or_default();
        let disagreeing = predictions
            .iter()
            .filter(|p| p.prediction.id != majority_id)
            .map(|p| p.model.clone())
            .collect::<Vec<_>>();
        let comparison = TextComparison {
            text: text.to_owned(),
            tokens,
            models: self.names().into_iter().map(str::to_owned).collect(),
            all_agree: disagreeing.is_empty(),
            predictions,
            majority_id,
            majority,
            majority_votes,
            disagreeing,
            js_divergence: js,
        };
        Ok((comparison, ids))
    }

    /// Compares the models over `texts`: agreement of their predictions, mean JS divergence,
    /// and for each of `methods` of `framework` the similarity of the models' explanations.
    ///
    /// All models explain the same target: `target` with an argmax token resolved on the
    /// first model, so that explanations answer the same question. A text whose tokenisation
    /// or explanation fails is counted in `failures` with its message and left out.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty dataset or when every text failed;
    /// [`Error::UnknownMethod`].
    pub fn compare_dataset<I, S>(
        &self,
        texts: I,
        framework: &Framework,
        methods: &[&str],
        target: &Target,
    ) -> Result<DatasetComparison>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for m in methods {
            framework.get(m)?;
        }
        let texts: Vec<String> = texts.into_iter().map(|t| t.as_ref().to_owned()).collect();
        if texts.is_empty() {
            return Err(Error::invalid_argument("model comparison over an empty dataset"));
        }
        let n = self.models.len();
        let bar = if self.progress {
            let bar = ProgressBar::new(texts.len() as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} texts, eta {eta}")
            {
                bar.set_style(style);
            }
            bar.set_message("comparing models");
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut agree_all = 0usize;
        let mut pair_agree = Array2::<f64>::zeros((n, n));
        let mut js_sum = Array2::<f64>::zeros((n, n));
        let mut sims: Vec<SimilarityAccumulator> =
            methods.iter().map(|m| SimilarityAccumulator::new(m, n)).collect();
        let mut compared = 0usize;
        let mut failures = Vec::new();
        for text in &texts {
            bar.inc(1);
            let (c, ids) = match self.compare_with_distributions(text) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(TextFailure { text: text.clone(), message: e.to_string() });
                    continue;
                }
            };
            compared += 1;
            agree_all += usize::from(c.all_agree);
            for a in 0..n {
                for b in 0..n {
                    pair_agree[[a, b]] += f64::from(u8::from(
                        c.predictions[a].prediction.id == c.predictions[b].prediction.id,
                    ));
                }
            }
            js_sum += &c.js_divergence;
            let resolved = resolve_on(target, c.predictions[0].prediction.id);
            for acc in &mut sims {
                let mut explanations = Vec::with_capacity(n);
                for (_, model) in &self.models {
                    match framework.explain_ids(*model, &ids, &acc.method, &resolved) {
                        Ok(e) => explanations.push(e),
                        Err(e) => {
                            failures.push(TextFailure {
                                text: text.clone(),
                                message: format!("{}: {e}", acc.method),
                            });
                            break;
                        }
                    }
                }
                if explanations.len() == n {
                    acc.add(&explanations, self.jaccard_k);
                }
            }
        }
        bar.finish_and_clear();
        if compared == 0 {
            return Err(Error::invalid_argument(format!(
                "every text of the dataset failed; first: {}",
                failures.first().map_or("", |f| f.message.as_str())
            )));
        }
        let count = compared as f64;
        Ok(DatasetComparison {
            models: self.names().into_iter().map(str::to_owned).collect(),
            n_texts: compared,
            agreement_rate: agree_all as f64 / count,
            pairwise_agreement: pair_agree / count,
            mean_js_divergence: js_sum / count,
            explanation_similarity: sims.into_iter().map(|s| s.finish()).collect(),
            failures,
        })
    }
}

/// `target` with an argmax token replaced by `id`.
fn resolve_on(target: &Target, id: i64) -> Target {
    match target {
        Target::Token { token: TargetToken::Argmax, output, position } => {
            Target::Token { token: TargetToken::Id(id), output: *output, position: *position }
        }
        other => other.clone(),
    }
}

/// `[vocab]` f64 log-probabilities of the next token after `ids`.
fn next_token_log_probs(model: &dyn LanguageModel, ids: &[i64]) -> Result<Tensor> {
    let input = Tensor::f_from_slice(ids)?.f_unsqueeze(0)?.f_to_device(model.device())?;
    let _guard = tch::no_grad_guard();
    let options = ForwardOptions { logits_from: Some(ids.len() - 1), ..Default::default() };
    let out = model.forward_ids(&input, &options, &mut Hooks::new())?;
    Ok(out
        .logits
        .f_select(0, 0)?
        .f_select(0, -1)?
        .f_to_kind(Kind::Double)?
        .f_log_softmax(-1, Kind::Double)?)
}

fn prediction(
    name: &str,
    model: &dyn LanguageModel,
    log_probs: &Tensor,
    k: usize,
) -> Result<ModelPrediction> {
    let probs = log_probs.f_exp()?;
    let entropy = -(probs.f_mul(log_probs)?.f_sum(Kind::Double)?.f_double_value(&[])?);
    let k = k.min(model.info().vocab_size).max(1) as i64;
    let (values, indices) = log_probs.f_topk(k, -1, true, true)?;
    let ids = Vec::<i64>::try_from(&indices)?;
    let lps = Vec::<f64>::try_from(&values)?;
    let strings = model.token_strings(&ids)?;
    // Logits are log-probabilities up to a constant; report the log-probability as "logit"
    // relative to the log-sum-exp, which is what makes models comparable.
    let top: Vec<TokenPrediction> = ids
        .iter()
        .zip(&lps)
        .zip(strings)
        .map(|((&id, &lp), token)| TokenPrediction { id, token, probability: lp.exp(), logit: lp })
        .collect();
    let prediction = top[0].clone();
    Ok(ModelPrediction { model: name.to_owned(), prediction, top_k: top, entropy })
}

/// JS(P‖Q) = ½ KL(P‖M) + ½ KL(Q‖M), M = ½(P + Q), in nats, from log-probabilities.
fn jensen_shannon(log_p: &Tensor, log_q: &Tensor) -> Result<f64> {
    let p = log_p.f_exp()?;
    let q = log_q.f_exp()?;
    let m = p.f_add(&q)?.f_mul_scalar(0.5)?;
    let log_m = m.f_log()?;
    // xlogy-style: terms with p = 0 contribute 0 (exp of a finite log-prob is never exactly 0
    // in f64 for these vocabularies, but guard anyway).
    let kl = |x: &Tensor, log_x: &Tensor| -> Result<f64> {
        let terms = x.f_mul(&log_x.f_sub(&log_m)?)?;
        let terms = terms.f_nan_to_num(0.0, 0.0, 0.0)?;
        Ok(terms.f_sum(Kind::Double)?.f_double_value(&[])?)
    };
    Ok((0.5 * kl(&p, log_p)? + 0.5 * kl(&q, log_q)?).max(0.0))
}

/// One model's next-token prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPrediction {
    /// The model's name.
    pub model: String,
    /// Its top-1 token (`logit` holds the log-probability, comparable across models).
    pub prediction: TokenPrediction,
    /// Its top-k tokens.
    pub top_k: Vec<TokenPrediction>,
    /// Entropy of its next-token distribution, nats.
    pub entropy: f64,
}

/// The models' predictions on one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextComparison {
    /// The text.
    pub text: String,
    /// Its tokens.
    pub tokens: Vec<String>,
    /// Model names, in order.
    pub models: Vec<String>,
    /// One prediction per model.
    pub predictions: Vec<ModelPrediction>,
    /// The majority's token id.
    pub majority_id: i64,
    /// The majority's token.
    pub majority: String,
    /// How many models predict it.
    pub majority_votes: usize,
    /// Models whose prediction differs from the majority.
    pub disagreeing: Vec<String>,
    /// Whether every model predicts the same token.
    pub all_agree: bool,
    /// Pairwise Jensen–Shannon divergence of the next-token distributions, nats.
    pub js_divergence: Array2<f64>,
}

/// How similar two models' explanations are under one method, averaged over texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanationSimilarity {
    /// The method.
    pub method: String,
    /// Mean Spearman rank correlation of the scores, per pair of models.
    pub spearman: Array2<f64>,
    /// Mean Jaccard index of the top-k tokens by |score|, per pair of models.
    pub top_k_jaccard: Array2<f64>,
    /// `k` of the Jaccard index.
    pub k: usize,
    /// Texts that entered the means.
    pub n_texts: usize,
}

/// A text left out of a dataset comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextFailure {
    /// The text.
    pub text: String,
    /// Why.
    pub message: String,
}

/// The models compared over a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetComparison {
    /// Model names, in order.
    pub models: Vec<String>,
    /// Texts compared.
    pub n_texts: usize,
    /// Share of texts on which every model predicts the same token.
    pub agreement_rate: f64,
    /// Share of texts on which models a and b agree.
    pub pairwise_agreement: Array2<f64>,
    /// Mean pairwise Jensen–Shannon divergence, nats.
    pub mean_js_divergence: Array2<f64>,
    /// Per method, how similar the models' explanations are.
    pub explanation_similarity: Vec<ExplanationSimilarity>,
    /// Texts (or methods on a text) that failed.
    pub failures: Vec<TextFailure>,
}

struct SimilarityAccumulator {
    method: String,
    spearman: Array2<f64>,
    jaccard: Array2<f64>,
    k: usize,
    n: usize,
}

impl SimilarityAccumulator {
    fn new(method: &str, models: usize) -> Self {
        Self {
            method: method.to_owned(),
            spearman: Array2::zeros((models, models)),
            jaccard: Array2::zeros((models, models)),
            k: 0,
            n: 0,
        }
    }

    fn add(&mut self, explanations: &[explainability_core::Explanation], k: usize) {
        let m = explanations.len();
        for a in 0..m {
            for b in 0..m {
                self.spearman[[a, b]] += spearman(&explanations[a].scores, &explanations[b].scores);
                self.jaccard[[a, b]] += top_k_jaccard(&explanations[a], &explanations[b], k);
            }
        }
        self.k = k;
        self.n += 1;
    }

    fn finish(self) -> ExplanationSimilarity {
        let n = self.n.max(1) as f64;
        ExplanationSimilarity {
            method: self.method,
            spearman: self.spearman / n,
            top_k_jaccard: self.jaccard / n,
            k: self.k,
            n_texts: self.n,
        }
    }
}

/// Spearman rank correlation of two score vectors (signed scores, ties share ranks); 1 when
/// both are constant and equal in length, 0 when only one is constant.
pub fn spearman(a: &ndarray::Array1<f64>, b: &ndarray::Array1<f64>) -> f64 {
    let signed_ranks = |s: &ndarray::Array1<f64>| {
        // Rank the signed values: shift so that |·| ordering equals value ordering.
        let min = s.iter().copied().fold(f64::INFINITY, f64::min);
        ranks(&s.mapv(|v| v - min))
    };
    let (ra, rb) = (signed_ranks(a), signed_ranks(b));
    let (ma, mb) = (ra.mean().unwrap_or(0.0), rb.mean().unwrap_or(0.0));
    let (da, db) = (ra - ma, rb - mb);
    let (va, vb) = (da.dot(&da), db.dot(&db));
    if va == 0.0 && vb == 0.0 {
        1.0
    } else if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        da.dot(&db) / (va * vb).sqrt()
    }
}

/// Jaccard index of the top-`k` tokens by |score| of two explanations of the same tokens.
pub fn top_k_jaccard(
    a: &explainability_core::Explanation,
    b: &explainability_core::Explanation,
    k: usize,
) -> f64 {
    let ta: Vec<usize> = a.ranking().into_iter().take(k).collect();
    let tb: Vec<usize> = b.ranking().into_iter().take(k).collect();
    let inter = ta.iter().filter(|i| tb.contains(i)).count();
    let union = ta.len() + tb.len() - inter;
    if union == 0 { 1.0 } else { inter as f64 / union as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    #[test]
    fn spearman_by_hand() {
        assert_abs_diff_eq!(spearman(&array![1.0, 2.0, 3.0], &array![10.0, 20.0, 30.0]), 1.0);
        assert_abs_diff_eq!(spearman(&array![1.0, 2.0, 3.0], &array![3.0, 2.0, 1.0]), -1.0);
        // Signed: −5 is the smallest value, not the largest magnitude.
        assert_abs_diff_eq!(spearman(&array![-5.0, 1.0, 2.0], &array![0.0, 1.0, 2.0]), 1.0);
        assert_abs_diff_eq!(spearman(&array![1.0, 1.0], &array![1.0, 2.0]), 0.0);
    }

    #[test]
    fn js_divergence_anchors() {
        let p = Tensor::from_slice(&[0.5f64, 0.5]).log();
        let q = Tensor::from_slice(&[1.0f64 - 1e-300, 1e-300]).log();
        assert_abs_diff_eq!(jensen_shannon(&p, &p).unwrap(), 0.0, epsilon = 1e-15);
        // JS of [½,½] and [1,0]: ½·(½ ln(½/¾)·… ) = ln 2 − ¾ ln(4/3)·… ; closed form below.
        let want = 0.5 * (0.5 * (0.5f64 / 0.75).ln() + 0.5 * (0.5f64 / 0.25).ln())
            + 0.5 * (1.0f64 / 0.75).ln();
        assert_abs_diff_eq!(jensen_shannon(&p, &q).unwrap(), want, epsilon = 1e-12);
        assert!(jensen_shannon(&p, &q).unwrap() <= std::f64::consts::LN_2);
    }
}
