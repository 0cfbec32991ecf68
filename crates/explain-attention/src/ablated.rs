//! A model with some attention heads ablated, usable wherever a [`LanguageModel`] is: every
//! explainer, the evaluation metrics and model comparison see the ablated circuit.

use explainability_core::{
    ForwardOptions, HookFilter, HookPoint, Hooks, LanguageModel, ModelInfo, ModelOutput, Result,
};
use tch::{Device, Kind, Tensor};

use crate::roles::HeadAblation;

/// `inner` with the heads of `ablation` replaced through `blocks.{l}.attn.hook_z` on every
/// forward pass. The caller's own hooks still fire, after the ablation, on every point they
/// select.
///
/// # Examples
/// ```no_run
/// use explain_attention::{AblatedModel, AblationMode, HeadAblation};
/// use explainability_core::LanguageModel;
/// let model = explain_models::load(explain_models::smollm2_gguf_path())?;
/// let ablation = HeadAblation { heads: vec![(18, 6), (17, 4)], mode: AblationMode::Mean };
/// let ablated = AblatedModel::new(&model, ablation)?;
/// println!("{:?}", ablated.top_next_tokens("The capital of France is", 3)?);
/// # Ok::<(), explainability_core::Error>(())
/// ```
pub struct AblatedModel<'m> {
    inner: &'m dyn LanguageModel,
    ablation: HeadAblation,
}

impl<'m> AblatedModel<'m> {
    /// Wraps `inner`.
    ///
    /// # Errors
    /// [`explainability_core::Error::LayerOutOfRange`] / `HeadOutOfRange` for heads the model
    /// does not have.
    pub fn new(inner: &'m dyn LanguageModel, ablation: HeadAblation) -> Result<Self> {
        ablation.validate(inner.info())?;
        Ok(Self { inner, ablation })
    }

    /// The ablation applied.
    pub fn ablation(&self) -> &HeadAblation {
        &self.ablation
    }
}

impl std::fmt::Debug for AblatedModel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AblatedModel")
            .field("model", &self.inner.info().name)
            .field("ablation", &self.ablation)
            .finish()
    }
}

impl LanguageModel for AblatedModel<'_> {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    fn device(&self) -> Device {
        self.inner.device()
    }

    fn kind(&self) -> Kind {
        self.inner.kind()
    }

    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        self.inner.encode(text, add_special_tokens)
    }

    fn decode(&self, ids: &[i64]) -> Result<String> {
        self.inner.decode(ids)
    }

    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        self.inner.token_strings(ids)
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.inner.embed(ids)
    }

    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        let info = self.inner.info();
        // Only the points the caller selects are forwarded to its hooks, so that a caller
        // without pattern hooks keeps the fused attention path.
        let wanted: Vec<HookPoint> =
            HookPoint::all(info.n_layers).into_iter().filter(|p| hooks.wants(p)).collect();
        let mut own = Hooks::new();
        self.ablation.install(info, &mut own)?;
        if !wanted.is_empty() {
            own.replace(HookFilter::points(wanted), |point, activation| {
                hooks.fire(*point, activation.shallow_clone())
            });
        }
        self.inner.forward_embeddings(embeddings, options, &mut own)
    }

    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor> {
        self.inner.unembed(final_hidden)
    }

    fn final_norm(
        &self,
        residual: &Tensor,
        scale: explainability_core::NormScale<'_>,
    ) -> Result<Tensor> {
        self.inner.final_norm(residual, scale)
    }

    fn norm_at(
        &self,
        point: HookPoint,
        input: &Tensor,
        scale: explainability_core::NormScale<'_>,
    ) -> Result<Tensor> {
        self.inner.norm_at(point, input, scale)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.inner.named_parameters()
    }
}
