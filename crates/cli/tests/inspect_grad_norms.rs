//! `dpselft inspect grad-norms`: on tiny random models saved in the Hugging Face layout, the
//! printed norms and losses against brute force (each example alone, one plain-autograd
//! backward, sqrt of the summed squared gradients of every trainable variable; its loss from
//! `per_example_loss`), ≤ 1e-5 relative; on the real MiniLM, the JSON's shape.

mod common;

use common::{dpselft, json};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use dpselft_data::{LabelRequirement, LoadOptions, load_dataset};
use dpselft_dp::{EncodedSet, Task, TrainableParams, per_example_loss};
use dpselft_model::trainable::{self, TrainableSpec};
use dpselft_model::{Batch, BertConfig, Ctx, LlamaConfig, Model, ModelConfig};
use dpselft_testkit::{PAD_UNK_EOS, WORDS, save_random_model};

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// A tiny random model with a word-level tokenizer (ids 3..15), saved under `dir`.
fn tiny_model(dir: &Path, cfg: ModelConfig) {
    save_random_model(dir, cfg, 0.3, 11, PAD_UNK_EOS);
}

/// Nine labelled examples of 2–10 words, as JSONL (three labels, not in sorted order).
fn data(path: &Path) {
    let names = ["zebra", "apple", "mango"];
    let mut lines = String::new();
    for i in 0..9 {
        let len = 2 + (i * 5) % 9;
        let words: Vec<&str> = (0..len).map(|k| WORDS[(i * 7 + k * 5) % 12]).collect();
        lines += &format!(
            "{}\n",
            serde_json::json!({"text": words.join(" "), "label": names[i % 3]})
        );
    }
    std::fs::write(path, lines).unwrap();
}

/// What the command should print, by brute force: the model set up as the command documents
/// (classifier from `seed` over the data's labels, trainable set from `seed`).
fn brute_force(
    model_dir: &Path,
    data_path: &Path,
    task: Task,
    spec: &str,
    num: usize,
    seed: u64,
    max_len: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut m = Model::load(model_dir, &Device::Cpu).unwrap();
    let labels = match task {
        Task::Classify => LabelRequirement::Required,
        Task::Lm => LabelRequirement::Ignore,
    };
    let options = LoadOptions {
        labels,
        min_examples_per_label: 0,
        ..LoadOptions::default()
    };
    let mut data = load_dataset(data_path, &options).unwrap();
    data.examples.truncate(num);
    if task == Task::Classify {
        let pooling = m.default_pooling();
        m.set_classifier(data.labels.clone(), pooling, seed)
            .unwrap();
    }
    trainable::apply(&mut m, &TrainableSpec::parse(spec).unwrap(), seed).unwrap();
    let params = TrainableParams::of(&m).unwrap();
    let set = EncodedSet::new(&m, &data, task, max_len).unwrap();
    (0..num)
        .map(|i| {
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
            let loss = per_example_loss(&m, &out, &b, labels.as_ref()).unwrap();
            let grads = loss.sum_all().unwrap().backward().unwrap();
            let sq: f64 = params
                .vars
                .iter()
                .filter_map(|v| grads.get(v.as_tensor()))
                .map(|g| {
                    let g = g.to_dtype(DType::F64).unwrap();
                    g.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                })
                .sum();
            let loss = loss.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()[0];
            (sq.sqrt(), loss)
        })
        .unzip()
}

