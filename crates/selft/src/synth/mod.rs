//! Stage 1: DP synthetic data (docs/design.md, §2 (a) and (b)).
//!
//! A synthesizer turns the private split into a labelled synthetic data set S = S_train ∪ S_val,
//! recording every mechanism it runs in the run's ledger *before* it runs, within the stage's
//! budget; selection (stage 2) takes only its output. Each synthesizer implements
//! [`Synthesizer`]; the run configuration's `[synth]` section ([`SynthSection`]) names one
//! (`synthesizer = "dp-generator"`, the default when the key is absent) with its settings.
//! Adding one is a new file with the implementation plus a variant of [`SynthSection`].
//!
//! Built: [`dp_generator`], the DP-fine-tuned generator, and [`private_evolution`], generation
//! steered by noisy nearest-neighbour votes of the private data. Shared by every synthesizer
//! here: the instruction prompt of a label ([`label_prompt`]), the noisy label histogram
//! ([`noisy_histogram`]), the apportioning of samples to labels ([`apportion`]), batched sampling
//! ([`sampling`]), embeddings in the target encoder's space ([`embed`]) and the post-processing
//! of the texts ([`filter_texts`], the seeded split).

pub mod dp_generator;
pub mod embed;
pub mod private_evolution;
pub mod sampling;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use dpselft_data::{Dataset, Example};
use dpselft_dp::{NoiseRng, Task, fill_gaussian_f64};
use dpselft_model::Model;
use dpselft_privacy::{LedgerEntry, Mechanism, PrivacyLedger, Stage, calibrate_sigma};
use serde::{Deserialize, Serialize};

use crate::Progress;
use crate::data::{PrivateData, SynthManifest, SyntheticData};
use crate::error::{Result, SelftError};

pub use dp_generator::{DpGenerator, GeneratorConfig};
pub use private_evolution::{EvolutionConfig, PrivateEvolution};

/// A way to build the synthetic data set from the private split.
pub trait Synthesizer {
    /// Its name in configurations and reports.
    fn name(&self) -> &'static str;

    /// Checks the settings before anything is spent.
    fn validate(&self) -> Result<()>;

    /// Builds S from `private`.
    ///
    /// Privacy contract: the private data may be read only through mechanisms recorded in
    /// `inputs.ledger` before their results are used, together spending at most `budget`
    /// (composed under the ledger's accountant); everything else is post-processing.
    fn synthesize(
        &self,
        private: &PrivateData,
        inputs: SynthInputs<'_>,
        budget: StageBudget,
        progress: &mut dyn Progress,
    ) -> Result<(SyntheticData, SynthReport)>;
}

/// The `[synth]` section of a run configuration: which synthesizer, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "synthesizer", rename_all = "kebab-case")]
pub enum SynthSection {
    /// The DP-fine-tuned generator ([`DpGenerator`]).
    DpGenerator(GeneratorConfig),
    /// Private Evolution: generation and noisy votes, no DP training ([`PrivateEvolution`]).
    PrivateEvolution(EvolutionConfig),
}

impl Default for SynthSection {
    fn default() -> Self {
        Self::DpGenerator(GeneratorConfig::default())
    }
}

impl SynthSection {
    /// The synthesizer this section configures.
    pub fn synthesizer(&self) -> Box<dyn Synthesizer + '_> {
        match self {
            Self::DpGenerator(c) => Box::new(DpGenerator { config: c }),
            Self::PrivateEvolution(c) => Box::new(PrivateEvolution { config: c }),
        }
    }

    /// The DP generator's settings, if that is the synthesizer.
    pub fn generator(&self) -> Option<&GeneratorConfig> {
        match self {
            Self::DpGenerator(c) => Some(c),
            _ => None,
        }
    }

    /// The DP generator's settings, for presets and flags that set them.
    pub fn generator_mut(&mut self) -> Option<&mut GeneratorConfig> {
        match self {
            Self::DpGenerator(c) => Some(c),
            _ => None,
        }
    }

    /// The number of texts the synthesizer samples (before filtering), N_syn.
    pub fn num_samples_mut(&mut self) -> &mut usize {
        match self {
            Self::DpGenerator(c) => &mut c.num_samples,
            Self::PrivateEvolution(c) => &mut c.num_samples,
        }
    }

    /// The section of the synthesizer called `name` with its default settings.
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "dp-generator" => Ok(Self::DpGenerator(GeneratorConfig::default())),
            "private-evolution" => Ok(Self::PrivateEvolution(EvolutionConfig::default())),
            other => Err(SelftError::Config(format!(
                "synthesizer `{other}`: expected {}",
                SYNTHESIZERS.join(" or ")
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for SynthSection {
    /// The section's keys, with `synthesizer` naming the variant (default `dp-generator`, so
    /// configurations written before there was a choice still read).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let name = match table.remove("synthesizer") {
            None => "dp-generator".to_string(),
            Some(toml::Value::String(s)) => s,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "synthesizer = {other}: expected a name such as \"dp-generator\""
                )));
            }
        };
        match name.as_str() {
            "dp-generator" => toml::Value::Table(table)
                .try_into()
                .map(Self::DpGenerator)
                .map_err(D::Error::custom),
            "private-evolution" => toml::Value::Table(table)
                .try_into()
                .map(Self::PrivateEvolution)
                .map_err(D::Error::custom),
            other => Err(D::Error::custom(format!(
                "synthesizer `{other}`: expected {}",
                SYNTHESIZERS.join(" or ")
            ))),
        }
    }
}

