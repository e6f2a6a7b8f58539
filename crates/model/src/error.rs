//! The error type of the model crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading, running, training or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file (config, tokenizer) could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The tokenizer library reported an error.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A GGUF file lacks a metadata key or has one of the wrong type.
    #[error("{path}: GGUF metadata `{key}`: {what}")]
    GgufMetadata {
        /// The GGUF file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What was expected.
        what: String,
    },
    /// A weight file lacks a tensor the architecture needs.
    #[error("{source_file}: missing tensor `{name}` (expected for {arch})")]
    MissingTensor {
        /// The file or folder the weights came from.
        source_file: PathBuf,
        /// The tensor name (in the file's own naming scheme).
        name: String,
        /// The architecture being loaded.
        arch: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    BadShape {
        /// The tensor name.
        name: String,
        /// The shape found.
        got: Vec<usize>,
        /// The shape expected.
        expected: Vec<usize>,
    },
    /// The architecture is not one this crate implements.
    #[error(
        "{path}: unknown architecture `{arch}` (supported: BertModel/bert, LlamaForCausalLM/llama)"
    )]
    UnknownArchitecture {
        /// The config or GGUF file.
        path: PathBuf,
        /// The architecture named there.
        arch: String,
    },
    /// A trainable-set specification could not be parsed or does not fit the model.
    #[error("trainable spec `{spec}`: {what}")]
    TrainableSpec {
        /// The spec as given.
        spec: String,
        /// What was wrong and what was expected.
        what: String,
    },
    /// An argument is invalid (e.g. an empty batch, a token id out of range).
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
