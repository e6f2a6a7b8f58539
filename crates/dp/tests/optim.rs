//! The DP optimizer step against hand-computed values, the noise it adds, and checkpoints.

use candle_core::{DType, Device, Tensor, Var};
use dpselft_dp::{
    Clipping, DpOptimizer, DpOptimizerConfig, LrSchedule, NoiseRng, NoiseRngState, OptimizerKind,
};

fn var(v: &[f64]) -> Var {
    Var::from_tensor(&Tensor::new(v, &Device::Cpu).unwrap()).unwrap()
}

fn vals(v: &Var) -> Vec<f64> {
    v.as_tensor()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn config(optimizer: OptimizerKind, lr: f64, sigma: f64, batch: f64) -> DpOptimizerConfig {
    DpOptimizerConfig {
        optimizer,
        schedule: LrSchedule::constant(lr),
        noise_multiplier: sigma,
        clipping: Clipping::Flat { max_norm: 1.0 },
        expected_batch_size: batch,
    }
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert!(
        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol),
        "{a:?} vs {b:?}"
    );
}

#[test]
fn sgd_momentum_matches_hand_computation() {
    let p = var(&[1.0, -1.0]);
    let sgd = OptimizerKind::Sgd {
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let mut opt = DpOptimizer::new(config(sgd, 0.5, 0.0, 2.0), std::slice::from_ref(&p)).unwrap();
    let mut rng = NoiseRng::from_seed(0);
    // ĝ = sum / B = [0.2, 0]; buf = ĝ; p = p − 0.5·buf.
    opt.step(
        std::slice::from_ref(&p),
        Some(&[Tensor::new(&[0.4f64, 0.0], &Device::Cpu).unwrap()]),
        &mut rng,
    )
    .unwrap();
    close(&vals(&p), &[0.9, -1.0], 1e-15);
    // ĝ = [−0.1, 0.2]; buf = 0.9·[0.2, 0] + ĝ = [0.08, 0.2]; p = [0.9 − 0.04, −1 − 0.1].
    opt.step(
        std::slice::from_ref(&p),
        Some(&[Tensor::new(&[-0.2f64, 0.4], &Device::Cpu).unwrap()]),
        &mut rng,
    )
    .unwrap();
    close(&vals(&p), &[0.86, -1.1], 1e-15);
}

#[test]
fn adamw_matches_hand_computation() {
    let p = var(&[1.0, -2.0]);
    let adamw = OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt = DpOptimizer::new(config(adamw, 0.1, 0.0, 2.0), std::slice::from_ref(&p)).unwrap();
    let mut rng = NoiseRng::from_seed(0);
    let sums = [[0.4, -0.2], [0.2, 0.6]];
    let info = opt
        .step(
            std::slice::from_ref(&p),
            Some(&[Tensor::new(&sums[0], &Device::Cpu).unwrap()]),
            &mut rng,
        )
        .unwrap();
    assert_eq!((info.step, info.lr, info.empty_batch), (1, 0.1, false));
    // Step 1: ĝ = [0.2, −0.1], m̂ = ĝ, v̂ = ĝ², update = ĝ/(|ĝ| + ε);
    // p = p(1 − 0.1·0.1) − 0.1·update.
    let step1 = [
        1.0 * 0.99 - 0.1 * 0.2 / (0.2 + 1e-8),
        -2.0 * 0.99 + 0.1 * 0.1 / (0.1 + 1e-8),
    ];
    close(&vals(&p), &step1, 1e-15);
    // Step 2 by the scalar textbook recursion.
    let mut expected = [1.0f64, -2.0];
    let (mut m, mut v) = ([0f64; 2], [0f64; 2]);
    for (t, sum) in sums.iter().enumerate() {
        let t = (t + 1) as i32;
        for k in 0..2 {
            let g = sum[k] / 2.0;
            m[k] = 0.9 * m[k] + 0.1 * g;
            v[k] = 0.999 * v[k] + 0.001 * g * g;
            let (mh, vh) = (
                m[k] / (1.0 - 0.9f64.powi(t)),
                v[k] / (1.0 - 0.999f64.powi(t)),
            );
            expected[k] = expected[k] * (1.0 - 0.1 * 0.1) - 0.1 * mh / (vh.sqrt() + 1e-8);
        }
    }
    opt.step(
        std::slice::from_ref(&p),
        Some(&[Tensor::new(&sums[1], &Device::Cpu).unwrap()]),
        &mut rng,
    )
    .unwrap();
    close(&vals(&p), &expected, 1e-14);
}

#[test]
fn weight_decay_only_where_asked() {
    let (a, b) = (var(&[2.0]), var(&[2.0]));
    let adamw = OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.5,
    };
    let params = [a.clone(), b.clone()];
    let mut opt = DpOptimizer::new(config(adamw, 0.1, 0.0, 1.0), &params)
        .unwrap()
        .with_weight_decay_mask(vec![true, false])
        .unwrap();
    let zeros = [
        Tensor::new(&[0f64], &Device::Cpu).unwrap(),
        Tensor::new(&[0f64], &Device::Cpu).unwrap(),
    ];
    opt.step(&params, Some(&zeros), &mut NoiseRng::from_seed(0))
        .unwrap();
    close(&vals(&a), &[2.0 * (1.0 - 0.1 * 0.5)], 1e-15);
    close(&vals(&b), &[2.0], 0.0);
    assert!(
        DpOptimizer::new(config(adamw, 0.1, 0.0, 1.0), &params)
            .unwrap()
            .with_weight_decay_mask(vec![true])
            .is_err()
    );
}

