//! The DP-SGD engine: Poisson sampling, per-example clipping, noise, DP optimizers, trainer.
//! (Not built yet: see the issue on the DP-SGD engine.)
