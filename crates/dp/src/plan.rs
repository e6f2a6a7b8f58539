//! Planning a run before it starts: from the configuration, the number of private examples n
//! and the mechanisms already spent (a shared ledger's earlier stages), the sampling rate q, the
//! number of steps T and the noise multiplier σ. One pure function, [`plan_noise`], used by the
//! trainer and by the DP-SelFT pipeline (which must know σ_ft before selection starts).

use dpselft_privacy::{Accountant, Mechanism, calibrate_sigma, sampling_from_epochs};
use serde::{Deserialize, Serialize};

use crate::config::{Duration, PrivacyTarget};
use crate::error::{DpError, Result};

/// The privacy-relevant schedule of a run: q, T and σ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoisePlan {
    /// q = B/n.
    pub sampling_rate: f64,
    /// T: optimizer steps.
    pub total_steps: u64,
    /// σ (0 for non-private runs).
    pub noise_multiplier: f64,
}

/// Plans `n` examples trained for `duration` with expected batch size `batch_size`: q = B/n,
/// T from the epochs (T = ⌈K·n/B⌉) or given, and σ.
///
/// Privacy: σ is the smallest noise multiplier for which `accountant` (the ledger's guarantee,
/// PLD by default) certifies that the `prior` mechanisms *and* T Poisson-sampled Gaussian steps
/// with rate q, composed, are (ε, δ)-DP; the training data's size n is treated as public, as
/// usual. Non-private: σ = 0 (the accountant is not used).
pub fn plan_noise(
    n: usize,
    batch_size: usize,
    duration: Duration,
    privacy: PrivacyTarget,
    prior: &[Mechanism],
    accountant: &dyn Accountant,
) -> Result<NoisePlan> {
    if batch_size > n {
        return Err(DpError::Config(format!(
            "batch size {batch_size} exceeds the {n} training examples"
        )));
    }
    let (q, total_steps) = match duration {
        Duration::Epochs(k) => sampling_from_epochs(n as u64, batch_size as u64, k)?,
        Duration::Steps(t) => (batch_size as f64 / n as f64, t),
    };
    let noise_multiplier = match privacy {
        PrivacyTarget::Private { epsilon, delta } => {
            let template = Mechanism::sampled_gaussian(q, 1.0, total_steps)?;
            calibrate_sigma(accountant, prior, &template, epsilon, delta)?
        }
        PrivacyTarget::NonPrivate => 0.0,
    };
    Ok(NoisePlan {
        sampling_rate: q,
        total_steps,
        noise_multiplier,
    })
}

/// What set-up decided: the quantities of the privacy analysis and of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    /// n: training examples.
    pub examples: usize,
    /// q = B/n.
    pub sampling_rate: f64,
    /// B = q·n, the divisor of the noisy sum.
    pub expected_batch_size: f64,
    /// T: optimizer steps.
    pub total_steps: u64,
    /// σ (0 for non-private runs).
    pub noise_multiplier: f64,
    /// The sensitivity C of the clipped sum (`None`: unbounded, non-private).
    pub clip: Option<f64>,
    /// The target.
    pub privacy: PrivacyTarget,
    /// Whether sampling and noise come from a user seed (reproducible, predictable noise).
    pub seeded: bool,
    /// The trainable parameter names.
    pub trainable: Vec<String>,
    /// The number of trainable scalars.
    pub trainable_scalars: usize,
}