#[test]
fn noise_only_step_adds_sigma_c_over_expected_b() {
    // SGD without momentum, lr 1: Δp = −N(0, σ²C²)/B exactly, so its std must be σC/B.
    let n = 200_000;
    let p = Var::from_tensor(&Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap()).unwrap();
    let (sigma, c, b) = (2.0, 0.5, 10.0);
    let mut cfg = config(
        OptimizerKind::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
        },
        1.0,
        sigma,
        b,
    );
    cfg.clipping = Clipping::Flat { max_norm: c };
    let mut opt = DpOptimizer::new(cfg, std::slice::from_ref(&p)).unwrap();
    let info = opt
        .noise_only_step(std::slice::from_ref(&p), &mut NoiseRng::from_seed(3))
        .unwrap();
    assert!(info.empty_batch);
    assert_eq!(info.noise_std, sigma * c);
    let d = vals(&p);
    let mean = d.iter().sum::<f64>() / n as f64;
    let std = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let want = sigma * c / b;
    assert!(mean.abs() < 3.0 * want / (n as f64).sqrt(), "mean {mean}");
    assert!(
        (std - want).abs() < 3.0 * want / (2.0 * n as f64).sqrt(),
        "std {std} vs σC/B = {want}"
    );
}

#[test]
fn schedule_values() {
    let s = LrSchedule {
        peak_lr: 1.0,
        warmup_steps: 2,
        total_steps: 6,
    };
    let lrs: Vec<f64> = (0..=7).map(|t| s.lr_at(t)).collect();
    assert_eq!(lrs, vec![0.0, 0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]);
    let s = LrSchedule {
        peak_lr: 2.0,
        warmup_steps: 0,
        total_steps: 4,
    };
    assert_eq!(
        (1..=4).map(|t| s.lr_at(t)).collect::<Vec<_>>(),
        vec![2.0, 1.5, 1.0, 0.5]
    );
    assert_eq!(LrSchedule::constant(0.3).lr_at(1_000_000), 0.3);
    assert!(
        LrSchedule {
            peak_lr: 1.0,
            warmup_steps: 5,
            total_steps: 4
        }
        .validate()
        .is_err()
    );
}

