//! `bench/methods.toml` and the methods of the grid: settings shared by every method, each
//! method's own, and [`Method`], a method name parsed once into what it means.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use dpselft_model::TrainableSpec;
use dpselft_selft::error::{Result, SelftError, io_err};
use dpselft_selft::synth::SYNTHESIZERS;
use dpselft_selft::{Perturbation, RateSearch};
use serde::{Deserialize, Serialize};

/// `bench/methods.toml`: settings shared by every method, and each method's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodsFile {
    /// Shared by every method (the same data, batch, epochs and clip norm for all).
    pub defaults: MethodDefaults,
    /// Per method (keyed by its name, parsed once into a [`Method`]).
    pub methods: BTreeMap<Method, MethodSettings>,
}

/// Settings every method shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodDefaults {
    /// Expected batch size B.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: f64,
    /// Clip norm C.
    pub clip: f64,
    /// Tokens per example.
    pub max_seq_len: usize,
    /// δ.
    pub delta: f64,
    /// The learning rates every method chooses from (one rule for all): a baseline trains at
    /// each and keeps the best on its validation split; dp-selft trains its chosen set at each
    /// on the synthetic data and keeps the best on S_val.
    pub lr_grid: Vec<f64>,
    /// The share of the private training split a baseline holds out to choose its learning
    /// rate (the literature's convention; that choice's privacy cost is not accounted).
    pub validation_fraction: f64,
    /// Padded tokens per micro-batch of every run (a memory setting: it changes no result).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
}

fn default_max_tokens() -> usize {
    8192
}

/// One method's own settings (its learning rate is chosen from the shared grid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSettings {
    /// The trainable set (baselines); dp-selft methods choose their own.
    #[serde(default)]
    pub trainable: Option<TrainableSpec>,
    /// Train K blocks drawn at random (seeded by the cell's seed) and the head.
    #[serde(default)]
    pub random_k: Option<usize>,
}

impl MethodsFile {
    /// Reads and checks a methods file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        let file: Self = toml::from_str(&text).map_err(|e| SelftError::Format {
            path: path.to_path_buf(),
            message: format!("not a methods file: {e}"),
        })?;
        file.defaults
            .check()
            .map_err(|message| SelftError::Format {
                path: path.to_path_buf(),
                message,
            })?;
        for (method, m) in &file.methods {
            let needs_set = matches!(method.kind(), MethodKind::Baseline | MethodKind::NonPrivate);
            if needs_set && m.trainable.is_none() && m.random_k.is_none() {
                return Err(SelftError::Format {
                    path: path.to_path_buf(),
                    message: format!("method `{method}` needs `trainable` or `random_k`"),
                });
            }
        }
        Ok(file)
    }

    /// The settings of `method`, or an error naming the methods the file has.
    pub fn settings(&self, method: &Method) -> Result<&MethodSettings> {
        self.methods.get(method).ok_or_else(|| {
            let names: Vec<String> = self.methods.keys().map(ToString::to_string).collect();
            SelftError::Config(format!(
                "method `{method}` is not in the methods file (it has: {})",
                names.join(", ")
            ))
        })
    }
}

impl MethodDefaults {
    /// The learning-rate grid is non-empty and positive, the validation share in (0, 0.5].
    fn check(&self) -> std::result::Result<(), String> {
        if self.lr_grid.is_empty() {
            return Err("defaults.lr_grid: at least one learning rate is needed".into());
        }
        if let Some(lr) = self.lr_grid.iter().find(|l| !(l.is_finite() && **l > 0.0)) {
            return Err(format!("defaults.lr_grid: {lr} is not a learning rate > 0"));
        }
        if self.max_tokens == 0 {
            return Err("defaults.max_tokens: at least one token per micro-batch is needed".into());
        }
        let f = self.validation_fraction;
        if !(f > 0.0 && f <= 0.5) {
            return Err(format!(
                "defaults.validation_fraction: {f} is not a share in (0, 0.5]"
            ));
        }
        Ok(())
    }
}

/// A dp-selft method's own choices: the selection's perturbation, rate search and steps, the
/// synthesizer and the candidate budget. Whatever is not named is the run's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelftVariant {
    /// `perturb=`: the selection's perturbation.
    pub perturbation: Option<Perturbation>,
    /// `rates=winner|per-candidate`: where the learning-rate grid is searched.
    pub rate_search: Option<RateSearch>,
    /// `steps=<f>`: the candidates' (and the rate trials') steps as a fraction of T, in (0, 1].
    pub step_fraction: Option<f64>,
    /// `synth=`: one of [`SYNTHESIZERS`] with its default settings (default: the run's default).
    pub synthesizer: Option<&'static str>,
    /// `budget=N`: at most N candidate sets trained (`select.max_candidates`; default: the
    /// whole search) — what makes the search affordable on a 30-block decoder.
    pub max_candidates: Option<usize>,
    /// `sub-blocks=on`: after the block search, the chosen blocks' attention, MLP and norms
    /// alone are candidates too (`select.sub_blocks`).
    pub sub_blocks: bool,
}

impl SelftVariant {
    /// Plain `dp-selft`: the run's defaults.
    pub const DEFAULT: SelftVariant = SelftVariant {
        perturbation: None,
        rate_search: None,
        step_fraction: None,
        synthesizer: None,
        max_candidates: None,
        sub_blocks: false,
    };

