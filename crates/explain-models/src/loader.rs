//! Loading a model from a path: `load(path)` picks GGUF or a Hugging Face folder from what it
//! finds; [`LoadOptions`] chooses device and dtype.

use std::path::{Path, PathBuf};

use explainability_core::{
    Architecture, Error, ForwardOptions, Hooks, LanguageModel, ModelInfo, ModelOutput, Result,
    SpecialTokens,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::gguf::GgufFile;
use crate::hf::{HfConfig, read_safetensors, safetensors_files};
use crate::llama::{Llama, LlamaConfig, LlamaKeys};
use crate::tokenizer::TextTokenizer;
use crate::weights::Checkpoint;

/// Floating-point precision of the weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Precision {
    /// 32-bit floats (default; what parity is measured at).
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl Precision {
    /// The tch kind.
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            Precision::F16 => Kind::Half,
        }
    }
}

/// Where and how to load a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Device of weights and activations (CPU by default).
    pub device: Device,
    /// Precision of weights and activations (f32 by default).
    pub precision: Precision,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, precision: Precision::F32 }
    }
}

impl LoadOptions {
    /// Options with `device`.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }
    /// Options with `precision`.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    /// CUDA device 0 when available, CPU otherwise.
    pub fn cuda_if_available() -> Self {
        Self::default().device(Device::cuda_if_available())
    }

    pub(crate) fn check_device(&self) -> Result<()> {
        if let Device::Cuda(index) = self.device
            && (!tch::Cuda::is_available() || index >= tch::Cuda::device_count() as usize)
        {
            return Err(Error::DeviceUnavailable { requested: format!("cuda:{index}") });
        }
        if self.device == Device::Mps && !tch::utils::has_mps() {
            return Err(Error::DeviceUnavailable { requested: "mps".into() });
        }
        Ok(())
    }
}

/// Loads the model at `path` on the CPU in f32. See [`load_with`].
///
/// # Errors
/// As [`load_with`].
pub fn load(path: impl AsRef<Path>) -> Result<LlamaModel> {
    load_with(path, LoadOptions::default())
}

/// Loads the model at `path`: a `.gguf` file, a folder holding exactly one `.gguf` file, or a
/// Hugging Face folder with `config.json`.
///
/// # Errors
/// [`Error::PathNotFound`], [`Error::UnrecognisedModelPath`], [`Error::AmbiguousModelPath`],
/// [`Error::DeviceUnavailable`], and the loaders' errors (malformed files, unsupported
/// architectures or tensor types, missing or mis-shaped weights).
pub fn load_with(path: impl AsRef<Path>, options: LoadOptions) -> Result<LlamaModel> {
    let path = path.as_ref();
    options.check_device()?;
    if !path.exists() {
        return Err(Error::PathNotFound { path: path.to_path_buf() });
    }
    if path.is_file() {
        return LlamaModel::from_gguf(path, options);
    }
    if path.join("config.json").is_file() {
        return LlamaModel::from_hf_dir(path, options);
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    let mut ggufs: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let p = entry.path();
        if p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            ggufs.push(p);
        }
    }
    ggufs.sort();
    match ggufs.len() {
        0 => Err(Error::UnrecognisedModelPath { path: path.to_path_buf() }),
        1 => LlamaModel::from_gguf(&ggufs[0], options),
        _ => Err(Error::AmbiguousModelPath {
            path: path.to_path_buf(),
            files: ggufs
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect(),
        }),
    }
}

/// A Llama-family model with its tokenizer: the [`LanguageModel`] implementation.
#[derive(Debug)]
pub struct LlamaModel {
    model: Llama,
    tokenizer: TextTokenizer,
    info: ModelInfo,
}

impl LlamaModel {
    /// Assembles a model from parts. A tokenizer whose ids reach past the embedding (some
    /// converters add tokens) is accepted: such ids are refused at embedding time with
    /// [`Error::TokenOutOfRange`].
    ///
    /// # Errors
    /// None today; kept fallible for future consistency checks.
    pub fn new(
        model: Llama,
        tokenizer: TextTokenizer,
        name: String,
        architecture: Architecture,
        special_tokens: SpecialTokens,
    ) -> Result<Self> {
        let cfg = model.config().clone();
        let info = ModelInfo {
            name,
            architecture,
            n_layers: cfg.n_layers,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            d_model: cfg.d_model,
            d_head: cfg.d_head,
            d_mlp: cfg.d_mlp,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_positions,
            causal: true,
            special_tokens,
        };
        Ok(Self { model, tokenizer, info })
    }

