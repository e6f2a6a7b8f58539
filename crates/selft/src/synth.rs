//! Stage 1: DP synthetic data (docs/design.md, §2 (a) and (b)).
//!
//! 1. **Label histogram** (classification): the label counts of the private split plus
//!    N(0, σ_h²) per count — a Gaussian mechanism with L2 sensitivity 1 under add/remove-one
//!    (one example moves one count by one). σ_h is calibrated so that the histogram alone would
//!    spend `histogram_share` of the stage's ε.
//! 2. **Generator**: a causal LM is DP-fine-tuned ([`DpTrainer`]) on `"<label>\n<text>"` with the
//!    loss on the text only, for a fixed number of Poisson-sampled steps; its σ is calibrated so
//!    that histogram and generator *together* meet the stage's ε (PLD composition through the
//!    shared ledger).
//! 3. **Sampling** (post-processing): N_syn texts, label-conditioned in the proportions of the
//!    noisy histogram, batched and KV-cached; empty, too-short and duplicate texts are dropped;
//!    the rest is split 80/20 into S_train and S_val with a seeded shuffle.
//!
//! For language-modelling tasks the prompt is empty and there is no histogram.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use dpselft_data::{Dataset, Example};
use dpselft_dp::{
    DpTrainer, Duration, EncodedSet, NoiseRng, OptimizerKind, PrivacyTarget, Start, Task,
    TrainConfig, TrainData, TrainerOptions, fill_gaussian_f64,
};
use dpselft_model::generate::{SampleParams, generate_ids};
use dpselft_model::{Model, TrainableSpec};
use dpselft_privacy::{LedgerEntry, Mechanism, PrivacyLedger, Stage, calibrate_sigma};
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::data::{PrivateData, SynthManifest, SyntheticData};
use crate::error::{Result, SelftError};

/// Settings of the synthetic stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Synthetic texts to sample (before filtering), N_syn.
    pub num_samples: usize,
    /// The generator's trainable set.
    pub trainable: TrainableSpec,
    /// DP fine-tuning steps of the generator.
    pub steps: u64,
    /// Expected logical batch size of the generator's training.
    pub batch_size: usize,
    /// Clip norm of the generator's training.
    pub clip: f64,
    /// Peak learning rate of the generator's training (AdamW).
    pub lr: f64,
    /// Tokens per training example (prompt + text).
    pub max_seq_len: usize,
    /// Tokens generated per synthetic text at most.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Prompts per generation batch.
    pub generation_batch: usize,
    /// Share of the stage's ε the histogram alone would spend (sets σ_h).
    pub histogram_share: f64,
    /// Texts shorter than this many characters are dropped.
    pub min_chars: usize,
    /// Fraction of the kept texts that go to S_val.
    pub val_fraction: f64,
    /// Padded tokens per physical micro-batch of the generator's training.
    pub max_tokens: usize,
}

impl Default for SynthConfig {
    /// The small default: minutes on two CPU cores with SmolLM2-135M.
    fn default() -> Self {
        Self {
            num_samples: 320,
            trainable: TrainableSpec::parse("last:2").expect("a valid built-in spec"),
            steps: 6,
            batch_size: 24,
            clip: 1.0,
            lr: 1e-3,
            max_seq_len: 64,
            max_new_tokens: 48,
            temperature: 0.7,
            top_p: 0.9,
            generation_batch: 48,
            histogram_share: 0.2,
            min_chars: 40,
            val_fraction: 0.2,
            max_tokens: 2048,
        }
    }
}

impl SynthConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SelftError::Config(format!("synth: {m}")));
        if self.num_samples < 2 {
            return bad(format!(
                "num_samples {} must be at least 2",
                self.num_samples
            ));
        }
        if !(self.histogram_share > 0.0 && self.histogram_share < 1.0) {
            return bad(format!(
                "histogram_share {} must be in (0, 1)",
                self.histogram_share
            ));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return bad(format!(
                "val_fraction {} must be in (0, 1)",
                self.val_fraction
            ));
        }
        if self.generation_batch == 0 || self.max_new_tokens == 0 || self.steps == 0 {
            return bad("generation_batch, max_new_tokens and steps must be > 0".into());
        }
        Ok(())
    }
}

