//! A common interface over the accountants, used by calibration and the ledger, and the
//! configuration that names one ([`AccountantConfig`]).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::mechanism::Mechanism;
use crate::pld::PldAccountant;
use crate::rdp::RdpAccountant;

/// An accountant maps a composition of mechanisms to an (ε, δ) guarantee.
pub trait Accountant {
    /// A short name ("pld", "rdp").
    fn name(&self) -> &'static str;

    /// The smallest ε this accountant can certify for the composition of `events` at `delta`
    /// (`+∞` if none).
    ///
    /// Guarantee: the composition is (ε, δ)-DP under add/remove-one adjacency.
    fn epsilon(&self, events: &[Mechanism], delta: f64) -> Result<f64>;

    /// The smallest δ this accountant can certify for the composition of `events` at `epsilon`.
    ///
    /// Guarantee: the composition is (ε, δ)-DP under add/remove-one adjacency.
    fn delta(&self, events: &[Mechanism], epsilon: f64) -> Result<f64>;

    /// [`Self::epsilon`] as a [`Guarantee`] (with whatever else the accountant reports).
    fn guarantee(&self, events: &[Mechanism], delta: f64) -> Result<Guarantee> {
        let epsilon = self.epsilon(events, delta)?;
        Ok(Guarantee {
            epsilon: epsilon.is_finite().then_some(epsilon),
            delta,
            order: None,
        })
    }
}

impl Accountant for PldAccountant {
    fn name(&self) -> &'static str {
        "pld"
    }

    fn epsilon(&self, events: &[Mechanism], delta: f64) -> Result<f64> {
        PldAccountant::epsilon(self, events, delta)
    }

    fn delta(&self, events: &[Mechanism], epsilon: f64) -> Result<f64> {
        PldAccountant::delta(self, events, epsilon)
    }
}

impl Accountant for RdpAccountant {
    fn name(&self) -> &'static str {
        "rdp"
    }

    fn epsilon(&self, events: &[Mechanism], delta: f64) -> Result<f64> {
        Ok(RdpAccountant::epsilon(self, events, delta)?.epsilon)
    }

    fn delta(&self, events: &[Mechanism], epsilon: f64) -> Result<f64> {
        Ok(RdpAccountant::delta(self, events, epsilon)?.delta)
    }

    fn guarantee(&self, events: &[Mechanism], delta: f64) -> Result<Guarantee> {
        let g = RdpAccountant::epsilon(self, events, delta)?;
        Ok(Guarantee {
            epsilon: g.epsilon.is_finite().then_some(g.epsilon),
            delta,
            order: g.order.is_finite().then_some(g.order),
        })
    }
}

/// (ε, δ) certified by one accountant for a composition; `epsilon` is `None` when unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Guarantee {
    /// ε at `delta` (None: unbounded).
    pub epsilon: Option<f64>,
    /// δ.
    pub delta: f64,
    /// The optimal Rényi order (RDP only; None when nothing was spent or ε is unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
}

impl Guarantee {
    /// Nothing spent: ε = 0.
    pub fn nothing(delta: f64) -> Self {
        Self {
            epsilon: Some(0.0),
            delta,
            order: None,
        }
    }
}

/// Which accountant, with its settings: what a ledger stores, so that every total and every
/// calibration against that ledger uses the same accountant. A new accountant is one file with
/// an [`Accountant`] implementation plus a variant here.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum AccountantConfig {
    /// The PLD accountant with grid step `discretisation` (the default guarantee).
    Pld {
        /// Grid step Δ of the privacy loss.
        discretisation: f64,
    },
    /// The RDP accountant (default orders and conversion).
    Rdp,
}

impl AccountantConfig {
    /// The accountants a new ledger reports, the guarantee first: PLD (Δ = 1e-4), then RDP.
    pub fn defaults() -> Vec<Self> {
        vec![Self::pld_default(), Self::Rdp]
    }

    /// PLD with its default discretisation.
    pub fn pld_default() -> Self {
        Self::Pld {
            discretisation: crate::pld::PldOptions::default().discretisation,
        }
    }

    /// The accountant's short name (the key of its totals in a ledger).
    pub fn name(&self) -> &'static str {
        self.build().name()
    }

    /// The accountant itself.
    pub fn build(&self) -> Box<dyn Accountant> {
        match *self {
            Self::Pld { discretisation } => {
                Box::new(PldAccountant::with_discretisation(discretisation))
            }
            Self::Rdp => Box::new(RdpAccountant::default()),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Pld { discretisation }
                if !(discretisation.is_finite() && discretisation > 0.0) =>
            {
                Err(crate::PrivacyError::invalid(
                    "discretisation",
                    discretisation,
                    "a finite number > 0",
                ))
            }
            _ => Ok(()),
        }
    }
}
