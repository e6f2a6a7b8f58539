//! Weight loading: Hugging Face folders (config.json + *.safetensors) and GGUF files.
//!
//! Both produce a [`Weights`] map in Hugging Face tensor naming, f32, plus a [`ModelConfig`];
//! the architectures then take their tensors from it by name.

pub mod gguf;
pub mod hf;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use crate::error::{ModelError, Result};

/// Reads and parses the JSON file `path` (errors name the file).
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Named f32 tensors in Hugging Face naming, with the file or folder they came from.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Tensors by Hugging Face name.
    pub tensors: BTreeMap<String, Tensor>,
    /// Where they were read from (named in errors).
    pub source: PathBuf,
}

impl Weights {
    /// Wraps a map of tensors.
    pub fn new(tensors: BTreeMap<String, Tensor>, source: impl Into<PathBuf>) -> Self {
        Self {
            tensors,
            source: source.into(),
        }
    }

    /// Removes and returns tensor `name`, or an error naming it and the architecture.
    pub fn take(&mut self, name: &str, arch: &str) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor {
                source_file: self.source.clone(),
                name: name.to_string(),
                arch: arch.to_string(),
            })?;
        Ok(t)
    }

    /// Like [`Weights::take`] but also checks the shape.
    pub fn take_shaped(&mut self, name: &str, arch: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.take(name, arch)?;
        if t.dims() != shape {
            return Err(ModelError::BadShape {
                name: name.to_string(),
                got: t.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(t)
    }

    /// Whether tensor `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes a leading `prefix` (e.g. `bert.`) from every name that has it.
    pub fn strip_prefix(&mut self, prefix: &str) {
        let old = std::mem::take(&mut self.tensors);
        for (k, v) in old {
            let k = k.strip_prefix(prefix).map(str::to_string).unwrap_or(k);
            self.tensors.insert(k, v);
        }
    }
}

/// Whether `path` names a GGUF file (by extension).
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}
