//! The trainer as a pipeline stage: a shared ledger (σ calibrated against the earlier
//! mechanisms so that the composition meets the target), the frozen-prefix cache (same result
//! as recomputing the prefix), and prompted LM examples (the loss covers the text only).

use candle_core::Tensor;
use dpselft_data::Dataset;
use dpselft_dp::{
    DpTrainer, Duration, EncodedSet, OptimizerKind, PrefixCache, PrivacyTarget, Start, Task,
    TrainConfig, TrainData, TrainerOptions, per_example_loss_masked,
};
use dpselft_model::{Ctx, LlamaConfig, Model, ModelConfig};
use dpselft_privacy::{LedgerEntry, Mechanism, PldAccountant, PrivacyLedger, Stage};
use dpselft_testkit::{PAD_UNK, colour_animal_dataset, random_model, tiny_bert_config};

fn tiny_bert(layers: usize) -> Model {
    random_model(tiny_bert_config(16, layers), 0.2, 11, PAD_UNK)
}

fn dataset(n: usize) -> Dataset {
    colour_animal_dataset(n, 0, 2)
}

fn config(epsilon: f64) -> TrainConfig {
    TrainConfig {
        task: Task::Classify,
        trainable: "head,last:1".parse().unwrap(),
        duration: Duration::Steps(12),
        batch_size: 20,
        clip: 1.0,
        automatic_clip_gamma: None,
        lr: 0.02,
        optimizer: OptimizerKind::default(),
        warmup_steps: 0,
        privacy: PrivacyTarget::Private {
            epsilon,
            delta: 1e-5,
        },
        max_tokens: 64,
        max_seq_len: 16,
        eval_every: None,
        log_every: 1,
        checkpoints: dpselft_dp::Checkpoints::Off,
        seed: Some(5),
        init_seed: 3,
        log_private_metrics: false,
        allow_large_delta: false,
    }
}

#[test]
fn a_shared_ledger_makes_all_stages_together_meet_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger.json");
    let mut ledger = PrivacyLedger::create(&ledger_path, 1e-5).unwrap();
    ledger
        .record(LedgerEntry::gaussian(20.0, 1.0, 1, Stage::SynthHistogram))
        .unwrap();
    ledger
        .record(LedgerEntry::sampled_gaussian(
            0.05,
            2.0,
            10,
            1.0,
            Stage::SynthGenerator,
        ))
        .unwrap();
    let earlier = ledger.mechanisms().unwrap();
    let eps_earlier = PldAccountant::default().epsilon(&earlier, 1e-5).unwrap();
    let options = TrainerOptions {
        shared_ledger: Some(ledger_path.clone()),
        stage: Stage::Train,
        prefix_cache: false,
        stage_budget: false,
    };
    let data = dataset(200);
    let mut trainer = DpTrainer::new_with(
        config(3.0),
        tiny_bert(2),
        TrainData::Dataset(&data),
        None,
        &dir.path().join("train"),
        Start::Fresh,
        &options,
    )
    .unwrap();
    let plan = trainer.plan().clone();
    let summary = trainer.run(&mut ()).unwrap();
    let ledger = PrivacyLedger::open(&ledger_path).unwrap();
    assert_eq!(ledger.entries().len(), 3, "the run appended its steps");
    assert!(
        !dir.path().join("train/private_metrics.jsonl").exists(),
        "unprivatised metrics are written only when asked for"
    );
    let total = ledger.spent().epsilon().unwrap();
    assert!(eps_earlier > 0.1 && eps_earlier < 3.0, "{eps_earlier}");
    assert!(total <= 3.0, "composition {total} exceeds the target");
    assert!(total > 2.99, "σ not calibrated tightly: {total}");
    assert_eq!(summary.epsilon, Some(total));
    // Independent check: the same three mechanisms composed by hand.
    let mut all = earlier.clone();
    all.push(Mechanism::sampled_gaussian(plan.sampling_rate, plan.noise_multiplier, 12).unwrap());
    let by_hand = PldAccountant::default().epsilon(&all, 1e-5).unwrap();
    assert!((by_hand - total).abs() < 1e-9);
    // The same run alone would get less noise: the earlier stages cost budget.
    let alone = DpTrainer::new(
        config(3.0),
        tiny_bert(2),
        &data,
        None,
        &dir.path().join("alone"),
        Start::Fresh,
    )
    .unwrap();
    assert!(alone.plan().noise_multiplier < plan.noise_multiplier);
    // Running the stage again on the same ledger is refused (it would double-spend).
    let again = DpTrainer::new_with(
        config(3.0),
        tiny_bert(2),
        TrainData::Dataset(&data),
        None,
        &dir.path().join("again"),
        Start::Fresh,
        &options,
    );
    assert!(again.is_err());
}

