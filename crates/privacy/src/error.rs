//! The error type of the privacy crate.

use std::path::PathBuf;

/// Everything that can go wrong in accounting, calibration or the ledger.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// A parameter is outside its valid range (the message says which range).
    #[error("invalid {name} = {value}: expected {expected}")]
    InvalidParameter {
        /// The parameter's name, as the user would know it.
        name: &'static str,
        /// The value given, formatted.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The requested guarantee cannot be reached (for example δ below the mass of infinite loss).
    #[error("{0}")]
    Unreachable(String),
    /// An internal failure (a worker thread panicked); a bug, reported instead of a crash.
    #[error("internal error: {0}")]
    Internal(String),
    /// The PLD grid would be too large for this mechanism at this discretisation.
    #[error(
        "the privacy-loss grid would need {points} points (limit {limit}); use a coarser \
         discretisation or a larger noise multiplier"
    )]
    GridTooLarge {
        /// Points needed.
        points: u64,
        /// The limit.
        limit: u64,
    },
    /// Calibration found no noise multiplier in its search range.
    #[error("calibration failed: {0}")]
    Calibration(String),
    /// Reading or writing a ledger file failed.
    #[error("ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// δ is not below 1/n: the guarantee would allow publishing one example outright.
    #[error(
        "δ = {delta:e} is not below 1/n = {:e} for n = {examples} private examples: at such a δ \
         a mechanism that publishes one example outright is (0, δ)-DP. Choose δ < 1/n (1e-5 or \
         less is usual), or allow it explicitly (--allow-large-delta), which the ledger records",
        1.0 / *examples as f64
    )]
    DeltaNotBelowOneOverN {
        /// δ.
        delta: f64,
        /// n.
        examples: usize,
    },
    /// A ledger file is not valid.
    #[error("ledger {path}: {message}")]
    LedgerFormat {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl PrivacyError {
    pub(crate) fn invalid(
        name: &'static str,
        value: impl ToString,
        expected: &'static str,
    ) -> Self {
        Self::InvalidParameter {
            name,
            value: value.to_string(),
            expected,
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, PrivacyError>;