/// Whether a share or fraction lies strictly between 0 and 1 (the synthesizers' settings check).
pub(crate) fn in_unit_interval(v: f64) -> bool {
    v > 0.0 && v < 1.0
}

/// The synthesizers' names.
pub const SYNTHESIZERS: [&str; 2] = ["dp-generator", "private-evolution"];

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
    /// Noise multiplier of the generator's training (DP generator).
    pub generator_sigma: Option<f64>,
    /// Sampling rate of the generator's training (DP generator).
    pub generator_sampling_rate: Option<f64>,
    /// The generator's perplexity on held-out texts (before, after) its DP tuning, where
    /// `perplexity_examples` asked for it (DP generator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_perplexity: Option<(f64, f64)>,
    /// Noise std of each round's vote counts (Private Evolution; sensitivity 1).
    #[serde(default)]
    pub vote_sigma: Option<f64>,
    /// Voting rounds (Private Evolution).
    #[serde(default)]
    pub vote_rounds: usize,
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

/// Inputs of a synthesizer besides the private data.
pub struct SynthInputs<'a> {
    /// The pretrained generator (a causal LM with its tokenizer).
    pub generator: Model,
    /// The pretrained target model (an encoder for embeddings; selection fine-tunes it later).
    pub target: &'a Model,
    /// Its name, for the manifest.
    pub generator_name: &'a str,
    /// Classification (label-conditioned) or language modelling (empty prompt).
    pub task: Task,
    /// The run's ledger (created by the caller with the run's δ); the stage's mechanisms are
    /// appended to it.
    pub ledger: &'a Path,
    /// What one example is and what each label means, for the prompts (public).
    pub words: PromptWords<'a>,
    /// A folder for the synthesizer's own files (e.g. training metrics).
    pub work_dir: &'a Path,
    /// Held-out labelled texts (the run's test split; not private data), for diagnostics that
    /// spend nothing, e.g. the DP generator's perplexity before and after its tuning.
    pub held_out: Option<&'a Dataset>,
    /// A seed for reproducible experiments (noise included; the ledger says so). `None`: the OS.
    pub seed: Option<u64>,
    /// δ ≥ 1/n was allowed by the operator (and recorded in the ledger).
    pub allow_large_delta: bool,
}

impl SynthInputs<'_> {
    /// The stage's noise RNG: from `seed` mixed with a synthesizer's own `salt` (reproducible,
    /// and the ledger says so), else from the OS.
    pub fn noise_rng(&self, salt: u64) -> Result<NoiseRng> {
        Ok(match self.seed {
            Some(s) => NoiseRng::from_seed(s ^ salt),
            None => NoiseRng::from_os_rng()?,
        })
    }
}

/// Runs the synthesizer `section` names (see [`Synthesizer::synthesize`]).
pub fn synthesize(
    section: &SynthSection,
    private: &PrivateData,
    inputs: SynthInputs<'_>,
    budget: StageBudget,
    progress: &mut dyn Progress,
) -> Result<(SyntheticData, SynthReport)> {
    let synthesizer = section.synthesizer();
    synthesizer.validate()?;
    synthesizer.synthesize(private, inputs, budget, progress)
}

/// The default prompt template: an instruction in the ChatML format of instruct models such as
/// SmolLM2-Instruct (a bare `"<label>\n"` makes them continue as a chat model, off task).
/// `{kind}` is what one example is (`run.data_kind`, e.g. "email message"), `{description}` the
/// label's public description (`run.label_descriptions`; `of the category "<label>"` if none),
/// `{label}` its name.
pub const DEFAULT_PROMPT: &str =
    "<|im_start|>user\nWrite a short {kind} {description}.<|im_end|>\n<|im_start|>assistant\n";

