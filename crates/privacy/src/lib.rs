//! Privacy accounting for dpselft: RDP and PLD accountants, noise calibration, composition of
//! mechanisms and the per-run privacy ledger. No ML dependency.
//!
//! Every mechanism is analysed under add/remove-one adjacency (both directions). The PLD
//! accountant ([`PldAccountant`]) is the default and the tighter one; the RDP accountant
//! ([`RdpAccountant`]) is reported alongside it. Both only ever return upper bounds on the true
//! privacy loss.
//!
//! ```
//! use dpselft_privacy::{Accountant, Mechanism, PldAccountant, RdpAccountant, calibrate_sigma};
//!
//! // Synthetic stage (fixed) + label histogram + fine-tuning stage.
//! let synth = Mechanism::sampled_gaussian(0.05, 1.2, 300)?;
//! let histogram = Mechanism::gaussian(20.0, 1.0, 1)?;
//! let train = Mechanism::sampled_gaussian(0.02, 1.0, 2_000)?;
//! let pld = PldAccountant::default();
//! let eps = pld.epsilon(&[synth, histogram, train], 1e-5)?;
//! let rdp = RdpAccountant::default().epsilon(&[synth, histogram, train], 1e-5)?;
//! assert!(eps <= rdp.epsilon);
//! // Noise for the fine-tuning stage so that everything together meets ε = 8.
//! let sigma = calibrate_sigma(&pld, &[synth, histogram], &train, 8.0, 1e-5)?;
//! assert!(pld.epsilon(&[synth, histogram, train.with_noise_multiplier(sigma)], 1e-5)? <= 8.0);
//! # Ok::<(), dpselft_privacy::PrivacyError>(())
//! ```

#![warn(missing_docs)]

pub mod accountant;
pub mod audit;
pub mod calibrate;
pub mod error;
pub mod ledger;
mod ledger_format;
pub mod mechanism;
pub mod normal;
pub mod pld;
mod pld_compose;
mod pld_event;
pub mod rdp;

pub use accountant::{Accountant, AccountantConfig, Guarantee};
pub use audit::{
    AuditResult, BestKAudit, audit_best_k, audit_scores, default_k_grid, epsilon_lower_bound,
};
pub use calibrate::calibrate_sigma;
pub use error::{PrivacyError, Result};
pub use ledger::{
    LedgerEntry, MechanismKind, Override, PrivacyLedger, Spent, Stage, check_delta_for_examples,
};
pub use mechanism::{Mechanism, sampling_from_epochs};
pub use pld::{ComposedPld, PldAccountant, PldOptions};
pub use rdp::{Conversion, RdpAccountant, RdpGuarantee};
