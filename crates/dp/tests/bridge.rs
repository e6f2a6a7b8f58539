//! The bridge from model records to per-example norms and clipped sums, against brute force:
//! one ordinary autograd backward per example (unpadded), on tiny random BERT and Llama models,
//! for several trainable sets (head, top block, everything, BitFit, LoRA, embeddings, a tied LM
//! head). f32 throughout; ≤ 1e-5 relative.

use candle_core::{DType, Device, Tensor};
use dpselft_dp::{
    Clipping, NormMethod, TrainableParams, clip_groups, group_records, per_example_loss,
};
use dpselft_model::trainable::{self, TrainableSpec};
use dpselft_model::{Batch, BertConfig, Ctx, LlamaConfig, Model, ModelConfig, Recorder};

fn tiny_bert() -> ModelConfig {
    ModelConfig::Bert(BertConfig::tiny())
}

fn tiny_llama(tied: bool) -> ModelConfig {
    ModelConfig::Llama(LlamaConfig::tiny(tied))
}

/// Four examples of different lengths (so three are padded in the batch).
fn sequences() -> Vec<Vec<u32>> {
    vec![
        vec![3, 5, 7, 9, 4, 11],
        vec![6, 8, 10],
        vec![11, 12, 13, 14, 12],
        vec![15, 3],
    ]
}

const LABELS: [u32; 4] = [0, 2, 1, 2];

fn model(cfg: ModelConfig, classify: bool, spec: &str) -> Model {
    let mut m = Model::random(cfg, 0.3, 7, DType::F32, &Device::Cpu).unwrap();
    if classify {
        let pooling = m.default_pooling();
        m.set_classifier(vec!["a".into(), "b".into(), "c".into()], pooling, 3)
            .unwrap();
    }
    trainable::apply(&mut m, &TrainableSpec::parse(spec).unwrap(), 5).unwrap();
    // LoRA B factors start at 0, which would hide errors in A's records: perturb every
    // trainable parameter a little.
    for (k, (_, v)) in m.params.vars().iter().enumerate() {
        let t = v.as_tensor();
        let n = t.elem_count();
        let bump: Vec<f32> = (0..n)
            .map(|j| 0.05 * ((0.37 * (j + 13 * k) as f64).sin() as f32))
            .collect();
        let bump = Tensor::from_vec(bump, t.dims(), t.device()).unwrap();
        v.set(&(t + bump).unwrap()).unwrap();
    }
    m
}

fn labels_of(indices: &[usize]) -> Tensor {
    let v: Vec<u32> = indices.iter().map(|&i| LABELS[i]).collect();
    Tensor::new(v.as_slice(), &Device::Cpu).unwrap()
}

/// Per-example gradients by brute force: each example alone, unpadded, one backward. Returns,
/// per example, the gradient of every trainable parameter (in `TrainableParams` order).
fn brute_force(m: &Model, params: &TrainableParams, classify: bool) -> Vec<Vec<Tensor>> {
    let pad = m.special.pad.unwrap_or(0);
    sequences()
        .iter()
        .enumerate()
        .map(|(i, seq)| {
            let b = Batch::from_ids(std::slice::from_ref(seq), pad, false, &Device::Cpu).unwrap();
            let out = m.forward_train(&b, Ctx::plain()).unwrap();
            let labels = classify.then(|| labels_of(&[i]));
            let loss = per_example_loss(m, &out, &b, labels.as_ref()).unwrap();
            let grads = loss.sum_all().unwrap().backward().unwrap();
            params
                .vars
                .iter()
                .map(|v| match grads.get(v.as_tensor()) {
                    Some(g) => g.clone(),
                    None => v.as_tensor().zeros_like().unwrap(),
                })
                .collect()
        })
        .collect()
}

