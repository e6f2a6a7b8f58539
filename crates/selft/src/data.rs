//! The two kinds of data a DP-SelFT run handles, kept apart by their types.
//!
//! [`PrivateData`] holds the sensitive training split. Only the stages that pay for reading it
//! under differential privacy — the synthetic stage ([`crate::synth`]) and the final fine-tuning
//! ([`crate::pipeline`]) — can see inside it: its contents are private to this crate and no
//! function turns it into anything else.
//!
//! [`SyntheticData`] is what the synthetic stage produced (post-processing of DP releases): it
//! can only be made by [`crate::synth::synthesize`] or loaded from a folder that stage wrote
//! (its `manifest.json` is required). The selection stage takes a `&SyntheticData` and nothing
//! else that holds examples, so it cannot read the private split — the compiler checks it:
//!
//! ```compile_fail
//! use dpselft_selft::{PrivateData, select::{select, SelectConfig}};
//! fn pick(private: &PrivateData, config: &SelectConfig) {
//!     // error[E0308]: expected `&SyntheticData`, found `&PrivateData`
//!     let _ = select(private, &|| unimplemented!(), config, &mut ());
//! }
//! ```
//! while the same call with synthetic data compiles:
//! ```no_run
//! use dpselft_selft::{SyntheticData, select::{select, SelectConfig}};
//! fn pick(synthetic: &SyntheticData, config: &SelectConfig) {
//!     let _ = select(synthetic, &|| unimplemented!(), config, &mut ());
//! }
//! ```

use std::path::Path;

use dpselft_data::{Dataset, LabelRequirement, LoadOptions, load_dataset_as};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SelftError, io_err};

/// The private training split. Opaque outside this crate (see the module documentation).
#[derive(Debug, Clone)]
pub struct PrivateData {
    train: Dataset,
}

impl PrivateData {
    /// Wraps the private training split.
    pub fn new(train: Dataset) -> Self {
        Self { train }
    }

    /// Number of examples n (treated as public, as usual in DP-SGD accounting).
    pub fn len(&self) -> usize {
        self.train.len()
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.train.is_empty()
    }

    /// The label names (public: the task's label set is part of its definition).
    pub fn labels(&self) -> &[String] {
        &self.train.labels
    }

    /// The examples, for the DP stages of this crate only.
    pub(crate) fn dataset(&self) -> &Dataset {
        &self.train
    }
}

/// How a synthetic data set was made (its folder's `manifest.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthManifest {
    /// The generator model (path or asset id).
    pub generator: String,
    /// Label names, in the order of the private task (empty for LM tasks).
    pub labels: Vec<String>,
    /// The ε (PLD) of the synthetic stage alone at the run's δ.
    pub epsilon: f64,
    /// The run's δ.
    pub delta: f64,
    /// Texts sampled before filtering.
    pub sampled: usize,
    /// Texts dropped as empty or too short.
    pub dropped_short: usize,
    /// Texts dropped as duplicates.
    pub dropped_duplicate: usize,
    /// Examples in `train.jsonl` and `val.jsonl`.
    pub train: usize,
    /// Examples in `val.jsonl`.
    pub val: usize,
    /// Size n of the private training split (public, as usual in DP-SGD accounting): the
    /// selection stage needs it to match the final stage's noise without reading the data.
    pub private_examples: usize,
}

/// DP synthetic data: a training and a validation split, and how they were made.
#[derive(Debug, Clone)]
pub struct SyntheticData {
    train: Dataset,
    val: Dataset,
    manifest: SynthManifest,
}

impl SyntheticData {
    /// Assembles the synthetic stage's output (only that stage makes one).
    pub(crate) fn from_parts(train: Dataset, val: Dataset, manifest: SynthManifest) -> Self {
        Self {
            train,
            val,
            manifest,
        }
    }

    /// The synthetic training split S_train.
    pub fn train(&self) -> &Dataset {
        &self.train
    }

    /// The synthetic validation split S_val.
    pub fn val(&self) -> &Dataset {
        &self.val
    }

    /// How the data were made.
    pub fn manifest(&self) -> &SynthManifest {
        &self.manifest
    }

    /// Writes `train.jsonl`, `val.jsonl` and `manifest.json` into `dir` (each atomically; the
    /// manifest last, so a folder with a manifest is complete).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        dpselft_data::write_jsonl(&dir.join("train.jsonl"), &self.train)?;
        dpselft_data::write_jsonl(&dir.join("val.jsonl"), &self.val)?;
        crate::write_json(&dir.join("manifest.json"), &self.manifest)
    }

    /// Loads a folder written by [`SyntheticData::save`]. A folder without `manifest.json` is
    /// refused: it was not made by the synthetic stage.
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SelftError::Config(format!(
                    "{} is not a synthetic data folder (no manifest.json; make one with \
                     `dpselft synth`)",
                    dir.display()
                ))
            } else {
                io_err(&manifest_path, e)
            }
        })?;
        let manifest: SynthManifest =
            serde_json::from_str(&text).map_err(|e| SelftError::Format {
                path: manifest_path.clone(),
                message: format!("not a synthetic-data manifest: {e}"),
            })?;
        let options = LoadOptions {
            labels: if manifest.labels.is_empty() {
                LabelRequirement::Ignore
            } else {
                LabelRequirement::Required
            },
            known_labels: (!manifest.labels.is_empty()).then(|| manifest.labels.clone()),
            min_examples_per_label: 0,
        };
        let load =
            |name: &str| load_dataset_as(&dir.join(name), dpselft_data::Format::Jsonl, &options);
        Ok(Self {
            train: load("train.jsonl")?,
            val: load("val.jsonl")?,
            manifest,
        })
    }
}