    /// Loads a llama.cpp GGUF file.
    ///
    /// # Errors
    /// GGUF format errors, [`Error::UnsupportedArchitecture`], [`Error::MissingMetadata`],
    /// [`Error::UnsupportedTensorType`], weight errors.
    pub fn from_gguf(path: &Path, options: LoadOptions) -> Result<Self> {
        options.check_device()?;
        let file = GgufFile::open(path)?;
        let arch_name = file.architecture()?.to_owned();
        let architecture = match arch_name.as_str() {
            "llama" => Architecture::Llama,
            "mistral" => Architecture::Mistral,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(Error::UnsupportedArchitecture {
                    name: other.to_owned(),
                    supported: "llama, mistral, qwen2".into(),
                });
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_heads = file.get_u32(&key("attention.head_count"))? as usize;
        let d_model = file.get_u32(&key("embedding_length"))? as usize;
        if n_heads == 0 {
            return Err(Error::invalid_config("attention.head_count must be positive"));
        }
        let n_kv_heads =
            file.opt_u32(&key("attention.head_count_kv"))?.map_or(n_heads, |v| v as usize);
        let d_head = match file.opt_u32(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None => d_model / n_heads,
        };
        let tokenizer = TextTokenizer::from_gguf(&file)?;
        let embed_rows = file
            .tensor_info("token_embd.weight")
            .map(|t| t.shape().first().copied().unwrap_or(0))
            .ok_or_else(|| Error::MissingWeight { name: "token_embd.weight".into() })?;
        let vocab_size = match file.opt_u32(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => usize::try_from(embed_rows).unwrap_or(0),
        };
        let config = LlamaConfig {
            n_layers: file.get_u32(&key("block_count"))? as usize,
            n_heads,
            n_kv_heads,
            d_model,
            d_head,
            d_mlp: file.get_u32(&key("feed_forward_length"))? as usize,
            vocab_size,
            max_positions: file.get_u32(&key("context_length"))? as usize,
            rope_theta: f64::from(file.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0)),
            norm_eps: f64::from(file.get_f32(&key("attention.layer_norm_rms_epsilon"))?),
            tie_embeddings: file.tensor_info("output.weight").is_none(),
            attention_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
        };
        config.validate()?;
        let mut ckpt = Checkpoint::new();
        for name in file.tensor_names() {
            let tensor = file.tensor(&name)?;
            // llama.cpp's converter permutes the rows of attn_q / attn_k for its interleaved
            // RoPE; undo it so the half-split pairing of Hugging Face applies.
            let tensor = if name.ends_with("attn_q.weight") || name.ends_with("attn_q.bias") {
                unpermute_rope_rows(&tensor, config.n_heads)?
            } else if name.ends_with("attn_k.weight") || name.ends_with("attn_k.bias") {
                unpermute_rope_rows(&tensor, config.n_kv_heads)?
            } else {
                tensor
            };
            ckpt.insert(name, tensor);
        }
        // llama.cpp may store precomputed rotary tables; the model computes its own.
        ckpt.ignore_suffix("rope_freqs.weight");
        let model = Llama::from_checkpoint(
            config,
            ckpt,
            LlamaKeys::Gguf,
            options.precision.kind(),
            options.device,
        )?;
        let special = tokenizer.special_tokens();
        let name = file
            .opt_str("general.name")?
            .map(str::to_owned)
            .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        Self::new(model, tokenizer, name, architecture, special)
    }

    /// Loads a Hugging Face folder (`config.json`, safetensors weights, `tokenizer.json`).
    ///
    /// # Errors
    /// [`Error::UnsupportedArchitecture`] naming an unknown `model_type`; JSON, safetensors
    /// and weight errors.
    pub fn from_hf_dir(dir: &Path, options: LoadOptions) -> Result<Self> {
        options.check_device()?;
        let config = HfConfig::read(dir)?;
        let architecture = match config.model_type()? {
            "llama" => Architecture::Llama,
            "mistral" => Architecture::Mistral,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(Error::UnsupportedArchitecture {
                    name: other.to_owned(),
                    supported: "llama, mistral, qwen2".into(),
                });
            }
        };
        let llama_config = config.llama_config()?;
        llama_config.validate()?;
        let tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
        let mut ckpt = read_safetensors(&safetensors_files(dir)?)?;
        ckpt.ignore_suffix("rotary_emb.inv_freq");
        let model = Llama::from_checkpoint(
            llama_config,
            ckpt,
            LlamaKeys::HuggingFace,
            options.precision.kind(),
            options.device,
        )?;
        let mut special = config.special_tokens();
        let from_tokenizer = tokenizer.special_tokens();
        special.bos = special.bos.or(from_tokenizer.bos);
        special.eos = special.eos.or(from_tokenizer.eos);
        special.pad = special.pad.or(from_tokenizer.pad);
        special.unk = special.unk.or(from_tokenizer.unk);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Self::new(model, tokenizer, name, architecture, special)
    }

    /// The transformer.
    pub fn transformer(&self) -> &Llama {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
}

/// Undoes llama.cpp's row permutation of attn_q / attn_k weights (Hugging Face's
/// `reverse_permute_weights`): rows grouped per head as (half, pair) go back to (pair, half).
fn unpermute_rope_rows(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let shape = w.size();
    let rows = shape.first().copied().unwrap_or(0);
    let n_head = n_head as i64;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(Error::invalid_config(format!(
            "attention weight with {rows} rows cannot be split into {n_head} rotary heads"
        )));
    }
    let half = rows / n_head / 2;
    let mut view = vec![n_head, half, 2];
    view.extend_from_slice(&shape[1..]);
    Ok(w.f_reshape(&view)?.f_transpose(1, 2)?.f_contiguous()?.f_reshape(&shape)?)
}

impl LanguageModel for LlamaModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> Device {
        self.model.device()
    }

    fn kind(&self) -> Kind {
        self.model.kind()
    }

    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let ids = self.tokenizer.encode(text, add_special_tokens)?;
        if ids.is_empty() {
            return Err(Error::EmptyText);
        }
        Ok(ids)
    }

    fn decode(&self, ids: &[i64]) -> Result<String> {
        self.check_ids(ids)?;
        self.tokenizer.decode(ids, false)
    }

    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        self.check_ids(ids)?;
        self.tokenizer.token_strings(ids)
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.model.embed(ids)
    }

    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        self.model.forward(embeddings, options, hooks)
    }

    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor> {
        self.model.unembed(final_hidden)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.model.named_parameters()
    }
}

impl LlamaModel {
    fn check_ids(&self, ids: &[i64]) -> Result<()> {
        let vocab = self.tokenizer.vocab_size();
        match ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            Some(&id) => Err(Error::TokenOutOfRange { id, vocab_size: vocab }),
            None => Ok(()),
        }
    }
}
