//! The privacy ledger: a JSON file per run recording every mechanism actually executed (with the
//! stage it belongs to and whether its noise was seeded) and the (ε, δ) spent so far under each of
//! the ledger's accountants, the first of which is the guarantee. Every update is written atomically (temporary file
//! in the same directory, flushed, then renamed over the ledger), so a crash leaves either the old
//! or the new ledger, never a partial one. A resumed run reopens and continues the ledger; since
//! totals are always recomputed from the full list of entries (identical (q, σ) entries are
//! merged before composition), a resumed run reports exactly what an uninterrupted one would.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::accountant::{Accountant, AccountantConfig, Guarantee};
use crate::error::{PrivacyError, Result};
use crate::mechanism::Mechanism;
use crate::rdp::check_delta;

/// Format tag written in every ledger file.
pub const LEDGER_FORMAT: &str = "dpselft-privacy-ledger";
/// Version of the ledger file layout (version 1 files, with a free-text `purpose` per entry and
/// one PLD discretisation, are read and rewritten as version 2).
pub const LEDGER_VERSION: u32 = 2;

/// The part of a run a mechanism belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// The synthetic stage's noisy label histogram.
    SynthHistogram,
    /// The synthetic stage's DP fine-tuning of the generator.
    SynthGenerator,
    /// A round of Private Evolution's noisy nearest-neighbour vote.
    SynthVote,
    /// DP fine-tuning of the target model.
    Train,
}

impl Stage {
    /// Whether the stage belongs to the synthetic-data stage.
    pub fn is_synth(self) -> bool {
        matches!(
            self,
            Self::SynthHistogram | Self::SynthGenerator | Self::SynthVote
        )
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SynthHistogram => "synth: label histogram",
            Self::SynthGenerator => "synth: generator",
            Self::SynthVote => "synth: evolution vote",
            Self::Train => "train",
        })
    }
}

/// The kind of an executed mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MechanismKind {
    /// Poisson-subsampled Gaussian (DP-SGD steps).
    SampledGaussian,
    /// Plain Gaussian mechanism (e.g. a noisy histogram); `sampling_rate` is 1.
    Gaussian,
}

/// One executed mechanism, as recorded in the ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The mechanism's kind.
    pub kind: MechanismKind,
    /// Noise multiplier σ: noise standard deviation divided by `sensitivity`.
    pub noise_multiplier: f64,
    /// Poisson sampling rate q (1 for [`MechanismKind::Gaussian`]).
    pub sampling_rate: f64,
    /// Number of steps (releases) executed.
    pub steps: u64,
    /// L2 sensitivity (clip norm for DP-SGD); the noise std is `noise_multiplier · sensitivity`.
    pub sensitivity: f64,
    /// The stage the mechanism belongs to.
    pub stage: Stage,
    /// Whether its randomness came from a user seed (reproducible by whoever has the seed).
    pub seeded: bool,
    /// Whether it belongs to an attempt that was interrupted and produced nothing (see
    /// [`PrivacyLedger::mark_lost`]). A lost entry still counts in every total.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
}

impl LedgerEntry {
    /// An entry for `steps` DP-SGD steps with sampling rate `q`, noise multiplier `sigma` and clip
    /// norm `clip_norm`, of `stage` (not seeded; see [`Self::seeded`]).
    pub fn sampled_gaussian(q: f64, sigma: f64, steps: u64, clip_norm: f64, stage: Stage) -> Self {
        Self {
            kind: MechanismKind::SampledGaussian,
            noise_multiplier: sigma,
            sampling_rate: q,
            steps,
            sensitivity: clip_norm,
            stage,
            seeded: false,
            lost: false,
        }
    }

    /// An entry for `count` releases of a Gaussian mechanism with noise multiplier `sigma`
    /// (std = σ·sensitivity), of `stage` (not seeded; see [`Self::seeded`]).
    pub fn gaussian(sigma: f64, sensitivity: f64, count: u64, stage: Stage) -> Self {
        Self {
            kind: MechanismKind::Gaussian,
            noise_multiplier: sigma,
            sampling_rate: 1.0,
            steps: count,
            sensitivity,
            stage,
            seeded: false,
            lost: false,
        }
    }

    /// The entry with its seeded flag set to `seeded`.
    pub fn seeded(self, seeded: bool) -> Self {
        Self { seeded, ..self }
    }

