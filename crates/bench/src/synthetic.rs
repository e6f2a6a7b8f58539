//! `dpselft bench synthetic`: how much of the task the synthetic data carry.
//!
//! The run's synthetic stage (its synthesizer, its share of ε) builds S from the private training
//! split; then a fixed, non-private *probe* — the target model's head and top block, a fixed
//! number of steps at a fixed learning rate — is trained on S and scored on the real test split,
//! next to the same probe trained on as many real training examples, and the majority floor.
//! If the synthetic probe is no better than the majority, nothing beyond the label prior can be
//! learned from S, and no selection on S can carry signal.
//!
//! The test split is only scored here, never used for a decision: this bench reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dpselft_data::Dataset;
use dpselft_dp::{
    DpTrainer, Duration, OptimizerKind, PrivacyTarget, Start, Task, TrainConfig, TrainData,
    TrainerOptions,
};
use dpselft_model::TrainableSpec;
use dpselft_privacy::Stage;
use dpselft_selft::pipeline::{ResolvedPaths, load_test, load_train, majority_accuracy, run_synth};
use dpselft_selft::{Progress, Result, RunConfig, SelftError, SynthReport, SyntheticData};
use serde::{Deserialize, Serialize};

use crate::cell::read_json;

/// The fixed probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// What it trains.
    pub trainable: TrainableSpec,
    /// Optimizer steps.
    pub steps: u64,
    /// Examples per step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, linear decay).
    pub lr: f64,
    /// Tokens per example.
    pub max_seq_len: usize,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            trainable: TrainableSpec::parse("head,last:1").expect("a valid built-in spec"),
            steps: 100,
            batch_size: 32,
            lr: 5e-4,
            max_seq_len: 128,
        }
    }
}

/// One bench: a run configuration (its `[run]` and `[synth]` sections are used) and the probe.
pub struct SyntheticBench {
    /// The task's name, for the report.
    pub task: String,
    /// The run whose synthetic stage is measured (data, models, ε, synth fraction, seed).
    pub config: RunConfig,
    /// The models.
    pub paths: ResolvedPaths,
    /// The probe.
    pub probe: Probe,
    /// A work folder for the synthetic run and the probes (must not hold a run yet).
    pub work: PathBuf,
}

/// `bench/synthetic/<task>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticReport {
    /// The task.
    pub task: String,
    /// The synthesizer's name.
    pub synthesizer: String,
    /// What one example is, as the prompts said it (`run.data_kind`; absent in reports written
    /// before the prompts said it, which used "text").
    #[serde(default)]
    pub data_kind: Option<String>,
    /// What each label means, as the prompts said it (`run.label_descriptions`; absent where
    /// the prompts named the label only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_descriptions: BTreeMap<String, String>,
    /// Synthetic examples the probe was trained on (S_train ∪ S_val).
    pub synthetic_examples: usize,
    /// The probe trained on S, scored on the real test split.
    pub synthetic_to_real_accuracy: f64,
    /// The probe trained on as many real training examples, scored on the same test split.
    pub real_probe_accuracy: f64,
    /// Predicting the most frequent training label.
    pub majority_accuracy: f64,
    /// ε the synthetic stage spent (PLD).
    pub epsilon_synth: f64,
    /// majority + ½·(real − majority): the target for the synthetic probe.
    pub target_accuracy: f64,
    /// Private training examples the synthesizer read.
    pub private_examples: usize,
    /// Test examples scored.
    pub test_examples: usize,
    /// The probe's settings.
    pub probe: Probe,
    /// The run's seed.
    pub seed: Option<u64>,
    /// The DP generator's perplexity on held-out test texts before and after its tuning
    /// (`synth.perplexity_examples` of them; absent for other synthesizers and older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_perplexity_before: Option<f64>,
    /// The same after the tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_perplexity_after: Option<f64>,
    /// Held-out texts of those perplexities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity_examples: Option<usize>,
    /// Seconds of the synthetic stage alone.
    pub synth_wall_s: f64,
    /// Seconds for the whole bench.
    pub wall_s: f64,
    /// A few synthetic examples (label, first 160 characters).
    pub examples: Vec<(String, String)>,
}

