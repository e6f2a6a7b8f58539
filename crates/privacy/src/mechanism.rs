//! Mechanisms (events) that spend privacy, and their canonical grouping for composition.

use serde::{Deserialize, Serialize};

use crate::error::{PrivacyError, Result};

/// One privacy-spending event under add/remove-one adjacency. Both directions of the adjacency
/// (adding and removing a record) are always accounted for by the accountants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mechanism {
    /// `steps` compositions of the Poisson-subsampled Gaussian mechanism: each record is included
    /// independently with probability `sampling_rate`, the (clipped, sensitivity-1) sum receives
    /// Gaussian noise of standard deviation `noise_multiplier` (in units of the clip norm).
    SampledGaussian {
        /// Poisson sampling rate q in (0, 1].
        sampling_rate: f64,
        /// Noise multiplier σ > 0 (noise std divided by the sensitivity).
        noise_multiplier: f64,
        /// Number of steps T ≥ 1.
        steps: u64,
    },
    /// `count` releases of the plain Gaussian mechanism (no subsampling), e.g. a noisy label
    /// histogram (L2 sensitivity 1 under add/remove-one).
    Gaussian {
        /// Standard deviation of the added noise, > 0.
        noise_std: f64,
        /// L2 sensitivity of the released query, > 0.
        sensitivity: f64,
        /// Number of releases ≥ 1.
        count: u64,
    },
}

fn check_sigma(sigma: f64) -> Result<()> {
    if sigma.is_finite() && sigma > 0.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "noise multiplier (sigma)",
            sigma,
            "a finite number > 0",
        ))
    }
}

fn check_q(q: f64) -> Result<()> {
    if q > 0.0 && q <= 1.0 {
        Ok(())
    } else {
        Err(PrivacyError::invalid(
            "sampling rate",
            q,
            "a number in (0, 1]",
        ))
    }
}

impl Mechanism {
    /// A validated Poisson-subsampled Gaussian mechanism composed `steps` times.
    pub fn sampled_gaussian(sampling_rate: f64, noise_multiplier: f64, steps: u64) -> Result<Self> {
        let m = Self::SampledGaussian {
            sampling_rate,
            noise_multiplier,
            steps,
        };
        m.validate()?;
        Ok(m)
    }

    /// A validated plain Gaussian mechanism released `count` times.
    pub fn gaussian(noise_std: f64, sensitivity: f64, count: u64) -> Result<Self> {
        let m = Self::Gaussian {
            noise_std,
            sensitivity,
            count,
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::SampledGaussian {
                sampling_rate,
                noise_multiplier,
                steps,
            } => {
                check_q(sampling_rate)?;
                check_sigma(noise_multiplier)?;
                if steps == 0 {
                    return Err(PrivacyError::invalid("steps", steps, "an integer ≥ 1"));
                }
            }
            Self::Gaussian {
                noise_std,
                sensitivity,
                count,
            } => {
                if !(noise_std.is_finite() && noise_std > 0.0) {
                    return Err(PrivacyError::invalid(
                        "noise std",
                        noise_std,
                        "a finite number > 0",
                    ));
                }
                if !(sensitivity.is_finite() && sensitivity > 0.0) {
                    return Err(PrivacyError::invalid(
                        "sensitivity",
                        sensitivity,
                        "a finite number > 0",
                    ));
                }
                check_sigma(noise_std / sensitivity)?;
                if count == 0 {
                    return Err(PrivacyError::invalid("count", count, "an integer ≥ 1"));
                }
            }
        }
        Ok(())
    }

    /// The effective noise multiplier σ (noise std per unit of sensitivity).
    pub fn noise_multiplier(&self) -> f64 {
        match *self {
            Self::SampledGaussian {
                noise_multiplier, ..
            } => noise_multiplier,
            Self::Gaussian {
                noise_std,
                sensitivity,
                ..
            } => noise_std / sensitivity,
        }
    }

    /// The sampling rate q (1 for the plain Gaussian mechanism).
    pub fn sampling_rate(&self) -> f64 {
        match *self {
            Self::SampledGaussian { sampling_rate, .. } => sampling_rate,
            Self::Gaussian { .. } => 1.0,
        }
    }

    /// How many times the mechanism is applied.
    pub fn count(&self) -> u64 {
        match *self {
            Self::SampledGaussian { steps, .. } => steps,
            Self::Gaussian { count, .. } => count,
        }
    }

