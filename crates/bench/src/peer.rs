//! The peer of the step benchmark (`dpselft bench step --peer`): PyTorch's and Opacus's step
//! pairs as the peer script reports them, their summary per row, and the side-by-side rows of
//! the JSON report. The steps themselves are in `step_cost`.

use serde::{Deserialize, Serialize};

use crate::step_cost::{Row, median};

/// One step pair of the peer: PyTorch non-private, Opacus DP (what `bench/peer/peer_step.py`
/// answers to `rep R`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PeerRep {
    /// The non-private step (s).
    pub nonprivate_s: f64,
    /// The Opacus DP step (s).
    pub dp_s: f64,
    /// The peer process's peak resident MiB over its non-private step.
    pub nonprivate_peak_mib: f64,
    /// The same over its DP step.
    pub dp_peak_mib: f64,
}

/// What the peer ran on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerVersions {
    /// PyTorch's version.
    #[serde(default)]
    pub torch: String,
    /// Opacus's version.
    #[serde(default)]
    pub opacus: String,
    /// transformers' version.
    #[serde(default)]
    pub transformers: String,
    /// PyTorch's intra-op threads.
    #[serde(default)]
    pub threads: usize,
    /// The BLAS library loaded.
    #[serde(default)]
    pub blas: String,
}

/// Median, min and max of a set of times.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `xs` (NaN for none).
    pub fn of(xs: &[f64]) -> Self {
        let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if xs.is_empty() {
            return Self {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        Self {
            median: median(xs.to_vec()),
            min,
            max,
        }
    }
}

/// The peer's steps of one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerResult {
    /// PyTorch's non-private step (s).
    pub pytorch_nonprivate: Spread,
    /// Opacus's DP step (s).
    pub opacus_dp: Spread,
    /// Median peak resident MiB of the peer over its non-private step.
    pub pytorch_nonprivate_peak_mib: f64,
    /// The same over its DP step.
    pub opacus_dp_peak_mib: f64,
    /// Every step pair.
    pub samples: Vec<PeerRep>,
}

impl PeerResult {
    /// Summarises the peer's step pairs.
    pub fn from_reps(reps: &[PeerRep]) -> Self {
        let col = |f: fn(&PeerRep) -> f64| reps.iter().map(f).collect::<Vec<f64>>();
        Self {
            pytorch_nonprivate: Spread::of(&col(|r| r.nonprivate_s)),
            opacus_dp: Spread::of(&col(|r| r.dp_s)),
            pytorch_nonprivate_peak_mib: median(col(|r| r.nonprivate_peak_mib)),
            opacus_dp_peak_mib: median(col(|r| r.dp_peak_mib)),
            samples: reps.to_vec(),
        }
    }
}

/// One row of the side-by-side comparison, medians (the `peer_rows` of the JSON report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerRow {
    /// The model.
    pub model: String,
    /// The trainable set.
    pub trainable: String,
    /// Examples per step.
    pub batch: usize,
    /// Tokens per example.
    pub seq_len: usize,
    /// dpselft's non-private step (s).
    pub dpselft_nonprivate_s: f64,
    /// dpselft's DP step (s).
    pub dpselft_dp_s: f64,
    /// PyTorch's non-private step (s).
    pub pytorch_nonprivate_s: f64,
    /// Opacus's DP step (s).
    pub opacus_dp_s: f64,
    /// dpselft's DP step peak resident MiB (None without the memory probes).
    pub dpselft_dp_peak_mib: Option<f64>,
    /// dpselft's non-private step peak resident MiB.
    pub dpselft_nonprivate_peak_mib: Option<f64>,
    /// Opacus's DP step peak resident MiB.
    pub opacus_dp_peak_mib: f64,
    /// PyTorch's non-private step peak resident MiB.
    pub pytorch_nonprivate_peak_mib: f64,
}

impl PeerRow {
    /// The side-by-side rows of every row that has a peer.
    pub fn side_by_side(batch: usize, seq_len: usize, rows: &[Row]) -> Vec<Self> {
        rows.iter()
            .filter_map(|r| {
                let p = r.peer.as_ref()?;
                Some(PeerRow {
                    model: r.model.clone(),
                    trainable: r.trainable.clone(),
                    batch,
                    seq_len,
                    dpselft_nonprivate_s: r.non_private.median.total,
                    dpselft_dp_s: r.dp.median.total,
                    pytorch_nonprivate_s: p.pytorch_nonprivate.median,
                    opacus_dp_s: p.opacus_dp.median,
                    dpselft_dp_peak_mib: r.dp.memory.map(|m| m.peak_mib),
                    dpselft_nonprivate_peak_mib: r.non_private.memory.map(|m| m.peak_mib),
                    opacus_dp_peak_mib: p.opacus_dp_peak_mib,
                    pytorch_nonprivate_peak_mib: p.pytorch_nonprivate_peak_mib,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step_cost::{MemoryProbe, Phases};
    use dpselft_model::TrainableSpec;

    fn phases(total: f64) -> Phases {
        Phases {
            total,
            ..Phases::default()
        }
    }

    #[test]
    fn a_spread_is_the_median_and_the_extremes() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert!(Spread::of(&[]).median.is_nan());
    }

    #[test]
    fn side_by_side_rows_carry_both_medians_and_only_rows_with_a_peer() {
        let spec = TrainableSpec::parse("head").unwrap();
        let mem = |peak_mib| MemoryProbe {
            before_mib: 100.0,
            peak_mib,
            growth_mib: peak_mib - 100.0,
        };
        let samples = [phases(1.0), phases(3.0), phases(2.0)];
        let dp = [phases(2.0), phases(4.0), phases(3.0)];
        let mut with_peer = Row::from_samples(
            "m",
            &spec,
            10,
            (&samples, &dp),
            (Some(mem(400.0)), Some(mem(420.0))),
        );
        let rep = |np, dp| PeerRep {
            nonprivate_s: np,
            dp_s: dp,
            nonprivate_peak_mib: 500.0,
            dp_peak_mib: 600.0,
        };
        with_peer.peer = Some(PeerResult::from_reps(&[
            rep(4.0, 8.0),
            rep(5.0, 9.0),
            rep(6.0, 7.0),
        ]));
        let without = Row::from_samples("m2", &spec, 10, (&samples, &dp), (None, None));
        let rows = PeerRow::side_by_side(32, 128, &[with_peer, without]);
        assert_eq!(
            rows,
            vec![PeerRow {
                model: "m".into(),
                trainable: "head".into(),
                batch: 32,
                seq_len: 128,
                dpselft_nonprivate_s: 2.0,
                dpselft_dp_s: 3.0,
                pytorch_nonprivate_s: 5.0,
                opacus_dp_s: 8.0,
                dpselft_dp_peak_mib: Some(420.0),
                dpselft_nonprivate_peak_mib: Some(400.0),
                opacus_dp_peak_mib: 600.0,
                pytorch_nonprivate_peak_mib: 500.0,
            }]
        );
    }
}
