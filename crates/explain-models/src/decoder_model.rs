//! A decoder with its tokenizer ([`DecoderModel`]), and how it is read from a GGUF file or a
//! Hugging Face folder.

use std::path::Path;
use std::sync::Arc;

use explainability_core::{
    Architecture, BackwardMemory, BlockwiseForward, Error, ForwardOptions, HookPoint, Hooks,
    ModelInfo, ModelOutput, NormScale, Result, SpecialTokens,
};
use tch::{Device, Kind, Tensor};

use crate::decoder::{Decoder, Family, WeightNames, families::SUPPORTED_FAMILIES};
use crate::device_map::{DeviceMap, Placement};
use crate::gguf::{GgufFile, GgufSource};
use crate::hf::{HfConfig, read_safetensors, safetensors_files};
use crate::loader::LoadOptions;
use crate::model::{Network, TokenizedModel};
use crate::tokenizer::TextTokenizer;
use crate::weights::Checkpoint;

/// A decoder-only model of any supported family with its tokenizer.
pub type DecoderModel = TokenizedModel<Decoder>;

impl DecoderModel {
    /// Assembles a model from parts. A tokenizer whose ids reach past the embedding (some
    /// converters add tokens) is accepted: such ids are refused at embedding time with
    /// [`Error::TokenOutOfRange`].
    pub fn new(
        model: Decoder,
        tokenizer: TextTokenizer,
        name: String,
        architecture: Architecture,
        special_tokens: SpecialTokens,
    ) -> Self {
        let cfg = model.config();
        let info = ModelInfo {
            name,
            architecture,
            n_layers: cfg.n_layers,
            n_heads: cfg.attention.n_heads,
            n_kv_heads: cfg.attention.n_kv_heads,
            d_model: cfg.d_model,
            d_head: cfg.attention.d_head,
            d_mlp: cfg.d_mlp,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_positions,
            causal: true,
            special_tokens,
        };
        Self { network: model, tokenizer, info }
    }

    /// Plans `map` for this model's parts ([`Decoder::footprint`] with
    /// `activation_reserve_bytes` kept free on every device used) and places them there
    /// ([`Decoder::place`]); returns the placement.
    ///
    /// # Examples
    /// ```no_run
    /// use explain_models::{DeviceMap, load};
    /// let mut model = load("model.gguf")?;
    /// let map = DeviceMap::parse("0-15:cuda:0,16-31:cpu", &[])?;
    /// if let explain_models::AnyModel::Decoder(m) = &mut model {
    ///     println!("{}", m.place(&map, 4 << 30)?);
    /// }
    /// # Ok::<(), explainability_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::DeviceMap`] when the parts do not fit the caps (item 7 of issue 15) or the map
    /// is malformed for this model; [`Error::DeviceUnavailable`] for a device this machine
    /// does not have.
    pub fn place(&mut self, map: &DeviceMap, activation_reserve_bytes: u64) -> Result<Placement> {
        let footprint = self.network.footprint(activation_reserve_bytes);
        let placement = Placement::plan(map, &footprint)?;
        self.network.place(&placement)?;
        Ok(placement)
    }

    /// Loads a llama.cpp GGUF file of any supported family. Tensors are dequantised one at a
    /// time, straight into the precision asked for.
    ///
    /// # Errors
    /// GGUF format errors, [`Error::UnsupportedArchitecture`], [`Error::MissingMetadata`],
    /// [`Error::UnsupportedTensorType`], weight errors.
    pub fn from_gguf(path: &Path, options: LoadOptions) -> Result<Self> {
        options.check_device()?;
        let file = Arc::new(GgufFile::open(path)?);
        let arch = file.architecture()?.to_owned();
        let family = Family::from_gguf_architecture(&arch).ok_or_else(|| {
            Error::UnsupportedArchitecture {
                name: arch.clone(),
                supported: SUPPORTED_FAMILIES.into(),
            }
        })?;
        let config = family.config_from_gguf(&file)?;
        let tokenizer = TextTokenizer::from_gguf(&file)?;
        let mut ckpt = Checkpoint::new();
        for info in file.tensor_infos() {
            let source = GgufSource::new(Arc::clone(&file), info.name());
            ckpt.insert_source(info.name(), info.shape(), Box::new(source));
        }
        family.prepare_gguf(&mut ckpt, &config);
        let model = Decoder::from_checkpoint_with(config, ckpt, WeightNames::Gguf, &options)?;
        let special = tokenizer.special_tokens();
        let name = file
            .opt_str("general.name")?
            .map(str::to_owned)
            .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_default();
        Ok(Self::new(model, tokenizer, name, family.architecture(), special))
    }

    /// Loads a Hugging Face folder (`config.json`, safetensors weights — one file or shards
    /// listed by `model.safetensors.index.json` — and `tokenizer.json`) of `family`. Weights
    /// stay in their stored dtype until converted to the precision asked for.
    ///
    /// # Errors
    /// JSON, safetensors and weight errors; [`Error::UnsupportedRopeScaling`].
    pub fn from_hf_dir(dir: &Path, family: Family, options: LoadOptions) -> Result<Self> {
        options.check_device()?;
        options.check_resident(dir)?;
        let hf = HfConfig::read(dir)?;
        let config = family.config_from_hf(&hf)?;
        let tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
        let mut ckpt = read_safetensors(&safetensors_files(dir)?)?;
        let names = family.prepare_hf(&mut ckpt, &config)?;
        let model = Decoder::from_checkpoint(
            config,
            ckpt,
            names,
            options.precision.kind(),
            options.device,
        )?;
        let mut special = hf.special_tokens();
        let from_tokenizer = tokenizer.special_tokens();
        special.bos = special.bos.or(from_tokenizer.bos);
        special.eos = special.eos.or(from_tokenizer.eos);
        special.pad = special.pad.or(from_tokenizer.pad);
        special.unk = special.unk.or(from_tokenizer.unk);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self::new(model, tokenizer, name, family.architecture(), special))
    }
}

impl Network for Decoder {
    fn kind(&self) -> Kind {
        Decoder::kind(self)
    }
    fn device(&self) -> Device {
        Decoder::device(self)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Decoder::embed(self, ids)
    }
    fn forward(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        Decoder::forward(self, embeddings, options, hooks)
    }
    fn unembed(&self, hidden: &Tensor) -> Result<Tensor> {
        Decoder::unembed(self, hidden)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Decoder::named_parameters(self)
    }
    fn final_norm(&self, residual: &Tensor, scale: NormScale<'_>) -> Option<Result<Tensor>> {
        Some(Decoder::final_norm(self, residual, scale))
    }
    fn norm_at(
        &self,
        point: HookPoint,
        input: &Tensor,
        scale: NormScale<'_>,
    ) -> Option<Result<Tensor>> {
        Some(Decoder::norm_at(self, point, input, scale))
    }
    fn supports_key_value_cache(&self) -> bool {
        true
    }
    fn backward_memory(&self) -> BackwardMemory {
        Decoder::backward_memory(self)
    }

    fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<Option<Box<dyn BlockwiseForward + 'a>>> {
        Ok(Some(Box::new(Decoder::blockwise(self, embeddings, options)?)))
    }
}
