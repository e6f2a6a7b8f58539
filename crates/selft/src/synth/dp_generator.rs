//! The DP-tuned generator (docs/design.md, §2 (a) and (b)), the default synthesizer:
//!
//! 1. **Label histogram** (classification, [`super::noisy_histogram`]): σ_h is calibrated so that
//!    the histogram alone would spend `histogram_share` of the stage's ε.
//! 2. **Generator**: a causal LM is DP-fine-tuned ([`DpTrainer`]) on `prompt(label) + text` with
//!    the loss on the text only (the prompt an instruction built from the public label name,
//!    [`super::label_prompt`]), for a fixed number of Poisson-sampled steps; its σ is calibrated so
//!    that histogram and generator *together* meet the stage's ε (composition through the
//!    shared ledger).
//! 3. **Sampling** (post-processing): N_syn texts, label-conditioned in the proportions of the
//!    noisy histogram, batched and KV-cached; empty, too-short and duplicate texts are dropped;
//!    the rest is split 80/20 into S_train and S_val with a seeded shuffle.
//!
//! For language-modelling tasks the prompt is empty and there is no histogram.

use std::path::Path;
use std::time::Instant;

use dpselft_data::Dataset;
use dpselft_dp::{
    DpTrainer, Duration, EncodedSet, NoiseRng, OptimizerKind, PrivacyTarget, Start, Task,
    TrainConfig, TrainData, TrainPlan, TrainerOptions,
};
use dpselft_model::{Model, TrainableSpec};
use dpselft_privacy::Stage;
use serde::{Deserialize, Serialize};

use super::sampling::{Sampling, generate_texts};
use super::{
    PromptWords, Provenance, StageBudget, SynthInputs, SynthReport, Synthesizer, apportion, finish,
    noisy_histogram,
};
use crate::Progress;
use crate::data::{PrivateData, SyntheticData};
use crate::error::{Result, SelftError};

/// Settings of the DP-tuned generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
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
    /// The prompt of each label, with `{label}` for its name or `{description}` for its public
    /// description (see [`super::DEFAULT_PROMPT`]);
    /// the generator is trained and sampled with it.
    pub prompt: String,
    /// Tokens per training example (prompt + text).
    pub max_seq_len: usize,
    /// Tokens generated per synthetic text at most.
    pub max_new_tokens: usize,
    /// Sampling temperature [default: per task, [`default_sampling`]].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus mass [default: per task, [`default_sampling`]].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Prompts per generation batch. Each decoding step reads (and gemm packs) every weight of
    /// the generator once whatever the batch, ~0.19 s a step for SmolLM2-135M on 2 cores, so
    /// larger batches are faster: 96 texts took 42 s in batches of 48 and 36 s in one of 96
    /// (31 s with the in-place KV cache, at a peak of 2.2 GB for the whole synth stage).
    pub generation_batch: usize,
    /// Share of the stage's ε the histogram alone would spend (sets σ_h).
    pub histogram_share: f64,
    /// Texts shorter than this many characters are dropped.
    pub min_chars: usize,
    /// Fraction of the kept texts that go to S_val.
    pub val_fraction: f64,
    /// Padded tokens per physical micro-batch of the generator's training.
    pub max_tokens: usize,
    /// Held-out texts (a seeded subset of the run's test split) on which the generator's
    /// perplexity of `prompt(label) + text` is measured before and after its DP tuning, as a
    /// check that the tuning taught it the private text's distribution; 0: not measured. The
    /// held-out split is not private data (the run reports its test accuracy on it too), so
    /// the measurement spends nothing; it costs two forward passes over these texts.
    #[serde(skip_serializing_if = "is_zero")]
    pub perplexity_examples: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for GeneratorConfig {
    /// The small default: minutes on two CPU cores with SmolLM2-135M.
    fn default() -> Self {
        Self {
            num_samples: 320,
            trainable: TrainableSpec::parse("last:2").expect("a valid built-in spec"),
            steps: 6,
            batch_size: 24,
            clip: 1.0,
            lr: 1e-3,
            prompt: super::DEFAULT_PROMPT.to_string(),
            max_seq_len: 80,
            max_new_tokens: 48,
            temperature: None,
            top_p: None,
            generation_batch: 96,
            histogram_share: 0.2,
            min_chars: 40,
            val_fraction: 0.2,
            max_tokens: 2048,
            perplexity_examples: 0,
        }
    }
}

