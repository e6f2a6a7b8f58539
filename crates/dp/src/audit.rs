//! A built-in privacy audit of a DP training run: the one-run canary audit of Steinke, Nasr and
//! Jagielski (2023), whose statistics live in [`dpselft_privacy::audit`].
//!
//! `m` canaries — texts of random vocabulary words, each with a random label — are each added to
//! the training data independently with probability ½ (fresh fair coins from the run's RNG). One
//! training run follows, exactly as configured. Each canary is then scored by the trained model:
//! minus its loss on its own label (a member is fitted better). The top and bottom `k` scores are
//! guessed IN and OUT, and the binomial test turns the number of correct guesses into an ε lower
//! bound at 95% confidence. A correct DP implementation never gives a bound above its claimed ε
//! (but for the 5% the confidence allows); a run with the noise switched off should give one far
//! above it — that is what shows the audit can see leakage at all.
//!
//! The audit is black-box (it sees only the final model's losses), so its bounds are far below
//! the claimed ε for real DP runs: it detects a broken implementation (noise missing, clipping
//! bypassed, a mis-scaled σ), not slack in the accountant.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use dpselft_data::{Dataset, Example};
use dpselft_model::Model;
use dpselft_privacy::audit::{BestKAudit, audit_best_k, default_k_grid};
use serde::{Deserialize, Serialize};

use crate::config::{PrivacyTarget, TrainConfig};
use crate::error::{DpError, Result};
use crate::rng::NoiseRng;
use crate::task::{EncodedSet, Task, per_example_loss_masked, to_f64s};
use crate::trainer::DpTrainer;
use crate::trainer_io::{Observer, Start, TrainData, TrainerOptions};

/// How many canaries, how long, and the confidence of the bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Canaries m (each a member with probability ½).
    pub canaries: usize,
    /// Random vocabulary words per canary text.
    pub words: usize,
    /// Confidence of the lower bound (0.95: at most a 5% chance that it exceeds the true ε).
    pub confidence: f64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            canaries: 1000,
            words: 12,
            confidence: 0.95,
        }
    }
}

/// The canaries of one audit: their examples (labels index the training data's labels) and
/// which of them were added to the training data.
#[derive(Debug, Clone)]
pub struct Canaries {
    /// One example per canary.
    pub examples: Vec<Example>,
    /// Whether canary `i` is a member.
    pub included: Vec<bool>,
}

/// What one audit run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// The ε the run claims (PLD, from its ledger); `None` with the noise switched off (ε = ∞).
    pub claimed_epsilon: Option<f64>,
    /// The δ of the claim and of the audit.
    pub delta: f64,
    /// The run's noise multiplier σ (0 with the noise off).
    pub noise_multiplier: f64,
    /// Steps T.
    pub steps: u64,
    /// Training examples the run saw (real ones and member canaries).
    pub train_examples: usize,
    /// Canaries m, and how many were members.
    pub canaries: usize,
    /// Member canaries.
    pub members: usize,
    /// Mean score (−loss) of members and of non-members.
    pub mean_score_members: f64,
    /// Mean score of the non-members.
    pub mean_score_non_members: f64,
    /// The audit over the k grid (Bonferroni-corrected); `best` holds the reported bound.
    pub audit: BestKAudit,
    /// The ε lower bound (at `audit.confidence`).
    pub epsilon_lower_bound: f64,
    /// Seconds for training and scoring.
    pub wall_s: f64,
}

/// Draws `config.canaries` canaries of `config.words` random words from `model`'s vocabulary,
/// with labels uniform over `labels` classes, each a member with probability ½.
pub fn make_canaries(
    model: &Model,
    labels: usize,
    config: &AuditConfig,
    rng: &mut NoiseRng,
) -> Result<Canaries> {
    if config.canaries < 2 || config.words == 0 || labels < 2 {
        return Err(DpError::Config(format!(
            "an audit needs at least 2 canaries of at least 1 word and 2 labels (got {} canaries \
             of {} words, {labels} labels)",
            config.canaries, config.words
        )));
    }
    let words = canary_words(model)?;
    let pick = |rng: &mut NoiseRng, n: usize| ((rng.uniform_f64() * n as f64) as usize).min(n - 1);
    let mut examples = Vec::with_capacity(config.canaries);
    let mut included = Vec::with_capacity(config.canaries);
    for _ in 0..config.canaries {
        let text: Vec<&str> = (0..config.words)
            .map(|_| words[pick(rng, words.len())].as_str())
            .collect();
        examples.push(Example {
            text: text.join(" "),
            label: Some(pick(rng, labels)),
            group: None,
        });
        included.push(rng.uniform_f64() < 0.5);
    }
    Ok(Canaries { examples, included })
}

