//! The one error type of the workspace and its `Result` alias.
//!
//! Every crate of the workspace returns [`Error`]; variants carry the context a user needs to
//! act (which file, which tensor, which limit), and foreign errors keep their `source()` chain.

use std::path::PathBuf;

/// Result alias used across the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading, running or explaining a model.
///
/// `Debug` prints the `Display` sentence followed by its sources' (`: `-separated), so that a
/// `fn main() -> Result<()>` — every example's — reports an error as sentences, not as a
/// struct.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- files and paths -------------------------------------------------------------
    /// The given model path does not exist.
    #[error("model path {path} does not exist")]
    PathNotFound {
        /// The path the user gave.
        path: PathBuf,
    },
    /// A folder holds neither a `.gguf` file nor a Hugging Face `config.json`.
    #[error(
        "{path} is not a model: expected a .gguf file, or a folder with a .gguf file or a \
         Hugging Face config.json"
    )]
    UnrecognisedModelPath {
        /// The path the user gave.
        path: PathBuf,
    },
    /// A folder holds several GGUF files and nothing says which one to load.
    #[error("{path} holds several GGUF files ({files:?}); pass the path of the one to load")]
    AmbiguousModelPath {
        /// The folder.
        path: PathBuf,
        /// The candidate files.
        files: Vec<String>,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    // ----- GGUF ------------------------------------------------------------------------
    /// The file does not start with the GGUF magic bytes.
    #[error("{path} is not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")")]
    GgufBadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {version} (supported: 2 and 3)")]
    GgufUnsupportedVersion {
        /// Version number from the header.
        version: u32,
    },
    /// The file ends before a structure it announces.
    #[error(
        "GGUF file truncated: reading {what} needs {needed} bytes at offset {offset}, \
         but the file has {file_len} bytes"
    )]
    GgufTruncated {
        /// What was being read.
        what: String,
        /// Offset of the read.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// File length.
        file_len: u64,
    },
    /// A count or length in the header is impossible for a file of this size.
    #[error("GGUF header claims {what} = {value}, impossible for a file of {file_len} bytes")]
    GgufImplausible {
        /// The field.
        what: String,
        /// The value read.
        value: u64,
        /// File length.
        file_len: u64,
    },
    /// A structural error in a GGUF file (bad value type, bad UTF-8, overlapping data, …).
    #[error("malformed GGUF file: {reason}")]
    GgufMalformed {
        /// What is wrong.
        reason: String,
    },
    /// A tensor is stored in a quantisation type this crate cannot dequantise.
    #[error("tensor {name} has unsupported GGML type {ggml_type} ({type_name})")]
    UnsupportedTensorType {
        /// Tensor name.
        name: String,
        /// Numeric GGML type id.
        ggml_type: u32,
        /// Name of the type where known.
        type_name: String,
    },
    /// A safetensors tensor has a dtype the loaders do not convert.
    #[error("tensor {name} has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A metadata key the loader needs is absent or has the wrong type.
    #[error("model metadata {key} is missing or has the wrong type (expected {expected})")]
    MissingMetadata {
        /// Metadata / config key.
        key: String,
        /// What was expected.
        expected: String,
    },

    // ----- weights and configs ---------------------------------------------------------
    /// An Ollama model name that does not lead to a model file.
    #[error("Ollama model {name:?}: {reason}")]
    OllamaModel {
        /// The name as given (`gemma3:270m`).
        name: String,
        /// What was looked for and not found.
        reason: String,
    },
    /// The architecture named by the file is not implemented.
    #[error("unsupported model architecture {name:?} (supported: {supported})")]
    UnsupportedArchitecture {
        /// Architecture / `model_type` found.
        name: String,
        /// Comma-separated list of supported ones.
        supported: String,
    },
    /// A RoPE scaling rule the decoder does not implement.
    #[error("unsupported rope scaling {name:?} (supported: {supported})")]
    UnsupportedRopeScaling {
        /// The `rope_type` / `rope.scaling.type` found.
        name: String,
        /// Comma-separated list of supported ones.
        supported: String,
    },
    /// The model has no head for the requested output (a bare encoder has no LM head and no
    /// classifier).
    #[error("model {model:?} has no {head} head")]
    NoHead {
        /// The model's name.
        model: String,
        /// The head that was asked for (`"language-model"`, `"classification"`).
        head: String,
    },
    /// The tokenizer a model file describes is of a kind this crate cannot build.
    #[error("unsupported tokenizer model {model:?} (supported: {supported})")]
    UnsupportedTokenizer {
        /// The tokenizer model found (GGUF `tokenizer.ggml.model`, e.g. `"llama"`).
        model: String,
        /// Comma-separated list of supported ones.
        supported: String,
    },
    /// A weight the architecture needs is not in the checkpoint.
    #[error("weight {name} is missing from the checkpoint")]
    MissingWeight {
        /// Checkpoint key.
        name: String,
    },
    /// A weight has a shape other than the config implies.
    #[error("weight {name} has shape {actual:?}, expected {expected:?}")]
    WeightShape {
        /// Checkpoint key.
        name: String,
        /// Shape implied by the config.
        expected: Vec<i64>,
        /// Shape found.
        actual: Vec<i64>,
    },
    /// The checkpoint holds weights the architecture does not use.
    #[error("checkpoint holds weights the model does not use: {names:?}")]
    UnusedWeights {
        /// Checkpoint keys not consumed.
        names: Vec<String>,
    },
    /// A configuration value is invalid (zero heads, heads not dividing d_model, …).
    #[error("invalid model configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// The safetensors file could not be parsed.
    #[error("invalid safetensors file {path}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// Parser error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A JSON file (config, tokenizer, index) could not be parsed.
    #[error("invalid JSON in {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Parser error.
        #[source]
        source: serde_json::Error,
    },
    /// The tokenizer could not be built or failed to encode/decode.
    #[error("tokenizer error while {context}")]
    Tokenizer {
        /// What was being done.
        context: String,
        /// The tokenizers crate's error.
        #[source]
        source: tokenizers::Error,
    },

    // ----- inputs ----------------------------------------------------------------------
    /// The text to explain is empty (or encodes to no tokens).
    #[error("the input text is empty: there is nothing to run the model on")]
    EmptyText,
    /// The input has more positions than the model supports.
    #[error("input has {len} tokens but the model's context window is {max}")]
    SequenceTooLong {
        /// Number of tokens.
        len: usize,
        /// Maximum number of positions.
        max: usize,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange {
        /// The id.
        id: i64,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// A layer index beyond the model.
    #[error("layer {layer} does not exist (the model has {n_layers} layers)")]
    LayerOutOfRange {
        /// Requested layer.
        layer: usize,
        /// Number of layers.
        n_layers: usize,
    },
    /// A head index beyond the layer.
    #[error("head {head} does not exist (layers have {n_heads} heads)")]
    HeadOutOfRange {
        /// Requested head.
        head: usize,
        /// Heads per layer.
        n_heads: usize,
    },
    /// A hook point name that does not parse.
    #[error("unknown hook point {name:?}")]
    UnknownHookPoint {
        /// The string given.
        name: String,
    },
    /// A replacing hook returned a tensor of another shape than the activation it replaces.
    #[error("hook at {point} replaced an activation of shape {expected:?} with shape {actual:?}")]
    HookShapeMismatch {
        /// Hook point name.
        point: String,
        /// Original shape.
        expected: Vec<i64>,
        /// Returned shape.
        actual: Vec<i64>,
    },
    /// A tensor argument has the wrong shape.
    #[error("{what} has shape {actual:?}, expected {expected}")]
    ShapeMismatch {
        /// Which argument.
        what: String,
        /// Expected shape, in words.
        expected: String,
        /// Shape found.
        actual: Vec<i64>,
    },
    /// A device was asked for that this machine does not have.
    #[error("device {requested} is not available on this machine")]
    DeviceUnavailable {
        /// The requested device.
        requested: String,
    },
    /// A model cannot be placed on the devices as asked (see explain-models' device maps).
    #[error("cannot place the model on the devices: {reason}")]
    DeviceMap {
        /// What did not fit or was malformed, with the sizes involved.
        reason: String,
    },
    /// Any other invalid argument.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: String,
    },
    /// NaN or infinity appeared in a gradient or an activation; says where when known.
    #[error(
        "{what} is not finite (NaN or infinity){}{}",
        alpha.map(|a| format!(" at path point alpha = {a}")).unwrap_or_default(),
        hook_point.as_ref().map(|p| format!("; it first appears at {p}")).unwrap_or_default()
    )]
    NonFinite {
        /// Which quantity (e.g. "gradient with respect to the embeddings").
        what: String,
        /// The path point α of a path method at which it happened.
        alpha: Option<f64>,
        /// The first hook point where the value (or, if every activation is finite, the
        /// gradient flowing back from the output) is not finite.
        hook_point: Option<String>,
    },
    /// A method that compares two prompts position by position (activation patching,
    /// attribution patching) was given prompts of different lengths.
    #[error(
        "the clean prompt has {clean} tokens and the corrupted prompt {corrupted}; \
         patching needs prompts of equal length"
    )]
    PromptLengthMismatch {
        /// Tokens of the clean prompt.
        clean: usize,
        /// Tokens of the corrupted prompt.
        corrupted: usize,
    },
    /// A position index at or past the end of the input.
    #[error("position {position} does not exist (the input has {len} tokens)")]
    PositionOutOfRange {
        /// Requested position.
        position: usize,
        /// Number of tokens of the input.
        len: usize,
    },
    /// A model component (hook site, head, layer output) that this model does not have or
    /// that the method cannot use.
    #[error("component {component} cannot be used: {reason}")]
    UnknownComponent {
        /// The component as asked for.
        component: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The model does not offer an operation a method needs.
    #[error("model {model:?} does not support {operation}")]
    UnsupportedOperation {
        /// The model's name.
        model: String,
        /// The operation (`"final_norm"`, …).
        operation: String,
    },
    /// An explainer was asked for by a name nobody registered.
    #[error("no explainer named {name:?}; registered: {}", known.join(", "))]
    UnknownMethod {
        /// The requested name.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },
    /// Explanations that cannot be combined or compared (other tokens or another target).
    #[error("explanations cannot be combined: {reason}")]
    IncompatibleExplanations {
        /// What differs.
        reason: String,
    },
    /// Models compared on the same text do not share a vocabulary.
    #[error("models {first:?} and {second:?} do not share a vocabulary: {reason}")]
    VocabularyMismatch {
        /// One model.
        first: String,
        /// The other.
        second: String,
        /// What differs.
        reason: String,
    },

    // ----- perturbation ----------------------------------------------------------------
    /// A method that enumerates every coalition was given more features than it can afford.
    #[error(
        "{method} enumerates all 2^n coalitions and allows at most {max} features, got \
         {n_features}; group tokens into fewer features or use a sampling method"
    )]
    TooManyFeatures {
        /// The method.
        method: String,
        /// Features asked for.
        n_features: usize,
        /// The largest number the method accepts.
        max: usize,
    },
    /// A sampling method was asked for zero samples.
    #[error("{method} needs at least one sample ({parameter} is 0)")]
    NoSamples {
        /// The method.
        method: String,
        /// The setting that is zero.
        parameter: String,
    },
    /// A coalition (keep-mask) does not have one entry per feature.
    #[error("mask {index} has {len} entries, expected one per feature ({expected})")]
    MaskLength {
        /// Which mask.
        index: usize,
        /// Its length.
        len: usize,
        /// The number of features.
        expected: usize,
    },
    /// A feature span is empty or reaches past the input.
    #[error("span {start}..{end} is empty or lies outside the input's {len} tokens")]
    SpanOutOfRange {
        /// First token of the span.
        start: usize,
        /// One past its last token.
        end: usize,
        /// Tokens in the input.
        len: usize,
    },

    // ----- foreign ---------------------------------------------------------------------
    /// libtorch reported an error.
    #[error("libtorch error")]
    Torch(#[from] tch::TchError),
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid_argument(reason: impl Into<String>) -> Self {
        Self::InvalidArgument { reason: reason.into() }
    }

    /// Shorthand for [`Error::InvalidConfig`].
    pub fn invalid_config(reason: impl Into<String>) -> Self {
        Self::InvalidConfig { reason: reason.into() }
    }

    /// Shorthand for an [`Error::Io`] about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_the_sentence_and_its_sources() {
        let e = Error::invalid_argument("the mask has 3 entries for 5 tokens");
        assert_eq!(format!("{e:?}"), e.to_string());
        assert!(!format!("{e:?}").contains("InvalidArgument {"));
        let io = Error::io("/no/such/file", std::io::Error::other("disk on fire"));
        assert_eq!(format!("{io:?}"), "cannot read /no/such/file: disk on fire");
    }
}