/// What the synthetic stage did, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthReport {
    /// The stage's ε target (its share of the run's budget, PLD).
    pub epsilon_target: f64,
    /// ε (PLD) the stage's mechanisms spend together.
    pub epsilon_spent: f64,
    /// Noise multiplier of the histogram (std per count; sensitivity 1). `None` for LM tasks.
    pub histogram_sigma: Option<f64>,
    /// The noisy label counts used for sampling (before clamping at 0).
    pub noisy_counts: Vec<f64>,
    /// Texts sampled per label.
    pub samples_per_label: Vec<usize>,
    /// Noise multiplier of the generator's training.
    pub generator_sigma: f64,
    /// Sampling rate of the generator's training.
    pub generator_sampling_rate: f64,
    /// Seconds spent training the generator.
    pub train_s: f64,
    /// Seconds spent sampling.
    pub generate_s: f64,
    /// Seconds for the whole stage.
    pub wall_s: f64,
    /// Size of S_val.
    pub val_examples: usize,
    /// A few synthetic examples (label, text), for the report.
    pub examples: Vec<(String, String)>,
}

/// The stage's privacy target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageBudget {
    /// ε of this stage alone (PLD).
    pub epsilon: f64,
    /// The run's δ.
    pub delta: f64,
}

/// Inputs of [`synthesize`] besides the private data.
pub struct SynthInputs<'a> {
    /// The pretrained generator (a causal LM with its tokenizer).
    pub generator: Model,
    /// Its name, for the manifest.
    pub generator_name: &'a str,
    /// Classification (label-conditioned) or language modelling (empty prompt).
    pub task: Task,
    /// The run's ledger (created by the caller with the run's δ); the stage's mechanisms are
    /// appended to it.
    pub ledger: &'a Path,
    /// A folder for the generator's training files (metrics).
    pub work_dir: &'a Path,
    /// A seed for reproducible experiments (noise included; the ledger says so). `None`: the OS.
    pub seed: Option<u64>,
}

/// The prompt of a label: its name with `_` as spaces, then a newline.
pub fn label_prompt(label: &str) -> String {
    format!("{}\n", label.replace('_', " "))
}