/// The prompt of a label: `template` with `{kind}` replaced by `kind`, `{label}` by the label's
/// name (`_` as spaces) and `{description}` by `description`, or `of the category "<name>"`
/// without one. All are public (the kind of data, its classes and what they mean), so the
/// prompt reveals nothing private.
pub fn label_prompt(template: &str, kind: &str, label: &str, description: Option<&str>) -> String {
    let name = label.replace('_', " ");
    let description = match description {
        Some(d) => d.to_string(),
        None => format!("of the category \"{name}\""),
    };
    template
        .replace("{kind}", kind)
        .replace("{label}", &name)
        .replace("{description}", &description)
}

/// The prompt of unlabelled text (a language-modelling task): `template` with `{kind}` replaced
/// by `kind` and the label's words (`{description}`, `{label}`, each with the space before it)
/// dropped, so the default asks for "a short <kind>." — the instruction that keeps an instruct
/// generator on task, where an empty prompt lets it chat.
pub fn text_prompt(template: &str, kind: &str) -> String {
    let mut prompt = template.to_string();
    for word in ["{description}", "{label}"] {
        prompt = prompt.replace(&format!(" {word}"), "").replace(word, "");
    }
    prompt.replace("{kind}", kind)
}

/// Whether a label prompt template names the label at all (`{label}` or `{description}`).
pub fn names_label(template: &str) -> bool {
    template.contains("{label}") || template.contains("{description}")
}

/// The public words a label's prompt is filled with: what one example is and what each label
/// means.
#[derive(Debug, Clone, Copy)]
pub struct PromptWords<'a> {
    /// `run.data_kind`.
    pub kind: &'a str,
    /// `run.label_descriptions` (label → phrase).
    pub descriptions: &'a BTreeMap<String, String>,
}

impl PromptWords<'_> {
    /// [`label_prompt`] with these words.
    pub fn fill(&self, template: &str, label: &str) -> String {
        let description = self.descriptions.get(label).map(String::as_str);
        label_prompt(template, self.kind, label, description)
    }

    /// [`text_prompt`] with this kind.
    pub fn fill_text(&self, template: &str) -> String {
        text_prompt(template, self.kind)
    }
}

/// The noisy label histogram: calibrates σ_h so that the histogram alone spends `share` of the
/// stage's ε, records it in the ledger, then releases the label counts plus N(0, σ_h²) each.
///
/// Privacy: a Gaussian mechanism of L2 sensitivity 1 under add/remove-one (one example moves one
/// count by one), recorded before its result exists; seeded noise is flagged in the entry.
pub fn noisy_histogram(
    data: &Dataset,
    share: f64,
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
        budget.epsilon * share,
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

/// Where a synthetic set came from, for its manifest.
pub struct Provenance<'a> {
    /// The run's ledger (its total so far is the stage's ε spent).
    pub ledger: &'a Path,
    /// The generator's name.
    pub generator: &'a str,
    /// The run's δ.
    pub delta: f64,
    /// Private examples the stage read (public: n).
    pub private_examples: usize,
}

/// A synthetic set with its manifest, and what the report shows of it.
pub struct Finished {
    /// S_train, S_val and the manifest.
    pub data: SyntheticData,
    /// ε the ledger records so far (the stage's mechanisms), under its guarantee accountant.
    pub epsilon_spent: f64,
    /// A few (label, text) examples of S_train.
    pub examples: Vec<(String, String)>,
}

/// The post-processing every synthesizer ends with: [`filter_texts`] with
/// `(min_chars, val_fraction)`, the seeded split into S_train and S_val, and the manifest.
pub fn finish(
    texts: Vec<(Option<usize>, String)>,
    labels: &[String],
    (min_chars, val_fraction): (usize, f64),
    rng: &mut NoiseRng,
    from: Provenance<'_>,
) -> Result<Finished> {
    let sampled = texts.len();
    let (kept, dropped_short, dropped_duplicate) = filter_texts(texts, min_chars);
    let (train, val) = split(kept, labels, val_fraction, rng)?;
    let ledger = PrivacyLedger::open(from.ledger)?;
    let epsilon_spent = ledger
        .guarantee_accountant()
        .epsilon(&ledger.mechanisms()?, from.delta)?;
    let manifest = SynthManifest {
        generator: from.generator.to_string(),
        labels: labels.to_vec(),
        epsilon: epsilon_spent,
        delta: from.delta,
        sampled,
        dropped_short,
        dropped_duplicate,
        train: train.len(),
        val: val.len(),
        private_examples: from.private_examples,
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
    Ok(Finished {
        data: SyntheticData::from_parts(train, val, manifest),
        epsilon_spent,
        examples,
    })
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
pub fn split(
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
            .map(|(label, text)| Example {
                text,
                label,
                group: None,
            })
            .collect(),
        labels: labels.to_vec(),
    };
    Ok((to_dataset(kept), to_dataset(val_part)))
}
