//! A seeded random explainer: the control against which real methods are judged.

use explainability_core::{
    Error, Explainer, Explanation, ForwardOptions, Hooks, LanguageModel, RESOLVED_TARGET,
    ResolvedTarget, Result, SharedPasses, SplitMix64, Target, ndarray::Array1, tch::Tensor,
};

/// Scores every token with an independent standard normal draw. The stream depends only on
/// the seed and the token ids (so the same input gets bit-identical scores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomExplainer {
    /// Seed of the stream.
    pub seed: u64,
}

impl RandomExplainer {
    /// A random explainer with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

impl Explainer for RandomExplainer {
    fn name(&self) -> &str {
        "random"
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        let resolved = resolve(model, ids, target)?;
        self.draw(model, ids, resolved)
    }

    /// Reads the target another method resolved on the same input, instead of a forward pass.
    fn explain_ids_shared(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
        shared: &mut SharedPasses,
    ) -> Result<Explanation> {
        let resolved = match shared.resolved_target(ids, target) {
            Some(r) => r.clone(),
            None => {
                let r = resolve(model, ids, target)?;
                shared.insert(RESOLVED_TARGET, ids, target, r.clone());
                r
            }
        };
        self.draw(model, ids, resolved)
    }
}

/// The target resolved on the clean logits, and its value.
fn resolve(model: &dyn LanguageModel, ids: &[i64], target: &Target) -> Result<ResolvedTarget> {
    if ids.is_empty() {
        return Err(Error::EmptyText);
    }
    let input = Tensor::from_slice(ids).unsqueeze(0).to_device(model.device());
    let _guard = explainability_core::tch::no_grad_guard();
    let out = model.forward_ids(&input, &ForwardOptions::default(), &mut Hooks::new())?;
    let resolved = target.resolve(&out.logits)?;
    let value = resolved.evaluate(&out.logits)?.f_double_value(&[0])?;
    Ok(ResolvedTarget { target: resolved, value })
}

impl RandomExplainer {
    fn draw(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        resolved: ResolvedTarget,
    ) -> Result<Explanation> {
        if ids.is_empty() {
            return Err(Error::EmptyText);
        }
        let mut seed = self.seed;
        for &id in ids {
            seed = seed.rotate_left(7) ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        let mut rng = SplitMix64::new(seed);
        let scores = Array1::from_iter(ids.iter().map(|_| rng.normal()));
        let mut e = Explanation::new(
            "random",
            ids.to_vec(),
            model.token_strings(ids)?,
            scores,
            resolved.target,
        )?;
        e.target_value = Some(resolved.value);
        e.metadata.insert("seed".into(), serde_json::json!(self.seed));
        Ok(e)
    }
}
