//! Gradients on tiny random models in f64: autograd vs finite differences for every block type
//! and head, the trainable/frozen split, per-example records vs one-example autograd, prefix cache.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{tiny_bert, tiny_llama};
use dpselft_model::ops::loss::{classification_loss_per_example, lm_loss_per_example};
use dpselft_model::trainable::{self, TrainableSpec};
use dpselft_model::{Batch, Ctx, Head, Model, ModelConfig, Recorder};

fn batch() -> Batch {
    let seqs = vec![vec![3u32, 5, 7, 9, 4], vec![6, 8, 10], vec![11, 12, 13, 14]];
    Batch::from_ids(&seqs, 0, false, &Device::Cpu).unwrap()
}

fn sub_batch(b: &Batch, i: usize) -> Batch {
    let row: Vec<u32> = b.ids.get(i).unwrap().to_vec1().unwrap();
    Batch::from_ids(&[row[..b.lengths[i]].to_vec()], 0, false, &Device::Cpu).unwrap()
}

/// Per-example losses (B) of the model's head on `b`.
fn losses(m: &Model, b: &Batch, ctx: Ctx) -> Tensor {
    let out = m.forward_train(b, ctx).unwrap();
    match &m.head {
        Head::CausalLm => lm_loss_per_example(&out, &b.ids, &b.attn).unwrap(),
        Head::Classifier { .. } => {
            // The label of a row depends on its first token only (stable when split off).
            let first: Vec<u32> = b
                .ids
                .narrow(1, 0, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let labels: Vec<u32> = first.iter().map(|i| i % 3).collect();
            let labels = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
            classification_loss_per_example(&out, &labels).unwrap()
        }
        Head::None => out.sqr().unwrap().sum(1).unwrap(),
    }
}

fn total(m: &Model, b: &Batch) -> f64 {
    losses(m, b, Ctx::plain())
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Autograd vs central differences on (a deterministic sample of) every trainable scalar.
fn check_fd(m: &Model, b: &Batch, max_per_param: usize) {
    let loss = losses(m, b, Ctx::plain()).sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let vars: Vec<(String, Var)> = m
        .params
        .vars()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!vars.is_empty());
    let eps = 1e-6;
    for (name, var) in vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let base = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let step = (base.len() / max_per_param).max(1);
        for j in (0..base.len()).step_by(step) {
            let mut v = base.clone();
            let shape = var.as_tensor().dims().to_vec();
            v[j] = base[j] + eps;
            var.set(&Tensor::from_vec(v.clone(), shape.as_slice(), &Device::Cpu).unwrap())
                .unwrap();
            let lp = total(m, b);
            v[j] = base[j] - eps;
            var.set(&Tensor::from_vec(v.clone(), shape.as_slice(), &Device::Cpu).unwrap())
                .unwrap();
            let lm = total(m, b);
            v[j] = base[j];
            var.set(&Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap())
                .unwrap();
            let fd = (lp - lm) / (2.0 * eps);
            assert!(
                (fd - g[j]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{name}[{j}]: autograd {} vs finite differences {fd}",
                g[j]
            );
        }
    }
}

/// A fixed pseudo-random tensor shaped like `t`: scale · sin(0.7 k + 0.3).
fn deterministic_like(t: &Tensor, scale: f64) -> Tensor {
    let n = t.elem_count();
    let v: Vec<f64> = (0..n)
        .map(|k| scale * (0.7 * k as f64 + 0.3).sin())
        .collect();
    Tensor::from_vec(v, t.dims(), t.device()).unwrap()
}

fn model(cfg: ModelConfig, head: &str) -> Model {
    let mut m = Model::random(cfg, 0.3, 7, DType::F64, &Device::Cpu).unwrap();
    match head {
        "classifier" => {
            let pooling = m.default_pooling();
            m.set_classifier(vec!["a".into(), "b".into(), "c".into()], pooling, 3)
                .unwrap();
            // A larger head than the 0.02 default so that gradients below it are not tiny.
            let (w, _) = m.arch().classifier_param_names();
            let t = (m.params.get(w).unwrap() * 25.0).unwrap();
            m.params.insert(w, t);
        }
        "lm" => m.head = Head::CausalLm,
        _ => {}
    }
    m
}

#[test]
fn bert_all_units_match_finite_differences() {
    let mut m = model(tiny_bert(), "classifier");
    trainable::apply(&mut m, &TrainableSpec::parse("all").unwrap(), 0).unwrap();
    check_fd(&m, &batch(), 6);
}

#[test]
fn llama_all_units_match_finite_differences() {
    for (tied, head) in [(true, "lm"), (false, "lm"), (true, "classifier")] {
        let mut m = model(tiny_llama(tied), head);
        trainable::apply(&mut m, &TrainableSpec::parse("all").unwrap(), 0).unwrap();
        check_fd(&m, &batch(), 6);
    }
}

#[test]
fn lora_and_bitfit_match_finite_differences() {
    for cfg in [tiny_bert(), tiny_llama(true)] {
        let head = if matches!(cfg, ModelConfig::Bert(_)) {
            "classifier"
        } else {
            "lm"
        };
        let mut m = model(cfg.clone(), head);
        trainable::apply(
            &mut m,
            &TrainableSpec::parse("lora:r=2:targets=q+v+down;head").unwrap(),
            1,
        )
        .unwrap();
        // B = 0 at init would give A a zero gradient: perturb B.
        for (n, v) in m.params.vars().clone() {
            if n.contains("lora_B") {
                v.set(&deterministic_like(v.as_tensor(), 0.3)).unwrap();
            }
        }
        check_fd(&m, &batch(), 6);
        let mut m = model(cfg, head);
        trainable::apply(&mut m, &TrainableSpec::parse("bitfit").unwrap(), 1).unwrap();
        check_fd(&m, &batch(), 6);
    }
}

#[test]
fn only_trainable_parameters_get_gradients() {
    for cfg in [tiny_bert(), tiny_llama(false)] {
        let head = if matches!(cfg, ModelConfig::Bert(_)) {
            "classifier"
        } else {
            "lm"
        };
        let mut m = model(cfg, head);
        let s =
            trainable::apply(&mut m, &TrainableSpec::parse("head,block.1").unwrap(), 0).unwrap();
        assert_eq!(s.lowest_block, 1);
        let grads = losses(&m, &batch(), Ctx::plain())
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, t) in m.params.iter() {
            let g = grads.get(t);
            if s.params.contains(name) {
                let g = g.unwrap_or_else(|| panic!("trainable {name} got no gradient"));
                let n = g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(n > 0.0, "trainable {name} got a zero gradient");
            } else {
                assert!(g.is_none(), "frozen {name} got a gradient");
            }
        }
        // Nothing below block 1 is in the graph: a recorder sees only block-1 and head layers.
        let rec = Recorder::new();
        losses(&m, &batch(), Ctx::recording(&rec))
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for n in rec.names() {
            assert!(
                !n.contains(".0.") && !n.starts_with("embeddings"),
                "{n} recorded below the lowest trainable unit"
            );
        }
    }
}

