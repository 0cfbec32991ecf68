//! Hooked transformer implementations on tch, and the loaders that build them from real files.
//!
//! - [`load`] / [`load_with`]: a `.gguf` file or a Hugging Face folder → [`LlamaModel`],
//!   which implements [`explainability_core::LanguageModel`].
//! - [`Llama`]: the Llama-family forward pass (RMSNorm, RoPE, grouped-query attention,
//!   SwiGLU) with every hook point of the design.
//! - [`GgufFile`]: a memory-mapped GGUF v2/v3 reader with bounded parsing and
//!   dequantisation of F32, F16, BF16, Q8_0, Q4_0 and Q4_1.
//! - [`load_model`]: any implemented architecture (Llama family, GPT-2, BERT encoders) → [`AnyModel`].
//! - [`Bert`] / [`BertModel`]: BERT-style encoders (MiniLM) with every hook point, padding
//!   masks, mean pooling ([`mean_pool`]) and an optional classification head.
//! - [`Gpt2`] / [`Gpt2Model`]: GPT-2 (learned positions, fused `c_attn`, `gelu_new`, tied
//!   head) with every hook point.
//! - [`TextTokenizer`]: BPE tokenizers from GGUF metadata or `tokenizer.json`.
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
pub mod gguf;
mod gpt2;
mod hf;
mod llama;
mod loader;
mod ops;
mod paths;
pub mod pins;
pub mod tokenizer;
mod weights;

pub use any_model::{AnyModel, SUPPORTED_MODEL_TYPES, load_model};
pub use bert::{Bert, BertConfig, BertModel, mean_pool};
pub use gguf::GgufFile;
pub use gpt2::{Gpt2, Gpt2Config, Gpt2Model};
pub use hf::{HfConfig, read_safetensors, safetensors_files};
pub use llama::{Llama, LlamaConfig, LlamaKeys};
pub use loader::{LlamaModel, LoadOptions, Precision, load, load_with};
pub use paths::{
    MODEL_DIR_ENV, default_model_dir, gemma3_gguf_path, minilm_dir, smollm2_gguf_path,
};
pub use tokenizer::TextTokenizer;
pub use weights::Checkpoint;