fn sq_norm(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Records of the padded batch → norms and clipped sums, against brute force.
fn check(cfg: ModelConfig, classify: bool, spec: &str) {
    let m = model(cfg, classify, spec);
    let params = TrainableParams::of(&m).unwrap();
    let pad = m.special.pad.unwrap_or(0);
    let batch = Batch::from_ids(&sequences(), pad, false, &Device::Cpu).unwrap();
    let rec = Recorder::new();
    let out = m.forward_train(&batch, Ctx::recording(&rec)).unwrap();
    let labels = classify.then(|| labels_of(&[0, 1, 2, 3]));
    let loss = per_example_loss(&m, &out, &batch, labels.as_ref()).unwrap();
    loss.sum_all().unwrap().backward().unwrap();
    let groups = group_records(rec.take(), &params, &batch.attn).unwrap();
    for (j, g) in groups.groups.iter().enumerate() {
        assert!(!g.is_empty(), "{spec}: `{}` has no record", params.names[j]);
    }

    let brute = brute_force(&m, &params, classify);
    let want_norms: Vec<f64> = brute
        .iter()
        .map(|gs| gs.iter().map(sq_norm).sum::<f64>().sqrt())
        .collect();
    // Clip at the median norm, so that some examples are clipped and some are not.
    let mut sorted = want_norms.clone();
    sorted.sort_by(f64::total_cmp);
    let c = 0.5 * (sorted[1] + sorted[2]);
    let clipping = Clipping::Flat { max_norm: c };
    for method in [NormMethod::Auto, NormMethod::Ghost, NormMethod::Materialize] {
        let out = clip_groups(&groups, &params, &clipping, method).unwrap();
        for (i, (got, want)) in out.norms.iter().zip(&want_norms).enumerate() {
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "{spec} ({method:?}): example {i}: norm {got} vs brute force {want}"
            );
        }
        // Σᵢ cᵢ gᵢ per parameter, with the brute-force factors. Compared relative to the whole
        // trainable gradient: some parameters' sums are ~0 in exact arithmetic (a key bias
        // cannot change a softmax), so their own relative error is meaningless.
        let want: Vec<Tensor> = (0..params.len())
            .map(|j| {
                let mut want = brute[0][j].zeros_like().unwrap();
                for (i, gs) in brute.iter().enumerate() {
                    let ci = (c / want_norms[i]).min(1.0);
                    want = (want + (&gs[j] * ci).unwrap()).unwrap();
                }
                want
            })
            .collect();
        assert_sums_close(
            &out.sums,
            &want,
            &params.names,
            &format!("{spec} ({method:?})"),
        );
    }
    // Clipping off: the plain sum equals the batch's autograd gradient.
    let off = clip_groups(&groups, &params, &Clipping::Off, NormMethod::Auto).unwrap();
    let want: Vec<Tensor> = (0..params.len())
        .map(|j| {
            let mut want = brute[0][j].zeros_like().unwrap();
            for gs in &brute {
                want = (want + &gs[j]).unwrap();
            }
            want
        })
        .collect();
    assert_sums_close(
        &off.sums,
        &want,
        &params.names,
        &format!("{spec} (no clipping)"),
    );
}

/// Every parameter's error ≤ 1e-5 × the norm of the whole (concatenated) expected sum.
fn assert_sums_close(got: &[Tensor], want: &[Tensor], names: &[String], what: &str) {
    let total = want.iter().map(sq_norm).sum::<f64>().sqrt();
    assert!(total > 0.0, "{what}: zero gradient");
    for ((g, w), name) in got.iter().zip(want).zip(names) {
        let diff = sq_norm(&(g - w).unwrap()).sqrt();
        assert!(
            diff <= 1e-5 * total,
            "{what}: sum of `{name}` off by {diff} (whole gradient {total})"
        );
    }
}

#[test]
fn bert_classifier_norms_match_brute_force() {
    for spec in [
        "head",
        "last:1",
        "all",
        "bitfit",
        "lora:r=2;head",
        "embeddings,head",
    ] {
        check(tiny_bert(), true, spec);
    }
}

#[test]
fn llama_lm_norms_match_brute_force() {
    // A tied LM head: the embedding matrix has two records (lookup and head), with cross terms.
    for spec in [
        "all",
        "last:1,final_norm",
        "embeddings",
        "lora:r=2,targets=q+v+gate",
    ] {
        check(tiny_llama(true), false, spec);
    }
    for spec in ["head", "head,last:1"] {
        check(tiny_llama(false), false, spec);
    }
}

#[test]
fn llama_classifier_norms_match_brute_force() {
    for spec in ["head", "head,last:1", "bitfit,head"] {
        check(tiny_llama(false), true, spec);
    }
}