/// Runs the synthetic stage (see the module documentation).
///
/// Privacy: the private data are read only by the histogram (Gaussian mechanism, recorded in the
/// ledger before its result is used) and by the generator's DP-SGD steps (recorded by the
/// trainer before they run); everything after is post-processing.
pub fn synthesize(
    private: &PrivateData,
    inputs: SynthInputs<'_>,
    config: &SynthConfig,
    budget: StageBudget,
    progress: &mut dyn Progress,
) -> Result<(SyntheticData, SynthReport)> {
    config.validate()?;
    let stage_started = Instant::now();
    let data = private.dataset();
    let labelled = inputs.task == Task::Classify;
    let mut root_rng = match inputs.seed {
        Some(s) => NoiseRng::from_seed(s ^ 0x5e1f_7a11),
        None => NoiseRng::from_os_rng()?,
    };

    // 1. The label histogram.
    let (histogram_sigma, noisy_counts) = if labelled {
        let (sigma, noisy) = noisy_histogram(data, config, budget, inputs.ledger, &mut root_rng)?;
        (Some(sigma), noisy)
    } else {
        (None, Vec::new())
    };

    // 2. The generator's DP fine-tuning.
    progress.message("synth: DP fine-tuning the generator");
    let started = Instant::now();
    let pairs: Vec<(String, String)> = data
        .examples
        .iter()
        .map(|e| {
            let prompt = match data.label_name(e) {
                Some(l) if labelled => label_prompt(l),
                _ => String::new(),
            };
            (prompt, e.text.clone())
        })
        .collect();
    let encoded = EncodedSet::lm_with_prompts(&inputs.generator, &pairs, config.max_seq_len)?;
    let train_config = TrainConfig {
        task: Task::Lm,
        trainable: config.trainable.clone(),
        duration: Duration::Steps(config.steps),
        batch_size: config.batch_size.min(data.len()),
        clip: config.clip,
        automatic_clip_gamma: None,
        lr: config.lr,
        optimizer: OptimizerKind::default(),
        warmup_steps: 0,
        privacy: PrivacyTarget::Private {
            epsilon: budget.epsilon,
            delta: budget.delta,
        },
        max_tokens: config.max_tokens,
        max_seq_len: config.max_seq_len,
        eval_every: None,
        log_every: 1,
        checkpoint_every: None,
        seed: inputs.seed,
        init_seed: 0,
    };
    let options = TrainerOptions {
        shared_ledger: Some(inputs.ledger.to_path_buf()),
        stage: Stage::SynthGenerator,
        prefix_cache: false,
    };
    let mut trainer = DpTrainer::new_with(
        train_config,
        inputs.generator,
        TrainData::Encoded(&encoded),
        None,
        inputs.work_dir,
        Start::Fresh,
        &options,
    )?;
    let plan = trainer.plan().clone();
    trainer.run(progress)?;
    let generator = trainer.into_model();
    let train_s = started.elapsed().as_secs_f64();

    // 3. Sampling (post-processing from here on).
    let started = Instant::now();
    let label_names: Vec<String> = if labelled {
        data.labels.clone()
    } else {
        Vec::new()
    };
    let per_label = if labelled {
        apportion(&noisy_counts, config.num_samples)
    } else {
        vec![config.num_samples]
    };
    let mut sample_seed = root_rng.split();
    let texts = sample_texts(
        &generator,
        &label_names,
        &per_label,
        config,
        &mut sample_seed,
        progress,
    )?;
    let generate_s = started.elapsed().as_secs_f64();

    let sampled = texts.len();
    let (kept, dropped_short, dropped_duplicate) = filter_texts(texts, config.min_chars);
    let (train, val) = split(kept, &label_names, config.val_fraction, &mut sample_seed)?;
    let ledger = PrivacyLedger::open(inputs.ledger)?;
    let epsilon_spent = ledger
        .guarantee_accountant()
        .epsilon(&ledger.mechanisms()?, budget.delta)?;
    let manifest = SynthManifest {
        generator: inputs.generator_name.to_string(),
        labels: label_names.clone(),
        epsilon: epsilon_spent,
        delta: budget.delta,
        sampled,
        dropped_short,
        dropped_duplicate,
        train: train.len(),
        val: val.len(),
        private_examples: data.len(),
    };
    let examples = train
        .examples
        .iter()
        .take(6)
        .map(|e| {
            let label = train.label_name(e).unwrap_or("").to_string();
            (label, e.text.clone())
        })
        .collect();
    let report = SynthReport {
        epsilon_target: budget.epsilon,
        epsilon_spent,
        histogram_sigma,
        noisy_counts,
        samples_per_label: per_label,
        generator_sigma: plan.noise_multiplier,
        generator_sampling_rate: plan.sampling_rate,
        train_s,
        generate_s,
        wall_s: stage_started.elapsed().as_secs_f64(),
        val_examples: val.len(),
        examples,
    };
    Ok((SyntheticData::from_parts(train, val, manifest), report))
}

/// Step 1: calibrates σ_h, records the histogram in the ledger, then releases the noisy counts.
fn noisy_histogram(
    data: &Dataset,
    config: &SynthConfig,
    budget: StageBudget,
    ledger_path: &Path,
    rng: &mut NoiseRng,
) -> Result<(f64, Vec<f64>)> {
    let mut ledger = PrivacyLedger::open(ledger_path)?;
    let template = Mechanism::gaussian(1.0, 1.0, 1)?;
    let sigma = calibrate_sigma(
        ledger.guarantee_accountant().as_ref(),
        &[],
        &template,
        budget.epsilon * config.histogram_share,
        budget.delta,
    )?;
    let entry = LedgerEntry::gaussian(sigma, 1.0, 1, Stage::SynthHistogram);
    ledger.record(entry.seeded(rng.is_seeded()))?;
    let counts = data.label_counts();
    let mut noise = vec![0.0; counts.len()];
    fill_gaussian_f64(&mut noise, sigma, rng)?;
    Ok((
        sigma,
        counts
            .iter()
            .zip(&noise)
            .map(|(&c, z)| c as f64 + z)
            .collect(),
    ))
}

