//! Hugging Face model folders: `config.json` + one or several `*.safetensors` files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use super::Weights;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

/// The `*.safetensors` files of a folder, sorted (covers `model.safetensors` and shards
/// `model-00001-of-00002.safetensors`).
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| ModelError::io(dir, e))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: no *.safetensors file in this model folder",
            dir.display()
        )));
    }
    Ok(files)
}

/// Loads every floating-point tensor of the folder's safetensors files as f32 on `device`
/// (integer buffers such as BERT's `embeddings.position_ids` are skipped).
pub fn load_safetensors_dir(dir: &Path, device: &Device) -> Result<Weights> {
    let mut tensors = BTreeMap::new();
    for f in safetensors_files(dir)? {
        let map = candle_core::safetensors::load(&f, device).map_err(|e| {
            ModelError::Invalid(format!(
                "{}: not a readable safetensors file: {e}",
                f.display()
            ))
        })?;
        for (k, t) in map {
            if matches!(
                t.dtype(),
                DType::F32 | DType::F16 | DType::BF16 | DType::F64
            ) {
                tensors.insert(k, t.to_dtype(DType::F32)?);
            }
        }
    }
    Ok(Weights::new(tensors, dir))
}

/// Loads a Hugging Face model folder: its `config.json` and weights.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<(ModelConfig, Weights)> {
    let cfg = ModelConfig::from_json_file(&dir.join("config.json"))?;
    let weights = load_safetensors_dir(dir, device)?;
    Ok((cfg, weights))
}