    /// Whether `next` is more steps of this very mechanism (same kind, σ, q, sensitivity, stage
    /// and seeding; neither lost), so that one entry can hold both.
    fn continues_with(&self, next: &LedgerEntry) -> bool {
        !self.lost
            && !next.lost
            && Self {
                steps: next.steps,
                ..self.clone()
            } == *next
    }

    /// The mechanism to account for (validated).
    pub fn mechanism(&self) -> Result<Mechanism> {
        if !(self.sensitivity.is_finite() && self.sensitivity > 0.0) {
            return Err(PrivacyError::invalid(
                "sensitivity",
                self.sensitivity,
                "a finite number > 0",
            ));
        }
        match self.kind {
            MechanismKind::SampledGaussian => {
                Mechanism::sampled_gaussian(self.sampling_rate, self.noise_multiplier, self.steps)
            }
            MechanismKind::Gaussian => {
                if self.sampling_rate != 1.0 {
                    return Err(PrivacyError::invalid(
                        "sampling rate",
                        self.sampling_rate,
                        "1 for a gaussian entry",
                    ));
                }
                // Unit sensitivity with the same σ: identical privacy, and exact bits for merging.
                Mechanism::gaussian(self.noise_multiplier, 1.0, self.steps)
            }
        }
    }
}

/// The privacy spent by all entries so far, under each of the ledger's accountants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// The accountant whose result is the guarantee (the ledger's first).
    pub guarantee: String,
    /// Per accountant name.
    pub by_accountant: BTreeMap<String, Guarantee>,
}

impl Spent {
    /// The guarantee: (ε, δ) under the ledger's first accountant.
    pub fn guarantee(&self) -> Guarantee {
        self.by_accountant[&self.guarantee]
    }

    /// ε of the guarantee (None: unbounded).
    pub fn epsilon(&self) -> Option<f64> {
        self.guarantee().epsilon
    }

    /// (ε, δ) under the accountant named `name`, if the ledger has it.
    pub fn under(&self, name: &str) -> Option<Guarantee> {
        self.by_accountant.get(name).copied()
    }
}

/// The file's contents (version 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LedgerFile {
    pub(crate) format: String,
    pub(crate) version: u32,
    pub(crate) delta: f64,
    /// The first is the guarantee.
    pub(crate) accountants: Vec<AccountantConfig>,
    pub(crate) entries: Vec<LedgerEntry>,
    /// What the operator allowed that weakens the guarantee (empty for an ordinary run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) overrides: Vec<Override>,
    pub(crate) spent: Spent,
}

/// Checks δ against the n private examples: δ < 1/n passes (`None`); otherwise an error unless
/// `allowed`, in which case the [`Override`] to record is returned.
pub fn check_delta_for_examples(
    delta: f64,
    examples: usize,
    allowed: bool,
) -> Result<Option<Override>> {
    if delta * (examples as f64) < 1.0 {
        return Ok(None);
    }
    if !allowed {
        return Err(PrivacyError::DeltaNotBelowOneOverN { delta, examples });
    }
    Ok(Some(Override::DeltaNotBelowOneOverN { delta, examples }))
}

/// A setting the operator allowed that weakens what the (ε, δ) means; the ledger keeps it so
/// that whoever reads the guarantee sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Override {
    /// δ ≥ 1/n: a mechanism that publishes one of the n examples outright would meet (0, δ).
    DeltaNotBelowOneOverN {
        /// δ.
        delta: f64,
        /// n, the private examples.
        examples: usize,
    },
}

/// A privacy ledger bound to a file.
#[derive(Debug)]
pub struct PrivacyLedger {
    path: PathBuf,
    file: LedgerFile,
}

fn compute_spent(
    entries: &[LedgerEntry],
    delta: f64,
    accountants: &[AccountantConfig],
) -> Result<Spent> {
    let mechanisms = entries
        .iter()
        .map(LedgerEntry::mechanism)
        .collect::<Result<Vec<_>>>()?;
    let mut by_accountant = BTreeMap::new();
    for config in accountants {
        let g = if mechanisms.is_empty() {
            Guarantee::nothing(delta)
        } else {
            config.build().guarantee(&mechanisms, delta)?
        };
        by_accountant.insert(config.name().to_string(), g);
    }
    Ok(Spent {
        guarantee: accountants
            .first()
            .ok_or_else(|| PrivacyError::invalid("accountants", "none", "at least one accountant"))?
            .name()
            .to_string(),
        by_accountant,
    })
}

