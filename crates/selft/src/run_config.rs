//! A run's configuration (`config.toml`): the run as a whole and one section per stage, the
//! preset scales, and the checks the stages do not make themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dpselft_dp::{OptimizerKind, PrivacyTarget, Task};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SelftError, io_err};
use crate::select::{Candidates, Perturbation, RateSearch};
use crate::synth::SynthSection;

/// A whole run's configuration (`config.toml`): four sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// What to train, on what, for which budget.
    pub run: RunSection,
    /// Stage 1: which synthesizer, with its settings.
    pub synth: SynthSection,
    /// Stage 2.
    pub select: SelectSection,
    /// Stage 3.
    pub train: TrainSection,
}

/// The run as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Classification or language modelling.
    pub task: Task,
    /// The target model: an asset id (`minilm`) or a model path.
    pub model: String,
    /// The generator of the synthetic stage: an asset id (`smollm2`) or a path.
    pub generator: String,
    /// The private training split (JSONL, CSV or folder).
    pub train_data: PathBuf,
    /// What one example of the data is, in a few public words ("email message"): the synthetic
    /// stage's prompts say it (`{kind}`). The default describes the default data (spam).
    pub data_kind: String,
    /// A public description of each label (label → phrase following the kind in the synthetic
    /// stage's prompts, `{description}`: "that is spam: an unsolicited bulk email ..."). A label
    /// without one is named as `of the category "<label>"`; a key that is not a label of the
    /// training data is an error. None by default; `dpselft run` on its default data (and the
    /// benches on theirs) uses the task's own ([`descriptions_of`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub label_descriptions: BTreeMap<String, String>,
    /// The held-out test split (never used for any decision; evaluated once at the end).
    pub test_data: Option<PathBuf>,
    /// Target ε of the whole run.
    pub epsilon: f64,
    /// Target δ of the whole run.
    pub delta: f64,
    /// Share of ε for the synthetic stage (its mechanisms alone spend this much).
    pub synth_fraction: f64,
    /// Use a seeded random subset of this many training examples (the default scale's speed).
    pub train_limit: Option<usize>,
    /// Evaluate on a seeded random subset of this many test examples.
    pub test_limit: Option<usize>,
    /// Seed for a reproducible run (noise included; the ledger says so). `None`: the OS.
    pub seed: Option<u64>,
    /// Allow δ ≥ 1/n (an error otherwise); the ledger records the override.
    pub allow_large_delta: bool,
    /// Seed of the data subsets (`train_limit`, `test_limit`); public randomness, independent of
    /// `seed` so that runs with different seeds see the same subsets.
    pub subset_seed: u64,
}

/// The built-in default data: spam, whose 4,801 messages DP fine-tuning learns from within
/// minutes on two cores (BENCHMARKS.md §2; brown-genre's 15 genres at ε = 3 stay 30+ points below
/// the non-private model there).
pub const DEFAULT_TASK: dpselft_data::BenchmarkTask = dpselft_data::BenchmarkTask::Spam;

impl Default for RunSection {
    fn default() -> Self {
        let split = |name: &str| Path::new("data").join(DEFAULT_TASK.name()).join(name);
        Self {
            task: Task::Classify,
            model: "minilm".into(),
            generator: "smollm2".into(),
            train_data: split("train.jsonl"),
            test_data: Some(split("test.jsonl")),
            data_kind: DEFAULT_TASK.data_kind().into(),
            label_descriptions: BTreeMap::new(),
            epsilon: 3.0,
            delta: 1e-5,
            synth_fraction: 0.2,
            train_limit: None,
            test_limit: None,
            seed: None,
            subset_seed: 0,
            allow_large_delta: false,
        }
    }
}

/// A benchmark task's public label descriptions, as `run.label_descriptions` holds them.
pub fn descriptions_of(task: dpselft_data::BenchmarkTask) -> BTreeMap<String, String> {
    task.label_descriptions()
        .iter()
        .map(|&(label, phrase)| (label.to_string(), phrase.to_string()))
        .collect()
}

