//! The core DP property, tested directly: on random batches, removing any one example changes the
//! clipped sums of all parameters together by at most C (add/remove-one adjacency).

mod common;

use candle_core::{DType, Device, Tensor};
use common::{randn, values};
use dpselft_dp::{
    ClippedSumAccumulator, Clipping, GradRecord, NoiseRng, NormMethod, Padding, clip_and_sum,
    split_by_tokens,
};

const T: usize = 6;

/// Records of a batch: a linear weight and its bias, and an embedding tied to an LM head.
/// `t` = [x, g, ids, g_emb, h, g_head].
fn records(t: &[Tensor]) -> Vec<Vec<GradRecord>> {
    let z = || Padding::GradIsZero;
    vec![
        vec![GradRecord::linear(&t[0], &t[1], z()).unwrap()],
        vec![GradRecord::bias(&t[1], z()).unwrap()],
        vec![
            GradRecord::embedding(&t[2], &t[3], 4, z()).unwrap(),
            GradRecord::linear(&t[4], &t[5], z()).unwrap(),
        ],
    ]
}

fn without(t: &Tensor, j: usize) -> Tensor {
    let keep: Vec<usize> = (0..t.dim(0).unwrap()).filter(|&i| i != j).collect();
    select(t, &keep)
}

fn select(t: &Tensor, rows: &[usize]) -> Tensor {
    let rows: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
    t.index_select(&Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap()
}

fn diff_norm(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(a, b)| {
            values(a)
                .into_iter()
                .zip(values(b))
                .map(|(x, y)| (x - y).powi(2))
        })
        .sum::<f64>()
        .sqrt()
}

