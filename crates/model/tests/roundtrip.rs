//! Save → load round trips on tiny random models (HF layout, LoRA merged, classifiers).

mod common;

use candle_core::{DType, Device};
use common::{tiny_bert, tiny_llama};
use dpselft_model::save::save_hf;
use dpselft_model::trainable::{self, TrainableSpec};
use dpselft_model::{Batch, Ctx, Head, Model, Pooling};

fn batch() -> Batch {
    let seqs = vec![vec![3u32, 5, 7, 9, 4], vec![6, 8, 10]];
    Batch::from_ids(&seqs, 0, false, &Device::Cpu).unwrap()
}

fn round_trip(m: &Model, tag: &str) -> Model {
    let dir = std::env::temp_dir().join(format!("dpselft-rt-{tag}-{}", std::process::id()));
    save_hf(m, &dir).unwrap();
    let back = Model::load(&dir, &Device::Cpu).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    back
}

#[test]
fn llama_lm_with_merged_lora_round_trips() {
    for tied in [true, false] {
        let mut m = Model::random(tiny_llama(tied), 0.3, 1, DType::F32, &Device::Cpu).unwrap();
        m.head = Head::CausalLm;
        trainable::apply(&mut m, &TrainableSpec::parse("lora:r=2;head").unwrap(), 0).unwrap();
        for (n, v) in m.params.vars().clone() {
            if n.contains("lora_B") {
                v.set(&v.as_tensor().ones_like().unwrap().affine(0.1, 0.0).unwrap())
                    .unwrap();
            }
        }
        let before = m.forward_train(&batch(), Ctx::plain()).unwrap();
        let back = round_trip(&m, if tied { "tied" } else { "untied" });
        assert_eq!(back.head, Head::CausalLm);
        assert!(back.params.names().iter().all(|n| !n.contains("lora")));
        let after = back.forward_train(&batch(), Ctx::plain()).unwrap();
        let d = common::max_abs(&before, &after);
        assert!(d < 1e-5, "tied={tied}: {d}");
    }
}

#[test]
fn classifiers_round_trip_exactly() {
    for (cfg, pooling) in [
        (tiny_bert(), Pooling::Mean),
        (tiny_bert(), Pooling::Cls),
        (tiny_llama(true), Pooling::LastToken),
    ] {
        let mut m = Model::random(cfg, 0.3, 2, DType::F32, &Device::Cpu).unwrap();
        m.set_classifier(vec!["x".into(), "y".into(), "z".into()], pooling, 9)
            .unwrap();
        let before = m.forward_train(&batch(), Ctx::plain()).unwrap();
        let back = round_trip(&m, "cls");
        assert_eq!(back.head, m.head);
        let after = back.forward_train(&batch(), Ctx::plain()).unwrap();
        assert_eq!(common::max_abs(&before, &after), 0.0);
    }
}