#[test]
fn per_example_records_rebuild_autograd_gradients() {
    for (cfg, spec) in [
        (tiny_bert(), "head,block.1"),
        (tiny_bert(), "all"),
        (tiny_llama(false), "last:1,final_norm,head"),
        (tiny_llama(true), "lora:r=2;block.1"),
        (tiny_bert(), "bitfit"),
        (tiny_llama(true), "all"),
        // Sub-block units: frozen projections inside a trainable block.
        (tiny_bert(), "head,block.1.mlp,block.0.norms"),
        (tiny_llama(false), "block.0.attn,block.1.norms"),
    ] {
        let head = if matches!(cfg, ModelConfig::Bert(_)) {
            "classifier"
        } else {
            "lm"
        };
        let mut m = model(cfg, head);
        trainable::apply(&mut m, &TrainableSpec::parse(spec).unwrap(), 0).unwrap();
        for (n, v) in m.params.vars().clone() {
            if n.contains("lora_B") {
                v.set(&deterministic_like(v.as_tensor(), 0.3)).unwrap();
            }
        }
        let b = batch();
        let rec = Recorder::new();
        losses(&m, &b, Ctx::recording(&rec))
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let records = rec.take();
        assert!(!records.is_empty(), "{spec}: nothing recorded");
        for i in 0..b.size() {
            // Rebuild per-example gradients, summing records of the same parameter (tied weights).
            let mut rebuilt: std::collections::BTreeMap<String, Tensor> = Default::default();
            let mut add = |name: &str, g: Tensor| {
                let e = rebuilt.remove(name).map(|p| (p + &g).unwrap()).unwrap_or(g);
                rebuilt.insert(name.to_string(), e);
            };
            for r in records.values() {
                add(&r.param, r.per_example_weight_grad(i).unwrap());
                if let Some(bn) = &r.bias {
                    add(bn, r.per_example_bias_grad(i).unwrap());
                }
            }
            let one = sub_batch(&b, i);
            let grads = losses(&m, &one, Ctx::plain())
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (pname, var) in m.params.vars() {
                let auto = grads.get(var.as_tensor()).unwrap();
                let got = rebuilt
                    .get(pname)
                    .unwrap_or_else(|| panic!("{spec}: trainable {pname} has no record"));
                let d = got
                    .sub(auto)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(
                    d < 1e-9,
                    "{spec}: {pname} example {i}: |rebuilt - autograd| = {d}"
                );
            }
        }
    }
}

