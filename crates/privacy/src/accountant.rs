//! A common interface over the accountants, used by calibration and the ledger.

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
}
