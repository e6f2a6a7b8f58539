//! Saving a model as one folder that loads as it is in dpselft, in `transformers` and, for a
//! classifier, in `sentence-transformers` (same logits; `scripts/check-hf-export` checks it):
//!
//! ```text
//! config.json, model.safetensors   the body (BertModel, LlamaModel) or the causal LM
//!                                  (LlamaForCausalLM); LoRA factors merged
//! tokenizer.json, tokenizer_config.json
//! classifier: labels.json and the sentence-transformers modules (sentence_transformers.rs):
//!   modules.json, sentence_bert_config.json, 1_Pooling/config.json (our pooling),
//!   2_Dense/config.json + model.safetensors (the head, identity activation: the logits)
//! LoRA: adapter/adapter_config.json + adapter_model.safetensors (peft.rs), a PEFT adapter for
//!   the base model, when only the factors (and the head) were trained
//! ```
//!
//! The folder is written whole ([`dpselft_fsio::FolderWriter`]): a killed process leaves
//! the old folder or none, never a model with some files missing.

mod peft;
pub(crate) mod sentence_transformers;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::heads::Head;
use crate::model::Model;

/// Writes `bytes` to `path` atomically through [`dpselft_fsio::write_bytes_atomic`] (a synced
/// temporary file renamed over `path`, then the folder synced), creating the folder first.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    }
    dpselft_fsio::write_bytes_atomic(path, bytes).map_err(|e| ModelError::io(path, e))
}

/// Writes `value` as pretty JSON to `path` (atomically).
pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ModelError::Invalid(format!("serialising {}: {e}", path.display())))?;
    write_atomic(path, text.as_bytes())
}

/// Writes `tensors` as a safetensors file at `path` (atomically), with the `format: pt`
/// metadata that `transformers` requires of a PyTorch checkpoint.
pub(crate) fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let tensors: HashMap<&String, &Tensor> = tensors.iter().collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::tensor::serialize(tensors, Some(metadata))
        .map_err(|e| ModelError::Invalid(format!("serialising {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// The body's weights in Hugging Face naming, f32: every parameter but the LoRA factors (merged
/// into their base weights: W + (α/r)·B A) and the classifier's (saved as the Dense module).
pub fn hf_tensors(model: &Model) -> Result<BTreeMap<String, Tensor>> {
    let head_params = classifier_params(model);
    let mut out = BTreeMap::new();
    for (name, t) in model.params.iter() {
        if name.contains(".lora_") || head_params.contains(&name.as_str()) {
            continue;
        }
        let mut t = t.detach().to_dtype(DType::F32)?;
        if let Some((a, b)) = model.params.lora_of(name) {
            let a = model.params.get(&a)?.to_dtype(DType::F32)?;
            let b = model.params.get(&b)?.to_dtype(DType::F32)?;
            t = (t + (b.matmul(&a)? * model.params.lora_scale)?)?;
        }
        out.insert(name.clone(), t.contiguous()?);
    }
    Ok(out)
}

/// The names of the classifier's parameters (weight, optional bias); none for other heads.
fn classifier_params(model: &Model) -> Vec<&'static str> {
    match model.head {
        Head::Classifier { .. } => {
            let (w, b) = model.arch().classifier_param_names();
            std::iter::once(w).chain(b).collect()
        }
        _ => Vec::new(),
    }
}

/// The `config.json` to save: the family's config, `architectures` set to the class that
/// holds the saved weights, and `id2label` / `label2id` for classifiers.
pub fn hf_config_json(model: &Model) -> Result<serde_json::Value> {
    let arch = model.arch();
    let mut v = arch.config_json()?;
    v["architectures"] = serde_json::json!([arch.hf_architecture(&model.head)]);
    if let Head::Classifier { labels, .. } = &model.head {
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

/// Saves `model` under `dir` in the layout of the module docs, replacing any folder there.
pub fn save_hf(model: &Model, dir: &Path) -> Result<()> {
    let folder = dpselft_fsio::FolderWriter::begin(dir).map_err(|e| ModelError::io(dir, e))?;
    write_model_files(model, folder.path())?;
    folder.commit().map_err(|e| ModelError::io(dir, e))
}

/// The files of [`save_hf`], written into `dir` (an empty folder).
fn write_model_files(model: &Model, dir: &Path) -> Result<()> {
    write_json(&dir.join("config.json"), &hf_config_json(model)?)?;
    write_safetensors(&dir.join("model.safetensors"), &hf_tensors(model)?)?;
    if let Some(tok) = &model.tokenizer {
        crate::tokenizer::save_tokenizer_json(tok, &dir.join("tokenizer.json"))?;
        write_json(
            &dir.join("tokenizer_config.json"),
            &crate::tokenizer::hf_tokenizer_config(
                tok,
                &model.special,
                model.config.max_positions(),
                model.arch().hf_model_input_names(),
            ),
        )?;
    }
    if let Head::Classifier { labels, .. } = &model.head {
        write_json(&dir.join("labels.json"), &serde_json::json!(labels))?;
        sentence_transformers::write_modules(model, dir)?;
    }
    peft::write_adapter(model, dir)?;
    Ok(())
}