/// A block's attention, MLP and norms are disjoint, none empty, and together every base
/// parameter of the block, in both families; a spec naming a part trains exactly its parameters.
#[test]
fn block_parts_partition_each_block() {
    use dpselft_model::BlockPart;
    use dpselft_model::units::{part_params, unit_params};
    for (cfg, head) in [(tiny_bert(), "classifier"), (tiny_llama(true), "lm")] {
        let m = model(cfg, head);
        for i in 0..m.num_blocks() {
            let mut all: Vec<String> = Vec::new();
            for part in BlockPart::ALL {
                let names = part_params(&m, i, part);
                assert!(!names.is_empty(), "block {i} {part:?} is empty");
                let spec = TrainableSpec::parse(&format!("block.{i}.{}", part.name())).unwrap();
                assert_eq!(spec.resolve(&m).unwrap(), sorted(names.clone()));
                all.extend(names);
            }
            let n = all.len();
            let all = sorted(all);
            assert_eq!(all.len(), n, "block {i}: the parts overlap");
            let block = sorted(unit_params(&m, dpselft_model::UnitId::Block(i)));
            assert_eq!(all, block, "block {i}: the parts miss parameters");
        }
        let err = TrainableSpec::parse("block.9.mlp")
            .unwrap()
            .resolve(&m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("block 9 does not exist"), "{err}");
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

#[test]
fn prefix_cache_gives_the_same_outputs() {
    for cfg in [tiny_bert(), tiny_llama(true)] {
        let head = if matches!(cfg, ModelConfig::Bert(_)) {
            "classifier"
        } else {
            "lm"
        };
        let m = model(cfg, head);
        let b = batch();
        let full = m.forward_train(&b, Ctx::plain()).unwrap();
        for upto in 0..=2 {
            let h = m.forward_prefix(&b, upto).unwrap();
            let rest = m.forward_from(&h, &b, upto, Ctx::plain()).unwrap();
            let d = rest
                .sub(&full)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(d < 1e-12, "prefix cache at {upto}: {d}");
        }
    }
}
