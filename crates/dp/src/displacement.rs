//! How far the DP noise alone moves the parameters in one step of a given optimizer: the radius
//! of the selection stage's worst-case perturbation (docs/design.md, §3).
//!
//! The privatised gradient of a step is ĝ = (Σ clipped + N(0, σ²C²·I))/B, so its noise part has
//! a per-coordinate std s = σC/B. What that noise does to the parameters depends on the update
//! rule, and this is what the selection must simulate:
//! - **SGD** with momentum μ: the buffer is Σ_k μ^k ĝ_{t−k}, so the noise part of step t has
//!   per-coordinate variance s²·(1 − μ^{2t})/(1 − μ²), and ‖Δw_t‖ = η_t·s·√d·√((1 − μ^{2t})/(1 − μ²))
//!   (μ = 0: the classic η·σ·C·√d/B).
//! - **AdamW**: the step is η_t·m̂_t/(√v̂_t + ε). With noise-only gradients, m̂_t is a weighted
//!   mean Σ a_k g_k with Σ a_k² = (1 − β₁)²(1 − β₁^{2t})/((1 − β₁²)(1 − β₁^t)²) and v̂_t is an
//!   (almost uniformly) weighted mean of the g_k², so E[m̂_t²/v̂_t] = Σ a_k² (exact for uniform
//!   weights, by the isotropy of the Gaussian; the β₂ weights are uniform to within t·(1 − β₂)).
//!   ‖Δw_t‖ = η_t·√d·√(Σ a_k²)·s/(s + ε): about η·√d at t = 1 and η·√d·0.23 later for β₁ = 0.9,
//!   independent of σ, C and B — the normalisation undoes the 1/B that SGD's formula has.
//!
//! Weight decay is left out: it moves the parameters whether or not there is noise.
//! `tests::matches_a_simulation_*` drive the real [`DpOptimizer`] with the noise alone and
//! compare.

use crate::optim::{LrSchedule, OptimizerKind};

/// What the final run's noise is, per step: its schedule, update rule and noise scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseStep {
    /// The final run's update rule.
    pub optimizer: OptimizerKind,
    /// The final run's learning-rate schedule (its total steps are the run's T).
    pub schedule: LrSchedule,
    /// σ·C/B: the std of the noise on each coordinate of the privatised mean gradient.
    pub noise_std: f64,
}

