//! One way to load: [`load`] / [`load_with`] take a GGUF file, a Hugging Face folder, a
//! folder holding one GGUF file, or an Ollama model name, and return a model of any
//! supported family ([`AnyModel`]); [`LoadOptions`] chooses device and precision.

use std::path::{Path, PathBuf};

use explainability_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::any_model::AnyModel;
use crate::bert::BertModel;
use crate::decoder::{Family, families::SUPPORTED_FAMILIES};
use crate::decoder_model::DecoderModel;
use crate::hf::HfConfig;

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

/// Where a model's weight matrices live between uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Weights {
    /// Converted to the load precision once, at load time, and held in memory (default).
    #[default]
    Resident,
    /// Kept quantised in the GGUF file's memory map: every block's projection matrices, the
    /// token embedding and the head are dequantised each time they are used (just in time for
    /// a block's forward pass, and again when a memory-bounded backward pass recomputes it)
    /// and dropped afterwards, and the mapped pages are released after each read. The token
    /// embedding is read row by row for the tokens of the input; the head a slice of rows at
    /// a time. Norms, biases and positional tables stay resident. Peak memory is about one
    /// block's dequantised weights plus activations instead of the whole dequantised model.
    /// Such a model takes gradients with [`BackwardMemory::Recompute`] (plain autograd would
    /// keep every block's dequantised weights for its backward pass) and lists only its
    /// resident weights in `named_parameters`. GGUF files only.
    ///
    /// [`BackwardMemory::Recompute`]: explainability_core::BackwardMemory::Recompute
    Streamed,
}

/// Where and how to load a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Device of weights and activations (CPU by default).
    pub device: Device,
    /// Precision of weights and activations (f32 by default).
    pub precision: Precision,
    /// Whether weight matrices are held in memory (default) or streamed from a GGUF file.
    pub weights: Weights,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, precision: Precision::F32, weights: Weights::Resident }
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
    /// Options with `weights` (see [`Weights::Streamed`]).
    pub fn weights(mut self, weights: Weights) -> Self {
        self.weights = weights;
        self
    }
    /// CUDA device 0 when available, CPU otherwise.
    pub fn cuda_if_available() -> Self {
        Self::default().device(Device::cuda_if_available())
    }

    /// [`Error::UnsupportedOperation`] when streamed weights are asked of a model folder:
    /// only a GGUF file keeps its weights quantised in a memory map.
    pub(crate) fn check_resident(&self, model: &Path) -> Result<()> {
        match self.weights {
            Weights::Resident => Ok(()),
            Weights::Streamed => Err(Error::UnsupportedOperation {
                model: model.display().to_string(),
                operation: "streaming its weights (only a GGUF file keeps weights quantised in \
                            a memory map to dequantise on use; load this folder with resident \
                            weights)"
                    .into(),
            }),
        }
    }

    pub(crate) fn check_device(&self) -> Result<()> {
        check_device(self.device)
    }
}

/// [`Error::DeviceUnavailable`] unless this machine has `device`.
pub(crate) fn check_device(device: Device) -> Result<()> {
    if let Device::Cuda(index) = device
        && (!tch::Cuda::is_available() || index >= tch::Cuda::device_count() as usize)
    {
        return Err(Error::DeviceUnavailable { requested: format!("cuda:{index}") });
    }
    if device == Device::Mps && !tch::utils::has_mps() {
        return Err(Error::DeviceUnavailable { requested: "mps".into() });
    }
    Ok(())
}

/// Loads the model at `path` on the CPU in f32. See [`load_with`].
///
/// # Errors
/// As [`load_with`].
pub fn load(path: impl AsRef<Path>) -> Result<AnyModel> {
    load_with(path, LoadOptions::default())
}

/// Loads the model at `path`: a `.gguf` file, a Hugging Face folder with `config.json`, a
/// folder holding exactly one `.gguf` file, or an Ollama model name (`gemma3:270m`,
/// `library/llama3.2:1b`: the GGUF blob its manifest under `$OLLAMA_MODELS` or
/// `~/.ollama/models` points at). The family comes from the file (`general.architecture`,
/// `model_type`); see [`Family`] and [`BertModel`].
///
/// # Errors
/// [`Error::PathNotFound`], [`Error::UnrecognisedModelPath`], [`Error::AmbiguousModelPath`],
/// [`Error::OllamaModel`], [`Error::DeviceUnavailable`],
/// [`Error::UnsupportedArchitecture`] naming an unknown family and listing the supported
/// ones, and the loaders' errors (malformed files, unsupported tensor types, missing or
/// mis-shaped weights).
pub fn load_with(path: impl AsRef<Path>, options: LoadOptions) -> Result<AnyModel> {
    let path = path.as_ref();
    options.check_device()?;
    let resolved = resolve(path)?;
    if resolved.is_file() {
        return Ok(AnyModel::Decoder(DecoderModel::from_gguf(&resolved, options)?));
    }
    let config = HfConfig::read(&resolved)?;
    match config.model_type()? {
        "bert" => Ok(AnyModel::Bert(BertModel::from_hf_dir(&resolved, options)?)),
        other => match Family::from_hf_model_type(other) {
            Some(family) => {
                Ok(AnyModel::Decoder(DecoderModel::from_hf_dir(&resolved, family, options)?))
            }
            None => Err(Error::UnsupportedArchitecture {
                name: other.to_owned(),
                supported: SUPPORTED_FAMILIES.into(),
            }),
        },
    }
}

