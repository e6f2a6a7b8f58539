//! The privacy ledger: a JSON file per run recording every mechanism actually executed and the
//! (ε, δ) spent so far under both accountants. Every update is written atomically (temporary file
//! in the same directory, flushed, then renamed over the ledger), so a crash leaves either the old
//! or the new ledger, never a partial one. A resumed run reopens and continues the ledger; since
//! totals are always recomputed from the full list of entries (identical (q, σ) entries are
//! merged before composition), a resumed run reports exactly what an uninterrupted one would.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{PrivacyError, Result};
use crate::mechanism::Mechanism;
use crate::pld::PldAccountant;
use crate::rdp::{RdpAccountant, check_delta};

/// Format tag written in every ledger file.
pub const LEDGER_FORMAT: &str = "dpselft-privacy-ledger";
/// Version of the ledger file layout.
pub const LEDGER_VERSION: u32 = 1;

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
    /// What the mechanism was for ("synth", "label-histogram", "train", …).
    pub purpose: String,
}

impl LedgerEntry {
    /// An entry for `steps` DP-SGD steps with sampling rate `q`, noise multiplier `sigma` and clip
    /// norm `clip_norm`.
    pub fn sampled_gaussian(
        q: f64,
        sigma: f64,
        steps: u64,
        clip_norm: f64,
        purpose: impl Into<String>,
    ) -> Self {
        Self {
            kind: MechanismKind::SampledGaussian,
            noise_multiplier: sigma,
            sampling_rate: q,
            steps,
            sensitivity: clip_norm,
            purpose: purpose.into(),
        }
    }

    /// An entry for `count` releases of a Gaussian mechanism with noise multiplier `sigma`
    /// (std = σ·sensitivity).
    pub fn gaussian(sigma: f64, sensitivity: f64, count: u64, purpose: impl Into<String>) -> Self {
        Self {
            kind: MechanismKind::Gaussian,
            noise_multiplier: sigma,
            sampling_rate: 1.0,
            steps: count,
            sensitivity,
            purpose: purpose.into(),
        }
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

/// (ε, δ) spent under the PLD accountant. `epsilon` is `None` when unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PldSpent {
    /// ε at `delta` (None: unbounded).
    pub epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
}

/// (ε, δ) spent under the RDP accountant, with the optimal order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RdpSpent {
    /// ε at `delta` (None: unbounded).
    pub epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// Optimal Rényi order (None when nothing was spent or ε is unbounded).
    pub order: Option<f64>,
}

/// The privacy spent by all entries so far.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// Under the PLD accountant (the reported guarantee).
    pub pld: PldSpent,
    /// Under the RDP accountant.
    pub rdp: RdpSpent,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LedgerFile {
    format: String,
    version: u32,
    delta: f64,
    pld_discretisation: f64,
    entries: Vec<LedgerEntry>,
    spent: Spent,
}

/// A privacy ledger bound to a file.
#[derive(Debug)]
pub struct PrivacyLedger {
    path: PathBuf,
    file: LedgerFile,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn compute_spent(entries: &[LedgerEntry], delta: f64, discretisation: f64) -> Result<Spent> {
    let mechanisms = entries
        .iter()
        .map(LedgerEntry::mechanism)
        .collect::<Result<Vec<_>>>()?;
    if mechanisms.is_empty() {
        return Ok(Spent {
            pld: PldSpent {
                epsilon: Some(0.0),
                delta,
            },
            rdp: RdpSpent {
                epsilon: Some(0.0),
                delta,
                order: None,
            },
        });
    }
    let pld = PldAccountant::with_discretisation(discretisation).epsilon(&mechanisms, delta)?;
    let rdp = RdpAccountant::default().epsilon(&mechanisms, delta)?;
    Ok(Spent {
        pld: PldSpent {
            epsilon: finite(pld),
            delta,
        },
        rdp: RdpSpent {
            epsilon: finite(rdp.epsilon),
            delta,
            order: finite(rdp.order),
        },
    })
}

impl PrivacyLedger {
    /// Creates a new, empty ledger at `path` for target δ `delta` (PLD discretisation 1e-4), and
    /// writes it. Fails if the file already exists (a resumed run must use [`Self::open`]).
    pub fn create(path: impl AsRef<Path>, delta: f64) -> Result<Self> {
        Self::create_with(
            path,
            delta,
            crate::pld::PldOptions::default().discretisation,
        )
    }

    /// Like [`Self::create`] with an explicit PLD discretisation.
    pub fn create_with(path: impl AsRef<Path>, delta: f64, discretisation: f64) -> Result<Self> {
        check_delta(delta)?;
        if !(discretisation.is_finite() && discretisation > 0.0) {
            return Err(PrivacyError::invalid(
                "discretisation",
                discretisation,
                "a finite number > 0",
            ));
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
            pld_discretisation: discretisation,
            entries: Vec::new(),
            spent: compute_spent(&[], delta, discretisation)?,
        };
        let ledger = Self { path, file };
        ledger.write()?;
        Ok(ledger)
    }

    /// Opens an existing ledger, validates every entry and recomputes the totals.
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
        let mut file: LedgerFile = serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "not a valid ledger (line {}, column {}): {e}",
                e.line(),
                e.column()
            ))
        })?;
        if file.format != LEDGER_FORMAT || file.version != LEDGER_VERSION {
            return Err(bad(format!(
                "expected format \"{LEDGER_FORMAT}\" version {LEDGER_VERSION}, found \"{}\" \
                 version {}",
                file.format, file.version
            )));
        }
        check_delta(file.delta).map_err(|e| bad(e.to_string()))?;
        for (i, e) in file.entries.iter().enumerate() {
            e.mechanism()
                .map_err(|err| bad(format!("entry {i} ({}): {err}", e.purpose)))?;
        }
        file.spent = compute_spent(&file.entries, file.delta, file.pld_discretisation)?;
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
        let spent = compute_spent(&entries, self.file.delta, self.file.pld_discretisation)?;
        let new_file = LedgerFile {
            entries,
            spent,
            ..self.file.clone()
        };
        let old = std::mem::replace(&mut self.file, new_file);
        if let Err(e) = self.write() {
            self.file = old;
            return Err(e);
        }
        Ok(spent)
    }

    /// The recorded entries, in order.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.file.entries
    }

    /// The totals spent so far.
    pub fn spent(&self) -> Spent {
        self.file.spent
    }

    /// The ledger's δ.
    pub fn delta(&self) -> f64 {
        self.file.delta
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded mechanisms, to compose with planned ones (e.g. for calibration).
    pub fn mechanisms(&self) -> Result<Vec<Mechanism>> {
        self.file
            .entries
            .iter()
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