fn check(clipping: Clipping, dtype: DType) {
    let c = clipping.sensitivity().unwrap();
    let mut rng = NoiseRng::from_seed(42);
    let mut tight = 0.0f64;
    for trial in 0..6 {
        let b = 3 + trial;
        let scale: Vec<f64> = (0..b)
            .map(|_| 10f64.powf(4.0 * rng.uniform_f64() - 2.0))
            .collect();
        let scale = Tensor::new(scale.as_slice(), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .reshape((b, 1, 1))
            .unwrap();
        let x = randn((b, T, 5), dtype, &mut rng);
        let g = randn((b, T, 3), dtype, &mut rng)
            .broadcast_mul(&scale)
            .unwrap();
        let ids: Vec<u32> = (0..b * T)
            .map(|_| (rng.uniform_f64() * 4.0) as u32)
            .collect();
        let ids = Tensor::from_vec(ids, (b, T), &Device::Cpu).unwrap();
        let g_emb = randn((b, T, 2), dtype, &mut rng)
            .broadcast_mul(&scale)
            .unwrap();
        let h = randn((b, T, 2), dtype, &mut rng);
        let g_head = randn((b, T, 4), dtype, &mut rng)
            .broadcast_mul(&scale)
            .unwrap();
        let batch = [x, g, ids, g_emb, h, g_head];
        let full = clip_and_sum(&records(&batch), &clipping, NormMethod::Auto).unwrap();
        for j in 0..b {
            let rest: Vec<Tensor> = batch.iter().map(|t| without(t, j)).collect();
            let rest = records(&rest);
            let part = clip_and_sum(&rest, &clipping, NormMethod::Auto).unwrap();
            let d = diff_norm(&full.sums, &part.sums);
            assert!(
                d <= c * (1.0 + 1e-5),
                "{clipping:?} {dtype:?} trial {trial}: removing example {j} moved the sum by {d} > C = {c}"
            );
            tight = tight.max(d / c);
        }
    }
    // The bound is attained (up to γ) by large gradients: the test would notice a too-small C.
    assert!(tight > 0.99, "largest change {tight}·C");
}

#[test]
fn removing_one_example_moves_the_flat_clipped_sum_by_at_most_c() {
    for c in [0.1, 1.0, 3.0] {
        check(Clipping::Flat { max_norm: c }, DType::F32);
        check(Clipping::Flat { max_norm: c }, DType::F64);
    }
}

#[test]
fn removing_one_example_moves_the_automatic_clipped_sum_by_at_most_c() {
    for c in [0.5, 1.0] {
        check(
            Clipping::Automatic {
                max_norm: c,
                gamma: 0.01,
            },
            DType::F32,
        );
        check(
            Clipping::Automatic {
                max_norm: c,
                gamma: 0.01,
            },
            DType::F64,
        );
    }
}

#[test]
fn clipping_factors() {
    let flat = Clipping::Flat { max_norm: 2.0 };
    assert_eq!(
        flat.factors(&[0.0, 1.0, 2.0, 8.0]).unwrap(),
        vec![1.0, 1.0, 1.0, 0.25]
    );
    let auto = Clipping::Automatic {
        max_norm: 1.0,
        gamma: 0.5,
    };
    assert_eq!(auto.factors(&[0.0, 1.5]).unwrap(), vec![2.0, 0.5]);
    assert!(flat.factors(&[1.0, f64::NAN]).is_err());
    assert!(flat.factors(&[f64::INFINITY]).is_err());
    assert!(Clipping::Flat { max_norm: 0.0 }.factors(&[1.0]).is_err());
    assert!(
        Clipping::Automatic {
            max_norm: 1.0,
            gamma: 0.0
        }
        .validate()
        .is_err()
    );
    assert_eq!(Clipping::Off.factors(&[5.0]).unwrap(), vec![1.0]);
    assert_eq!(Clipping::Off.sensitivity(), None);
}

#[test]
fn zero_gradients_are_harmless() {
    let z = Tensor::zeros((3, 2, 4), DType::F32, &Device::Cpu).unwrap();
    let recs = [vec![
        GradRecord::linear(&z, &z, Padding::GradIsZero).unwrap(),
    ]];
    let out = clip_and_sum(&recs, &Clipping::Flat { max_norm: 1.0 }, NormMethod::Auto).unwrap();
    assert_eq!(out.norms, vec![0.0; 3]);
    assert_eq!(out.factors, vec![1.0; 3]);
    assert!(values(&out.sums[0]).iter().all(|&v| v == 0.0));
}

/// Clipping is per example, so micro-batches summed by the accumulator give exactly the logical
/// batch's clipped sum: the split into micro-batches is invisible to the privacy analysis.
#[test]
fn micro_batches_add_up_to_the_logical_batch() {
    let mut rng = NoiseRng::from_seed(77);
    let b = 9;
    let ids: Vec<u32> = (0..b * T)
        .map(|_| (rng.uniform_f64() * 4.0) as u32)
        .collect();
    let batch = [
        randn((b, T, 5), DType::F64, &mut rng),
        randn((b, T, 3), DType::F64, &mut rng),
        Tensor::from_vec(ids, (b, T), &Device::Cpu).unwrap(),
        randn((b, T, 2), DType::F64, &mut rng),
        randn((b, T, 2), DType::F64, &mut rng),
        randn((b, T, 4), DType::F64, &mut rng),
    ];
    let clipping = Clipping::Flat { max_norm: 2.0 };
    let whole = clip_and_sum(&records(&batch), &clipping, NormMethod::Auto).unwrap();

    let lengths: Vec<usize> = (0..b).map(|i| 1 + i % T).collect();
    let all: Vec<usize> = (0..b).collect();
    let micro = split_by_tokens(&all, &lengths, 12).unwrap();
    assert!(micro.len() > 2);
    let mut acc = ClippedSumAccumulator::new();
    for rows in &micro {
        let part: Vec<Tensor> = batch.iter().map(|t| select(t, rows)).collect();
        acc.add(&clip_and_sum(&records(&part), &clipping, NormMethod::Auto).unwrap())
            .unwrap();
    }
    assert_eq!(acc.examples(), b);
    let sums = acc.into_sums().unwrap();
    assert!(diff_norm(&sums, &whole.sums) < 1e-12);
    assert!(
        ClippedSumAccumulator::new().into_sums().is_none(),
        "empty batch: noise-only step"
    );
}