/// (temperature, nucleus mass) of the synthetic texts when the configuration names none.
///
/// Classification: 0.7 and 0.9, cleaner texts for a label. Language modelling: 1.0 and 1.0,
/// plain ancestral sampling. There the synthetic validation text scores the candidates and
/// learning rates by perplexity, and truncated sampling draws text that is far easier than the
/// generator's own distribution: on ham-lm (300 private texts, ε = 3), the pretrained SmolLM2
/// scores 5.4 on texts sampled at 0.7 / 0.9, 35 at 1.0 / 1.0, and 68 on private training text;
/// the learning rate that fit the easy text best (5.6× the baselines') made the test perplexity
/// worse than the pretrained model's (BENCHMARKS.md §8).
pub fn default_sampling(task: Task) -> (f64, f64) {
    match task {
        Task::Classify => (0.7, 0.9),
        Task::Lm => (1.0, 1.0),
    }
}

impl GeneratorConfig {
    /// The sampling settings for `task`.
    pub fn sampling(&self, task: Task) -> Sampling {
        let (temperature, top_p) = default_sampling(task);
        Sampling {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature.unwrap_or(temperature),
            top_p: self.top_p.unwrap_or(top_p),
            batch: self.generation_batch,
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SelftError::Config(format!("synth: {m}")));
        if self.num_samples < 2 {
            return bad(format!(
                "num_samples {} must be at least 2",
                self.num_samples
            ));
        }
        for (name, v) in [
            ("histogram_share", self.histogram_share),
            ("val_fraction", self.val_fraction),
        ] {
            if !super::in_unit_interval(v) {
                return bad(format!("{name} {v} must be in (0, 1)"));
            }
        }
        if !super::names_label(&self.prompt) {
            return bad(format!(
                "prompt {:?} must contain {{label}} or {{description}} (where the label goes)",
                self.prompt
            ));
        }
        if self.generation_batch == 0 || self.max_new_tokens == 0 || self.steps == 0 {
            return bad("generation_batch, max_new_tokens and steps must be > 0".into());
        }
        if let Some(t) = self.temperature.filter(|t| !(t.is_finite() && *t >= 0.0)) {
            return bad(format!("temperature {t} must be ≥ 0 (0: greedy)"));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return bad(format!("top_p {p} must be in (0, 1]"));
        }
        Ok(())
    }
}

/// The DP-tuned generator as a [`Synthesizer`].
pub struct DpGenerator<'a> {
    /// Its settings.
    pub config: &'a GeneratorConfig,
}

impl Synthesizer for DpGenerator<'_> {
    fn name(&self) -> &'static str {
        "dp-generator"
    }

    fn validate(&self) -> Result<()> {
        self.config.validate()
    }

    /// Privacy: the private data are read only by the histogram (Gaussian mechanism, recorded in
    /// the ledger before its result is used) and by the generator's DP-SGD steps (recorded by
    /// the trainer before they run); everything after is post-processing.
    fn synthesize(
        &self,
        private: &PrivateData,
        inputs: SynthInputs<'_>,
        budget: StageBudget,
        progress: &mut dyn Progress,
    ) -> Result<(SyntheticData, SynthReport)> {
        run(self.config, private, inputs, budget, progress)
    }
}

