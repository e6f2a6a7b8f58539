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

/// Cuts `data` into the examples kept and a seeded random held-out `fraction` of them (rounded,
/// at least one and at most n − 1; none when n < 2), both in file order and with `data`'s labels: the
/// validation split of the utility grid's baselines and the selection bench's held-out part.
///
/// Examples with a [`Example::group`](crate::Example::group) are held out with their whole group
/// (the groups in a seeded order until `fraction` of the examples is reached, so the held-out
/// share is the fraction rounded to whole groups): correlated examples on both sides would make
/// the held-out score an overstatement of what unseen groups get. An example without a group is a
/// group of its own, so data without groups split exactly as before. Data of a single group
/// gives an empty held-out part (callers refuse it).
pub fn split_held_out(data: &Dataset, fraction: f64, seed: u64) -> (Dataset, Dataset) {
    let n = data.len();
    let held = match n {
        0 | 1 => 0,
        _ => ((n as f64 * fraction).round() as usize).clamp(1, n - 1),
    };
    let mut is_held = vec![false; n];
    if data.examples.iter().all(|e| e.group.is_none()) {
        for i in SeededChoice::new(seed).sorted_choice(held, n) {
            is_held[i] = true;
        }
    } else {
        hold_out_groups(data, held, seed, &mut is_held);
    }
    let part = |keep: bool| Dataset {
        examples: (0..n)
            .filter(|&i| is_held[i] == keep)
            .map(|i| data.examples[i].clone())
            .collect(),
        labels: data.labels.clone(),
    };
    (part(false), part(true))
}

/// Marks whole groups (first-seen order, then a seeded shuffle) as held out until at least
/// `held` examples are, never all of them.
fn hold_out_groups(data: &Dataset, held: usize, seed: u64, is_held: &mut [bool]) {
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, e) in data.examples.iter().enumerate() {
        let g = match &e.group {
            Some(name) => *index.entry(name.as_str()).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            }),
            None => {
                members.push(Vec::new());
                members.len() - 1
            }
        };
        members[g].push(i);
    }
    let mut order: Vec<usize> = (0..members.len()).collect();
    let mut rng = SeededChoice::new(seed);
    fisher_yates(&mut order, || rng.uniform_f64());
    let n = data.len();
    let mut taken = 0;
    for g in order {
        if taken >= held || taken + members[g].len() >= n {
            continue;
        }
        for &i in &members[g] {
            is_held[i] = true;
        }
        taken += members[g].len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Example;

    fn data(n: usize) -> Dataset {
        Dataset {
            examples: (0..n)
                .map(|i| Example {
                    text: format!("text {i}"),
                    label: Some(i % 2),
                    group: None,
                })
                .collect(),
            labels: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn a_held_out_split_partitions_the_data_in_file_order() {
        let d = data(50);
        let (kept, held) = split_held_out(&d, 0.1, 7);
        assert_eq!((kept.len(), held.len()), (45, 5));
        let mut all: Vec<&str> = kept
            .examples
            .iter()
            .chain(&held.examples)
            .map(|e| e.text.as_str())
            .collect();
        all.sort_unstable();
        let mut want: Vec<&str> = d.examples.iter().map(|e| e.text.as_str()).collect();
        want.sort_unstable();
        assert_eq!(all, want, "every example in exactly one part");
        let index = |e: &Example| e.text[5..].parse::<usize>().unwrap();
        assert!(
            held.examples
                .windows(2)
                .all(|w| index(&w[0]) < index(&w[1]))
        );
        assert_eq!(held.labels, d.labels);
        // Seeded: the same seed, the same split; another seed, another.
        assert_eq!(split_held_out(&d, 0.1, 7).1.examples, held.examples);
        assert_ne!(split_held_out(&d, 0.1, 8).1.examples, held.examples);
    }

    #[test]
    fn groups_are_held_out_whole() {
        let mut d = data(50);
        for (i, e) in d.examples.iter_mut().enumerate() {
            // Ten groups of five; examples 45.. without a group (singletons).
            e.group = (i < 45).then(|| format!("doc{}", i / 5));
        }
        let (kept, held) = split_held_out(&d, 0.2, 7);
        assert_eq!(kept.len() + held.len(), 50);
        assert!(held.len() >= 10 && held.len() < 15, "{}", held.len());
        let groups = |s: &Dataset| -> std::collections::BTreeSet<String> {
            s.examples.iter().filter_map(|e| e.group.clone()).collect()
        };
        assert!(
            groups(&kept).is_disjoint(&groups(&held)),
            "a group on both sides"
        );
        assert_eq!(split_held_out(&d, 0.2, 7).1.examples, held.examples);
        // One group: nothing can be held out without taking all of it.
        for e in &mut d.examples {
            e.group = Some("one".into());
        }
        let (kept, held) = split_held_out(&d, 0.2, 7);
        assert_eq!((kept.len(), held.len()), (50, 0));
    }

    #[test]
    fn a_held_out_split_keeps_one_example_on_each_side() {
        assert_eq!(split_held_out(&data(10), 0.01, 1).1.len(), 1);
        assert_eq!(split_held_out(&data(10), 0.99, 1).0.len(), 1);
        assert_eq!(split_held_out(&data(1), 0.5, 1).1.len(), 0);
        assert_eq!(split_held_out(&data(0), 0.5, 1).0.len(), 0);
    }
}