/// Whole words of the model's vocabulary (ASCII letters, ≥ 3 of them; a leading BPE word marker
/// stripped), sorted: the material of canary texts, unlike any real example.
fn canary_words(model: &Model) -> Result<Vec<String>> {
    let vocab = model.tokenizer()?.get_vocab(false);
    let words: BTreeSet<String> = vocab
        .keys()
        .map(|t| t.trim_start_matches(['Ġ', '▁']))
        .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_alphabetic()))
        .map(str::to_lowercase)
        .collect();
    if words.len() < 10 {
        return Err(DpError::Config(format!(
            "the tokenizer has {} whole words of three letters or more; an audit needs at least \
             10 to write canaries",
            words.len()
        )));
    }
    Ok(words.into_iter().collect())
}

/// `data` with the member canaries appended.
pub fn with_members(data: &Dataset, canaries: &Canaries) -> Dataset {
    let mut out = data.clone();
    out.examples.extend(
        canaries
            .examples
            .iter()
            .zip(&canaries.included)
            .filter(|&(_, &member)| member)
            .map(|(e, _)| e.clone()),
    );
    out
}

/// Each canary's score under `model`: minus its loss on its own label.
pub fn canary_scores(
    model: &Model,
    canaries: &Canaries,
    labels: &[String],
    config: &TrainConfig,
) -> Result<Vec<f64>> {
    let set = Dataset {
        examples: canaries.examples.clone(),
        labels: labels.to_vec(),
    };
    let encoded = EncodedSet::new(model, &set, Task::Classify, config.max_seq_len)?;
    let all: Vec<usize> = (0..encoded.len()).collect();
    let mut scores = vec![0.0; encoded.len()];
    for mb in crate::sampler::split_by_tokens(&all, &encoded.lengths, config.max_tokens)? {
        let (batch, gold) = encoded.batch(model, &mb)?;
        let out = model
            .forward_train(&batch, dpselft_model::Ctx::plain())?
            .detach();
        let mask = encoded.loss_mask(model, &mb, batch.ids.dim(1)?)?;
        let losses = per_example_loss_masked(model, &out, &batch, gold.as_ref(), mask.as_ref())?;
        for (&i, l) in mb.iter().zip(to_f64s(&losses)?) {
            scores[i] = -l;
        }
    }
    Ok(scores)
}

/// One audit: canaries from `rng`, one training run of `config` on `data` plus the members in
/// `run_dir` (its own ledger), the scores, and the bound at the run's δ over the default k grid.
pub fn audit(
    config: TrainConfig,
    model: Model,
    data: &Dataset,
    run_dir: &Path,
    audit: &AuditConfig,
    rng: &mut NoiseRng,
    observer: &mut dyn Observer,
) -> Result<AuditReport> {
    if config.task != Task::Classify {
        return Err(DpError::Config(
            "the audit trains a classifier (task classify)".into(),
        ));
    }
    let started = Instant::now();
    let canaries = make_canaries(&model, data.labels.len(), audit, rng)?;
    let train = with_members(data, &canaries);
    let delta = match config.privacy {
        PrivacyTarget::Private { delta, .. } => delta,
        PrivacyTarget::NonPrivate => 1.0 / (10.0 * train.len() as f64),
    };
    let options = TrainerOptions {
        prefix_cache: true,
        ..TrainerOptions::default()
    };
    let mut trainer = DpTrainer::new_with(
        config.clone(),
        model,
        TrainData::Dataset(&train),
        None,
        run_dir,
        Start::Fresh,
        &options,
    )?;
    let summary = trainer.run(observer)?;
    let scores = canary_scores(trainer.model(), &canaries, &data.labels, &config)?;
    let best = audit_best_k(
        &scores,
        &canaries.included,
        &default_k_grid(canaries.included.len()),
        delta,
        audit.confidence,
    )?;
    let mean = |member: bool| {
        let s: Vec<f64> = scores
            .iter()
            .zip(&canaries.included)
            .filter(|&(_, &m)| m == member)
            .map(|(s, _)| *s)
            .collect();
        s.iter().sum::<f64>() / s.len().max(1) as f64
    };
    Ok(AuditReport {
        claimed_epsilon: summary.epsilon,
        delta,
        noise_multiplier: summary.plan.noise_multiplier,
        steps: summary.steps,
        train_examples: train.len(),
        canaries: canaries.included.len(),
        members: canaries.included.iter().filter(|&&m| m).count(),
        mean_score_members: mean(true),
        mean_score_non_members: mean(false),
        epsilon_lower_bound: best.best.epsilon_lower_bound,
        audit: best,
        wall_s: started.elapsed().as_secs_f64(),
    })
}