#[test]
fn invalid_configurations_are_rejected() {
    let p = [var(&[0.0])];
    let mut cfg = config(OptimizerKind::default(), 0.1, 1.0, 8.0);
    cfg.clipping = Clipping::Off;
    assert!(DpOptimizer::new(cfg, &p).is_err(), "noise without clipping");
    cfg.noise_multiplier = 0.0;
    assert!(DpOptimizer::new(cfg, &p).is_ok(), "non-private mode");
    assert!(DpOptimizer::new(config(OptimizerKind::default(), 0.1, 1.0, 0.0), &p).is_err());
    assert!(DpOptimizer::new(config(OptimizerKind::default(), -0.1, 1.0, 1.0), &p).is_err());
    let bad = OptimizerKind::AdamW {
        beta1: 1.0,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    assert!(DpOptimizer::new(config(bad, 0.1, 1.0, 1.0), &p).is_err());
    let mut opt = DpOptimizer::new(config(OptimizerKind::default(), 0.1, 1.0, 1.0), &p).unwrap();
    let wrong = [Tensor::new(&[0f64, 1.0], &Device::Cpu).unwrap()];
    assert!(
        opt.step(&p, Some(&wrong), &mut NoiseRng::from_seed(0))
            .is_err()
    );
    // A bad second sum leaves the first parameter untouched (no half step).
    let two = [var(&[1.0]), var(&[2.0])];
    let mut opt = DpOptimizer::new(config(OptimizerKind::default(), 0.1, 1.0, 1.0), &two).unwrap();
    let sums = [
        Tensor::new(&[0f64], &Device::Cpu).unwrap(),
        Tensor::new(&[0f64, 0.0], &Device::Cpu).unwrap(),
    ];
    assert!(
        opt.step(&two, Some(&sums), &mut NoiseRng::from_seed(0))
            .is_err()
    );
    assert_eq!((vals(&two[0]), opt.steps_taken()), (vec![1.0], 0));
}

#[test]
fn checkpoint_resume_continues_exactly() {
    let sums = |t: usize| {
        vec![
            Tensor::new(&[0.1 * t as f32, -0.3], &Device::Cpu).unwrap(),
            Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap(),
        ]
    };
    let fresh = || {
        vec![
            Var::new(&[1f32, 2.0], &Device::Cpu).unwrap(),
            Var::new(&[[0f32, 0.5], [1.0, -1.0]], &Device::Cpu).unwrap(),
        ]
    };
    let cfg = DpOptimizerConfig {
        schedule: LrSchedule {
            peak_lr: 0.01,
            warmup_steps: 1,
            total_steps: 4,
        },
        ..config(OptimizerKind::default(), 0.0, 1.1, 4.0)
    };

    // Uninterrupted: 4 steps.
    let params = fresh();
    let mut rng = NoiseRng::from_seed(99);
    let mut opt = DpOptimizer::new(cfg, &params).unwrap();
    for t in 0..4 {
        let s = sums(t);
        opt.step(&params, if t == 2 { None } else { Some(&s) }, &mut rng)
            .unwrap();
    }

    // Interrupted after 2 steps; everything goes through its serialised form.
    let params2 = fresh();
    let mut rng2 = NoiseRng::from_seed(99);
    let mut opt2 = DpOptimizer::new(cfg, &params2).unwrap();
    for t in 0..2 {
        opt2.step(&params2, Some(&sums(t)), &mut rng2).unwrap();
    }
    let ckpt = opt2.checkpoint();
    let meta_json = serde_json::to_string(&ckpt.meta).unwrap();
    let rng_json = serde_json::to_string(&rng2.state()).unwrap();
    let saved: Vec<Tensor> = params2
        .iter()
        .map(|p| p.as_tensor().copy().unwrap())
        .collect();
    drop((opt2, rng2, params2));

    let params3: Vec<Var> = saved.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
    let mut ckpt3 = ckpt.clone();
    ckpt3.meta = serde_json::from_str(&meta_json).unwrap();
    let mut rng3 =
        NoiseRng::from_state(&serde_json::from_str::<NoiseRngState>(&rng_json).unwrap()).unwrap();
    let mut opt3 = DpOptimizer::restore(cfg, &params3, &ckpt3).unwrap();
    assert_eq!(opt3.steps_taken(), 2);
    for t in 2..4 {
        let s = sums(t);
        opt3.step(&params3, if t == 2 { None } else { Some(&s) }, &mut rng3)
            .unwrap();
    }
    for (a, b) in params.iter().zip(&params3) {
        assert_eq!(vals(a), vals(b), "resumed run differs");
    }
    let sgd = config(
        OptimizerKind::Sgd {
            momentum: 0.9,
            weight_decay: 0.0,
        },
        0.1,
        1.0,
        4.0,
    );
    assert!(
        DpOptimizer::restore(sgd, &params3, &ckpt3).is_err(),
        "AdamW state into SGD"
    );
}

/// Half precision takes candle's composite update (the fused kernels are f32/f64 on the CPU):
/// three AdamW steps with weight decay agree with the f64 (fused) run to f16's rounding.
#[test]
fn composite_and_fused_updates_agree() {
    let adamw = OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let start = [1.0, -2.0, 0.5];
    let sums = [[0.4, -0.2, 0.1], [0.2, 0.6, -0.3], [-0.1, 0.3, 0.2]];
    let run = |dtype: DType| {
        let p = Var::from_tensor(
            &Tensor::new(&start, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let mut opt =
            DpOptimizer::new(config(adamw, 0.1, 0.0, 2.0), std::slice::from_ref(&p)).unwrap();
        let mut rng = NoiseRng::from_seed(0);
        for s in &sums {
            let sum = Tensor::new(s, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            opt.step(std::slice::from_ref(&p), Some(&[sum]), &mut rng)
                .unwrap();
        }
        vals(&p)
    };
    let (fused, composite) = (run(DType::F64), run(DType::F16));
    close(&fused, &composite, 4e-3);
    assert_ne!(fused, start);
}
