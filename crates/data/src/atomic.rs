//! Atomic file writes for datasets and label files (see [`dpselft_fsio::write_atomic`]).

use std::io::Write;
use std::path::Path;

use crate::DataError;

/// Writes `path` atomically: `write` fills a temporary file in the same folder, which is flushed,
/// synced and renamed onto `path`. On any error `path` is left as it was. The folder must exist.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), DataError> {
    dpselft_fsio::write_atomic(path, write).map_err(|source| DataError::Write {
        path: path.to_path_buf(),
        source,
    })
}