/// Splits `total` samples over labels in proportion to the noisy counts clamped at 0 (largest
/// remainders; uniform if every count is ≤ 0).
pub fn apportion(noisy_counts: &[f64], total: usize) -> Vec<usize> {
    let k = noisy_counts.len();
    if k == 0 {
        return Vec::new();
    }
    let clamped: Vec<f64> = noisy_counts.iter().map(|c| c.max(0.0)).collect();
    let mass: f64 = clamped.iter().sum();
    let shares: Vec<f64> = if mass > 0.0 {
        clamped.iter().map(|c| c / mass * total as f64).collect()
    } else {
        vec![total as f64 / k as f64; k]
    };
    let mut out: Vec<usize> = shares.iter().map(|s| s.floor() as usize).collect();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| {
        let ra = shares[a] - shares[a].floor();
        let rb = shares[b] - shares[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let missing = total - out.iter().sum::<usize>();
    for &i in order.iter().take(missing) {
        out[i] += 1;
    }
    out
}

/// Step 3: samples `per_label[l]` texts for each label (one text for an LM task's empty prompt
/// per count), in batches. Returns (label index or None, text).
fn sample_texts(
    generator: &Model,
    labels: &[String],
    per_label: &[usize],
    config: &SynthConfig,
    rng: &mut NoiseRng,
    progress: &mut dyn Progress,
) -> Result<Vec<(Option<usize>, String)>> {
    let tok = generator.tokenizer()?;
    let mut prompts: Vec<(Option<usize>, Vec<u32>)> = Vec::new();
    for (l, &n) in per_label.iter().enumerate() {
        let (label, ids) = match labels.get(l) {
            Some(name) => (
                Some(l),
                dpselft_model::tokenizer::encode(tok, &label_prompt(name), false)?,
            ),
            None => (None, Vec::new()),
        };
        prompts.extend(std::iter::repeat_n((label, ids), n));
    }
    // Prompt and continuation must fit the generator's position table.
    let longest = prompts
        .iter()
        .map(|(_, p)| p.len().max(1))
        .max()
        .unwrap_or(1);
    let room = generator.config.max_positions().saturating_sub(longest);
    if room == 0 {
        return Err(SelftError::Config(format!(
            "the generator takes {} positions; the longest label prompt already has {longest}",
            generator.config.max_positions()
        )));
    }
    let max_new_tokens = config.max_new_tokens.min(room);
    progress.stage("synth: sampling texts", prompts.len() as u64);
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(config.generation_batch) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|(_, p)| p.clone()).collect();
        let params = SampleParams {
            max_new_tokens,
            temperature: config.temperature,
            top_p: config.top_p,
            seed: (rng.uniform_f64() * u64::MAX as f64) as u64,
        };
        let generated = generate_ids(generator, &ids, &params)?;
        for ((label, _), new) in chunk.iter().zip(generated) {
            let text = dpselft_model::tokenizer::decode(tok, &new, true)?;
            out.push((*label, text));
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok(out)
}

/// Normalises whitespace, drops texts shorter than `min_chars` and duplicates (case-insensitive).
/// Returns (kept, dropped as short, dropped as duplicate).
pub fn filter_texts(
    texts: Vec<(Option<usize>, String)>,
    min_chars: usize,
) -> (Vec<(Option<usize>, String)>, usize, usize) {
    let mut seen = HashSet::new();
    let (mut short, mut dup) = (0, 0);
    let mut kept = Vec::new();
    for (label, text) in texts {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.chars().count() < min_chars {
            short += 1;
        } else if !seen.insert(text.to_lowercase()) {
            dup += 1;
        } else {
            kept.push((label, text));
        }
    }
    (kept, short, dup)
}

/// The seeded 80/20 split (shuffled; at least one example on each side).
fn split(
    mut kept: Vec<(Option<usize>, String)>,
    labels: &[String],
    val_fraction: f64,
    rng: &mut NoiseRng,
) -> Result<(Dataset, Dataset)> {
    if kept.len() < 2 {
        return Err(SelftError::Config(format!(
            "only {} synthetic text(s) survived filtering; sample more (synth.num_samples) or \
             lower synth.min_chars",
            kept.len()
        )));
    }
    rng.shuffle(&mut kept);
    let n_val = ((kept.len() as f64 * val_fraction).round() as usize).clamp(1, kept.len() - 1);
    let val_part = kept.split_off(kept.len() - n_val);
    let to_dataset = |part: Vec<(Option<usize>, String)>| Dataset {
        examples: part
            .into_iter()
            .map(|(label, text)| Example { text, label })
            .collect(),
        labels: labels.to_vec(),
    };
    Ok((to_dataset(kept), to_dataset(val_part)))
}
