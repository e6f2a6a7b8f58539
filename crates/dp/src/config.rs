//! What defines a training run: [`TrainConfig`] (serialised as the run's resolved
//! configuration), its [`Duration`] and [`PrivacyTarget`], and the checks that need no data.

use dpselft_model::trainable::TrainableSpec;
use serde::{Deserialize, Serialize};

use crate::clip::Clipping;
use crate::error::{DpError, Result};
use crate::optim::OptimizerKind;
use crate::task::Task;

/// How long to train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Duration {
    /// K passes over the data in expectation: T = ⌈K·n/B⌉ steps.
    Epochs(f64),
    /// A fixed number of steps T.
    Steps(u64),
}

/// When a run writes checkpoints. Each checkpoint also ends a chunk of ledger entries (steps are
/// recorded a chunk ahead of running them), so a run killed without resuming has spent at most
/// one chunk more than it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checkpoints {
    /// Never (a killed run restarts from step 0; what it recorded is lost).
    Off,
    /// Every this many steps.
    Every(u64),
    /// [`AUTO_CHECKPOINTS`] times per run, evenly spaced (the default).
    #[default]
    Auto,
}

/// How many checkpoints [`Checkpoints::Auto`] writes per run: a kill then loses at most a tenth
/// of the run, and writing the trainable parameters and moments ten times costs little next to
/// the steps.
pub const AUTO_CHECKPOINTS: u64 = 10;

impl Checkpoints {
    /// The interval in steps for a run of `total_steps` steps (`None`: no checkpoints).
    pub fn interval(self, total_steps: u64) -> Option<u64> {
        match self {
            Self::Off => None,
            Self::Every(n) => Some(n),
            Self::Auto => Some(total_steps.div_ceil(AUTO_CHECKPOINTS).max(1)),
        }
    }
}

impl std::str::FromStr for Checkpoints {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "auto" => Ok(Self::Auto),
            n => match n.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Self::Every(n)),
                _ => Err(format!(
                    "`{n}`: expected a number of steps ≥ 1, `auto` or `off`"
                )),
            },
        }
    }
}

/// The privacy target of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PrivacyTarget {
    /// (ε, δ)-DP under add/remove-one adjacency for the whole run.
    Private {
        /// Target ε.
        epsilon: f64,
        /// Target δ.
        delta: f64,
    },
    /// No clipping and no noise: ε = ∞ (upper-bound baselines only).
    NonPrivate,
}

/// Everything that defines a training run (serialised as the run's resolved configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Classification or language modelling.
    pub task: Task,
    /// The trainable set (`head,last:2`, `lora:r=8;head`, … in the model crate's spec syntax).
    pub trainable: TrainableSpec,
    /// Epochs or steps.
    pub duration: Duration,
    /// The expected logical batch size B (q = B/n).
    pub batch_size: usize,
    /// The clip norm C (the sensitivity of the clipped sum).
    pub clip: f64,
    /// Automatic clipping C/(‖g‖+γ) with this γ instead of flat clipping.
    pub automatic_clip_gamma: Option<f64>,
    /// The peak learning rate.
    pub lr: f64,
    /// The update rule.
    pub optimizer: OptimizerKind,
    /// Linear warm-up steps (then linear decay to the end).
    pub warmup_steps: u64,
    /// (ε, δ) or non-private.
    pub privacy: PrivacyTarget,
    /// The most padded tokens in one physical micro-batch (bounds memory; no privacy effect).
    pub max_tokens: usize,
    /// Examples are truncated to this many tokens.
    pub max_seq_len: usize,
    /// Evaluate the held-out set every this many steps (and at the end).
    pub eval_every: Option<u64>,
    /// Write a metrics line (and update ε spent) every this many steps.
    pub log_every: u64,
    /// When to write checkpoints (a checkpoint lets [`crate::Start::Resume`] continue).
    pub checkpoints: Checkpoints,
    /// A seed for a reproducible run: it seeds sampling *and noise* (the noise is then
    /// predictable to whoever knows the seed; the ledger and summary say so). `None`: the OS.
    pub seed: Option<u64>,
    /// The seed of the classification head's initialisation and of LoRA factors (public
    /// randomness; not the noise).
    pub init_seed: u64,
    /// Also write each logged step's unprivatised values (training loss, realised batch size,
    /// clipped fraction, throughput) to `private_metrics.jsonl`, a file the ledger does not
    /// cover. Off: `metrics.jsonl` holds only data-independent or noisy quantities.
    #[serde(default)]
    pub log_private_metrics: bool,
    /// Allow δ ≥ 1/n (an error otherwise); the ledger records the override.
    #[serde(default)]
    pub allow_large_delta: bool,
}

impl Default for TrainConfig {
    /// Classification, head + top two blocks, 3 epochs, B = 256, C = 1, AdamW lr 1e-3,
    /// ε = 3 at δ = 1e-5, 8192 tokens per micro-batch, 128 tokens per example.
    fn default() -> Self {
        Self {
            task: Task::Classify,
            trainable: TrainableSpec::parse("head,last:2").expect("a valid built-in spec"),
            duration: Duration::Epochs(3.0),
            batch_size: 256,
            clip: 1.0,
            automatic_clip_gamma: None,
            lr: 1e-3,
            optimizer: OptimizerKind::default(),
            warmup_steps: 0,
            privacy: PrivacyTarget::Private {
                epsilon: 3.0,
                delta: 1e-5,
            },
            max_tokens: 8192,
            max_seq_len: 128,
            eval_every: None,
            log_every: 10,
            checkpoints: Checkpoints::Auto,
            seed: None,
            init_seed: 0,
            log_private_metrics: false,
            allow_large_delta: false,
        }
    }
}

impl TrainConfig {
    /// Checks every field that can be checked without the data.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(DpError::Config(what));
        if self.batch_size == 0 {
            return bad("batch size: must be ≥ 1".into());
        }
        if self.max_tokens == 0 || self.max_seq_len < 2 {
            return bad("max tokens must be ≥ 1 and max sequence length ≥ 2".into());
        }
        if self.log_every == 0
            || self.eval_every == Some(0)
            || self.checkpoints == Checkpoints::Every(0)
        {
            return bad("log/eval/checkpoint intervals must be ≥ 1 step".into());
        }
        match self.duration {
            Duration::Epochs(k) if !(k.is_finite() && k > 0.0) => {
                return bad(format!("epochs {k}: must be a finite number > 0"));
            }
            Duration::Steps(0) => return bad("steps: must be ≥ 1".into()),
            _ => {}
        }
        if let PrivacyTarget::Private { epsilon, delta } = self.privacy {
            if !(epsilon.is_finite() && epsilon > 0.0) {
                return bad(format!("ε = {epsilon}: must be a finite number > 0"));
            }
            if !(delta > 0.0 && delta < 1.0) {
                return bad(format!("δ = {delta}: must be in (0, 1)"));
            }
        }
        self.clipping().validate()?;
        if self.trainable.is_empty() {
            return bad("trainable: the set is empty (name at least the head)".into());
        }
        Ok(())
    }

    /// The clipping of this run: off for non-private runs, else flat (or automatic) at C.
    pub fn clipping(&self) -> Clipping {
        match (self.privacy, self.automatic_clip_gamma) {
            (PrivacyTarget::NonPrivate, _) => Clipping::Off,
            (_, Some(gamma)) => Clipping::Automatic {
                max_norm: self.clip,
                gamma,
            },
            (_, None) => Clipping::Flat {
                max_norm: self.clip,
            },
        }
    }
}
