//! MiniLM (BERT) against candle-transformers' BERT on the real weights.

mod common;

use candle_core::{DType, Device, IndexOp};
use candle_nn::VarBuilder;
use candle_transformers::models::bert as ref_bert;
use dpselft_model::{Ctx, Model};

#[test]
fn minilm_matches_candle_transformers_and_embeds_sentences() {
    let dir = common::minilm_dir();
    let dev = Device::Cpu;
    let model = Model::load(&dir, &dev).unwrap();
    let texts = [
        "The cat sat on the mat.",
        "A completely different, somewhat longer sentence about finance.",
    ];
    let batch = model.encode_batch(&texts).unwrap();
    let ours = model.hidden_states(&batch, Ctx::plain()).unwrap(); // (B, T, d)

    let cfg: ref_bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    // SAFETY: the file is not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &dev)
            .unwrap()
    };
    let reference = ref_bert::BertModel::load(vb, &cfg).unwrap();
    let types = batch.ids.zeros_like().unwrap();
    let theirs = reference
        .forward(&batch.ids, &types, Some(&batch.attn))
        .unwrap();

    let mut worst = 0f32;
    for (i, &len) in batch.lengths.iter().enumerate() {
        let a = ours.i((i, 0..len)).unwrap();
        let b = theirs.i((i, 0..len)).unwrap();
        worst = worst.max(common::max_abs(&a, &b));
    }
    println!("MiniLM hidden states, max |ours - candle-transformers| = {worst:e}");
    assert!(worst <= 1e-4, "max abs diff {worst}");

    // Padding per batch: a row alone gives the same embedding as inside a padded batch.
    let emb = model.sentence_embeddings(&batch).unwrap();
    let alone = model
        .sentence_embeddings(&model.encode_batch(&texts[..1]).unwrap())
        .unwrap();
    assert!(common::max_abs(&emb.i(0..1).unwrap(), &alone) < 1e-5);
    let norms = emb.sqr().unwrap().sum(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
    assert_eq!(emb.dims(), &[2, 384]);
}