    /// The options after `dp-selft:`, comma-separated `perturb=<regime>`,
    /// `rates=winner|per-candidate`, `steps=<fraction of T>`, `synth=<name>`, `budget=<N ≥ 1>`
    /// and `sub-blocks=on|off`.
    fn parse(options: &str) -> std::result::Result<Self, String> {
        let mut v = Self::DEFAULT;
        for option in options.split(',') {
            match option.split_once('=') {
                Some(("perturb", p)) => {
                    v.perturbation = Some(p.parse().map_err(|e| format!("{e}"))?);
                }
                Some(("rates", r)) => v.rate_search = Some(r.parse().map_err(|e| format!("{e}"))?),
                Some(("steps", f)) => match f.parse::<f64>() {
                    Ok(f) if f > 0.0 && f <= 1.0 => v.step_fraction = Some(f),
                    _ => return Err(format!("steps={f}: expected a fraction of T in (0, 1]")),
                },
                Some(("synth", s)) => {
                    let known = SYNTHESIZERS.iter().find(|&&k| k == s);
                    v.synthesizer = Some(known.ok_or_else(|| {
                        format!("synth={s}: expected {}", SYNTHESIZERS.join(" or "))
                    })?);
                }
                Some(("budget", n)) => match n.parse::<usize>() {
                    Ok(n) if n > 0 => v.max_candidates = Some(n),
                    _ => return Err(format!("budget={n}: expected a number of candidates ≥ 1")),
                },
                Some(("sub-blocks", on)) => {
                    v.sub_blocks = match on {
                        "on" => true,
                        "off" => false,
                        _ => return Err(format!("sub-blocks={on}: expected on or off")),
                    }
                }
                _ => {
                    return Err(format!(
                        "`{option}` is not perturb=<regime>, rates=<search>, steps=<f>, \
                         synth=<name>, budget=<N> or sub-blocks=on|off"
                    ));
                }
            }
        }
        Ok(v)
    }
}

/// What kind of run a method is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MethodKind {
    /// `dp-selft`, or `dp-selft:` with options (`perturb=<regime>`, `rates=<search>`, ...).
    Selft(SelftVariant),
    /// DP fine-tuning of a fixed trainable set.
    Baseline,
    /// `non-private`: no clipping, no noise (ε = ∞).
    NonPrivate,
}

/// A method of the grid: its name (a section of the methods file, a column of the tables) and
/// what the name means, parsed once. Prints and serialises as its name, and is equal and
/// ordered by it (the kind follows from the name).
#[derive(Debug, Clone)]
pub struct Method {
    name: String,
    kind: MethodKind,
}

impl Method {
    /// The method's kind.
    pub fn kind(&self) -> MethodKind {
        self.kind
    }

    /// The method's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl FromStr for Method {
    type Err = SelftError;

    /// `dp-selft`, `dp-selft:<options>` (e.g. `dp-selft:perturb=none`,
    /// `dp-selft:synth=private-evolution`, both comma-separated), `non-private`, or any other
    /// name (a baseline with a fixed trainable set).
    fn from_str(name: &str) -> Result<Self> {
        let kind = match name {
            "dp-selft" => MethodKind::Selft(SelftVariant::DEFAULT),
            "non-private" => MethodKind::NonPrivate,
            _ => match name.strip_prefix("dp-selft:") {
                Some(options) => MethodKind::Selft(
                    SelftVariant::parse(options)
                        .map_err(|e| SelftError::Config(format!("method `{name}`: {e}")))?,
                ),
                None if name.starts_with("dp-selft") => {
                    return Err(SelftError::Config(format!(
                        "method `{name}`: expected dp-selft or dp-selft:<options> \
                         (perturb=worst-case|gaussian|none, rates=winner|per-candidate, \
                         steps=<fraction>, synth=dp-generator|private-evolution, budget=N, \
                         sub-blocks=on|off)"
                    )));
                }
                None => MethodKind::Baseline,
            },
        };
        Ok(Self {
            name: name.to_string(),
            kind,
        })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Method {}

impl PartialOrd for Method {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Method {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selft(name: &str) -> SelftVariant {
        match name.parse::<Method>().unwrap().kind() {
            MethodKind::Selft(v) => v,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn dp_selft_options_parse_into_a_variant() {
        assert_eq!(selft("dp-selft"), SelftVariant::DEFAULT);
        assert_eq!(
            selft("dp-selft:perturb=none").perturbation,
            Some(Perturbation::None)
        );
        let both = selft("dp-selft:synth=private-evolution,perturb=gaussian");
        assert_eq!(both.perturbation, Some(Perturbation::Gaussian));
        let design = selft("dp-selft:rates=per-candidate,steps=1");
        assert_eq!(design.rate_search, Some(RateSearch::PerCandidate));
        assert_eq!(design.step_fraction, Some(1.0));
        assert_eq!(selft("dp-selft").rate_search, None);
        assert_eq!(both.synthesizer, Some("private-evolution"));
        assert_eq!(selft("dp-selft:budget=4").max_candidates, Some(4));
        assert_eq!(selft("dp-selft").max_candidates, None);
        assert!(selft("dp-selft:sub-blocks=on,budget=6").sub_blocks);
        assert!(!selft("dp-selft").sub_blocks);
        for bad in [
            "dp-selft:budget=0",
            "dp-selft:budget=x",
            "dp-selft:sub-blocks=yes",
            "dp-selft:synth=gpt",
            "dp-selft:steps=0",
            "dp-selft:steps=1.5",
            "dp-selft:rates=all",
            "dp-selft:lr=1",
            "dp-selft:",
            "dp-selftish",
        ] {
            let err = bad.parse::<Method>().unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        assert_eq!(
            "head".parse::<Method>().unwrap().kind(),
            MethodKind::Baseline
        );
    }
}
