//! Hugging Face folders: `config.json`, `model.safetensors` (or a sharded index) and
//! `tokenizer.json`.

use std::path::{Path, PathBuf};

use explainability_core::{Error, Result, SpecialTokens};
use serde_json::Value;
use tch::{Kind, Tensor};

use crate::weights::Checkpoint;

/// A parsed `config.json`.
#[derive(Debug, Clone)]
pub struct HfConfig {
    path: PathBuf,
    json: Value,
}

impl HfConfig {
    /// Reads `config.json` from a folder.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Json`].
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|source| Error::Json { path: path.clone(), source })?;
        if !json.is_object() {
            return Err(Error::MissingMetadata {
                key: format!("{} (top level)", path.display()),
                expected: "a JSON object".into(),
            });
        }
        Ok(Self { path, json })
    }

    /// A config from JSON already in memory (a test's tiny model, a config read elsewhere).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when `json` is not an object.
    pub fn from_json(json: Value) -> Result<Self> {
        let path = PathBuf::from("config.json (in memory)");
        if !json.is_object() {
            return Err(Error::MissingMetadata {
                key: format!("{} (top level)", path.display()),
                expected: "a JSON object".into(),
            });
        }
        Ok(Self { path, json })
    }

    /// The `model_type` field.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn model_type(&self) -> Result<&str> {
        self.json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| self.missing("model_type", "a string"))
    }

    fn missing(&self, key: &str, expected: &str) -> Error {
        Error::MissingMetadata {
            key: format!("{key} in {}", self.path.display()),
            expected: expected.into(),
        }
    }

    /// A non-negative integer field.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key, "a non-negative integer"))
    }

    /// An optional non-negative integer field.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when present with another type.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| self.missing(key, "a non-negative integer")),
        }
    }

    /// An optional number field.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when present with another type.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.missing(key, "a number")),
        }
    }

    /// An optional boolean field.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when present with another type.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.missing(key, "a boolean")),
        }
    }

    /// The raw value of a field, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// An optional string field.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when present with another type.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.missing(key, "a string")),
        }
    }

    /// A token id field (`eos_token_id` may be a list; its first entry is taken).
    pub fn token_id(&self, key: &str) -> Option<i64> {
        match self.json.get(key)? {
            Value::Number(n) => n.as_i64(),
            Value::Array(a) => a.first().and_then(Value::as_i64),
            _ => None,
        }
    }

    /// The `architectures` list (empty when absent).
    pub fn architectures(&self) -> Vec<String> {
        self.json
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Number of entries of an object field (e.g. `id2label`), `None` when absent.
    pub fn map_len(&self, key: &str) -> Option<usize> {
        self.json.get(key).and_then(Value::as_object).map(serde_json::Map::len)
    }

    /// Special token ids named in the config.
    pub fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            bos: self.token_id("bos_token_id"),
            eos: self.token_id("eos_token_id"),
            pad: self.token_id("pad_token_id"),
            unk: self.token_id("unk_token_id"),
        }
    }
}

/// The safetensors files of a folder: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`.
///
/// # Errors
/// [`Error::MissingWeight`] when neither exists; I/O and JSON errors.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(Error::MissingWeight {
            name: format!("{} (or model.safetensors.index.json)", single.display()),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|source| Error::Json { path: index.clone(), source })?;
    let map = json.get("weight_map").and_then(Value::as_object).ok_or_else(|| {
        Error::MissingMetadata {
            key: format!("weight_map in {}", index.display()),
            expected: "an object".into(),
        }
    })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values() {
        let name = file.as_str().ok_or_else(|| Error::MissingMetadata {
            key: format!("weight_map in {}", index.display()),
            expected: "file names as strings".into(),
        })?;
        // Shard names come from a file: keep them inside the folder.
        if name.contains('/') || name.contains('\\') || name == ".." {
            return Err(Error::invalid_argument(format!(
                "shard name {name:?} leaves the model folder"
            )));
        }
        let path = dir.join(name);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

/// Reads every tensor of the given safetensors files into a checkpoint (CPU, in the file's
/// own dtype: a bf16 file loaded in bf16 is never widened to f32).
///
/// # Errors
/// [`Error::Io`], [`Error::Safetensors`], [`Error::UnsupportedDtype`].
pub fn read_safetensors(files: &[PathBuf]) -> Result<Checkpoint> {
    let mut ckpt = Checkpoint::new();
    for path in files {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and lives only while this loop iteration copies the
        // tensors out; the file is not modified by this process.
        #[allow(unsafe_code)]
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let tensors = safetensors::SafeTensors::deserialize(&mmap)
            .map_err(|source| Error::Safetensors { path: path.clone(), source })?;

        for (name, view) in tensors.tensors() {
            let kind = match view.dtype() {
                safetensors::Dtype::F32 => Kind::Float,
                safetensors::Dtype::F16 => Kind::Half,
                safetensors::Dtype::BF16 => Kind::BFloat16,
                safetensors::Dtype::F64 => Kind::Double,
                safetensors::Dtype::I64 => Kind::Int64,
                other => {
                    return Err(Error::UnsupportedDtype { name, dtype: format!("{other:?}") });
                }
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?;
            ckpt.insert(name, tensor);
        }
    }
    Ok(ckpt)
}
