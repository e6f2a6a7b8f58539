//! Generation on SmolLM2 and save → load round trips.

mod common;

use candle_core::Device;
use dpselft_model::generate::{SampleParams, generate, generate_ids, inspect_encoder, inspect_lm};
use dpselft_model::save::save_hf;
use dpselft_model::tokenizer::encode;
use dpselft_model::{Ctx, Model, Pooling};

#[test]
fn smollm2_generates_and_batches_consistently() {
    let m = Model::load(&common::smollm2_gguf(), &Device::Cpu).unwrap();
    let tok = m.tokenizer().unwrap().clone();
    let text = generate(&m, &tok, "The capital of France is", 6, 0.0, 1.0, 0).unwrap();
    println!("greedy: {text:?}");
    assert!(text.contains("Paris"), "{text}");
    // Batched, left-padded greedy decoding equals one-by-one decoding.
    let p1 = encode(&tok, "The capital of France is", false).unwrap();
    let p2 = encode(&tok, "Water boils at", false).unwrap();
    let params = SampleParams {
        max_new_tokens: 4,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop_at_eos: true,
    };
    let both = generate_ids(&m, &[p1.clone(), p2.clone()], &params).unwrap();
    assert_eq!(both[0], generate_ids(&m, &[p1], &params).unwrap()[0]);
    assert_eq!(both[1], generate_ids(&m, &[p2], &params).unwrap()[0]);
    // Seeded sampling is reproducible.
    let sp = SampleParams {
        max_new_tokens: 5,
        temperature: 0.8,
        top_p: 0.9,
        seed: 42,
        stop_at_eos: true,
    };
    let p = encode(&tok, "Once upon a time", false).unwrap();
    assert_eq!(
        generate_ids(&m, std::slice::from_ref(&p), &sp).unwrap(),
        generate_ids(&m, &[p], &sp).unwrap()
    );
    let ins = inspect_lm(&m, "The capital of France is").unwrap();
    assert_eq!(ins.next_token_top10[0].0, 7042);
    assert_eq!(ins.next_token_top10.len(), 10);
    let json = serde_json::to_value(&ins).unwrap();
    assert_eq!(
        json["tokens"],
        serde_json::json!([504, 3575, 282, 4649, 314])
    );
    assert_eq!(json["next_token_top10"][0][0], serde_json::json!(7042));
    assert!(json["last_hidden_mean"].is_number());
    // The asset id resolves to the folder, and a folder holding one GGUF loads it.
    let dir = common::asset("smollm2");
    let m2 = Model::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(inspect_lm(&m2, "The capital of France is").unwrap(), ins);
}

#[test]
fn minilm_classifier_save_load_round_trip() {
    let mut m = Model::load(&common::minilm_dir(), &Device::Cpu).unwrap();
    let ins = inspect_encoder(&m, "Hello world").unwrap();
    assert_eq!(ins.embedding.len(), 384);
    m.set_classifier(vec!["ham".into(), "spam".into()], Pooling::Mean, 5)
        .unwrap();
    let batch = m
        .encode_batch(&["buy now!!!", "see you at lunch tomorrow"])
        .unwrap();
    let before = m.forward_train(&batch, Ctx::plain()).unwrap();
    let dir = std::env::temp_dir().join(format!("dpselft-save-{}", std::process::id()));
    save_hf(&m, &dir).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "labels.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
    ] {
        assert!(dir.join(f).exists(), "{f} not written");
    }
    let back = Model::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(back.head, m.head);
    let after = back
        .forward_train(
            &back
                .encode_batch(&["buy now!!!", "see you at lunch tomorrow"])
                .unwrap(),
            Ctx::plain(),
        )
        .unwrap();
    assert_eq!(common::max_abs(&before, &after), 0.0);
    std::fs::remove_dir_all(&dir).unwrap();
}
