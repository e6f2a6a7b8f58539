//! The DP-SGD engine of dpselft: the model-independent pieces, each usable alone.
//!
//! Data flow of one logical batch (docs/design.md, §2 (b) and (d)):
//! [`sampler`] draws it by Poisson sampling and splits it into micro-batches → for each
//! micro-batch the model's backward leaves [`GradRecord`]s, grouped per trainable parameter →
//! [`clip_and_sum`] computes the
//! per-example norms ([`norms`]), clips, and sums per parameter ([`clip`]) →
//! [`ClippedSumAccumulator`] adds the micro-batches → [`DpOptimizer::step`] adds N(0, σ²C²)
//! noise from a [`NoiseRng`] ([`noise`], [`rng`]), divides by the expected batch size and updates
//! the parameters ([`optim`]).
//!
//! The model side: [`bridge`] turns the model's records into [`GradRecord`] groups per trainable
//! parameter; [`step`] is the one micro-batch step (record → clip → accumulate) that training,
//! selection, inspection and benchmarks share; [`head`] sets a model up for its task; [`task`]
//! tokenizes data and scores examples. A run: [`config`] says what it is, [`plan`] calibrates σ
//! (the one calibration), [`trainer`] runs it (sampling, steps, [`stage_ledger`], metrics,
//! evaluation [`eval`], [`checkpoint`]s). [`audit`] checks a run empirically: canaries in, one
//! run, an ε lower bound out.

#![deny(missing_docs)]

pub mod audit;
pub mod bridge;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod displacement;
pub mod error;
pub mod eval;
pub mod head;
pub mod inspect;
mod metrics_log;
pub mod noise;
pub mod norms;
pub mod optim;
pub mod plan;
pub mod prefix;
pub mod rng;
pub mod sampler;
pub mod stage_ledger;
pub mod step;
pub mod task;
pub mod trainer;
pub mod trainer_io;
mod trainer_setup;

pub use audit::{AuditConfig, AuditReport, Canaries};
pub use bridge::{ParamGroups, TrainableParams, clip_groups, group_records};
pub use checkpoint::{load_trained, save_trained};
pub use clip::{ClipOutput, ClippedSumAccumulator, Clipping, clip_and_sum, per_example_norms};
pub use config::{AUTO_CHECKPOINTS, Checkpoints, Duration, PrivacyTarget, TrainConfig};
pub use displacement::NoiseStep;
pub use error::{DpError, Result};
pub use eval::{EvalMetrics, evaluate, evaluate_cached, example_logits};
pub use head::{HeadChoice, blocks_spec, classifier_pooling, prepare_model, random_blocks_spec};
pub use inspect::per_example_grad_norms;
pub use noise::{add_gaussian_noise, fill_gaussian_f32, fill_gaussian_f64, gaussian_like};
pub use norms::{GradRecord, NormMethod, Padding};
pub use optim::{
    DpOptimizer, DpOptimizerConfig, LrSchedule, OptimizerCheckpoint, OptimizerKind, OptimizerMeta,
    StepInfo,
};
pub use plan::{NoisePlan, TrainPlan, plan_noise};
pub use prefix::{PrefixCache, PrefixCaches};
pub use rng::{NoiseRng, NoiseRngState, SeedSource};
pub use sampler::{PoissonSampler, micro_batch_tokens, split_by_tokens};
pub use step::{ClippedBatch, MicroBatch, RecordedGrads, clip_sum, record_examples, record_grads};
pub use task::{EncodedSet, Task, per_example_loss, per_example_loss_masked};
pub use trainer::DpTrainer;
pub use trainer_io::{
    Observer, PublicStepLine, Start, StepMetrics, TrainData, TrainSummary, TrainerOptions,
    finished_summary,
};
