//! Privacy accounting for dpselft: RDP and PLD accountants, noise calibration, composition of
//! mechanisms and the per-run privacy ledger. No ML dependency.
