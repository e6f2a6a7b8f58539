//! The selection's candidate strategies: which block sets a search tries.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SelftError};

/// Which candidate sets are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Candidates {
    /// Each block alone.
    Singles,
    /// Every contiguous run of 1..=k blocks.
    Windows(usize),
    /// Singles, then grow the best set one block at a time while the score improves, up to k.
    Greedy(usize),
}

impl std::str::FromStr for Candidates {
    type Err = SelftError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            SelftError::Config(format!(
                "candidates `{s}`: expected `singles`, `windows:K` or `greedy:K` (K ≥ 1)"
            ))
        };
        let k = |v: &str| v.parse::<usize>().ok().filter(|&k| k >= 1).ok_or_else(bad);
        match s.split_once(':') {
            None if s == "singles" => Ok(Self::Singles),
            Some(("windows", v)) => Ok(Self::Windows(k(v)?)),
            Some(("greedy", v)) => Ok(Self::Greedy(k(v)?)),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for Candidates {
    type Error = SelftError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Candidates> for String {
    fn from(c: Candidates) -> String {
        match c {
            Candidates::Singles => "singles".into(),
            Candidates::Windows(k) => format!("windows:{k}"),
            Candidates::Greedy(k) => format!("greedy:{k}"),
        }
    }
}

/// The block sets of the non-greedy strategies.
pub fn candidate_sets(candidates: Candidates, num_blocks: usize) -> Vec<Vec<usize>> {
    match candidates {
        Candidates::Singles | Candidates::Greedy(_) => (0..num_blocks).map(|i| vec![i]).collect(),
        Candidates::Windows(k) => (1..=k.min(num_blocks))
            .flat_map(|w| (0..=num_blocks - w).map(move |s| (s..s + w).collect()))
            .collect(),
    }
}
