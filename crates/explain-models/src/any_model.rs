//! The model [`crate::load`] returns: a decoder of any family or a BERT encoder, implementing
//! [`LanguageModel`] by delegation.

use explainability_core::{
    BackwardMemory, BlockwiseForward, ForwardOptions, HookPoint, Hooks, LanguageModel, ModelInfo,
    ModelOutput, NormScale, Result,
};
use tch::{Device, Kind, Tensor};

use crate::bert::BertModel;
use crate::decoder_model::DecoderModel;

/// A loaded model of any supported family.
// A model is built once and then borrowed; the size of the enum itself does not matter, and
// boxing would make every match on it read worse.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyModel {
    /// A decoder-only model (Llama, Mistral, Qwen2, Qwen3, Gemma 3, GPT-2, …).
    Decoder(DecoderModel),
    /// A BERT-style encoder.
    Bert(BertModel),
}

impl AnyModel {
    /// The decoder, if this is one.
    pub fn as_decoder(&self) -> Option<&DecoderModel> {
        match self {
            AnyModel::Decoder(m) => Some(m),
            AnyModel::Bert(_) => None,
        }
    }

    /// The encoder, if this is one.
    pub fn as_bert(&self) -> Option<&BertModel> {
        match self {
            AnyModel::Bert(m) => Some(m),
            AnyModel::Decoder(_) => None,
        }
    }

    fn inner(&self) -> &dyn LanguageModel {
        match self {
            AnyModel::Decoder(m) => m,
            AnyModel::Bert(m) => m,
        }
    }
}

impl LanguageModel for AnyModel {
    fn info(&self) -> &ModelInfo {
        self.inner().info()
    }
    fn device(&self) -> Device {
        self.inner().device()
    }
    fn kind(&self) -> Kind {
        self.inner().kind()
    }
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        self.inner().encode(text, add_special_tokens)
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        self.inner().decode(ids)
    }
    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        self.inner().token_strings(ids)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.inner().embed(ids)
    }
    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        self.inner().forward_embeddings(embeddings, options, hooks)
    }
    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor> {
        self.inner().unembed(final_hidden)
    }
    fn supports_key_value_cache(&self) -> bool {
        self.inner().supports_key_value_cache()
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.inner().named_parameters()
    }
    fn final_norm(&self, residual: &Tensor, scale: NormScale<'_>) -> Result<Tensor> {
        self.inner().final_norm(residual, scale)
    }
    fn norm_at(&self, point: HookPoint, input: &Tensor, scale: NormScale<'_>) -> Result<Tensor> {
        self.inner().norm_at(point, input, scale)
    }
    fn backward_memory(&self) -> BackwardMemory {
        self.inner().backward_memory()
    }
    fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<Option<Box<dyn BlockwiseForward + 'a>>> {
        self.inner().blockwise(embeddings, options)
    }
}
