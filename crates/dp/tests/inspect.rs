//! `per_example_grad_norms` against brute force (one plain-autograd backward per example,
//! unpadded; ‖∇ᵢ‖ = sqrt of the summed squared gradients of every trainable variable) and its
//! losses against `per_example_loss` of each example alone, on tiny random BERT (classification)
//! and Llama (language modelling, tied and untied) models, with token budgets that split the
//! examples into several micro-batches. f32; ≤ 1e-5 relative.

use candle_core::{DType, Device, Tensor};
use dpselft_data::{Dataset, Example};
use dpselft_dp::{EncodedSet, Task, TrainableParams, per_example_grad_norms, per_example_loss};
use dpselft_model::trainable::{self, TrainableSpec};
use dpselft_model::{Batch, BertConfig, Ctx, LlamaConfig, Model, ModelConfig};
use dpselft_testkit::{PAD_UNK_EOS, WORDS, word_tokenizer};

/// Seven examples of 2–9 words (one longer than the maximum length, so it is truncated).
fn dataset() -> Dataset {
    let lens = [3usize, 7, 2, 5, 9, 2, 4];
    let examples = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| Example {
            text: (0..len)
                .map(|k| WORDS[(i * 5 + k * 7) % 12])
                .collect::<Vec<_>>()
                .join(" "),
            label: Some(i % 3),
            group: None,
        })
        .collect();
    Dataset {
        examples,
        labels: vec!["a".into(), "b".into(), "c".into()],
    }
}

fn model(cfg: ModelConfig, classify: bool, spec: &str) -> Model {
    let mut m = Model::random(cfg, 0.3, 7, DType::F32, &Device::Cpu).unwrap();
    m.tokenizer = Some(word_tokenizer(PAD_UNK_EOS));
    if classify {
        let pooling = m.default_pooling();
        m.set_classifier(dataset().labels, pooling, 3).unwrap();
    }
    trainable::apply(&mut m, &TrainableSpec::parse(spec).unwrap(), 5).unwrap();
    m
}

/// Per example, alone and unpadded: (‖∇‖ over all trainable variables, loss).
fn brute_force(m: &Model, set: &EncodedSet, i: usize) -> (f64, f64) {
    let params = TrainableParams::of(m).unwrap();
    let b = Batch::from_ids(
        std::slice::from_ref(&set.ids[i]),
        set.pad_id,
        false,
        &m.device,
    )
    .unwrap();
    let labels = set
        .labels
        .as_ref()
        .map(|l| Tensor::new(&[l[i]], &m.device).unwrap());
    let out = m.forward_train(&b, Ctx::plain()).unwrap();
    let loss = per_example_loss(m, &out, &b, labels.as_ref()).unwrap();
    let grads = loss.sum_all().unwrap().backward().unwrap();
    let sq: f64 = params
        .vars
        .iter()
        .filter_map(|v| grads.get(v.as_tensor()))
        .map(|g| {
            g.to_dtype(DType::F64)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        })
        .sum();
    let loss = loss.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()[0];
    (sq.sqrt(), loss)
}

fn check(cfg: ModelConfig, task: Task, spec: &str) {
    let m = model(cfg, task == Task::Classify, spec);
    let set = EncodedSet::new(&m, &dataset(), task, 8).unwrap();
    // Out of order, with a repeat; budgets from one example per micro-batch to all at once.
    let indices = [4usize, 0, 6, 2, 5, 1, 3, 0];
    for max_tokens in [1usize, 12, 1000] {
        let (norms, losses) = per_example_grad_norms(&m, &set, &indices, max_tokens).unwrap();
        assert_eq!(norms.len(), indices.len());
        assert_eq!(losses.len(), indices.len());
        for (k, &i) in indices.iter().enumerate() {
            let (want_norm, want_loss) = brute_force(&m, &set, i);
            let what = format!("{spec} ({task}, max_tokens {max_tokens}): example {i}");
            assert!(want_norm > 0.0, "{what}: zero gradient");
            assert!(
                (norms[k] - want_norm).abs() <= 1e-5 * want_norm,
                "{what}: norm {} vs brute force {want_norm}",
                norms[k]
            );
            assert!(
                (losses[k] - want_loss).abs() <= 1e-5 * want_loss.abs().max(1e-6),
                "{what}: loss {} vs {want_loss}",
                losses[k]
            );
        }
    }
}

#[test]
fn bert_classifier_norms_and_losses_match_brute_force() {
    let cfg = || ModelConfig::Bert(BertConfig::tiny());
    for spec in ["head", "head,last:1", "all", "bitfit,head", "lora:r=2;head"] {
        check(cfg(), Task::Classify, spec);
    }
}

#[test]
fn llama_lm_norms_and_losses_match_brute_force() {
    for spec in ["all", "last:1,final_norm", "embeddings"] {
        check(ModelConfig::Llama(LlamaConfig::tiny(true)), Task::Lm, spec);
    }
    check(
        ModelConfig::Llama(LlamaConfig::tiny(false)),
        Task::Lm,
        "head,last:1",
    );
    check(
        ModelConfig::Llama(LlamaConfig::tiny(false)),
        Task::Classify,
        "head,block.0",
    );
}

#[test]
fn an_out_of_range_index_is_an_error() {
    let m = model(ModelConfig::Bert(BertConfig::tiny()), true, "head");
    let set = EncodedSet::new(&m, &dataset(), Task::Classify, 8).unwrap();
    assert!(per_example_grad_norms(&m, &set, &[0, 7], 100).is_err());
}
