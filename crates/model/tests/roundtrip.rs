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
