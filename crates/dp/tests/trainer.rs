//! End-to-end runs of the trainer on a tiny random BERT with a word-level tokenizer:
//! DP training learns an easy task within its budget; the non-private step is plain gradient
//! descent on the summed loss; an interrupted and resumed run ends where an uninterrupted one
//! does, with the same ledger.

use candle_core::{DType, Tensor};
use dpselft_data::{Dataset, Example};
use dpselft_dp::{
    DpTrainer, Duration, OptimizerKind, PrivacyTarget, Start, Task, TrainConfig, TrainableParams,
    per_example_loss,
};
use dpselft_model::trainable;
use dpselft_model::{Batch, Ctx, Model, Pooling};
use dpselft_privacy::PrivacyLedger;
use dpselft_testkit::{PAD_UNK, WORDS, random_model, tiny_bert_config};

fn tiny_bert() -> Model {
    random_model(tiny_bert_config(16, 2), 0.2, 11, PAD_UNK)
}

/// An easy task: colours (label 0) or animals (label 1), 2–6 words each.
fn dataset(n: usize, seed: u64) -> Dataset {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    let examples = (0..n)
        .map(|i| {
            let label = i % 2;
            let len = 2 + next(5);
            let words: Vec<&str> = (0..len).map(|_| WORDS[label * 6 + next(6)]).collect();
            Example {
                text: words.join(" "),
                label: Some(label),
                group: None,
            }
        })
        .collect();
    Dataset {
        examples,
        labels: vec!["colour".into(), "animal".into()],
    }
}

fn config() -> TrainConfig {
    TrainConfig {
        task: Task::Classify,
        trainable: "head,last:1".parse().unwrap(),
        duration: Duration::Epochs(6.0),
        batch_size: 40,
        clip: 1.0,
        automatic_clip_gamma: None,
        lr: 0.02,
        optimizer: OptimizerKind::default(),
        warmup_steps: 0,
        privacy: PrivacyTarget::Private {
            epsilon: 8.0,
            delta: 1e-5,
        },
        max_tokens: 64,
        max_seq_len: 16,
        eval_every: Some(10),
        log_every: 5,
        checkpoints: dpselft_dp::Checkpoints::Off,
        seed: Some(7),
        init_seed: 3,
        log_private_metrics: true,
        allow_large_delta: false,
    }
}

#[test]
fn dp_training_learns_an_easy_task_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let train = dataset(400, 1);
    let test = dataset(100, 2);
    let mut trainer = DpTrainer::new(
        config(),
        tiny_bert(),
        &train,
        Some(&test),
        dir.path(),
        Start::Fresh,
    )
    .unwrap();
    let before = dpselft_dp::evaluate(
        trainer.model(),
        &dpselft_dp::EncodedSet::new(trainer.model(), &test, Task::Classify, 16).unwrap(),
        64,
    )
    .unwrap();
    let summary = trainer.run(&mut ()).unwrap();
    let after = summary.eval.clone().unwrap();
    assert!(summary.completed);
    assert!(
        after.loss < 0.8 * before.loss,
        "eval loss {} → {}",
        before.loss,
        after.loss
    );
    assert!(
        after.accuracy.unwrap() >= 0.9,
        "accuracy {:?}",
        after.accuracy
    );
    // The ledger: every step recorded, ε within the target.
    let ledger = PrivacyLedger::open(dir.path().join("ledger.json")).unwrap();
    let steps: u64 = ledger.entries().iter().map(|e| e.steps).sum();
    assert_eq!(steps, summary.plan.total_steps);
    let eps = ledger.spent().epsilon().unwrap();
    assert!(eps <= 8.0 && eps > 7.0, "ε = {eps}");
    assert_eq!(summary.epsilon, Some(eps));
    // Metrics lines for steps and evaluations; no checkpoint left behind (it holds the key).
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("\"kind\":\"eval\"")));
    // metrics.jsonl is private-safe: no unprivatised value in its step lines; the loss and the
    // realised batch size go to private_metrics.jsonl, only because this config asks for it.
    let steps: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "step")
        .collect();
    assert!(!steps.is_empty());
    for v in &steps {
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["elapsed_s", "epoch", "epsilon", "kind", "lr", "step"],
            "{v}"
        );
    }
    let private = std::fs::read_to_string(dir.path().join("private_metrics.jsonl")).unwrap();
    assert!(private.contains("\"loss\"") && private.contains("\"batch_size\""));
    assert!(!dir.path().join("checkpoint").exists());
}