impl PrivacyLedger {
    /// Creates a new, empty ledger at `path` for target δ `delta` with the default accountants
    /// ([`AccountantConfig::defaults`]: PLD, then RDP), and writes it. Fails if the file already
    /// exists (a resumed run must use [`Self::open`]).
    pub fn create(path: impl AsRef<Path>, delta: f64) -> Result<Self> {
        Self::create_with_accountants(path, delta, AccountantConfig::defaults())
    }

    /// Like [`Self::create`] with an explicit PLD discretisation.
    pub fn create_with(path: impl AsRef<Path>, delta: f64, discretisation: f64) -> Result<Self> {
        let pld = AccountantConfig::Pld { discretisation };
        Self::create_with_accountants(path, delta, vec![pld, AccountantConfig::Rdp])
    }

    /// Like [`Self::create`] with explicit accountants, the first of which is the guarantee.
    pub fn create_with_accountants(
        path: impl AsRef<Path>,
        delta: f64,
        accountants: Vec<AccountantConfig>,
    ) -> Result<Self> {
        check_delta(delta)?;
        for a in &accountants {
            a.validate()?;
        }
        let path = path.as_ref().to_path_buf();
        if path.exists() {
            return Err(PrivacyError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "already exists; open it to continue the run",
                ),
            });
        }
        let file = LedgerFile {
            format: LEDGER_FORMAT.to_string(),
            version: LEDGER_VERSION,
            delta,
            spent: compute_spent(&[], delta, &accountants)?,
            accountants,
            entries: Vec::new(),
            overrides: Vec::new(),
        };
        let ledger = Self { path, file };
        ledger.write()?;
        Ok(ledger)
    }

    /// Opens an existing ledger (version 2, or version 1, which is upgraded in memory and
    /// written as version 2 by the next [`Self::record`]), validates every entry and recomputes
    /// the totals.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|source| PrivacyError::Io {
            path: path.clone(),
            source,
        })?;
        let bad = |message: String| PrivacyError::LedgerFormat {
            path: path.clone(),
            message,
        };
        let mut file = crate::ledger_format::parse(&text).map_err(bad)?;
        check_delta(file.delta).map_err(|e| bad(e.to_string()))?;
        for a in &file.accountants {
            a.validate().map_err(|e| bad(e.to_string()))?;
        }
        for (i, e) in file.entries.iter().enumerate() {
            e.mechanism()
                .map_err(|err| bad(format!("entry {i} ({}): {err}", e.stage)))?;
        }
        file.spent = compute_spent(&file.entries, file.delta, &file.accountants)?;
        Ok(Self { path, file })
    }

    /// Opens the ledger at `path` if it exists (its δ must equal `delta`), else creates it.
    pub fn open_or_create(path: impl AsRef<Path>, delta: f64) -> Result<Self> {
        let path = path.as_ref();
        if path.exists() {
            let ledger = Self::open(path)?;
            if ledger.file.delta != delta {
                return Err(PrivacyError::LedgerFormat {
                    path: path.to_path_buf(),
                    message: format!(
                        "records δ = {:e}, but this run asks for δ = {delta:e}",
                        ledger.file.delta
                    ),
                });
            }
            Ok(ledger)
        } else {
            Self::create(path, delta)
        }
    }

    /// Appends an executed mechanism, recomputes the totals and writes the ledger atomically.
    /// Returns the new totals. On error nothing is changed (in memory or on disk).
    ///
    /// Guarantee: the returned (ε, δ) bound the privacy loss of all recorded mechanisms composed.
    pub fn record(&mut self, entry: LedgerEntry) -> Result<Spent> {
        entry.mechanism()?;
        let mut entries = self.file.entries.clone();
        entries.push(entry);
        self.replace_entries(entries)
    }

    /// [`Self::record`], except that steps continuing the last entry's mechanism
    /// ([`LedgerEntry`] equal but for `steps`) are added to that entry: a run that records its
    /// steps chunk by chunk keeps one entry. The composition is the same either way.
    pub fn record_merged(&mut self, entry: LedgerEntry) -> Result<Spent> {
        let Some(last) = self.file.entries.last() else {
            return self.record(entry);
        };
        if !last.continues_with(&entry) {
            return self.record(entry);
        }
        let mut entries = self.file.entries.clone();
        let merged = entries.last_mut().expect("checked above");
        merged.steps = merged
            .steps
            .checked_add(entry.steps)
            .ok_or_else(|| PrivacyError::invalid("steps", entry.steps, "a total below 2^64"))?;
        merged.mechanism()?;
        self.replace_entries(entries)
    }

    /// Marks every entry of the stages `keep` selects, not yet lost, as lost: an attempt that was
    /// interrupted before it produced anything a later attempt can continue. The entries stay and
    /// keep counting in every total (the privacy was spent); later attempts of the same stage are
    /// recorded beside them. Returns the entries newly marked.
    pub fn mark_lost(&mut self, keep: impl Fn(Stage) -> bool) -> Result<Vec<LedgerEntry>> {
        let mut entries = self.file.entries.clone();
        let mut marked = Vec::new();
        for e in entries.iter_mut().filter(|e| !e.lost && keep(e.stage)) {
            e.lost = true;
            marked.push(e.clone());
        }
        if !marked.is_empty() {
            self.replace_entries(entries)?;
        }
        Ok(marked)
    }

    /// ε under the guarantee's accountant of the lost entries alone ([`Self::mark_lost`]), at
    /// the ledger's δ: what interrupted attempts spent for nothing (0 if none).
    pub fn lost_epsilon(&self) -> Result<f64> {
        self.epsilon_where(|e| e.lost)
    }

    /// Writes `entries` with their recomputed totals; on error nothing changes.
    fn replace_entries(&mut self, entries: Vec<LedgerEntry>) -> Result<Spent> {
        let spent = compute_spent(&entries, self.file.delta, &self.file.accountants)?;
        let new_file = LedgerFile {
            entries,
            spent: spent.clone(),
            ..self.file.clone()
        };
        let old = std::mem::replace(&mut self.file, new_file);
        if let Err(e) = self.write() {
            self.file = old;
            return Err(e);
        }
        Ok(spent)
    }

    /// Records an override (written atomically; recorded once however often it is called).
    pub fn record_override(&mut self, o: Override) -> Result<()> {
        if self.file.overrides.contains(&o) {
            return Ok(());
        }
        let old = self.file.clone();
        self.file.overrides.push(o);
        if let Err(e) = self.write() {
            self.file = old;
            return Err(e);
        }
        Ok(())
    }

    /// The overrides the operator allowed.
    pub fn overrides(&self) -> &[Override] {
        &self.file.overrides
    }

    /// The recorded entries, in order.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.file.entries
    }

    /// The totals spent so far.
    pub fn spent(&self) -> Spent {
        self.file.spent.clone()
    }

    /// The ledger's accountants, the guarantee first.
    pub fn accountants(&self) -> &[AccountantConfig] {
        &self.file.accountants
    }

    /// The accountant of the guarantee: calibrations and partial totals against this ledger use
    /// it, so that they agree with the ledger's own totals.
    pub fn guarantee_accountant(&self) -> Box<dyn Accountant> {
        self.file.accountants[0].build()
    }

    /// ε under the guarantee's accountant of the mechanisms of the stages that `keep` selects
    /// (e.g. one stage's share of the total), at the ledger's δ.
    pub fn epsilon_of(&self, keep: impl Fn(Stage) -> bool) -> Result<f64> {
        self.epsilon_where(|e| keep(e.stage))
    }

    fn epsilon_where(&self, keep: impl Fn(&LedgerEntry) -> bool) -> Result<f64> {
        let ms: Vec<Mechanism> = self
            .file
            .entries
            .iter()
            .filter(|e| keep(e))
            .map(LedgerEntry::mechanism)
            .collect::<Result<_>>()?;
        if ms.is_empty() {
            return Ok(0.0);
        }
        self.guarantee_accountant().epsilon(&ms, self.file.delta)
    }

    /// The ledger's δ.
    pub fn delta(&self) -> f64 {
        self.file.delta
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded mechanisms, to compose with planned ones (e.g. for calibration against the
    /// total).
    pub fn mechanisms(&self) -> Result<Vec<Mechanism>> {
        self.file
            .entries
            .iter()
            .map(LedgerEntry::mechanism)
            .collect()
    }

    /// The recorded mechanisms but the lost ones ([`Self::mark_lost`]): what the current attempt
    /// of the run spent, for a calibration against one stage's own budget. A calibration against
    /// the run's total must use [`Self::mechanisms`].
    pub fn live_mechanisms(&self) -> Result<Vec<Mechanism>> {
        self.file
            .entries
            .iter()
            .filter(|e| !e.lost)
            .map(LedgerEntry::mechanism)
            .collect()
    }

    fn write(&self) -> Result<()> {
        let io = |source| PrivacyError::Io {
            path: self.path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(&self.file)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        dpselft_fsio::write_atomic(&self.path, |w| {
            w.write_all(text.as_bytes())?;
            w.write_all(b"\n")
        })
        .map_err(io)
    }
}
