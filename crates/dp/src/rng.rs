//! The CSPRNG behind every random choice that privacy depends on (Poisson sampling, noise).
//!
//! ChaCha20 with a 256-bit key. By default the key comes from the operating system, so nobody,
//! including whoever runs the training, can predict or replay the noise. An explicit seed makes an
//! experiment reproducible; the RNG remembers which of the two it was so that ledgers and reports
//! can say so ([`NoiseRng::is_seeded`]).
//!
//! The state ([`NoiseRngState`]) is the key, the stream number and the word position, so a
//! checkpoint resumes exactly the same stream. **The state is a secret**: anyone who has it can
//! regenerate the noise that was added and subtract it. Keep checkpoints private; release only
//! the final model and the ledger.

use rand_chacha::ChaCha20Rng;

pub(crate) use dpselft_data::subset::unit_f64;
use rand_chacha::rand_core::{CryptoRng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{DpError, Result};

/// Where the key of a [`NoiseRng`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedSource {
    /// 256 bits from the operating system's CSPRNG: the noise is unpredictable (the DP default).
    Os,
    /// A user-supplied seed: reproducible, and only as secret as the seed. Reports must say so.
    Explicit,
}

/// A ChaCha20 random stream for sampling and noise.
///
/// Deliberately not `Clone`: two copies would hand out the same "fresh" noise twice, and noise
/// reused across coordinates or steps voids the Gaussian mechanism's guarantee. Use
/// [`NoiseRng::split`] for an independent stream. Its `Debug` output shows no key material.
pub struct NoiseRng {
    rng: ChaCha20Rng,
    source: SeedSource,
}

/// The serialisable state of a [`NoiseRng`]: enough to resume its exact stream.
///
/// Secret: see the module documentation (its `Debug` output includes the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseRngState {
    /// Always `"chacha20"`; checked on restore.
    pub algorithm: String,
    /// The 256-bit key, as 64 lowercase hex digits.
    pub key_hex: String,
    /// The ChaCha stream (nonce).
    pub stream: u64,
    /// Position in the stream in 32-bit words, as a decimal string (it is a 68-bit number).
    pub word_pos: String,
    /// Where the key came from.
    pub source: SeedSource,
}

impl NoiseRng {
    /// A fresh RNG keyed with 256 bits from the operating system. This is what DP training uses
    /// unless the user asks for a reproducible run.
    pub fn from_os_rng() -> Result<Self> {
        let rng = ChaCha20Rng::try_from_os_rng().map_err(|e| DpError::OsRng(e.to_string()))?;
        Ok(Self {
            rng,
            source: SeedSource::Os,
        })
    }

    /// A reproducible RNG from a 64-bit seed (the key is the seed expanded by `rand_core`'s
    /// portable `seed_from_u64`). The same seed gives the same stream on every platform.
    ///
    /// Privacy: the noise is then only as unpredictable as the seed; [`Self::is_seeded`] is true.
    pub fn from_seed(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
            source: SeedSource::Explicit,
        }
    }

    /// A reproducible RNG from a full 256-bit key.
    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            rng: ChaCha20Rng::from_seed(key),
            source: SeedSource::Explicit,
        }
    }

    /// Where the key came from.
    pub fn seed_source(&self) -> SeedSource {
        self.source
    }

    /// True when the stream was seeded explicitly (reproducible, not secret by construction).
    pub fn is_seeded(&self) -> bool {
        self.source == SeedSource::Explicit
    }

    /// An independent child RNG keyed with 256 bits drawn from this one (e.g. one for sampling,
    /// one for noise). It inherits the seed source: a child of a seeded RNG is reproducible too.
    pub fn split(&mut self) -> NoiseRng {
        Self {
            rng: ChaCha20Rng::from_seed(self.draw_key()),
            source: self.source,
        }
    }

    /// 256 fresh bits for keying a sub-generator.
    pub(crate) fn draw_key(&mut self) -> [u8; 32] {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        key
    }

    /// A uniform `f64` in [0, 1) with 53 random bits (every multiple of 2⁻⁵³ equally likely).
    pub fn uniform_f64(&mut self) -> f64 {
        unit_f64(self.rng.next_u64())
    }

    /// Shuffles `items` in place (Fisher–Yates, one [`Self::uniform_f64`] draw per position from
    /// the end).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        dpselft_data::fisher_yates(items, || self.uniform_f64());
    }

    /// The state to save in a checkpoint; [`Self::from_state`] resumes the exact stream.
    pub fn state(&self) -> NoiseRngState {
        NoiseRngState {
            algorithm: "chacha20".to_string(),
            key_hex: self
                .rng
                .get_seed()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            stream: self.rng.get_stream(),
            word_pos: self.rng.get_word_pos().to_string(),
            source: self.source,
        }
    }

    /// Rebuild an RNG from a saved state; the next output is the one the saved RNG would have
    /// produced next.
    pub fn from_state(state: &NoiseRngState) -> Result<Self> {
        if state.algorithm != "chacha20" {
            return Err(DpError::State(format!(
                "RNG algorithm {:?}, expected \"chacha20\"",
                state.algorithm
            )));
        }
        let key = parse_key(&state.key_hex)?;
        let word_pos: u128 = state.word_pos.parse().map_err(|_| {
            DpError::State(format!(
                "RNG word_pos {:?} is not a decimal integer",
                state.word_pos
            ))
        })?;
        let mut rng = ChaCha20Rng::from_seed(key);
        rng.set_stream(state.stream);
        rng.set_word_pos(word_pos);
        Ok(Self {
            rng,
            source: state.source,
        })
    }
}

impl std::fmt::Debug for NoiseRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseRng")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl RngCore for NoiseRng {
    fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.rng.fill_bytes(dst)
    }
}

impl CryptoRng for NoiseRng {}

fn parse_key(hex: &str) -> Result<[u8; 32]> {
    let bad = || DpError::State(format!("RNG key must be 64 hex digits, got {:?}", hex));
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(key)
}
