//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong in the DP engine. Each message says what was wrong and what was
/// expected, so a caller (the trainer, the CLI) can pass it on unchanged.
#[derive(Debug, Error)]
pub enum DpError {
    /// A tensor had the wrong rank, size or dtype for the operation.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        /// Which tensor (e.g. "linear record: g").
        what: String,
        /// What was expected, in words.
        expected: String,
        /// What was found.
        got: String,
    },
    /// A configuration value out of its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name as the user knows it (e.g. "sampling rate q").
        name: &'static str,
        /// The offending value, printed.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// A per-example gradient norm was NaN or infinite; clipping cannot bound such an example.
    #[error(
        "example {example} of the micro-batch has a non-finite gradient norm ({norm}); \
         the model diverged or the loss overflowed (lower the learning rate)"
    )]
    NonFiniteNorm {
        /// Position of the example in the micro-batch.
        example: usize,
        /// The norm found.
        norm: f64,
    },
    /// The operating system's random number generator failed.
    #[error("cannot seed the noise RNG from the operating system: {0}")]
    OsRng(String),
    /// A saved RNG or optimizer state could not be read back.
    #[error("invalid saved state: {0}")]
    State(String),
    /// An error from the tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error from the model (loading, forward pass, trainable spec, saving).
    #[error(transparent)]
    Model(#[from] dpselft_model::ModelError),
    /// An error from the privacy accountant or the ledger.
    #[error(transparent)]
    Privacy(#[from] dpselft_privacy::PrivacyError),
    /// A file of a run (metrics, checkpoint, configuration) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A training configuration or data set that cannot be trained as asked.
    #[error("{0}")]
    Config(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, DpError>;

pub(crate) fn invalid(
    name: &'static str,
    value: impl ToString,
    reason: impl Into<String>,
) -> DpError {
    DpError::InvalidParameter {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn shape_err(
    what: impl Into<String>,
    expected: impl Into<String>,
    got: impl ToString,
) -> DpError {
    DpError::Shape {
        what: what.into(),
        expected: expected.into(),
        got: got.to_string(),
    }
}

pub(crate) fn io_err(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> DpError {
    DpError::Io {
        path: path.into(),
        source,
    }
}