impl NoiseStep {
    /// The expected norm (root mean square) of the displacement that the noise alone causes at
    /// the run's step `t` (1-based) on `dim` trainable scalars.
    pub fn displacement(&self, t: u64, dim: usize) -> f64 {
        let lr = self.schedule.lr_at(t);
        let s = self.noise_std;
        let t = t.max(1) as f64;
        let per_coordinate = match self.optimizer {
            OptimizerKind::Sgd { momentum: mu, .. } => {
                let gain = if mu == 0.0 {
                    1.0
                } else {
                    (1.0 - mu.powf(2.0 * t)) / (1.0 - mu * mu)
                };
                s * gain.sqrt()
            }
            OptimizerKind::AdamW { beta1: b, eps, .. } => {
                let weights_sq = (1.0 - b).powi(2) * (1.0 - b.powf(2.0 * t))
                    / ((1.0 - b * b) * (1.0 - b.powf(t)).powi(2));
                if s == 0.0 {
                    0.0
                } else {
                    weights_sq.sqrt() * s / (s + eps)
                }
            }
        };
        lr * per_coordinate * (dim as f64).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::*;
    use crate::clip::Clipping;
    use crate::optim::{DpOptimizer, DpOptimizerConfig};
    use crate::rng::NoiseRng;

    /// Drives the real optimizer with noise-only steps (empty batches) on `dim` scalars and
    /// returns ‖Δw_t‖ for t = 1..=steps.
    fn simulate(noise: &NoiseStep, sigma: f64, batch: f64, dim: usize) -> Vec<f64> {
        let clip = noise.noise_std * batch / sigma;
        let config = DpOptimizerConfig {
            optimizer: noise.optimizer,
            schedule: noise.schedule,
            noise_multiplier: sigma,
            clipping: Clipping::Flat { max_norm: clip },
            expected_batch_size: batch,
        };
        let w =
            Var::from_tensor(&Tensor::zeros(dim, candle_core::DType::F32, &Device::Cpu).unwrap())
                .unwrap();
        let mut opt = DpOptimizer::new(config, std::slice::from_ref(&w)).unwrap();
        let mut rng = NoiseRng::from_seed(7);
        let mut out = Vec::new();
        for _ in 0..noise.schedule.total_steps {
            let before = w.as_tensor().to_vec1::<f32>().unwrap();
            opt.noise_only_step(std::slice::from_ref(&w), &mut rng)
                .unwrap();
            let after = w.as_tensor().to_vec1::<f32>().unwrap();
            let sq: f64 = before
                .iter()
                .zip(&after)
                .map(|(a, b)| (f64::from(*b) - f64::from(*a)).powi(2))
                .sum();
            out.push(sq.sqrt());
        }
        out
    }

    fn check(optimizer: OptimizerKind, warmup: u64) {
        let (sigma, clip, batch, dim) = (0.9, 1.0, 128.0, 20_000);
        let noise = NoiseStep {
            optimizer,
            schedule: LrSchedule {
                peak_lr: 5e-3,
                warmup_steps: warmup,
                total_steps: 36,
            },
            noise_std: sigma * clip / batch,
        };
        let simulated = simulate(&noise, sigma, batch, dim);
        for (i, got) in simulated.iter().enumerate() {
            let t = i as u64 + 1;
            let want = noise.displacement(t, dim);
            if want == 0.0 {
                assert!(
                    *got < 1e-12,
                    "step {t}: {got} moved with a zero learning rate"
                );
                continue;
            }
            let rel = (got - want).abs() / want;
            assert!(
                rel < 0.10,
                "{optimizer:?} step {t}: simulated {got:.4e}, formula {want:.4e} ({:.1}% off)",
                rel * 100.0
            );
        }
    }

    #[test]
    fn matches_a_simulation_for_sgd() {
        check(
            OptimizerKind::Sgd {
                momentum: 0.0,
                weight_decay: 0.0,
            },
            0,
        );
        check(
            OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
            },
            4,
        );
    }

    #[test]
    fn matches_a_simulation_for_adamw() {
        let adamw = |beta1| OptimizerKind::AdamW {
            beta1,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        check(OptimizerKind::default(), 0);
        check(adamw(0.9), 4);
        check(adamw(0.5), 0);
        check(adamw(0.0), 0);
    }

    #[test]
    fn sgd_without_momentum_is_the_classic_radius() {
        let noise = NoiseStep {
            optimizer: OptimizerKind::Sgd {
                momentum: 0.0,
                weight_decay: 0.0,
            },
            schedule: LrSchedule::constant(0.1),
            noise_std: 2.0 * 1.5 / 64.0,
        };
        let classic = 0.1 * 2.0 * 1.5 * (1000f64).sqrt() / 64.0;
        assert!((noise.displacement(3, 1000) - classic).abs() < 1e-12);
    }

    #[test]
    fn adamw_moves_by_about_the_learning_rate_per_coordinate_at_first() {
        let noise = NoiseStep {
            optimizer: OptimizerKind::default(),
            schedule: LrSchedule::constant(1e-3),
            noise_std: 1e-2,
        };
        let first = noise.displacement(1, 10_000);
        assert!((first / (1e-3 * 100.0) - 1.0).abs() < 1e-5, "{first}");
        // Steady state: √((1 − β₁)/(1 + β₁)) ≈ 0.229.
        let late = noise.displacement(500, 10_000) / (1e-3 * 100.0);
        assert!((late - (0.1f64 / 1.9).sqrt()).abs() < 1e-3, "{late}");
    }
}
