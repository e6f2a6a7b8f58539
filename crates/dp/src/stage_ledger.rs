//! A training run's side of the privacy ledger: its own `ledger.json`, or a ledger shared with
//! earlier stages (a DP-SelFT run's), whose other mechanisms are composed with this run's steps.
//!
//! The ledger is always ahead of the steps executed: steps are recorded in chunks that end at
//! checkpoint steps (or at T) *before* they run, so an interrupted and resumed run records
//! exactly the entries of an uninterrupted one and never under-counts.

use std::path::{Path, PathBuf};

use dpselft_privacy::{
    Accountant, AccountantConfig, LedgerEntry, Mechanism, Override, PrivacyLedger, Spent, Stage,
};

use crate::error::{DpError, Result};
use crate::plan::NoisePlan;

/// One private run's ledger: where it is, which stage this run's entries belong to, what earlier
/// stages spent, and how many of this run's steps are recorded.
pub(crate) struct StageLedger {
    path: PathBuf,
    shared: bool,
    stage: Stage,
    /// Whether the noise comes from a user seed (the entries say so).
    seeded: bool,
    delta: f64,
    /// The accountant of the guarantee: the shared ledger's, or the default for a new ledger.
    accountant: Box<dyn Accountant>,
    /// Mechanisms of earlier stages in a shared ledger.
    prior: Vec<Mechanism>,
    ledger: Option<PrivacyLedger>,
    /// Steps recorded (≥ the steps run).
    recorded_steps: u64,
}

impl StageLedger {
    /// The ledger at `shared` or, if `None`, `run_dir/ledger.json`, reading what it already
    /// spent outside this run (other stages, lost attempts); nothing is opened for writing yet.
    pub(crate) fn new(
        run_dir: &Path,
        shared: Option<&Path>,
        stage: Stage,
        seeded: bool,
        delta: f64,
        stage_budget: bool,
    ) -> Result<Self> {
        let path = shared.map_or_else(|| run_dir.join("ledger.json"), Path::to_path_buf);
        // A shared ledger, or the own one of a resumed or restarted run, may hold mechanisms
        // spent before this attempt (earlier stages, lost attempts).
        let (prior, accountant) = if shared.is_some() || path.exists() {
            let ledger = PrivacyLedger::open(&path)?;
            let prior = other_stages(&ledger, stage, !stage_budget)?;
            (prior, ledger.guarantee_accountant())
        } else {
            (Vec::new(), AccountantConfig::pld_default().build())
        };
        Ok(Self {
            path,
            shared: shared.is_some(),
            stage,
            seeded,
            delta,
            accountant,
            prior,
            ledger: None,
            recorded_steps: 0,
        })
    }

    /// The mechanisms spent before this run (composed with it when σ is calibrated).
    pub(crate) fn prior(&self) -> &[Mechanism] {
        &self.prior
    }

    /// The accountant the ledger's guarantee uses (calibrate against it).
    pub(crate) fn accountant(&self) -> &dyn Accountant {
        self.accountant.as_ref()
    }

    /// Whether the ledger is shared with earlier stages (not the run folder's own).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// For a fresh run: creates the run's own ledger, or opens the shared one (or the own one of
    /// a restarted run, [`mark_interrupted`]) and checks that this stage has no entries but lost
    /// ones.
    pub(crate) fn open_fresh(&mut self) -> Result<()> {
        let ledger = if self.shared || self.path.exists() {
            let ledger = self.open_checked()?;
            if ledger
                .entries()
                .iter()
                .any(|e| e.stage == self.stage && !e.lost)
            {
                return Err(DpError::State(format!(
                    "the ledger {} already records `{}` steps: this stage ran before \
                     (resume it rather than start it again)",
                    self.path.display(),
                    self.stage
                )));
            }
            ledger
        } else {
            PrivacyLedger::create(&self.path, self.delta)?
        };
        self.ledger = Some(ledger);
        Ok(())
    }

