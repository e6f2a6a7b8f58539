//! Seeded experiment choices: which examples a run uses (`--limit`, the utility grid's subsets)
//! and which blocks `random-k` trains. Public randomness, drawn before and independently of any
//! training; kept apart from the privacy noise (the dp crate's `NoiseRng`), which only shares
//! the one Fisher–Yates shuffle below.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::Dataset;

/// Maps 64 random bits to [0, 1): the top 53 bits (an f64's mantissa) scaled by 2⁻⁵³, so every
/// multiple of 2⁻⁵³ is equally likely. Shared with the dp crate's noise RNG (its hot path: inline).
#[inline]
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Shuffles `items` in place (Fisher–Yates, from the end), `uniform` giving one draw in [0, 1)
/// per position.
pub fn fisher_yates<T>(items: &mut [T], mut uniform: impl FnMut() -> f64) {
    for i in (1..items.len()).rev() {
        let j = ((uniform() * (i + 1) as f64) as usize).min(i);
        items.swap(i, j);
    }
}

/// A seeded ChaCha20 stream for experiment choices (reproducible on every platform).
#[derive(Debug, Clone)]
pub struct SeededChoice {
    rng: ChaCha20Rng,
}

impl SeededChoice {
    /// The stream of `seed` (the key expanded by `rand_core`'s portable `seed_from_u64`).
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// A uniform `f64` in [0, 1) with 53 random bits.
    pub fn uniform_f64(&mut self) -> f64 {
        unit_f64(self.rng.next_u64())
    }

    /// `k` of `0..n` (all of them if k ≥ n), sorted.
    pub fn sorted_choice(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        fisher_yates(&mut all, || self.uniform_f64());
        let mut chosen = all[..k.min(n)].to_vec();
        chosen.sort_unstable();
        chosen
    }
}

/// Keeps a seeded random subset of `limit` examples of `data` (in file order); nothing changes
/// when it has at most `limit`.
pub fn subset(data: &mut Dataset, limit: usize, seed: u64) {
    if data.len() <= limit {
        return;
    }
    let keep = SeededChoice::new(seed).sorted_choice(limit, data.len());
    data.examples = keep.iter().map(|&i| data.examples[i].clone()).collect();
}