/// Runs the bench (see the module documentation).
pub fn run_synthetic_bench(
    bench: &SyntheticBench,
    progress: &mut dyn Progress,
) -> Result<SyntheticReport> {
    let started = Instant::now();
    let run_dir = bench.work.join("run");
    let private = run_synth(&bench.config, &bench.paths, &run_dir, progress)?;
    let synth_wall_s = started.elapsed().as_secs_f64();
    let synthetic = SyntheticData::load(&run_dir.join("synthetic"))?;
    let stage: SynthReport = read_json(&run_dir.join("synth.json"), "synthetic stage's report")?;
    let perplexity = stage.generator_perplexity;
    let test = load_test(&bench.config.run, private.labels())?
        .ok_or_else(|| SelftError::Config("bench synthetic needs run.test_data".into()))?;
    // The same split the synthesizer read, loaded again for the real probe (the bench is a
    // developer's measurement: the run's types keep the private split away from selection).
    let train = load_train(&bench.config.run)?;
    let majority = majority_accuracy(&train, &test).unwrap_or(0.0);

    let mut pooled = synthetic.train().clone();
    pooled
        .examples
        .extend(synthetic.val().examples.iter().cloned());
    progress.message(&format!(
        "bench synthetic: probe on {} synthetic examples",
        pooled.len()
    ));
    let on_synthetic = train_probe(bench, &pooled, &test, "probe-synthetic", progress)?;
    let mut real = train.clone();
    dpselft_data::subset(&mut real, pooled.len(), 0);
    progress.message(&format!(
        "bench synthetic: probe on {} real examples",
        real.len()
    ));
    let on_real = train_probe(bench, &real, &test, "probe-real", progress)?;

    let examples = pooled
        .examples
        .iter()
        .take(8)
        .map(|e| {
            let label = pooled.label_name(e).unwrap_or("").to_string();
            (label, e.text.chars().take(160).collect())
        })
        .collect();
    Ok(SyntheticReport {
        task: bench.task.clone(),
        synthesizer: bench.config.synth.synthesizer().name().to_string(),
        data_kind: Some(bench.config.run.data_kind.clone()),
        label_descriptions: bench.config.run.label_descriptions.clone(),
        synthetic_examples: pooled.len(),
        synthetic_to_real_accuracy: on_synthetic,
        real_probe_accuracy: on_real,
        majority_accuracy: majority,
        epsilon_synth: synthetic.manifest().epsilon,
        target_accuracy: majority + 0.5 * (on_real - majority),
        private_examples: train.len(),
        test_examples: test.len(),
        probe: bench.probe.clone(),
        seed: bench.config.run.seed,
        generator_perplexity_before: perplexity.map(|p| p.0),
        generator_perplexity_after: perplexity.map(|p| p.1),
        perplexity_examples: perplexity.and(
            bench
                .config
                .synth
                .generator()
                .map(|g| g.perplexity_examples.min(test.len())),
        ),
        synth_wall_s,
        wall_s: started.elapsed().as_secs_f64(),
        examples,
    })
}

/// Trains the probe (non-private) on `data` and returns its accuracy on `test`.
fn train_probe(
    bench: &SyntheticBench,
    data: &Dataset,
    test: &Dataset,
    name: &str,
    progress: &mut dyn Progress,
) -> Result<f64> {
    let p = &bench.probe;
    let config = TrainConfig {
        task: Task::Classify,
        trainable: p.trainable.clone(),
        duration: Duration::Steps(p.steps),
        batch_size: p.batch_size.min(data.len()),
        clip: 1.0,
        automatic_clip_gamma: None,
        lr: p.lr,
        optimizer: OptimizerKind::default(),
        warmup_steps: 0,
        privacy: PrivacyTarget::NonPrivate,
        max_tokens: 8192,
        max_seq_len: p.max_seq_len,
        eval_every: None,
        log_every: 10,
        checkpoints: dpselft_dp::Checkpoints::Off,
        seed: Some(0),
        init_seed: 0,
        log_private_metrics: false,
        allow_large_delta: false,
    };
    let options = TrainerOptions {
        shared_ledger: None,
        stage: Stage::Train,
        prefix_cache: true,
        stage_budget: false,
    };
    let model = bench.paths.load_model()?;
    let dir: &Path = &bench.work.join(name);
    let mut trainer = DpTrainer::new_with(
        config,
        model,
        TrainData::Dataset(data),
        Some(test),
        dir,
        Start::Fresh,
        &options,
    )?;
    let summary = trainer.run(progress)?;
    summary
        .eval
        .and_then(|e| e.accuracy)
        .ok_or_else(|| SelftError::Config(format!("the {name} run returned no accuracy")))
}
