//! LoRA factors as a PEFT adapter (`adapter/adapter_config.json` + `adapter_model.safetensors`),
//! for users who keep one base model and swap adapters. Written only when the adapter and the
//! base reproduce the model: every trained parameter is a LoRA factor or the classifier head
//! (which is saved as the Dense module beside it). Otherwise the merged weights are the export.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::DType;
use serde_json::json;

use super::{write_json, write_safetensors};
use crate::error::Result;
use crate::heads::Head;
use crate::model::Model;

/// The adapter's folder inside a saved model.
pub const ADAPTER_DIR: &str = "adapter";

/// Writes `dir/adapter/` if the model has LoRA factors and nothing else of the body was
/// trained; does nothing otherwise.
pub(crate) fn write_adapter(model: &Model, dir: &Path) -> Result<()> {
    let factors: Vec<&String> = model
        .params
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.contains(".lora_"))
        .collect();
    if factors.is_empty() || !only_factors_and_head_trained(model) {
        return Ok(());
    }
    let arch = model.arch();
    let mut tensors = BTreeMap::new();
    let mut modules = std::collections::BTreeSet::new();
    let mut rank = 0;
    for name in factors {
        let t = model.params.get(name)?.detach().to_dtype(DType::F32)?;
        if name.ends_with(".lora_A.weight") {
            rank = t.dims2()?.0;
            let module = name.trim_end_matches(".lora_A.weight");
            modules.insert(arch.peft_module_name(module, &model.head));
        }
        let key = format!(
            "base_model.model.{}",
            arch.peft_module_name(name, &model.head)
        );
        tensors.insert(key, t.contiguous()?);
    }
    let task_type = match model.head {
        Head::CausalLm => json!("CAUSAL_LM"),
        _ => serde_json::Value::Null,
    };
    let base = model
        .source()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let config = json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base,
        "r": rank,
        // PEFT scales B·A by lora_alpha / r, as we do by `lora_scale`.
        "lora_alpha": model.params.lora_scale * rank as f64,
        "lora_dropout": 0.0,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "modules_to_save": null,
        "inference_mode": true,
    });
    let out = dir.join(ADAPTER_DIR);
    write_json(&out.join("adapter_config.json"), &config)?;
    write_safetensors(&out.join("adapter_model.safetensors"), &tensors)
}

/// Whether every trainable parameter is a LoRA factor or belongs to the classifier head.
fn only_factors_and_head_trained(model: &Model) -> bool {
    let (w, b) = model.arch().classifier_param_names();
    let head = |n: &str| matches!(model.head, Head::Classifier { .. }) && (n == w || Some(n) == b);
    model
        .params
        .vars()
        .keys()
        .all(|n| n.contains(".lora_") || head(n))
}
