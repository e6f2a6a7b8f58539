//! The trainer's set-up steps, each a small function: the run folder's lock, the δ check, the
//! ledger side, the noise plan, the data, the optimizer, the RNG streams and the prefix cache.

use std::path::Path;

use dpselft_data::Dataset;
use dpselft_model::Model;
use dpselft_privacy::{AccountantConfig, Override, check_delta_for_examples};

use crate::bridge::TrainableParams;
use crate::clip::Clipping;
use crate::config::{PrivacyTarget, TrainConfig};
use crate::error::{DpError, Result, io_err};
use crate::optim::{DpOptimizer, DpOptimizerConfig, LrSchedule};
use crate::plan::{NoisePlan, TrainPlan, plan_noise};
use crate::prefix::PrefixCache;
use crate::rng::NoiseRng;
use crate::stage_ledger::{StageLedger, mark_interrupted};
use crate::task::EncodedSet;
use crate::trainer_io::{TrainData, TrainerOptions, finished_summary};

/// δ against the n training examples ([`check_delta_for_examples`]): the override to record, if
/// the configuration allows δ ≥ 1/n; an error if it does not.
pub(crate) fn delta_override(config: &TrainConfig, n: usize) -> Result<Option<Override>> {
    match config.privacy {
        PrivacyTarget::Private { delta, .. } => Ok(check_delta_for_examples(
            delta,
            n,
            config.allow_large_delta,
        )?),
        PrivacyTarget::NonPrivate => Ok(None),
    }
}

/// Takes the run folder's exclusive lock (creating the folder): a second process on the same
/// folder gets an error naming the holder's pid.
pub(crate) fn lock_run_dir(run_dir: &Path) -> Result<dpselft_fsio::FolderLock> {
    dpselft_fsio::lock_folder(run_dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => DpError::State(e.to_string()),
        _ => io_err(run_dir, e),
    })
}

/// For a [`crate::Start::Resume`] without a checkpoint: refuses a finished run, otherwise marks
/// the interrupted attempt's ledger entries lost ([`mark_interrupted`]) so that the restart
/// from step 0 composes with them. Returns the lost steps.
pub(crate) fn restart_from_zero(
    config: &TrainConfig,
    run_dir: &Path,
    options: &TrainerOptions,
) -> Result<u64> {
    if finished_summary(run_dir).is_some() {
        return Err(DpError::Config(format!(
            "{} holds a finished run (summary.json): there is nothing to resume",
            run_dir.display()
        )));
    }
    if config.privacy == PrivacyTarget::NonPrivate {
        return Ok(0);
    }
    let path = options
        .shared_ledger
        .clone()
        .unwrap_or_else(|| run_dir.join("ledger.json"));
    Ok(mark_interrupted(&path, options.stage)?
        .iter()
        .map(|e| e.steps)
        .sum())
}

/// The run's side of the ledger (`None` for non-private runs).
pub(crate) fn stage_ledger(
    config: &TrainConfig,
    run_dir: &Path,
    options: &TrainerOptions,
) -> Result<Option<StageLedger>> {
    match config.privacy {
        PrivacyTarget::Private { delta, .. } => Ok(Some(StageLedger::new(
            run_dir,
            options.shared_ledger.as_deref(),
            options.stage,
            config.seed.is_some(),
            delta,
            options.stage_budget,
        )?)),
        PrivacyTarget::NonPrivate => Ok(None),
    }
}

/// [`plan_noise`] for `n` examples, composed with the ledger's earlier stages under its
/// accountant (a non-private run needs none).
pub(crate) fn plan_with(
    config: &TrainConfig,
    n: usize,
    ledger: Option<&StageLedger>,
) -> Result<NoisePlan> {
    let default_accountant = AccountantConfig::pld_default().build();
    let (prior, accountant) = match ledger {
        Some(l) => (l.prior(), l.accountant()),
        None => (&[][..], default_accountant.as_ref()),
    };
    plan_noise(
        n,
        config.batch_size,
        config.duration,
        config.privacy,
        prior,
        accountant,
    )
}

/// The training set (tokenized here unless given encoded) and the held-out set, for `model`.
pub(crate) fn encode_sets(
    model: &Model,
    config: &TrainConfig,
    train: TrainData<'_>,
    eval: Option<&Dataset>,
) -> Result<(EncodedSet, Option<EncodedSet>)> {
    let train_set = match train {
        TrainData::Dataset(d) => EncodedSet::new(model, d, config.task, config.max_seq_len)?,
        TrainData::Encoded(e) => e.clone(),
    };
    let eval_set = match eval {
        Some(d) => Some(EncodedSet::new(model, d, config.task, config.max_seq_len)?),
        None => None,
    };
    Ok((train_set, eval_set))
}

/// The run's DP optimizer: its update rule and schedule, σ and C, the expected batch size as
/// divisor, no weight decay on biases and norm weights.
pub(crate) fn make_optimizer(
    config: &TrainConfig,
    plan: &TrainPlan,
    clipping: Clipping,
    params: &TrainableParams,
) -> Result<DpOptimizer> {
    let opt_config = DpOptimizerConfig {
        optimizer: config.optimizer,
        schedule: LrSchedule {
            peak_lr: config.lr,
            warmup_steps: config.warmup_steps.min(plan.total_steps),
            total_steps: plan.total_steps,
        },
        noise_multiplier: plan.noise_multiplier,
        clipping,
        expected_batch_size: plan.expected_batch_size,
    };
    DpOptimizer::new(opt_config, &params.vars)?.with_weight_decay_mask(params.weight_decay_mask())
}

/// Two independent streams, (sampling, noise): which examples are drawn must not be correlated
/// with the noise. With a seed both derive from it; otherwise both are keyed by the OS.
pub(crate) fn rng_streams(seed: Option<u64>) -> Result<(NoiseRng, NoiseRng)> {
    Ok(match seed {
        Some(seed) => {
            let mut root = NoiseRng::from_seed(seed);
            (root.split(), root.split())
        }
        None => (NoiseRng::from_os_rng()?, NoiseRng::from_os_rng()?),
    })
}

/// The frozen-prefix cache of the training set, where asked for and where blocks are frozen.
pub(crate) fn prefix_cache(
    model: &Model,
    options: &TrainerOptions,
    n: usize,
) -> Option<PrefixCache> {
    let low = model.lowest_trainable_block();
    (options.prefix_cache && !model.embeddings_trainable() && low > 0)
        .then(|| PrefixCache::new(low, n))
}
