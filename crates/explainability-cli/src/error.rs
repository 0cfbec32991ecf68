//! The command line's error type and its exit codes: one code per class of error, so that a
//! script (or a scheduler's retry policy) can tell a bad argument from a bad model file or a
//! refused output folder.

use std::path::PathBuf;

use explainability::Error as LibraryError;

/// Exit codes, one per class of error (documented in the README's command-line section and in
/// `explain --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// 1: anything else (a libtorch failure, an internal error).
    Other = 1,
    /// 2: a bad command line (clap's own usage errors exit 2 as well): a bad `--shard`, an
    /// unknown `--format`, a shard index out of range, contradictory options.
    Usage = 2,
    /// 3: bad input data: a missing or unreadable input file, a malformed JSONL line, a
    /// duplicate id, an empty text, a target that is not one token.
    Input = 3,
    /// 4: the model cannot be loaded: missing path, not a model, bad GGUF, unsupported
    /// architecture, tensor type or tokenizer, missing weights.
    Model = 4,
    /// 5: a method cannot run: an unknown method name, a method that fails on the text.
    Method = 5,
    /// 6: an output folder that holds another job's results, or shards that fail `merge`'s
    /// checks (missing, torn, or not matching their manifest).
    Output = 6,
    /// 7: writing results failed (disk full, permissions).
    Io = 7,
}

/// Everything the command line reports.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A library error (its class follows the variant).
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// A bad command line.
    #[error("{0}")]
    Usage(String),
    /// Bad input data.
    #[error("{0}")]
    Input(String),
    /// A method failed on the one text it was asked to explain.
    #[error("{0}")]
    Method(String),
    /// A refused or inconsistent output folder.
    #[error("{0}")]
    Output(String),
    /// Reading or writing a result file failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file could not be written or read.
    #[error("Parquet file {path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet library said.
        message: String,
    },
}

/// Result alias of the command line.
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// The error's class, which is its exit code.
    pub fn class(&self) -> ExitClass {
        match self {
            CliError::Usage(_) => ExitClass::Usage,
            CliError::Input(_) => ExitClass::Input,
            CliError::Method(_) => ExitClass::Method,
            CliError::Output(_) | CliError::Parquet { .. } => ExitClass::Output,
            CliError::Write { .. } => ExitClass::Io,
            CliError::Library(e) => library_class(e),
        }
    }

    /// The Display text with every `source()` appended (`a: b: c`), never Debug.
    pub fn message(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        // `transparent` forwards source() to the inner error's source: skip a duplicate.
        while let Some(s) = source {
            let text = s.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        message
    }

    /// Shorthand for a [`CliError::Write`].
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CliError::Write { path: path.into(), source }
    }
}

/// The class of a library error.
fn library_class(e: &LibraryError) -> ExitClass {
    use LibraryError as E;
    match e {
        E::PathNotFound { .. }
        | E::UnrecognisedModelPath { .. }
        | E::AmbiguousModelPath { .. }
        | E::GgufBadMagic { .. }
        | E::GgufUnsupportedVersion { .. }
        | E::GgufTruncated { .. }
        | E::GgufImplausible { .. }
        | E::GgufMalformed { .. }
        | E::UnsupportedTensorType { .. }
        | E::UnsupportedDtype { .. }
        | E::MissingMetadata { .. }
        | E::OllamaModel { .. }
        | E::UnsupportedArchitecture { .. }
        | E::UnsupportedRopeScaling { .. }
        | E::NoHead { .. }
        | E::UnsupportedTokenizer { .. }
        | E::MissingWeight { .. }
        | E::WeightShape { .. }
        | E::UnusedWeights { .. }
        | E::InvalidConfig { .. }
        | E::Safetensors { .. }
        | E::Json { .. }
        | E::VocabularyMismatch { .. }
        | E::DeviceUnavailable { .. } => ExitClass::Model,
        E::EmptyText
        | E::SequenceTooLong { .. }
        | E::TokenOutOfRange { .. }
        | E::PositionOutOfRange { .. }
        | E::SpanOutOfRange { .. }
        | E::Tokenizer { .. } => ExitClass::Input,
        E::UnknownMethod { .. }
        | E::TooManyFeatures { .. }
        | E::NoSamples { .. }
        | E::UnsupportedOperation { .. }
        | E::UnknownComponent { .. }
        | E::IncompatibleExplanations { .. }
        | E::NonFinite { .. } => ExitClass::Method,
        E::InvalidArgument { .. } => ExitClass::Usage,
        E::Io { .. } => ExitClass::Io,
        _ => ExitClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_chain_sources_and_classes_follow_variants() {
        let e = CliError::from(LibraryError::io(
            "/nope",
            std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
        ));
        assert_eq!(e.message(), "cannot read /nope: No such file");
        assert_eq!(e.class(), ExitClass::Io);
        let e = CliError::from(LibraryError::UnknownMethod { name: "x".into(), known: vec![] });
        assert_eq!(e.class() as i32, 5);
        assert_eq!(CliError::Usage("u".into()).class() as i32, 2);
    }
}
