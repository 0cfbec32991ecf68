//! A seeded random explainer: the control against which real methods are judged.

use explainability_core::{
    Error, Explainer, Explanation, LanguageModel, ResolvedTarget, Result, SharedPasses, SplitMix64,
    Target, ndarray::Array1,
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
        self.draw(model, ids, ResolvedTarget::of(model, ids, target)?)
    }

    /// Reads the target another method resolved on the same input, instead of a forward pass.
    fn explain_ids_shared(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
        shared: &mut SharedPasses,
    ) -> Result<Explanation> {
        let resolved = shared.resolve(model, ids, target)?;
        self.draw(model, ids, resolved)
    }
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