#[test]
fn non_private_step_is_plain_gradient_descent_on_the_summed_loss() {
    let dir = tempfile::tempdir().unwrap();
    let train = dataset(24, 3);
    let lr = 0.1;
    let cfg = TrainConfig {
        privacy: PrivacyTarget::NonPrivate,
        duration: Duration::Steps(1),
        batch_size: 24, // q = 1: every example is in the batch
        optimizer: OptimizerKind::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
        },
        lr,
        max_tokens: 40, // several micro-batches
        eval_every: None,
        ..config()
    };
    // The reference: the same model, head and trainable set, one autograd backward of the
    // summed loss over the whole (padded) batch.
    let mut reference = tiny_bert();
    reference
        .set_classifier(train.labels.clone(), Pooling::Mean, cfg.init_seed)
        .unwrap();
    trainable::apply(&mut reference, &cfg.trainable, cfg.init_seed).unwrap();
    let ref_params = TrainableParams::of(&reference).unwrap();
    let set = dpselft_dp::EncodedSet::new(&reference, &train, Task::Classify, 16).unwrap();
    let all: Vec<usize> = (0..train.len()).collect();
    let (batch, labels): (Batch, _) = set.batch(&reference, &all).unwrap();
    let out = reference.forward_train(&batch, Ctx::plain()).unwrap();
    let loss = per_example_loss(&reference, &out, &batch, labels.as_ref()).unwrap();
    let grads = loss.sum_all().unwrap().backward().unwrap();

    let mut trainer =
        DpTrainer::new(cfg, tiny_bert(), &train, None, dir.path(), Start::Fresh).unwrap();
    let summary = trainer.run(&mut ()).unwrap();
    assert_eq!(summary.epsilon, None, "a non-private run reports ε = ∞");
    assert!(!dir.path().join("ledger.json").exists());
    let params = trainer.params();
    assert_eq!(params.names, ref_params.names);
    for (j, name) in params.names.iter().enumerate() {
        let before = ref_params.vars[j].as_tensor();
        let g = grads.get(before).unwrap();
        let want = (before - (g * (lr / 24.0)).unwrap()).unwrap();
        let got = params.vars[j].as_tensor();
        let diff = max_abs(&(got - &want).unwrap());
        assert!(diff <= 1e-6, "`{name}`: off by {diff}");
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let train = dataset(120, 4);
    let cfg = TrainConfig {
        duration: Duration::Steps(7),
        checkpoints: dpselft_dp::Checkpoints::Every(3),
        eval_every: None,
        ..config()
    };
    let whole = tempfile::tempdir().unwrap();
    let mut a = DpTrainer::new(
        cfg.clone(),
        tiny_bert(),
        &train,
        None,
        whole.path(),
        Start::Fresh,
    )
    .unwrap();
    a.run(&mut ()).unwrap();

    let split = tempfile::tempdir().unwrap();
    let mut b = DpTrainer::new(
        cfg.clone(),
        tiny_bert(),
        &train,
        None,
        split.path(),
        Start::Fresh,
    )
    .unwrap();
    b.stop_after(3);
    let partial = b.run(&mut ()).unwrap();
    assert!(!partial.completed);
    drop(b); // the process "dies" here
    let mut c =
        DpTrainer::new(cfg, tiny_bert(), &train, None, split.path(), Start::Resume).unwrap();
    assert_eq!(c.steps_done(), 3);
    let summary = c.run(&mut ()).unwrap();
    assert!(summary.completed);

    for (j, name) in a.params().names.iter().enumerate() {
        let diff =
            max_abs(&(a.params().vars[j].as_tensor() - c.params().vars[j].as_tensor()).unwrap());
        assert!(diff == 0.0, "`{name}` differs by {diff} after resuming");
    }
    let la = PrivacyLedger::open(whole.path().join("ledger.json")).unwrap();
    let lc = PrivacyLedger::open(split.path().join("ledger.json")).unwrap();
    assert_eq!(la.entries(), lc.entries());
    assert_eq!(la.spent(), lc.spent());
    // Recorded chunk by chunk (3, 3, 1), merged into one entry.
    let steps: Vec<u64> = la.entries().iter().map(|e| e.steps).collect();
    assert_eq!(steps, vec![7]);
}

#[test]
fn a_run_killed_before_its_first_checkpoint_restarts_and_its_lost_steps_keep_counting() {
    let train = dataset(120, 4);
    let cfg = TrainConfig {
        duration: Duration::Steps(20),
        checkpoints: dpselft_dp::Checkpoints::Auto,
        eval_every: None,
        ..config()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut a = DpTrainer::new(
        cfg.clone(),
        tiny_bert(),
        &train,
        None,
        dir.path(),
        Start::Fresh,
    )
    .unwrap();
    let sigma_before = a.plan().noise_multiplier;
    a.stop_after(1); // killed after step 1; the first checkpoint would be at step 2
    a.run(&mut ()).unwrap();
    drop(a);
    assert!(!dpselft_dp::checkpoint::has_checkpoint(dir.path()));
    let mut b = DpTrainer::new(
        cfg.clone(),
        tiny_bert(),
        &train,
        None,
        dir.path(),
        Start::Resume,
    )
    .unwrap();
    assert_eq!(
        b.lost_steps(),
        2,
        "the first chunk (2 of 20 steps) was recorded"
    );
    assert_eq!(b.steps_done(), 0);
    assert!(
        b.plan().noise_multiplier > sigma_before,
        "what is left of the budget needs more noise"
    );
    let summary = b.run(&mut ()).unwrap();
    assert!(summary.completed);
    let ledger = PrivacyLedger::open(dir.path().join("ledger.json")).unwrap();
    let rows: Vec<(u64, bool)> = ledger.entries().iter().map(|e| (e.steps, e.lost)).collect();
    assert_eq!(rows, [(2, true), (20, false)]);
    let eps = ledger.spent().epsilon().unwrap();
    assert!(
        eps <= 8.0 + 1e-9 && eps > 7.99,
        "all of it within the target: {eps}"
    );
    // A finished run is not restarted by a second --resume.
    drop(b);
    let again = DpTrainer::new(cfg, tiny_bert(), &train, None, dir.path(), Start::Resume);
    let err = again.err().expect("a finished run").to_string();
    assert!(err.contains("finished run"), "{err}");
}

#[test]
fn a_fresh_run_refuses_a_folder_that_holds_one() {
    let dir = tempfile::tempdir().unwrap();
    let train = dataset(40, 5);
    let cfg = TrainConfig {
        duration: Duration::Steps(1),
        eval_every: None,
        ..config()
    };
    DpTrainer::new(
        cfg.clone(),
        tiny_bert(),
        &train,
        None,
        dir.path(),
        Start::Fresh,
    )
    .unwrap()
    .run(&mut ())
    .unwrap();
    let err = DpTrainer::new(cfg, tiny_bert(), &train, None, dir.path(), Start::Fresh)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("already holds a run"), "{err}");
}