    /// Records an override of the operator's (once; see [`PrivacyLedger::record_override`]).
    pub(crate) fn record_override(&mut self, o: Override) -> Result<()> {
        let ledger = self.ledger.as_mut().ok_or_else(not_open)?;
        Ok(ledger.record_override(o)?)
    }

    /// For a resumed run at step `step`: reopens the ledger and checks that it records at least
    /// the steps already run.
    pub(crate) fn open_resumed(&mut self, step: u64) -> Result<()> {
        let ledger = self.open_checked()?;
        self.recorded_steps = ledger
            .entries()
            .iter()
            .filter(|e| e.stage == self.stage && !e.lost)
            .map(|e| e.steps)
            .sum();
        if self.recorded_steps < step {
            return Err(DpError::State(format!(
                "the ledger records {} training steps but the checkpoint is at step {step}",
                self.recorded_steps
            )));
        }
        self.ledger = Some(ledger);
        Ok(())
    }

    /// Records steps `step+1..=end` as one entry, unless they are recorded already.
    pub(crate) fn record_chunk_if_due(
        &mut self,
        step: u64,
        end: u64,
        plan: &NoisePlan,
        clip: f64,
    ) -> Result<()> {
        let ledger = self.ledger.as_mut().ok_or_else(not_open)?;
        if self.recorded_steps > step {
            return Ok(());
        }
        let entry = LedgerEntry::sampled_gaussian(
            plan.sampling_rate,
            plan.noise_multiplier,
            end - step,
            clip,
            self.stage,
        );
        ledger.record_merged(entry.seeded(self.seeded))?;
        self.recorded_steps = end;
        Ok(())
    }

    /// ε (PLD, at the ledger's δ) of the earlier stages and the first `steps` steps of this run,
    /// composed.
    pub(crate) fn epsilon_after(&self, steps: u64, plan: &NoisePlan) -> Result<f64> {
        let mut events = self.prior.clone();
        if steps > 0 {
            events.push(Mechanism::sampled_gaussian(
                plan.sampling_rate,
                plan.noise_multiplier,
                steps,
            )?);
        }
        if events.is_empty() {
            return Ok(0.0);
        }
        Ok(self.accountant.epsilon(&events, self.delta)?)
    }

    /// What the whole ledger spends (every stage), once opened.
    pub(crate) fn spent(&self) -> Option<Spent> {
        self.ledger.as_ref().map(PrivacyLedger::spent)
    }

    fn open_checked(&self) -> Result<PrivacyLedger> {
        let ledger = PrivacyLedger::open(&self.path)?;
        if ledger.delta() != self.delta {
            return Err(DpError::State(format!(
                "the ledger {} records δ = {:e}, this configuration asks for δ = {:e}",
                ledger.path().display(),
                ledger.delta(),
                self.delta
            )));
        }
        Ok(ledger)
    }
}

fn not_open() -> DpError {
    DpError::State("the ledger is not open".into())
}

/// The mechanisms of a ledger spent before this run: other stages' and, if `with_lost`, lost
/// attempts' (this run's own live entries, on resumption, are accounted as its steps).
fn other_stages(ledger: &PrivacyLedger, own: Stage, with_lost: bool) -> Result<Vec<Mechanism>> {
    ledger
        .entries()
        .iter()
        .filter(|e| if e.lost { with_lost } else { e.stage != own })
        .map(|e| Ok(e.mechanism()?))
        .collect()
}

/// For a run that restarts from step 0 (it has no checkpoint): marks the entries its interrupted
/// attempt recorded as lost ([`PrivacyLedger::mark_lost`]), so that the new attempt composes
/// with them instead of being refused or continuing them. Returns the entries marked (none when
/// the ledger does not exist yet).
pub(crate) fn mark_interrupted(ledger_path: &Path, stage: Stage) -> Result<Vec<LedgerEntry>> {
    if !ledger_path.exists() {
        return Ok(Vec::new());
    }
    let mut ledger = PrivacyLedger::open(ledger_path)?;
    Ok(ledger.mark_lost(|s| s == stage)?)
}