/// Stage 2's own settings (the rest comes from stage 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectSection {
    /// `singles`, `windows:K` or `greedy:K`.
    pub candidates: Candidates,
    /// At most this many candidate sets trained (a compute budget for deep models; see
    /// `SelectConfig::max_candidates`). None: all the strategy names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_candidates: Option<usize>,
    /// After the block search, also try the chosen blocks' attention, MLP and norms alone
    /// (`SelectConfig::sub_blocks`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sub_blocks: bool,
    /// `worst-case`, `gaussian` or `none`.
    pub perturbation: Perturbation,
    /// Steps τ per candidate, as a fraction of the final run's T steps (τ = ⌈f·T⌉, at least 1).
    pub step_fraction: f64,
    /// Examples per selection step (a compute setting: the radius uses the final B).
    pub batch_size: usize,
    /// Multiples of `train.lr` at which the chosen set is trained again on the synthetic data;
    /// the best on S_val is the final run's learning rate (empty: `train.lr` as given).
    pub lr_grid: Vec<f64>,
    /// `winner` (the grid for the chosen set alone) or `per-candidate` (every candidate at
    /// every multiple, each set compared at its best rate).
    pub rate_search: RateSearch,
    /// The perturbation of the chosen set's learning-rate trials (`winner` search).
    pub lr_perturbation: Perturbation,
    /// Steps of each learning-rate trial, as a fraction of T (like `step_fraction`).
    pub lr_step_fraction: f64,
    /// Radius scale κ.
    pub kappa: f64,
    /// Runs per candidate.
    pub seeds: usize,
    /// Tokens per synthetic example (they are short; this bounds the stage's cost).
    pub max_seq_len: usize,
}

impl Default for SelectSection {
    fn default() -> Self {
        Self {
            candidates: Candidates::Greedy(2),
            max_candidates: None,
            sub_blocks: false,
            perturbation: Perturbation::WorstCase,
            step_fraction: 0.25,
            batch_size: 32,
            // With train.lr = 10^-2.5: 1e-4 … 1e-1 in steps of 10^0.75, the utility grid's rates.
            lr_grid: LR_GRID_MULTIPLES.to_vec(),
            rate_search: RateSearch::Winner,
            lr_perturbation: Perturbation::Gaussian,
            lr_step_fraction: 0.25,
            kappa: 1.0,
            seeds: 1,
            max_seq_len: 64,
        }
    }
}

/// The default learning-rate multiples: 10^-1.5, 10^-0.75, 1, 10^0.75, 10^1.5.
const LR_GRID_MULTIPLES: [f64; 5] = [0.031_622_78, 0.177_827_9, 1.0, 5.623_413, 31.622_78];

impl SynthSection {
    /// The settings of `scale` (the defaults are [`Scale::Small`]): at the full scale S_val holds
    /// about 500 examples or more, and the DP generator trains for a real budget.
    pub fn scale_to(&mut self, scale: Scale) {
        if scale == Scale::Small {
            return;
        }
        match self {
            SynthSection::DpGenerator(g) => {
                g.num_samples = 3000;
                g.steps = 40;
                g.batch_size = 256;
            }
            SynthSection::PrivateEvolution(e) => {
                e.num_samples = 3000;
                e.rounds = 3;
            }
        }
    }
}

impl SelectSection {
    /// τ for a final run of `final_steps` steps.
    pub fn steps_for(&self, final_steps: u64) -> u64 {
        fraction_of(self.step_fraction, final_steps)
    }

    /// The steps of a learning-rate trial for a final run of `final_steps` steps.
    pub fn lr_steps_for(&self, final_steps: u64) -> u64 {
        fraction_of(self.lr_step_fraction, final_steps)
    }
}

/// ⌈f·T⌉, at least 1.
fn fraction_of(f: f64, steps: u64) -> u64 {
    ((f * steps as f64).ceil() as u64).max(1)
}

/// Stage 3: DP fine-tuning of the chosen blocks and the head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Expected logical batch size B.
    pub batch_size: usize,
    /// Clip norm C.
    pub clip: f64,
    /// Peak learning rate η.
    pub lr: f64,
    /// Epochs (T = ⌈epochs·n/B⌉ steps).
    pub epochs: f64,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Tokens per example.
    pub max_seq_len: usize,
    /// Padded tokens per physical micro-batch.
    pub max_tokens: usize,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            batch_size: 512,
            clip: 1.0,
            lr: 3.162_277_7e-3,
            epochs: 5.0,
            optimizer: OptimizerKind::default(),
            max_seq_len: 128,
            max_tokens: 8192,
        }
    }
}

