//! A classifier as a `sentence-transformers` model: Transformer (the body in the folder's root)
//! → Pooling (our pooling) → Dense (the head, identity activation), so that
//! `SentenceTransformer(dir).encode(texts)` returns the classifier's logits. Both directions
//! live here: [`write_modules`] for saving and [`read_head`] for loading the head back.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use super::{write_json, write_safetensors};
use crate::error::{ModelError, Result};
use crate::heads::{Head, Pooling};
use crate::loader::read_json;
use crate::model::Model;

/// The folder of the pooling module.
const POOLING_DIR: &str = "1_Pooling";
/// The folder of the Dense module (the classifier).
const DENSE_DIR: &str = "2_Dense";
/// sentence-transformers' name of an identity activation.
const IDENTITY: &str = "torch.nn.modules.linear.Identity";

/// Writes modules.json, sentence_bert_config.json and the Pooling and Dense modules of a
/// classifier into `dir` (the body's files are written by the caller).
pub(crate) fn write_modules(model: &Model, dir: &Path) -> Result<()> {
    let Head::Classifier { labels, pooling } = &model.head else {
        return Ok(());
    };
    let modules = json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": DENSE_DIR, "type": "sentence_transformers.models.Dense"},
    ]);
    write_json(&dir.join("modules.json"), &modules)?;
    write_json(
        &dir.join("sentence_bert_config.json"),
        &json!({"max_seq_length": model.config.max_positions(), "do_lower_case": false}),
    )?;
    let d = model.config.hidden_size();
    write_json(
        &dir.join(POOLING_DIR).join("config.json"),
        &json!({
            "word_embedding_dimension": d,
            "pooling_mode_cls_token": *pooling == Pooling::Cls,
            "pooling_mode_mean_tokens": *pooling == Pooling::Mean,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
            "pooling_mode_weightedmean_tokens": false,
            "pooling_mode_lasttoken": *pooling == Pooling::LastToken,
            "include_prompt": true,
        }),
    )?;
    let (wname, bname) = model.arch().classifier_param_names();
    let mut tensors = BTreeMap::new();
    let w = model.params.get(wname)?.detach().to_dtype(DType::F32)?;
    tensors.insert("linear.weight".to_string(), w.contiguous()?);
    if let Some(b) = bname {
        let b = model.params.get(b)?.detach().to_dtype(DType::F32)?;
        tensors.insert("linear.bias".to_string(), b.contiguous()?);
    }
    write_json(
        &dir.join(DENSE_DIR).join("config.json"),
        &json!({
            "in_features": d,
            "out_features": labels.len(),
            "bias": bname.is_some(),
            "activation_function": IDENTITY,
        }),
    )?;
    write_safetensors(&dir.join(DENSE_DIR).join("model.safetensors"), &tensors)
}

/// The classifier head of a folder saved by [`write_modules`]: its tensors under the family's
/// classifier names (`wname`, `bname`) and its pooling; `None` when the folder has no such
/// head (a plain model, or a sentence-transformers model whose Dense is a projection with an
/// activation, not logits).
pub(crate) fn read_head(
    dir: &Path,
    wname: &str,
    bname: Option<&str>,
    device: &Device,
) -> Result<Option<(BTreeMap<String, Tensor>, Pooling)>> {
    let dense_config = dir.join(DENSE_DIR).join("config.json");
    if !dir.join("modules.json").is_file() || !dense_config.is_file() {
        return Ok(None);
    }
    let dense = read_json(&dense_config)?;
    if dense.get("activation_function").and_then(|a| a.as_str()) != Some(IDENTITY) {
        return Ok(None);
    }
    let weights_path = dir.join(DENSE_DIR).join("model.safetensors");
    let mut loaded = candle_core::safetensors::load(&weights_path, device).map_err(|e| {
        ModelError::Invalid(format!(
            "{}: not a readable safetensors file: {e}",
            weights_path.display()
        ))
    })?;
    let mut tensors = BTreeMap::new();
    let missing = |name: &str| {
        ModelError::Invalid(format!(
            "{}: no `{name}` tensor (the classifier's Dense module)",
            weights_path.display()
        ))
    };
    let w = loaded
        .remove("linear.weight")
        .ok_or_else(|| missing("linear.weight"))?;
    tensors.insert(wname.to_string(), w.to_dtype(DType::F32)?);
    if let Some(bname) = bname {
        let b = loaded
            .remove("linear.bias")
            .ok_or_else(|| missing("linear.bias"))?;
        tensors.insert(bname.to_string(), b.to_dtype(DType::F32)?);
    }
    let pooling_path = dir.join(POOLING_DIR).join("config.json");
    let p = read_json(&pooling_path)?;
    let flag = |k: &str| p.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let pooling = match (
        flag("pooling_mode_mean_tokens"),
        flag("pooling_mode_cls_token"),
        flag("pooling_mode_lasttoken"),
    ) {
        (true, false, false) => Pooling::Mean,
        (false, true, false) => Pooling::Cls,
        (false, false, true) => Pooling::LastToken,
        _ => {
            return Err(ModelError::Invalid(format!(
                "{}: expected exactly one of pooling_mode_mean_tokens, pooling_mode_cls_token, \
                 pooling_mode_lasttoken to be true",
                pooling_path.display()
            )));
        }
    };
    Ok(Some((tensors, pooling)))
}