fn trained_params(prefix_cache: bool) -> Vec<Vec<f32>> {
    let dir = tempfile::tempdir().unwrap();
    let options = TrainerOptions {
        prefix_cache,
        ..TrainerOptions::default()
    };
    let data = dataset(120);
    let mut trainer = DpTrainer::new_with(
        config(4.0),
        tiny_bert(3),
        TrainData::Dataset(&data),
        None,
        dir.path(),
        Start::Fresh,
        &options,
    )
    .unwrap();
    trainer.run(&mut ()).unwrap();
    trainer
        .params()
        .vars
        .iter()
        .map(|v| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn the_prefix_cache_changes_nothing_but_speed() {
    let plain = trained_params(false);
    let cached = trained_params(true);
    let mut worst = 0f32;
    for (a, b) in plain.iter().zip(&cached) {
        for (x, y) in a.iter().zip(b) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst < 1e-5, "parameters differ by {worst}");
}

#[test]
fn prefix_cache_advance_equals_direct_computation() {
    let model = tiny_bert(3);
    let set = EncodedSet::new(&model, &dataset(10), Task::Classify, 16).unwrap();
    let mut base = PrefixCache::new(1, set.len());
    base.fill_all(&model, &set, 64).unwrap();
    let mut advanced = base.advance(&model, &set, 3, 64).unwrap();
    let mut direct = PrefixCache::new(3, set.len());
    let idx = [0usize, 3, 7];
    let (batch, _) = set.batch(&model, &idx).unwrap();
    let a = advanced.states(&model, &set, &idx, &batch).unwrap();
    let b = direct.states(&model, &set, &idx, &batch).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn evaluation_through_the_prefix_cache_equals_the_plain_evaluation() {
    let mut model = tiny_bert(3);
    dpselft_dp::prepare_model(
        &mut model,
        Task::Classify,
        dpselft_dp::HeadChoice::New(vec!["colour".into(), "animal".into()]),
        &"head,last:1".parse().unwrap(),
        3,
    )
    .unwrap();
    let set = EncodedSet::new(&model, &dataset(30), Task::Classify, 16).unwrap();
    let plain = dpselft_dp::evaluate(&model, &set, 64).unwrap();
    let mut cache = PrefixCache::new(2, set.len());
    // Twice: filled lazily on the first evaluation, read back on the second.
    for _ in 0..2 {
        let cached = dpselft_dp::evaluate_cached(&model, &set, 64, Some(&mut cache)).unwrap();
        assert_eq!(cached.accuracy, plain.accuracy);
        assert!(
            (cached.loss - plain.loss).abs() < 1e-6,
            "{cached:?} {plain:?}"
        );
    }
    assert_eq!(cache.cached(), set.len());
    // A cache of another set, or above the lowest trainable block, is refused.
    let mut other = PrefixCache::new(2, set.len() + 1);
    assert!(dpselft_dp::evaluate_cached(&model, &set, 64, Some(&mut other)).is_err());
    let mut above = PrefixCache::new(3, set.len());
    assert!(dpselft_dp::evaluate_cached(&model, &set, 64, Some(&mut above)).is_err());
}

/// A run trained and evaluated with caches lent by an earlier run (a learning-rate sweep) ends
/// exactly where a run with caches of its own, filled up front, does.
#[test]
fn lent_prefix_caches_give_the_result_of_a_run_with_its_own() {
    let (train, val) = (dataset(80), dataset(20));
    let run = |lend: Option<&dpselft_dp::PrefixCaches>, dir: &std::path::Path| {
        let options = TrainerOptions {
            prefix_cache: true,
            ..TrainerOptions::default()
        };
        let mut t = DpTrainer::new_with(
            config(4.0),
            tiny_bert(3),
            TrainData::Dataset(&train),
            Some(&val),
            dir,
            Start::Fresh,
            &options,
        )
        .unwrap();
        if let Some(c) = lend {
            t.reuse_prefix_caches(c);
        }
        t.fill_prefix_caches().unwrap();
        let summary = t.run(&mut ()).unwrap();
        (summary.eval.unwrap(), t.prefix_caches())
    };
    let dir = tempfile::tempdir().unwrap();
    let (first, caches) = run(None, &dir.path().join("a"));
    assert_eq!(caches.train.as_ref().unwrap().cached(), train.len());
    assert_eq!(caches.eval.as_ref().unwrap().cached(), val.len());
    let (lent, _) = run(Some(&caches), &dir.path().join("b"));
    let (own, _) = run(None, &dir.path().join("c"));
    assert_eq!(lent, own);
    assert_eq!(first, own);
}

/// A tiny Llama (d = 8) with the word-level tokenizer (ids < 16).
fn tiny_llama() -> Model {
    let cfg = ModelConfig::Llama(LlamaConfig {
        vocab_size: 16,
        ..LlamaConfig::tiny(true)
    });
    random_model(cfg, 0.3, 5, PAD_UNK)
}

#[test]
fn prompted_lm_examples_score_the_text_only() {
    let model = tiny_llama();
    let pairs = vec![
        ("dog cat".to_string(), "red green blue".to_string()),
        ("owl".to_string(), "pink gold".to_string()),
    ];
    let set = EncodedSet::lm_with_prompts(&model, &pairs, 16).unwrap();
    assert_eq!(set.loss_starts, Some(vec![2, 1]));
    assert_eq!(set.lengths, vec![5, 3]);
    assert_eq!(set.predicted_tokens(0), 3);
    assert_eq!(set.predicted_tokens(1), 2);
    let idx = [0usize, 1];
    let (batch, _) = set.batch(&model, &idx).unwrap();
    let mask = set.loss_mask(&model, &idx, 5).unwrap().unwrap();
    assert_eq!(
        mask.to_vec2::<u32>().unwrap(),
        vec![vec![0, 0, 1, 1, 1], vec![0, 1, 1, 0, 0]]
    );
    let logits = model.forward_train(&batch, Ctx::plain()).unwrap();
    let losses = per_example_loss_masked(&model, &logits, &batch, None, Some(&mask))
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // By hand: mean of −log softmax(logits[j−1])[ids[j]] over the text positions j.
    let lp = candle_nn_free_log_softmax(&logits);
    let ids = batch.ids.to_vec2::<u32>().unwrap();
    for (row, positions) in [(0usize, 2..5usize), (1, 1..3)] {
        let n = positions.len() as f32;
        let want: f32 = positions
            .map(|j| -lp[row][j - 1][ids[row][j] as usize])
            .sum::<f32>()
            / n;
        assert!(
            (losses[row] - want).abs() < 1e-5,
            "{} vs {want}",
            losses[row]
        );
    }
}

/// log-softmax over the last axis, written out (B, T, V) → nested vectors.
fn candle_nn_free_log_softmax(logits: &Tensor) -> Vec<Vec<Vec<f32>>> {
    logits
        .to_vec3::<f32>()
        .unwrap()
        .into_iter()
        .map(|rows| {
            rows.into_iter()
                .map(|r| {
                    let m = r.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let lse = m + r.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
                    r.iter().map(|x| x - lse).collect()
                })
                .collect()
        })
        .collect()
}
