//! Per-example norms and clipped sums of every record kind against brute force: one autograd
//! backward per example, with a loss whose gradient at the layer output is exactly the recorded g.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use common::{randn, rel_err, tol, values};
use dpselft_dp::{
    Clipping, GradRecord, NoiseRng, NormMethod, Padding, clip_and_sum, per_example_norms,
};

const B: usize = 5;
const T: usize = 7;
const D_IN: usize = 6;
const D_OUT: usize = 4;
const VOCAB: usize = 5;

/// A batch for a tiny layer stack y = x Wᵀ + b, an embedding lookup, a norm scale, and one
/// parameter whose per-example gradients are given directly.
struct Batch {
    x: Tensor,      // B×T×D_IN
    g: Tensor,      // B×T×D_OUT (∂L/∂y of the linear map)
    ids: Tensor,    // B×T
    g_emb: Tensor,  // B×T×D_OUT
    x_hat: Tensor,  // B×T×D_OUT
    g_norm: Tensor, // B×T×D_OUT
    direct: Tensor, // B×3×2
    mask: Tensor,   // B×T, with padding at the end of some examples
}

fn batch(dtype: DType, seed: u64) -> Batch {
    let mut rng = NoiseRng::from_seed(seed);
    // Spread the per-example scales so that some examples are clipped and some are not.
    let scales: Vec<f64> = (0..B).map(|i| 0.05 * (1 + i * i) as f64).collect();
    let scale = Tensor::new(scales.as_slice(), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .reshape((B, 1, 1))
        .unwrap();
    let ids: Vec<u32> = (0..B * T)
        .map(|_| (rng.uniform_f64() * VOCAB as f64) as u32)
        .collect();
    let lens = [T, T - 2, 1, T, 3];
    let mask: Vec<f64> = (0..B * T)
        .map(|k| if k % T < lens[k / T] { 1.0 } else { 0.0 })
        .collect();
    Batch {
        x: randn((B, T, D_IN), dtype, &mut rng),
        g: randn((B, T, D_OUT), dtype, &mut rng)
            .broadcast_mul(&scale)
            .unwrap(),
        ids: Tensor::from_vec(ids, (B, T), &Device::Cpu).unwrap(),
        g_emb: randn((B, T, D_OUT), dtype, &mut rng)
            .broadcast_mul(&scale)
            .unwrap(),
        x_hat: randn((B, T, D_OUT), dtype, &mut rng),
        g_norm: randn((B, T, D_OUT), dtype, &mut rng)
            .broadcast_mul(&scale)
            .unwrap(),
        direct: randn((B, 3, 2), dtype, &mut rng)
            .broadcast_mul(&scale.reshape((B, 1, 1)).unwrap())
            .unwrap(),
        mask: Tensor::from_vec(mask, (B, T), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap(),
    }
}

impl Batch {
    /// Records with padding applied through masks (the raw g is nonzero at padded positions).
    /// One record per parameter, in the order of `brute_grads`.
    fn records(&self) -> Vec<Vec<GradRecord>> {
        let m = || Padding::Mask(self.mask.clone());
        vec![
            vec![GradRecord::linear(&self.x, &self.g, m()).unwrap()],
            vec![GradRecord::bias(&self.g, m()).unwrap()],
            vec![GradRecord::embedding(&self.ids, &self.g_emb, VOCAB, m()).unwrap()],
            vec![GradRecord::scale(&self.x_hat, &self.g_norm, m()).unwrap()],
            vec![GradRecord::bias(&self.g_norm, m()).unwrap()],
            vec![GradRecord::direct(&self.direct).unwrap()],
        ]
    }

    /// Example i's gradient of every parameter, by autograd on
    /// L = Σ_t mask_t (⟨y_t, g_t⟩ + ⟨e_t, g_emb_t⟩ + ⟨n_t, g_norm_t⟩), with y = x Wᵀ + b,
    /// e = E[ids], n = x̂ ⊙ w + β; and the direct parameter's given gradient.
    fn brute_grads(&self, i: usize) -> Vec<Tensor> {
        let dtype = self.x.dtype();
        let dev = &Device::Cpu;
        let w = Var::zeros((D_OUT, D_IN), dtype, dev).unwrap();
        let b = Var::zeros(D_OUT, dtype, dev).unwrap();
        let e = Var::zeros((VOCAB, D_OUT), dtype, dev).unwrap();
        let s = Var::ones(D_OUT, dtype, dev).unwrap();
        let beta = Var::zeros(D_OUT, dtype, dev).unwrap();
        let mask = self.mask.i(i).unwrap().unsqueeze(1).unwrap(); // T×1
        let y = self
            .x
            .i(i)
            .unwrap()
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        let emb = e.embedding(&self.ids.i(i).unwrap()).unwrap();
        let n = self
            .x_hat
            .i(i)
            .unwrap()
            .broadcast_mul(&s)
            .unwrap()
            .broadcast_add(&beta)
            .unwrap();
        let loss = [(y, &self.g), (emb, &self.g_emb), (n, &self.g_norm)]
            .into_iter()
            .map(|(out, g)| {
                (out * g.i(i).unwrap())
                    .unwrap()
                    .broadcast_mul(&mask)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            })
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        let mut out: Vec<Tensor> = [&w, &b, &e, &s, &beta]
            .iter()
            .map(|v| grads.get(v).unwrap().clone())
            .collect();
        out.push(self.direct.i(i).unwrap());
        out
    }
}

fn sq_norm(ts: &[Tensor]) -> f64 {
    ts.iter().flat_map(values).map(|v| v * v).sum()
}

fn check_against_brute_force(dtype: DType, method: NormMethod, clipping: Clipping, seed: u64) {
    let batch = batch(dtype, seed);
    let out = clip_and_sum(&batch.records(), &clipping, method).unwrap();
    let brute: Vec<Vec<Tensor>> = (0..B).map(|i| batch.brute_grads(i)).collect();
    let brute_norms: Vec<f64> = brute.iter().map(|g| sq_norm(g).sqrt()).collect();
    for (i, (&n, &bn)) in out.norms.iter().zip(&brute_norms).enumerate() {
        assert!(
            (n - bn).abs() <= tol(dtype) * bn,
            "{dtype:?} {method:?} example {i}: norm {n} vs brute force {bn}"
        );
    }
    let factors = clipping.factors(&brute_norms).unwrap();
    if matches!(clipping, Clipping::Flat { .. }) {
        // The batch must exercise both branches: some examples clipped, some not.
        assert!(
            factors.iter().any(|&c| c < 1.0) && factors.contains(&1.0),
            "{factors:?}"
        );
    }
    for (p, sum) in out.sums.iter().enumerate() {
        let expected = (0..B)
            .map(|i| brute[i][p].affine(factors[i], 0.0).unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let err = rel_err(sum, &expected);
        assert!(
            err <= tol(dtype),
            "{dtype:?} {method:?} parameter {p}: clipped sum relative error {err}"
        );
    }
}

#[test]
fn norms_and_clipped_sums_match_brute_force_f32() {
    for method in [NormMethod::Ghost, NormMethod::Materialize, NormMethod::Auto] {
        check_against_brute_force(DType::F32, method, Clipping::Flat { max_norm: 1.0 }, 1);
    }
    check_against_brute_force(
        DType::F32,
        NormMethod::Auto,
        Clipping::Automatic {
            max_norm: 1.0,
            gamma: 0.01,
        },
        2,
    );
}

#[test]
fn norms_and_clipped_sums_match_brute_force_f64() {
    for method in [NormMethod::Ghost, NormMethod::Materialize] {
        check_against_brute_force(DType::F64, method, Clipping::Flat { max_norm: 1.0 }, 3);
    }
}

#[test]
fn each_kind_alone_matches_brute_force() {
    // One record at a time, so a compensating error between kinds cannot hide.
    let batch = batch(DType::F32, 4);
    let records = batch.records();
    let brute: Vec<Vec<Tensor>> = (0..B).map(|i| batch.brute_grads(i)).collect();
    for (p, record) in records.iter().enumerate() {
        let norms = per_example_norms(std::slice::from_ref(record), NormMethod::Auto).unwrap();
        assert_eq!(record.len(), 1);
        for i in 0..B {
            let bn = sq_norm(&brute[i][p..p + 1]).sqrt();
            assert!(
                (norms[i] - bn).abs() <= 1e-5 * bn,
                "record {p} example {i}: {} vs {bn}",
                norms[i]
            );
        }
    }
}

#[test]
fn ghost_and_materialised_linear_norms_agree() {
    let mut rng = NoiseRng::from_seed(5);
    for (t, d_in, d_out) in [(1, 3, 2), (9, 4, 5), (3, 16, 16), (20, 2, 3)] {
        let x = randn((4, t, d_in), DType::F64, &mut rng);
        let g = randn((4, t, d_out), DType::F64, &mut rng);
        let rec = GradRecord::linear(&x, &g, Padding::GradIsZero).unwrap();
        let ghost = rec.sq_norms(NormMethod::Ghost).unwrap();
        let mat = rec.sq_norms(NormMethod::Materialize).unwrap();
        assert!(
            rel_err(&ghost, &mat) < 1e-12,
            "T={t} d_in={d_in} d_out={d_out}"
        );
    }
}

#[test]
fn auto_method_picks_the_cheaper_form() {
    let rec = |t, d_in, d_out| {
        let x = Tensor::zeros((1, t, d_in), DType::F32, &Device::Cpu).unwrap();
        let g = Tensor::zeros((1, t, d_out), DType::F32, &Device::Cpu).unwrap();
        GradRecord::linear(&x, &g, Padding::GradIsZero).unwrap()
    };
    // T(d_in+d_out) vs d_in·d_out: 128·768 < 384² → ghost; 512·768 > 384² → materialise.
    assert_eq!(
        rec(128, 384, 384).resolve_method(NormMethod::Auto),
        NormMethod::Ghost
    );
    assert_eq!(
        rec(512, 384, 384).resolve_method(NormMethod::Auto),
        NormMethod::Materialize
    );
    assert_eq!(
        rec(512, 384, 384).resolve_method(NormMethod::Ghost),
        NormMethod::Ghost
    );
}

#[test]
fn embedding_norm_counts_repeated_tokens() {
    // One example, the same token three times: its row gets g₀+g₁+g₂, not three separate rows.
    let g = Tensor::new(
        &[[[1f64, 0.0], [1.0, 2.0], [0.5, -1.0], [3.0, 3.0]]],
        &Device::Cpu,
    )
    .unwrap();
    let ids = Tensor::new(&[[2u32, 2, 2, 0]], &Device::Cpu).unwrap();
    let rec = GradRecord::embedding(&ids, &g, 3, Padding::GradIsZero).unwrap();
    let sq = values(&rec.sq_norms(NormMethod::Auto).unwrap())[0];
    // Row 2: (2.5, 1.0) → 7.25; row 0: (3, 3) → 18.
    assert!((sq - 25.25).abs() < 1e-12, "{sq}");
    let sum = rec
        .clipped_sum(&Tensor::new(&[1f64], &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(values(&sum), vec![3.0, 3.0, 0.0, 0.0, 2.5, 1.0]);
}

#[test]
fn two_dimensional_inputs_mean_one_position() {
    // A classification head: x is B×d_in, g is B×d_out.
    let mut rng = NoiseRng::from_seed(6);
    let x = randn((3, 4), DType::F64, &mut rng);
    let g = randn((3, 2), DType::F64, &mut rng);
    let a = GradRecord::linear(&x, &g, Padding::GradIsZero).unwrap();
    let b = GradRecord::linear(
        &x.unsqueeze(1).unwrap(),
        &g.unsqueeze(1).unwrap(),
        Padding::GradIsZero,
    )
    .unwrap();
    assert!(
        rel_err(
            &a.sq_norms(NormMethod::Auto).unwrap(),
            &b.sq_norms(NormMethod::Materialize).unwrap()
        ) < 1e-12
    );
    assert_eq!(a.param_shape().unwrap().dims(), &[2, 4]);
}

#[test]
fn bad_records_are_errors_not_panics() {
    let dev = &Device::Cpu;
    let x = Tensor::zeros((2, 3, 4), DType::F32, dev).unwrap();
    let g = Tensor::zeros((2, 5, 4), DType::F32, dev).unwrap();
    assert!(GradRecord::linear(&x, &g, Padding::GradIsZero).is_err());
    let ids = Tensor::new(&[[0u32, 1, 7], [0, 0, 0]], dev).unwrap();
    assert!(
        GradRecord::embedding(&ids, &x, 5, Padding::GradIsZero).is_err(),
        "id 7 ≥ vocab 5"
    );
    let mask = Tensor::ones((2, 4), DType::F32, dev).unwrap();
    assert!(
        GradRecord::bias(&x, Padding::Mask(mask)).is_err(),
        "mask must be B×T"
    );
    let r1 = GradRecord::bias(&x, Padding::GradIsZero).unwrap();
    let r2 = GradRecord::bias(
        &Tensor::zeros((3, 3, 4), DType::F32, dev).unwrap(),
        Padding::GradIsZero,
    )
    .unwrap();
    assert!(
        clip_and_sum(
            &[vec![r1], vec![r2]],
            &Clipping::Flat { max_norm: 1.0 },
            NormMethod::Auto
        )
        .is_err()
    );
}

/// A weight used twice per example: the token embedding E (VOCAB×D) looked up at `ids` and reused
/// as the LM head (logits = h Eᵀ), plus a linear W applied at two places (y₁ = x₁Wᵀ, y₂ = x₂Wᵀ
/// with different lengths). Their per-example gradients add up; the norm needs the cross terms.
#[test]
fn tied_parameters_match_brute_force() {
    const D: usize = 3;
    for dtype in [DType::F32, DType::F64] {
        let mut rng = NoiseRng::from_seed(8);
        let ids: Vec<u32> = (0..B * T)
            .map(|_| (rng.uniform_f64() * VOCAB as f64) as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (B, T), &Device::Cpu).unwrap();
        let g_emb = randn((B, T, D), dtype, &mut rng);
        let h = randn((B, T, D), dtype, &mut rng);
        let g_head = randn((B, T, VOCAB), dtype, &mut rng);
        let x1 = randn((B, T, D_IN), dtype, &mut rng);
        let g1 = randn((B, T, D_OUT), dtype, &mut rng);
        let x2 = randn((B, 2, D_IN), dtype, &mut rng);
        let g2 = randn((B, 2, D_OUT), dtype, &mut rng);
        let z = Padding::GradIsZero;
        let params = vec![
            vec![
                GradRecord::embedding(&ids, &g_emb, VOCAB, z.clone()).unwrap(),
                GradRecord::linear(&h, &g_head, z.clone()).unwrap(),
            ],
            vec![
                GradRecord::linear(&x1, &g1, z.clone()).unwrap(),
                GradRecord::linear(&x2, &g2, z.clone()).unwrap(),
            ],
        ];
        let brute: Vec<[Tensor; 2]> = (0..B)
            .map(|i| {
                let e = Var::zeros((VOCAB, D), dtype, &Device::Cpu).unwrap();
                let w = Var::zeros((D_OUT, D_IN), dtype, &Device::Cpu).unwrap();
                let terms = [
                    (
                        e.embedding(&ids.i(i).unwrap()).unwrap(),
                        g_emb.i(i).unwrap(),
                    ),
                    (
                        h.i(i).unwrap().matmul(&e.t().unwrap()).unwrap(),
                        g_head.i(i).unwrap(),
                    ),
                    (
                        x1.i(i).unwrap().matmul(&w.t().unwrap()).unwrap(),
                        g1.i(i).unwrap(),
                    ),
                    (
                        x2.i(i).unwrap().matmul(&w.t().unwrap()).unwrap(),
                        g2.i(i).unwrap(),
                    ),
                ];
                let loss = terms
                    .into_iter()
                    .map(|(y, g)| (y * g).unwrap().sum_all().unwrap())
                    .reduce(|a, b| (a + b).unwrap())
                    .unwrap();
                let grads = loss.backward().unwrap();
                [
                    grads.get(&e).unwrap().clone(),
                    grads.get(&w).unwrap().clone(),
                ]
            })
            .collect();
        let brute_norms: Vec<f64> = brute.iter().map(|g| sq_norm(g).sqrt()).collect();
        // C between the smallest and the largest norm, so both branches of clipping are used.
        let mut sorted = brute_norms.clone();
        sorted.sort_by(f64::total_cmp);
        let clipping = Clipping::Flat {
            max_norm: sorted[B / 2],
        };
        let out = clip_and_sum(&params, &clipping, NormMethod::Auto).unwrap();
        for (i, (&n, &bn)) in out.norms.iter().zip(&brute_norms).enumerate() {
            assert!(
                (n - bn).abs() <= tol(dtype) * bn,
                "{dtype:?} example {i}: norm {n} vs brute force {bn}"
            );
        }
        let factors = clipping.factors(&brute_norms).unwrap();
        assert!(
            factors.iter().any(|&c| c < 1.0) && factors.contains(&1.0),
            "{factors:?}"
        );
        for (p, sum) in out.sums.iter().enumerate() {
            let expected = (0..B)
                .map(|i| brute[i][p].affine(factors[i], 0.0).unwrap())
                .reduce(|a, b| (a + b).unwrap())
                .unwrap();
            let err = rel_err(sum, &expected);
            assert!(
                err <= tol(dtype),
                "{dtype:?} parameter {p}: clipped sum relative error {err}"
            );
        }
        // Without the cross terms (each record as its own parameter) the norms would be wrong.
        let untied: Vec<Vec<GradRecord>> =
            params.iter().flatten().map(|r| vec![r.clone()]).collect();
        let wrong = per_example_norms(&untied, NormMethod::Auto).unwrap();
        assert!(
            wrong
                .iter()
                .zip(&brute_norms)
                .any(|(w, b)| (w - b).abs() > 1e-3 * b)
        );
    }
}

/// q, k and v read the same input tensor; the norm pass forms its Gram matrix once and must give
/// the same norms as three independent records.
#[test]
fn shared_inputs_give_the_same_norms() {
    let mut rng = NoiseRng::from_seed(10);
    let x = randn((B, T, D_IN), DType::F64, &mut rng);
    let gs: Vec<Tensor> = (0..3)
        .map(|_| randn((B, T, D_OUT), DType::F64, &mut rng))
        .collect();
    let shared: Vec<Vec<GradRecord>> = gs
        .iter()
        .map(|g| vec![GradRecord::linear(&x, g, Padding::GradIsZero).unwrap()])
        .collect();
    let copies: Vec<Vec<GradRecord>> = gs
        .iter()
        .map(|g| vec![GradRecord::linear(&x.copy().unwrap(), g, Padding::GradIsZero).unwrap()])
        .collect();
    let a = per_example_norms(&shared, NormMethod::Ghost).unwrap();
    let b = per_example_norms(&copies, NormMethod::Ghost).unwrap();
    assert!(
        a.iter().zip(&b).all(|(a, b)| (a - b).abs() <= 1e-12 * b),
        "{a:?} vs {b:?}"
    );
}