/// The three steps of the module documentation.
fn run(
    config: &GeneratorConfig,
    private: &PrivateData,
    inputs: SynthInputs<'_>,
    budget: StageBudget,
    progress: &mut dyn Progress,
) -> Result<(SyntheticData, SynthReport)> {
    let stage_started = Instant::now();
    let data = private.dataset();
    let task = inputs.task;
    let labelled = task == Task::Classify;
    let mut root_rng = inputs.noise_rng(0x5e1f_7a11)?;
    // The held-out check's texts are encoded, and the untuned generator scored on them, before
    // anything is spent: a text that cannot be encoded fails the run with nothing spent.
    let (ledger, generator_name, words) = (inputs.ledger, inputs.generator_name, inputs.words);
    let held_out = held_out_set(config, inputs.held_out, labelled, words, &inputs.generator)?;
    let before = perplexity(
        &inputs.generator,
        held_out.as_ref(),
        config,
        "before",
        progress,
    )?;

    // 1. The label histogram (classification only).
    let (histogram_sigma, noisy_counts) = match labelled {
        true => histogram(config, data, budget, inputs.ledger, &mut root_rng)?,
        false => (None, Vec::new()),
    };

    // 2. The generator's DP fine-tuning, its held-out perplexity measured again after it.
    progress.message("synth: DP fine-tuning the generator");
    let started = Instant::now();
    let (generator, plan) = train_generator(config, data, labelled, inputs, budget, progress)?;
    let train_s = started.elapsed().as_secs_f64();
    let after = perplexity(&generator, held_out.as_ref(), config, "after", progress)?;

    // 3. Sampling (post-processing from here on).
    let started = Instant::now();
    let (label_names, per_label) = sampling_plan(labelled, data, &noisy_counts, config);
    let mut sample_seed = root_rng.split();
    let texts = sample_texts(
        &generator,
        (words, &label_names),
        &per_label,
        (config, task),
        &mut sample_seed,
        progress,
    )?;
    let generate_s = started.elapsed().as_secs_f64();
    let finished = finish(
        texts,
        &label_names,
        (config.min_chars, config.val_fraction),
        &mut sample_seed,
        Provenance {
            ledger,
            generator: generator_name,
            delta: budget.delta,
            private_examples: data.len(),
        },
    )?;
    let report = SynthReport {
        epsilon_target: budget.epsilon,
        epsilon_spent: finished.epsilon_spent,
        histogram_sigma,
        noisy_counts,
        samples_per_label: per_label,
        generator_sigma: Some(plan.noise_multiplier),
        generator_sampling_rate: Some(plan.sampling_rate),
        generator_perplexity: before.zip(after),
        vote_sigma: None,
        vote_rounds: 0,
        train_s,
        generate_s,
        wall_s: stage_started.elapsed().as_secs_f64(),
        val_examples: finished.data.val().len(),
        examples: finished.examples,
    };
    Ok((finished.data, report))
}

/// Step 1: the noisy label histogram at `histogram_share` of the stage's ε, as (σ_h, counts).
fn histogram(
    config: &GeneratorConfig,
    data: &Dataset,
    budget: StageBudget,
    ledger: &Path,
    rng: &mut NoiseRng,
) -> Result<(Option<f64>, Vec<f64>)> {
    let (sigma, noisy) = noisy_histogram(data, config.histogram_share, budget, ledger, rng)?;
    Ok((Some(sigma), noisy))
}

/// The labels to prompt with and how many texts to sample for each: in proportion to the noisy
/// counts, or all of them for the one text prompt of an LM task.
fn sampling_plan(
    labelled: bool,
    data: &Dataset,
    noisy_counts: &[f64],
    config: &GeneratorConfig,
) -> (Vec<String>, Vec<usize>) {
    if labelled {
        let per_label = apportion(noisy_counts, config.num_samples);
        (data.labels.clone(), per_label)
    } else {
        (Vec::new(), vec![config.num_samples])
    }
}

/// Step 2: DP fine-tuning of the generator on `prompt(label) + text` (the loss on the text only),
/// through the run's shared ledger.
fn train_generator(
    config: &GeneratorConfig,
    data: &Dataset,
    labelled: bool,
    inputs: SynthInputs<'_>,
    budget: StageBudget,
    progress: &mut dyn Progress,
) -> Result<(Model, TrainPlan)> {
    let pairs = prompted(config, data, labelled, inputs.words);
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
        checkpoints: dpselft_dp::Checkpoints::Off,
        seed: inputs.seed,
        init_seed: 0,
        log_private_metrics: false,
        allow_large_delta: inputs.allow_large_delta,
    };
    let options = TrainerOptions {
        shared_ledger: Some(inputs.ledger.to_path_buf()),
        stage: Stage::SynthGenerator,
        prefix_cache: false,
        // The generator meets the synthetic stage's budget, within the current attempt.
        stage_budget: true,
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
    Ok((trainer.into_model(), plan))
}

