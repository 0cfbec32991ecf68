//! Explanations computed elsewhere (another tool, an earlier run, a timed pass), served to the
//! evaluator as an explainer, so that every method — ours or an anchor's — is scored by the same
//! metric code on the same inputs.

use std::collections::HashMap;

use explainability_core::{
    Error, Explainer, Explanation, ForwardOptions, Hooks, LanguageModel, Result, Target,
    tch::Tensor,
};

/// An explainer that answers from stored explanations, looked up by token ids.
///
/// The requested target is resolved on the model and must equal the stored explanation's
/// (resolved) target: an explanation of another token is never scored silently as this one's.
/// Inputs it has no explanation for are an error ([`Error::InvalidArgument`]), so metrics that
/// re-explain perturbed inputs (stability, parameter randomisation) fail loudly on it.
///
/// # Examples
/// ```no_run
/// use explain_eval::PrecomputedExplainer;
/// # fn stored() -> Vec<explainability_core::Explanation> { Vec::new() }
/// let anchor = PrecomputedExplainer::new("captum_ig", stored());
/// ```
#[derive(Debug, Clone)]
pub struct PrecomputedExplainer {
    name: String,
    by_ids: HashMap<Vec<i64>, Explanation>,
}

impl PrecomputedExplainer {
    /// Serves `explanations` under the method name `name` (a later explanation of the same
    /// token ids replaces an earlier one).
    pub fn new(
        name: impl Into<String>,
        explanations: impl IntoIterator<Item = Explanation>,
    ) -> Self {
        let name = name.into();
        let by_ids = explanations
            .into_iter()
            .map(|mut e| {
                e.method.clone_from(&name);
                (e.token_ids.clone(), e)
            })
            .collect();
        Self { name, by_ids }
    }

    /// Number of stored explanations.
    pub fn len(&self) -> usize {
        self.by_ids.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.by_ids.is_empty()
    }
}

impl Explainer for PrecomputedExplainer {
    fn name(&self) -> &str {
        &self.name
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        let Some(stored) = self.by_ids.get(ids) else {
            return Err(Error::invalid_argument(format!(
                "{} has no stored explanation for these {} tokens",
                self.name,
                ids.len()
            )));
        };
        let input = Tensor::from_slice(ids).unsqueeze(0).to_device(model.device());
        let out = model.forward_ids(&input, &ForwardOptions::default(), &mut Hooks::new())?;
        let resolved = target.resolve(&out.logits)?;
        if resolved != stored.target {
            return Err(Error::invalid_argument(format!(
                "{}'s stored explanation is of {:?}, not of the requested {:?}",
                self.name, stored.target, resolved
            )));
        }
        Ok(stored.clone())
    }
}