fn check(cfg: ModelConfig, task: Task, spec: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model, cfg);
    let data_path = tmp.path().join("data.jsonl");
    data(&data_path);
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (num, seed, max_len) = (7usize, 3u64, 8usize);
    let args = [
        "inspect",
        "grad-norms",
        "--model",
        &s(&model),
        "--data",
        &s(&data_path),
        "--task",
        &task.to_string(),
        "--trainable",
        spec,
        "--num",
        &num.to_string(),
        "--seed",
        &seed.to_string(),
        "--max-seq-len",
        &max_len.to_string(),
        // Several micro-batches.
        "--max-tokens",
        "20",
    ];
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let v = json(&dpselft(&with_json));
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "only norms and losses: {v}"
    );
    let (norms, losses) = (floats(&v["norms"]), floats(&v["losses"]));
    let (want_norms, want_losses) = brute_force(&model, &data_path, task, spec, num, seed, max_len);
    assert_eq!(norms.len(), num);
    assert_eq!(losses.len(), num);
    for i in 0..num {
        let what = format!("{spec} ({task}): example {i}");
        assert!(want_norms[i] > 0.0, "{what}: zero gradient");
        assert!(
            (norms[i] - want_norms[i]).abs() <= 1e-5 * want_norms[i],
            "{what}: norm {} vs brute force {}",
            norms[i],
            want_norms[i]
        );
        assert!(
            (losses[i] - want_losses[i]).abs() <= 1e-5 * want_losses[i].abs().max(1e-6),
            "{what}: loss {} vs {}",
            losses[i],
            want_losses[i]
        );
    }
    // The readable table: one line per example.
    let out = dpselft(&args);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("grad norm"), "{text}");
    assert!(text.lines().count() >= num + 3, "{text}");
}

#[test]
fn tiny_bert_classifier_matches_brute_force() {
    let cfg = || {
        ModelConfig::Bert(BertConfig {
            vocab_size: 16,
            ..BertConfig::tiny()
        })
    };
    check(cfg(), Task::Classify, "head,last:1");
    check(cfg(), Task::Classify, "all");
}

#[test]
fn tiny_llama_lm_and_classifier_match_brute_force() {
    let cfg = |tied| {
        ModelConfig::Llama(LlamaConfig {
            vocab_size: 16,
            ..LlamaConfig::tiny(tied)
        })
    };
    check(cfg(true), Task::Lm, "all");
    check(cfg(false), Task::Lm, "head,last:1");
    check(cfg(false), Task::Classify, "head,block.0");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny_model(&model, ModelConfig::Bert(BertConfig::tiny()));
    let data_path = tmp.path().join("data.jsonl");
    data(&data_path);
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    for (num, spec) in [("0", "head"), ("10", "head"), ("2", "nonsense")] {
        let out = dpselft(&[
            "inspect",
            "grad-norms",
            "--model",
            &s(&model),
            "--data",
            &s(&data_path),
            "--trainable",
            spec,
            "--num",
            num,
        ]);
        assert_eq!(out.status.code(), Some(2), "--num {num} --trainable {spec}");
    }
}

#[test]
fn minilm_grad_norms_are_finite_and_positive() {
    let tmp = tempfile::tempdir().unwrap();
    let data_path = tmp.path().join("small.jsonl");
    let lines = [
        (
            "The committee approved the budget after a long debate.",
            "news",
        ),
        (
            "She planted tomatoes and basil along the garden fence.",
            "fiction",
        ),
        ("Interest rates rose for the third month in a row.", "news"),
        (
            "The old man watched the ships leave the harbour at dawn.",
            "fiction",
        ),
        ("This line is not inspected.", "news"),
    ];
    let text: String = lines
        .iter()
        .map(|(t, l)| format!("{}\n", serde_json::json!({"text": t, "label": l})))
        .collect();
    std::fs::write(&data_path, text).unwrap();
    let v = json(&dpselft(&[
        "inspect",
        "grad-norms",
        "--model",
        "minilm",
        "--data",
        data_path.to_str().unwrap(),
        "--task",
        "classify",
        "--trainable",
        "head,last:2",
        "--num",
        "4",
        "--json",
    ]));
    let (norms, losses) = (floats(&v["norms"]), floats(&v["losses"]));
    assert_eq!(norms.len(), 4, "{v}");
    assert_eq!(losses.len(), 4, "{v}");
    for (n, l) in norms.iter().zip(&losses) {
        assert!(n.is_finite() && *n > 0.0, "norm {n}");
        assert!(l.is_finite() && *l > 0.0, "loss {l}");
    }
}