#[test]
fn missing_tensor_and_unknown_architecture_are_named() {
    let m = Model::random(tiny_bert(), 0.3, 3, DType::F32, &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("dpselft-missing-{}", std::process::id()));
    save_hf(&m, &dir).unwrap();
    let st = dir.join("model.safetensors");
    let mut map = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    map.remove("encoder.layer.1.output.dense.weight");
    candle_core::safetensors::save(&map, &st).unwrap();
    let e = Model::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("encoder.layer.1.output.dense.weight") && e.contains("missing"),
        "{e}"
    );
    std::fs::write(dir.join("config.json"), r#"{"model_type":"gpt_neox"}"#).unwrap();
    let e = Model::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("gpt_neox"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The tensors of a safetensors file.
fn read_st(path: &std::path::Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn a_lora_classifier_saves_a_peft_adapter_that_rebuilds_the_merged_weights() {
    for (cfg, tag) in [(tiny_bert(), "bert"), (tiny_llama(true), "llama")] {
        let base = Model::random(cfg, 0.3, 4, DType::F32, &Device::Cpu).unwrap();
        let mut m = base.clone();
        let pooling = m.default_pooling();
        m.set_classifier(vec!["a".into(), "b".into()], pooling, 3)
            .unwrap();
        trainable::apply(&mut m, &TrainableSpec::parse("lora:r=2;head").unwrap(), 0).unwrap();
        for (n, v) in m.params.vars().clone() {
            if n.contains("lora_B") {
                v.set(&v.as_tensor().ones_like().unwrap().affine(0.1, 0.0).unwrap())
                    .unwrap();
            }
        }
        let dir = std::env::temp_dir().join(format!("dpselft-peft-{tag}-{}", std::process::id()));
        save_hf(&m, &dir).unwrap();
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter/adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["peft_type"], "LORA");
        assert_eq!(config["r"], 2);
        let scale = config["lora_alpha"].as_f64().unwrap() / 2.0;
        let adapter = read_st(&dir.join("adapter/adapter_model.safetensors"));
        let merged = read_st(&dir.join("model.safetensors"));
        let targets = config["target_modules"].as_array().unwrap();
        assert!(!targets.is_empty());
        // W_merged = W_base + (α/r)·B·A for every target, named as PEFT names them.
        for target in targets {
            let module = target.as_str().unwrap();
            let a = &adapter[&format!("base_model.model.{module}.lora_A.weight")];
            let b = &adapter[&format!("base_model.model.{module}.lora_B.weight")];
            let ours = base
                .params
                .names()
                .into_iter()
                .find(|n| n.ends_with(&format!("{module}.weight")))
                .unwrap();
            let rebuilt =
                (base.params.get(&ours).unwrap() + (b.matmul(a).unwrap() * scale)).unwrap();
            let d = common::max_abs(&rebuilt, &merged[&ours]);
            assert!(d < 1e-6, "{tag} {module}: {d}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn no_adapter_when_more_than_the_factors_was_trained() {
    let mut m = Model::random(tiny_bert(), 0.3, 4, DType::F32, &Device::Cpu).unwrap();
    m.set_classifier(vec!["a".into(), "b".into()], Pooling::Mean, 3)
        .unwrap();
    trainable::apply(
        &mut m,
        &TrainableSpec::parse("lora:r=2;head,last:1").unwrap(),
        0,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("dpselft-nopeft-{}", std::process::id()));
    save_hf(&m, &dir).unwrap();
    assert!(dir.join("model.safetensors").is_file());
    assert!(!dir.join("adapter").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_classifier_folder_of_the_earlier_layout_still_loads() {
    // Earlier versions saved the head in the root (`bert.`-prefixed encoder, `classifier.*`)
    // with `classifier_pooling` in config.json.
    let mut m = Model::random(tiny_bert(), 0.3, 2, DType::F32, &Device::Cpu).unwrap();
    m.set_classifier(vec!["x".into(), "y".into()], Pooling::Cls, 9)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("dpselft-legacy-{}", std::process::id()));
    save_hf(&m, &dir).unwrap();
    let mut root: std::collections::HashMap<String, candle_core::Tensor> =
        read_st(&dir.join("model.safetensors"))
            .into_iter()
            .map(|(k, v)| (format!("bert.{k}"), v))
            .collect();
    let dense = read_st(&dir.join("2_Dense/model.safetensors"));
    root.insert("classifier.weight".into(), dense["linear.weight"].clone());
    root.insert("classifier.bias".into(), dense["linear.bias"].clone());
    candle_core::safetensors::save(&root, dir.join("model.safetensors")).unwrap();
    for module in ["modules.json", "1_Pooling", "2_Dense"] {
        let p = dir.join(module);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["classifier_pooling"] = serde_json::json!("cls");
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let back = Model::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.head, m.head);
    let before = m.forward_train(&batch(), Ctx::plain()).unwrap();
    let after = back.forward_train(&batch(), Ctx::plain()).unwrap();
    assert_eq!(common::max_abs(&before, &after), 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