/// (prompt, text) of each example of `data`: the generator's training pairs, the loss on the
/// text only.
fn prompted(
    config: &GeneratorConfig,
    data: &Dataset,
    labelled: bool,
    words: PromptWords<'_>,
) -> Vec<(String, String)> {
    data.examples
        .iter()
        .map(|e| {
            let prompt = match data.label_name(e) {
                Some(l) if labelled => words.fill(&config.prompt, l),
                _ => words.fill_text(&config.prompt),
            };
            (prompt, e.text.clone())
        })
        .collect()
}

/// The held-out texts of `perplexity_examples`, encoded as the generator's training pairs: a
/// seeded subset of `held_out` (the same texts before and after the tuning), or `None` when
/// the measurement is off or the run has no held-out split.
fn held_out_set(
    config: &GeneratorConfig,
    held_out: Option<&Dataset>,
    labelled: bool,
    words: PromptWords<'_>,
    generator: &Model,
) -> Result<Option<EncodedSet>> {
    let Some(held_out) = held_out.filter(|d| config.perplexity_examples > 0 && !d.is_empty())
    else {
        return Ok(None);
    };
    let mut texts = held_out.clone();
    dpselft_data::subset(&mut texts, config.perplexity_examples, 0);
    let pairs = prompted(config, &texts, labelled, words);
    Ok(Some(EncodedSet::lm_with_prompts(
        generator,
        &pairs,
        config.max_seq_len,
    )?))
}

/// The generator's perplexity on the held-out set, if there is one.
fn perplexity(
    generator: &Model,
    held_out: Option<&EncodedSet>,
    config: &GeneratorConfig,
    when: &str,
    progress: &mut dyn Progress,
) -> Result<Option<f64>> {
    let Some(set) = held_out else {
        return Ok(None);
    };
    let p = dpselft_dp::evaluate(generator, set, config.max_tokens)?.perplexity;
    if let Some(p) = p {
        progress.message(&format!(
            "synth: generator perplexity {when} its tuning: {p:.3} on {} held-out texts",
            set.len()
        ));
    }
    Ok(p)
}

/// Step 3: samples `per_label[l]` texts for each label (prompts filled with `words`; one text
/// per count for an LM task's one text prompt), in batches, with the sampling settings of the
/// task. Returns (label index or None, text).
fn sample_texts(
    generator: &Model,
    (words, labels): (PromptWords<'_>, &[String]),
    per_label: &[usize],
    (config, task): (&GeneratorConfig, Task),
    rng: &mut NoiseRng,
    progress: &mut dyn Progress,
) -> Result<Vec<(Option<usize>, String)>> {
    let mut prompts: Vec<(Option<usize>, String)> = Vec::new();
    for (l, &n) in per_label.iter().enumerate() {
        let prompt = match labels.get(l) {
            Some(name) => (Some(l), words.fill(&config.prompt, name)),
            None => (None, words.fill_text(&config.prompt)),
        };
        prompts.extend(std::iter::repeat_n(prompt, n));
    }
    generate_texts(
        generator,
        &prompts,
        &config.sampling(task),
        rng,
        "synth: sampling texts",
        progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_defaults_to_the_task_unless_the_configuration_names_it() {
        let c = GeneratorConfig::default();
        let classify = c.sampling(Task::Classify);
        assert_eq!((classify.temperature, classify.top_p), (0.7, 0.9));
        let lm = c.sampling(Task::Lm);
        assert_eq!((lm.temperature, lm.top_p), (1.0, 1.0));
        // A value written in the configuration wins for either task, and survives a round trip.
        let named: GeneratorConfig = toml::from_str("temperature = 0.8\ntop_p = 0.95").unwrap();
        for task in [Task::Classify, Task::Lm] {
            let s = named.sampling(task);
            assert_eq!((s.temperature, s.top_p), (0.8, 0.95));
        }
        let text = toml::to_string(&named).unwrap();
        assert_eq!(toml::from_str::<GeneratorConfig>(&text).unwrap(), named);
        assert!(!toml::to_string(&c).unwrap().contains("temperature"));
    }

    #[test]
    fn out_of_range_sampling_settings_are_refused() {
        for (t, p) in [
            (Some(-1.0), None),
            (Some(f64::NAN), None),
            (None, Some(0.0)),
        ] {
            let c = GeneratorConfig {
                temperature: t,
                top_p: p,
                ..GeneratorConfig::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("temperature") || e.contains("top_p"), "{e}");
        }
    }
}