/// The preset scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Minutes on two CPU cores: a small synthetic set and short selection stages.
    Small,
    /// All the data and paper-like settings.
    Full,
}

impl RunSection {
    /// The run's privacy target (ε, δ).
    pub fn privacy(&self) -> PrivacyTarget {
        PrivacyTarget::Private {
            epsilon: self.epsilon,
            delta: self.delta,
        }
    }
}

impl RunConfig {
    /// The configuration of a scale (the defaults are [`Scale::Small`]).
    pub fn preset(scale: Scale) -> Self {
        let mut c = Self::default();
        if scale == Scale::Full {
            c.run.train_limit = None;
            c.run.test_limit = None;
            c.synth.scale_to(scale);
            c.select.candidates = Candidates::Greedy(3);
            c.select.step_fraction = 1.0;
            c.select.lr_step_fraction = 1.0;
            c.select.batch_size = 128;
            c.select.max_seq_len = 128;
        }
        c
    }

    /// Reads a `config.toml`; missing keys keep their defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        toml::from_str(&text).map_err(|e| SelftError::Format {
            path: path.to_path_buf(),
            message: format!("not a dpselft run configuration: {e}"),
        })
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self)
            .map_err(|e| SelftError::Config(format!("serialising the configuration: {e}")))
    }

    /// Checks the values the stages do not check themselves.
    pub fn validate(&self) -> Result<()> {
        let r = &self.run;
        if !(r.epsilon.is_finite() && r.epsilon > 0.0) {
            return Err(SelftError::Config(format!(
                "run.epsilon {} must be > 0",
                r.epsilon
            )));
        }
        if !(r.delta > 0.0 && r.delta < 1.0) {
            return Err(SelftError::Config(format!(
                "run.delta {} must be in (0, 1)",
                r.delta
            )));
        }
        if !(r.synth_fraction > 0.0 && r.synth_fraction < 1.0) {
            return Err(SelftError::Config(format!(
                "run.synth_fraction {} must be in (0, 1)",
                r.synth_fraction
            )));
        }
        let s = &self.select;
        if s.max_candidates == Some(0) {
            return Err(SelftError::Config(
                "select.max_candidates 0: the selection must train at least one set".into(),
            ));
        }
        if !(s.step_fraction > 0.0 && s.step_fraction <= 1.0) {
            return Err(SelftError::Config(format!(
                "select.step_fraction {} must be in (0, 1]",
                s.step_fraction
            )));
        }
        if !(s.lr_step_fraction > 0.0 && s.lr_step_fraction <= 1.0) {
            return Err(SelftError::Config(format!(
                "select.lr_step_fraction {} must be in (0, 1]",
                s.lr_step_fraction
            )));
        }
        if let Some(m) = s.lr_grid.iter().find(|m| !(m.is_finite() && **m > 0.0)) {
            return Err(SelftError::Config(format!(
                "select.lr_grid: {m} is not a multiple > 0 of train.lr"
            )));
        }
        self.synth.synthesizer().validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_fractions_outside_zero_one_are_refused_by_name() {
        assert!(RunConfig::default().validate().is_ok());
        for (key, bad) in [
            ("select.step_fraction", 0.0),
            ("select.lr_step_fraction", 1.5),
        ] {
            let mut c = RunConfig::default();
            match key {
                "select.step_fraction" => c.select.step_fraction = bad,
                _ => c.select.lr_step_fraction = bad,
            }
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn learning_rate_trials_run_as_long_as_the_candidates_at_both_scales() {
        for scale in [Scale::Small, Scale::Full] {
            let s = RunConfig::preset(scale).select;
            assert_eq!(s.lr_perturbation, Perturbation::Gaussian);
            for t in [1, 7, 47, 138] {
                assert_eq!(s.lr_steps_for(t), s.steps_for(t), "{scale:?}, T = {t}");
            }
        }
        // ⌈f·T⌉, at least one step.
        let s = SelectSection::default();
        assert_eq!((s.steps_for(47), s.steps_for(1)), (12, 1));
    }
}