    /// The same mechanism with effective noise multiplier `sigma` (for the plain Gaussian
    /// mechanism the noise std becomes `sigma · sensitivity`). Used by calibration.
    pub fn with_noise_multiplier(&self, sigma: f64) -> Self {
        match *self {
            Self::SampledGaussian {
                sampling_rate,
                steps,
                ..
            } => Self::SampledGaussian {
                sampling_rate,
                noise_multiplier: sigma,
                steps,
            },
            Self::Gaussian {
                sensitivity, count, ..
            } => Self::Gaussian {
                noise_std: sigma * sensitivity,
                sensitivity,
                count,
            },
        }
    }
}

/// A unit-sensitivity subsampled Gaussian step `(q, σ)` applied `count` times: the canonical form
/// every mechanism reduces to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CanonicalEvent {
    /// Sampling rate q in (0, 1].
    pub q: f64,
    /// Noise multiplier σ > 0.
    pub sigma: f64,
    /// Number of self-compositions.
    pub count: u64,
}

/// Validates `events` and groups identical `(q, σ)` steps (bitwise-equal values) into one entry
/// with the summed count, in first-seen order. Composition is commutative, so the privacy of the
/// grouped list is exactly that of the original list; grouping makes "T events" and "one event
/// with T steps" give bit-identical results.
pub fn canonicalize(events: &[Mechanism]) -> Result<Vec<CanonicalEvent>> {
    let mut out: Vec<CanonicalEvent> = Vec::new();
    for e in events {
        e.validate()?;
        let (q, sigma, count) = (e.sampling_rate(), e.noise_multiplier(), e.count());
        match out
            .iter_mut()
            .find(|c| c.q.to_bits() == q.to_bits() && c.sigma.to_bits() == sigma.to_bits())
        {
            Some(c) => {
                c.count = c.count.checked_add(count).ok_or_else(|| {
                    PrivacyError::invalid("steps", "sum overflow", "a total below 2^64")
                })?;
            }
            None => out.push(CanonicalEvent { q, sigma, count }),
        }
    }
    Ok(out)
}

/// Steps of `epochs` passes over `dataset_size` records with expected batch size `batch_size`:
/// q = B/N and T = ⌈K·N/B⌉. Returns `(q, T)`.
pub fn sampling_from_epochs(dataset_size: u64, batch_size: u64, epochs: f64) -> Result<(f64, u64)> {
    if dataset_size == 0 {
        return Err(PrivacyError::invalid(
            "dataset size",
            dataset_size,
            "an integer ≥ 1",
        ));
    }
    if batch_size == 0 || batch_size > dataset_size {
        return Err(PrivacyError::invalid(
            "batch size",
            batch_size,
            "an integer in [1, dataset size]",
        ));
    }
    if !(epochs.is_finite() && epochs > 0.0) {
        return Err(PrivacyError::invalid(
            "epochs",
            epochs,
            "a finite number > 0",
        ));
    }
    let q = batch_size as f64 / dataset_size as f64;
    if epochs.fract() == 0.0 && epochs <= 1e12 {
        // Whole epochs: exact integer ceiling of K·N/B.
        let kn = epochs as u128 * u128::from(dataset_size);
        let t = kn.div_ceil(u128::from(batch_size));
        return u64::try_from(t)
            .ok()
            .filter(|&t| t < 1_000_000_000_000_000)
            .map(|t| (q, t))
            .ok_or_else(|| {
                PrivacyError::invalid("epochs", epochs, "a number giving at most 1e15 steps")
            });
    }
    let t = (epochs * dataset_size as f64 / batch_size as f64).ceil();
    if !(1.0..1e15).contains(&t) {
        return Err(PrivacyError::invalid(
            "epochs",
            epochs,
            "a number giving 1 to 1e15 steps",
        ));
    }
    Ok((q, t as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_to_steps() {
        assert_eq!(sampling_from_epochs(10_000, 100, 2.0).unwrap(), (0.01, 200));
        assert_eq!(sampling_from_epochs(1000, 300, 1.0).unwrap().1, 4);
        assert_eq!(sampling_from_epochs(1000, 300, 0.5).unwrap().1, 2);
        assert!(sampling_from_epochs(0, 1, 1.0).is_err());
        assert!(sampling_from_epochs(10, 0, 1.0).is_err());
        assert!(sampling_from_epochs(10, 11, 1.0).is_err());
        assert!(sampling_from_epochs(10, 5, 0.0).is_err());
        assert!(sampling_from_epochs(10, 5, f64::NAN).is_err());
    }

    #[test]
    fn canonical_grouping_sums_identical_steps() {
        let a = Mechanism::sampled_gaussian(0.1, 1.0, 3).unwrap();
        let b = Mechanism::gaussian(2.0, 1.0, 1).unwrap();
        let c = canonicalize(&[a, b, a]).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].count, 6);
        assert_eq!((c[1].q, c[1].sigma), (1.0, 2.0));
    }
}
