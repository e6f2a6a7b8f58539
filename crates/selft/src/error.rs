//! Errors of the DP-SelFT pipeline.

use std::path::PathBuf;

/// What can go wrong in a stage of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum SelftError {
    /// A configuration value is out of range or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON or TOML file has unexpected content.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
    /// The DP engine failed.
    #[error(transparent)]
    Dp(#[from] dpselft_dp::DpError),
    /// A chart could not be drawn or written.
    #[error(transparent)]
    Chart(#[from] dpselft_chart::ChartError),
    /// The model engine failed.
    #[error(transparent)]
    Model(#[from] dpselft_model::ModelError),
    /// The accountant failed.
    #[error(transparent)]
    Privacy(#[from] dpselft_privacy::PrivacyError),
    /// A data set failed validation.
    #[error(transparent)]
    Data(#[from] dpselft_data::DataError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, SelftError>;

/// An I/O error on `path`.
pub fn io_err(path: impl Into<PathBuf>, source: std::io::Error) -> SelftError {
    SelftError::Io {
        path: path.into(),
        source,
    }
}