/// The GGUF file or Hugging Face folder `path` stands for.
fn resolve(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        if let Some(name) = path.to_str().filter(|s| is_ollama_name(s)) {
            return ollama_blob(name, &ollama_models_dir()?);
        }
        return Err(Error::PathNotFound { path: path.to_path_buf() });
    }
    if path.is_file() || path.join("config.json").is_file() {
        return Ok(path.to_path_buf());
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
        1 => Ok(ggufs.remove(0)),
        _ => Err(Error::AmbiguousModelPath {
            path: path.to_path_buf(),
            files: ggufs
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect(),
        }),
    }
}

/// Environment variable Ollama reads for its model store.
pub const OLLAMA_MODELS_ENV: &str = "OLLAMA_MODELS";

/// Largest manifest read (real ones are about 1 KB).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Whether `s` looks like an Ollama model reference: `[host/][namespace/]name[:tag]` made of
/// letters, digits, `.`, `_` and `-`, not starting with `.` or `/`.
fn is_ollama_name(s: &str) -> bool {
    let (path, tag) = s.split_once(':').unwrap_or((s, "latest"));
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let parts: Vec<&str> = path.split('/').collect();
    (1..=3).contains(&parts.len()) && parts.iter().all(|p| part_ok(p)) && part_ok(tag)
}

/// `$OLLAMA_MODELS`, or `~/.ollama/models`.
fn ollama_models_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(OLLAMA_MODELS_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".ollama").join("models")),
        None => Err(Error::OllamaModel {
            name: String::new(),
            reason: format!("neither ${OLLAMA_MODELS_ENV} nor $HOME is set"),
        }),
    }
}

/// The model blob an Ollama manifest points at.
///
/// `name` is `[host/][namespace/]model[:tag]`; the manifest lives at
/// `manifests/{host or registry.ollama.ai}/{namespace or library}/{model}/{tag}` and its layer
/// of media type `application/vnd.ollama.image.model` names the blob
/// `blobs/sha256-{hex}` (older stores: `blobs/sha256:{hex}`).
pub(crate) fn ollama_blob(name: &str, models: &Path) -> Result<PathBuf> {
    let fail = |reason: String| Error::OllamaModel { name: name.to_owned(), reason };
    let (path, tag) = name.split_once(':').unwrap_or((name, "latest"));
    let parts: Vec<&str> = path.split('/').collect();
    let (host, namespace, model) = match parts.as_slice() {
        [model] => ("registry.ollama.ai", "library", *model),
        [namespace, model] => ("registry.ollama.ai", *namespace, *model),
        [host, namespace, model] => (*host, *namespace, *model),
        _ => return Err(fail("not of the form [host/][namespace/]model[:tag]".into())),
    };
    let manifest = models.join("manifests").join(host).join(namespace).join(model).join(tag);
    let len = std::fs::metadata(&manifest)
        .map_err(|_| {
            fail(format!(
                "no such file or folder, and no Ollama manifest at {}",
                manifest.display()
            ))
        })?
        .len();
    if len > MAX_MANIFEST_BYTES {
        return Err(fail(format!(
            "manifest {} is {len} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES})",
            manifest.display()
        )));
    }
    let text = std::fs::read_to_string(&manifest).map_err(|e| Error::io(&manifest, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|source| Error::Json { path: manifest.clone(), source })?;
    let digest = json
        .get("layers")
        .and_then(serde_json::Value::as_array)
        .and_then(|layers| {
            layers.iter().find(|l| {
                l.get("mediaType").and_then(serde_json::Value::as_str)
                    == Some("application/vnd.ollama.image.model")
            })
        })
        .and_then(|l| l.get("digest"))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| fail(format!("manifest {} names no model layer", manifest.display())))?;
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| fail(format!("model layer digest {digest:?} is not sha256:<64 hex>")))?;
    let blobs = models.join("blobs");
    for candidate in [blobs.join(format!("sha256-{hex}")), blobs.join(format!("sha256:{hex}"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(fail(format!("its manifest names blob sha256-{hex}, which is not in {}", blobs.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_names() {
        for ok in ["gemma3:270m", "gemma3", "library/llama3.2:1b", "host.io/ns/m:q4_K_M"] {
            assert!(is_ollama_name(ok), "{ok}");
        }
        for bad in ["", "/abs/x.gguf", "./x", "a/b/c/d", "x:", "../x:1", "a b", "x:..y/z"] {
            assert!(!is_ollama_name(bad), "{bad}");
        }
    }
}
