//! One loader for every implemented architecture: [`load_model`] reads a GGUF file's
//! `general.architecture` or a Hugging Face folder's `model_type` and returns an [`AnyModel`]
//! that implements [`LanguageModel`] by delegation.

use std::path::Path;

use explainability_core::{
    Error, ForwardOptions, Hooks, LanguageModel, ModelInfo, ModelOutput, Result,
};
use tch::{Device, Kind, Tensor};

use crate::bert::BertModel;
use crate::gpt2::Gpt2Model;
use crate::hf::HfConfig;
use crate::loader::{LlamaModel, LoadOptions, load_with};

/// `model_type`s [`load_model`] accepts.
pub const SUPPORTED_MODEL_TYPES: &str = "llama, mistral, qwen2, gpt2, bert";

/// A loaded model of any implemented architecture.
#[derive(Debug)]
pub enum AnyModel {
    /// Llama, Mistral, Qwen2 (GGUF or Hugging Face).
    Llama(LlamaModel),
    /// GPT-2 (Hugging Face).
    Gpt2(Gpt2Model),
    /// BERT-style encoders (Hugging Face).
    Bert(BertModel),
}

/// Loads the model at `path`, dispatching on its architecture.
///
/// # Errors
/// [`Error::UnsupportedArchitecture`] naming an unknown `model_type`; the errors of
/// [`load_with`] and [`BertModel::from_hf_dir`].
pub fn load_model(path: impl AsRef<Path>, options: LoadOptions) -> Result<AnyModel> {
    let path = path.as_ref();
    options.check_device()?;
    if path.is_dir() && path.join("config.json").is_file() {
        let config = HfConfig::read(path)?;
        return match config.model_type()? {
            "llama" | "mistral" | "qwen2" => Ok(AnyModel::Llama(load_with(path, options)?)),
            "gpt2" => Ok(AnyModel::Gpt2(Gpt2Model::from_hf_dir(path, options)?)),
            "bert" => Ok(AnyModel::Bert(BertModel::from_hf_dir(path, options)?)),
            other => Err(Error::UnsupportedArchitecture {
                name: other.to_owned(),
                supported: SUPPORTED_MODEL_TYPES.into(),
            }),
        };
    }
    Ok(AnyModel::Llama(load_with(path, options)?))
}

impl AnyModel {
    fn inner(&self) -> &dyn LanguageModel {
        match self {
            AnyModel::Llama(m) => m,
            AnyModel::Gpt2(m) => m,
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
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.inner().named_parameters()
    }
}
