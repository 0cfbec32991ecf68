//! Hooked transformers on tch, and the loaders that build them from real files.
//!
//! - [`load`] / [`load_with`]: a `.gguf` file, a Hugging Face folder or an Ollama model name
//!   → [`AnyModel`] (a [`DecoderModel`] of any family, or a [`BertModel`]), which implements
//!   [`explainability_core::LanguageModel`].
//! - [`Decoder`]: the one hooked decoder; [`DecoderConfig`] says what a family changes
//!   (norms, positions and RoPE scaling, attention variants, MLP kinds, sandwich norms,
//!   biases, embedding scale, tied head); [`Family`] reads it from `config.json` or GGUF
//!   metadata. Llama 2/3.x, SmolLM2, Mistral, Qwen2, Qwen3, Gemma 3 and GPT-2 are
//!   configurations of it. See docs/models.md.
//! - [`GgufFile`]: a memory-mapped GGUF v2/v3 reader with bounded parsing and
//!   dequantisation.
//! - [`Bert`] / [`BertModel`]: BERT-style encoders (MiniLM) with every hook point, padding
//!   masks, mean pooling ([`mean_pool`]) and an optional classification head.
//! - [`TextTokenizer`]: tokenizers from GGUF metadata or `tokenizer.json`.
//!
//! # Examples
//! ```no_run
//! use explainability_core::LanguageModel;
//! let model = explain_models::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! for p in model.top_next_tokens("The capital of France is", 5)? {
//!     println!("{:>12} {:.3}", p.token, p.probability);
//! }
//! # Ok::<(), explainability_core::Error>(())
//! ```

mod any_model;
mod bert;
mod decoder;
mod decoder_model;
pub mod device_map;
pub mod gguf;
mod hf;
mod loader;
mod model;
mod ops;
mod paths;
pub mod pins;
pub mod tokenizer;
mod weights;

pub use any_model::AnyModel;
pub use bert::{Bert, BertConfig, BertModel, BertStages, mean_pool};
pub use decoder::{
    Activation, AttentionConfig, Decoder, DecoderConfig, DecoderStages, Family, Gpt2Config,
    LayerAttention, LlamaConfig, MlpKind, NormKind, Positions, Rope, RopePairing, RopeScaling,
    WeightNames, families::SUPPORTED_FAMILIES,
};
pub use decoder_model::DecoderModel;
pub use device_map::{DeviceBudget, DeviceMap, ModelFootprint, Placement};
pub use gguf::GgufFile;
pub use hf::{HfConfig, read_safetensors, safetensors_files};
pub use loader::{LoadOptions, OLLAMA_MODELS_ENV, Precision, Weights, load, load_with};
pub use model::{Network, TokenizedModel};
pub use paths::{
    MODEL_DIR_ENV, default_model_dir, gemma3_gguf_path, minilm_dir, smollm2_gguf_path,
};
pub use tokenizer::TextTokenizer;
pub use weights::Checkpoint;
