//! DP-SelFT: DP synthetic data, noise-matched layer selection, selective DP fine-tuning.
//! (Not built yet: see the issue on DP-SelFT end to end.)
