//! Saving: atomic writes and the Hugging Face layout.

use std::path::Path;

use crate::error::{ModelError, Result};

/// Writes `bytes` to `path` atomically through [`dpselft_fsio::write_bytes_atomic`] (a synced
/// temporary file renamed over `path`, then the folder synced), creating the folder first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    }
    dpselft_fsio::write_bytes_atomic(path, bytes).map_err(|e| ModelError::io(path, e))
}

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor};

use crate::heads::Head;
use crate::model::Model;

/// The weights to save in Hugging Face naming: LoRA factors merged into their base weights
/// (W + (α/r)·B A), f32, each under the family's export name
/// ([`crate::arch::Architecture::hf_tensor_name`]: BERT classifiers get the `bert.` prefix of
/// `BertForSequenceClassification`, which our loader strips again).
pub fn hf_tensors(model: &Model) -> Result<BTreeMap<String, Tensor>> {
    let arch = model.arch();
    let mut out = BTreeMap::new();
    for (name, t) in model.params.iter() {
        if name.contains(".lora_") {
            continue;
        }
        let mut t = t.detach().to_dtype(DType::F32)?;
        if let Some((a, b)) = model.params.lora_of(name) {
            let a = model.params.get(&a)?.to_dtype(DType::F32)?;
            let b = model.params.get(&b)?.to_dtype(DType::F32)?;
            t = (t + (b.matmul(&a)? * model.params.lora_scale)?)?;
        }
        out.insert(arch.hf_tensor_name(name, &model.head), t.contiguous()?);
    }
    Ok(out)
}

/// The `config.json` to save: the architecture set to the head's HF class, `id2label` /
/// `label2id` for classifiers.
pub fn hf_config_json(model: &Model) -> Result<serde_json::Value> {
    let arch = model.arch();
    let mut v = arch.config_json()?;
    v["architectures"] = serde_json::json!([arch.hf_architecture(&model.head)]);
    if let Head::Classifier { labels, pooling } = &model.head {
        v["classifier_pooling"] = serde_json::json!(pooling.as_str());
        let id2label: BTreeMap<String, String> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), l.clone()))
            .collect();
        let label2id: BTreeMap<String, usize> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        v["id2label"] = serde_json::json!(id2label);
        v["label2id"] = serde_json::json!(label2id);
        v["num_labels"] = serde_json::json!(labels.len());
    }
    Ok(v)
}

/// Saves `model` in the Hugging Face layout under `dir`: `config.json`, `model.safetensors`,
/// `tokenizer.json` (if the model has a tokenizer) and, for classifiers, `labels.json`.
/// Every file is written atomically.
pub fn save_hf(model: &Model, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let cfg = hf_config_json(model)?;
    let cfg_text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| ModelError::Invalid(format!("serialising config: {e}")))?;
    write_atomic(&dir.join("config.json"), cfg_text.as_bytes())?;
    let tensors: HashMap<String, Tensor> = hf_tensors(model)?.into_iter().collect();
    let bytes = safetensors::tensor::serialize(&tensors, None)
        .map_err(|e| ModelError::Invalid(format!("serialising the weights: {e}")))?;
    write_atomic(&dir.join("model.safetensors"), &bytes)?;
    if let Some(tok) = &model.tokenizer {
        crate::tokenizer::save_tokenizer_json(tok, &dir.join("tokenizer.json"))?;
    }
    if let Head::Classifier { labels, .. } = &model.head {
        let text = serde_json::to_string_pretty(labels)
            .map_err(|e| ModelError::Invalid(format!("serialising labels: {e}")))?;
        write_atomic(&dir.join("labels.json"), text.as_bytes())?;
    }
    Ok(())
}
