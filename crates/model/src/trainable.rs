//! Trainable sets: a text spec (`head,block.4,block.5`, `lora:r=8;head`, `bitfit`, `last:2`,
//! `all`) parsed with clear errors, resolved against a model into parameter names, and applied
//! (LoRA factors created, chosen parameters turned into variables).
//!
//! Grammar: items separated by `,` or `;`. Units: `embeddings`, `block.N`, `block.A-B`
//! (inclusive), `block.N.attn` / `block.N.mlp` / `block.N.norms` (a part of block N: its
//! attention projections, its feed-forward network, its norms), `final_norm`, `head`, `all`
//! (every unit), `last:K` / `first:K` (the top / bottom K blocks). Adapters: `bitfit` (every
//! bias and norm weight), `lora[:r=R][,alpha=A][,targets=q+v]` (targets among q, k, v, o, gate,
//! up, down; defaults r = 8, α = 16, targets q+v); a `key=value` item after `lora` belongs to
//! it.

use std::collections::BTreeSet;

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{ModelError, Result};
use crate::model::Model;
use crate::units::{BlockPart, UnitId, part_params, unit_params};

/// A unit selector before resolution against a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UnitSel {
    /// One unit.
    Unit(UnitId),
    /// Blocks a..=b.
    Blocks(usize, usize),
    /// Every unit.
    All,
    /// The top K blocks.
    Last(usize),
    /// The bottom K blocks.
    First(usize),
    /// One part of block i.
    Part(usize, BlockPart),
}

/// LoRA settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Rank r.
    pub r: usize,
    /// Scale numerator α (the update is (α/r)·B A).
    pub alpha: f64,
    /// Projections adapted, among q, k, v, o, gate, up, down.
    pub targets: Vec<String>,
}

impl Default for LoraSpec {
    fn default() -> Self {
        Self {
            r: 8,
            alpha: 16.0,
            targets: vec!["q".into(), "v".into()],
        }
    }
}

/// A parsed trainable-set spec: parsed once at the edge ([`TrainableSpec::parse`], or
/// [`std::str::FromStr`]), then passed as this type. It prints ([`std::fmt::Display`]) and
/// serialises as the text it was parsed from, so configurations and reports keep the user's
/// spelling and `parse(&spec.to_string()) == spec`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainableSpec {
    /// Units selected.
    pub units: Vec<UnitSel>,
    /// LoRA adapter, if any.
    pub lora: Option<LoraSpec>,
    /// BitFit (biases and norm weights of every block, plus embedding/final norms).
    pub bitfit: bool,
    /// The spec's text (trimmed).
    text: String,
}

impl std::fmt::Display for TrainableSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for TrainableSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl serde::Serialize for TrainableSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for TrainableSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

const LORA_TARGETS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

impl TrainableSpec {
    /// Parses a spec; errors name the offending item and what was expected.
    pub fn parse(spec: &str) -> Result<Self> {
        let err = |what: String| ModelError::TrainableSpec {
            spec: spec.to_string(),
            what,
        };
        let mut out = TrainableSpec {
            text: spec.trim().to_string(),
            ..TrainableSpec::default()
        };
        let mut in_lora = false;
        let items = spec_items(spec);
        if items.is_empty() {
            return Err(err(
                "empty: expected units such as `head,block.4` or `lora:r=8;head`".into(),
            ));
        }
        for item in items {
            let lower = item.to_ascii_lowercase();
            let (key, arg) = match lower.split_once(':') {
                Some((k, a)) => (k.to_string(), Some(a.to_string())),
                None => (lower.clone(), None),
            };
            if key == "lora" {
                out.lora = Some(LoraSpec::default());
                in_lora = true;
                if let Some(a) = arg {
                    apply_lora_kv(out.lora.as_mut(), &a).map_err(err)?;
                }
                continue;
            }
            if lower.contains('=') {
                if !in_lora {
                    return Err(err(format!(
                        "`{item}`: a key=value option must follow `lora`"
                    )));
                }
                apply_lora_kv(out.lora.as_mut(), &lower).map_err(err)?;
                continue;
            }
            in_lora = false;
            match parse_plain_item(item, &lower, &key, arg).map_err(err)? {
                PlainItem::Unit(sel) => out.units.push(sel),
                PlainItem::Bitfit => out.bitfit = true,
            }
        }
        Ok(out)
    }

    /// The head (if `head`) and the blocks `blocks`, in order: `head,block.1,block.3`.
    pub fn head_and_blocks(head: bool, blocks: &[usize]) -> Self {
        Self::head_and_block_parts(head, blocks, None)
    }

    /// The head (if `head`) and, of each block of `blocks`, the whole block or only `part`:
    /// `head,block.1.mlp,block.3.mlp`.
    pub fn head_and_block_parts(head: bool, blocks: &[usize], part: Option<BlockPart>) -> Self {
        let mut units: Vec<UnitSel> = Vec::new();
        let mut items: Vec<String> = Vec::new();
        if head {
            units.push(UnitSel::Unit(UnitId::Head));
            items.push("head".into());
        }
        for &b in blocks {
            match part {
                None => {
                    units.push(UnitSel::Unit(UnitId::Block(b)));
                    items.push(format!("block.{b}"));
                }
                Some(p) => {
                    units.push(UnitSel::Part(b, p));
                    items.push(format!("block.{b}.{}", p.name()));
                }
            }
        }
        Self {
            units,
            text: items.join(","),
            ..Self::default()
        }
    }

    /// Whether the spec trains nothing at all (the empty set: `head_and_blocks(false, &[])`).
    pub fn is_empty(&self) -> bool {
        self.units.is_empty() && self.lora.is_none() && !self.bitfit
    }

    /// The parameter names this spec trains in `m` (after [`apply`] created LoRA factors).
    /// Errors name units the model does not have.
    pub fn resolve(&self, m: &Model) -> Result<Vec<String>> {
        let l = m.num_blocks();
        let err = |what: String| ModelError::TrainableSpec {
            spec: self.text.clone(),
            what,
        };
        let mut ids: BTreeSet<UnitId> = BTreeSet::new();
        let mut parts: BTreeSet<(usize, BlockPart)> = BTreeSet::new();
        for sel in &self.units {
            match *sel {
                UnitSel::Unit(UnitId::Block(i))
                | UnitSel::Blocks(i, _)
                | UnitSel::Blocks(_, i)
                | UnitSel::Part(i, _)
                    if i >= l =>
                {
                    return Err(err(format!(
                        "block {i} does not exist (the model has blocks 0..{})",
                        l.saturating_sub(1)
                    )));
                }
                UnitSel::Unit(UnitId::FinalNorm) if !m.has_final_norm() => {
                    return Err(err(format!(
                        "final_norm: this {} model has no final norm",
                        m.family()
                    )));
                }
                UnitSel::Unit(u) => {
                    ids.insert(u);
                }
                UnitSel::Blocks(a, b) => ids.extend((a.min(b)..=a.max(b)).map(UnitId::Block)),
                UnitSel::All => {
                    ids.insert(UnitId::Embeddings);
                    ids.extend((0..l).map(UnitId::Block));
                    if m.has_final_norm() {
                        ids.insert(UnitId::FinalNorm);
                    }
                    ids.insert(UnitId::Head);
                }
                UnitSel::Last(k) | UnitSel::First(k) if k > l => {
                    return Err(err(format!("{k} blocks asked, the model has {l}")));
                }
                UnitSel::Last(k) => ids.extend((l - k..l).map(UnitId::Block)),
                UnitSel::First(k) => ids.extend((0..k).map(UnitId::Block)),
                UnitSel::Part(i, part) => {
                    parts.insert((i, part));
                }
            }
        }
        let mut names: BTreeSet<String> = BTreeSet::new();
        for (i, part) in parts {
            names.extend(part_params(m, i, part));
        }
        for id in ids {
            for n in unit_params(m, id) {
                // LoRA factors are trained through `lora`, base weights through units.
                if !n.contains(".lora_") {
                    names.insert(n);
                }
            }
        }
        if self.bitfit {
            for (n, _) in m.params.iter() {
                if is_bitfit_param(n) {
                    names.insert(n.clone());
                }
            }
        }
        if self.lora.is_some() {
            for (n, _) in m.params.iter() {
                if n.contains(".lora_") {
                    names.insert(n.clone());
                }
            }
        }
        Ok(names.into_iter().collect())
    }
}

/// The items of a spec: split at `,` and `;`, trimmed, empty ones dropped.
fn spec_items(spec: &str) -> Vec<&str> {
    spec.split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// An item of a spec that is neither `lora[:…]` nor a LoRA `key=value` option.
enum PlainItem {
    /// A unit selector.
    Unit(UnitSel),
    /// `bitfit`.
    Bitfit,
}

/// Parses such an item (`item` as written, `lower` lower-cased, split at its first `:` into
/// `key` and `arg`); the error names the item and what was expected.
fn parse_plain_item(
    item: &str,
    lower: &str,
    key: &str,
    arg: Option<String>,
) -> std::result::Result<PlainItem, String> {
    let sel = match (key, arg) {
        ("embeddings", None) => UnitSel::Unit(UnitId::Embeddings),
        ("final_norm", None) => UnitSel::Unit(UnitId::FinalNorm),
        ("head", None) => UnitSel::Unit(UnitId::Head),
        ("all" | "full", None) => UnitSel::All,
        ("bitfit", None) => return Ok(PlainItem::Bitfit),
        ("last" | "first", Some(k)) => {
            let k: usize = k
                .parse()
                .map_err(|_| format!("`{item}`: expected `{key}:K` with K a number"))?;
            if key == "last" {
                UnitSel::Last(k)
            } else {
                UnitSel::First(k)
            }
        }
        _ => {
            if let Some(rest) = lower
                .strip_prefix("block.")
                .or(lower.strip_prefix("blocks."))
            {
                parse_blocks(rest).ok_or_else(|| {
                    format!("`{item}`: expected `block.N`, `block.A-B` or `block.N.attn|mlp|norms`")
                })?
            } else {
                return Err(format!(
                    "unknown item `{item}` (expected embeddings, block.N, block.A-B, \
                     final_norm, head, all, last:K, first:K, bitfit, lora[:r=R])"
                ));
            }
        }
    };
    Ok(PlainItem::Unit(sel))
}

fn parse_blocks(rest: &str) -> Option<UnitSel> {
    if let Some((i, part)) = rest.split_once('.') {
        return Some(UnitSel::Part(i.parse().ok()?, BlockPart::from_name(part)?));
    }
    match rest.split_once('-') {
        Some((a, b)) => Some(UnitSel::Blocks(a.parse().ok()?, b.parse().ok()?)),
        None => Some(UnitSel::Unit(UnitId::Block(rest.parse().ok()?))),
    }
}

fn apply_lora_kv(lora: Option<&mut LoraSpec>, kvs: &str) -> std::result::Result<(), String> {
    let lora = lora.ok_or_else(|| format!("`{kvs}`: a key=value option must follow `lora`"))?;
    for kv in kvs.split(':').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("`{kv}`: expected key=value (r=8, alpha=16, targets=q+v)"))?;
        match k.trim() {
            "r" | "rank" => {
                lora.r = v
                    .parse()
                    .ok()
                    .filter(|&r| r > 0)
                    .ok_or_else(|| format!("lora r `{v}`: expected a positive integer"))?
            }
            "alpha" => {
                lora.alpha = v
                    .parse()
                    .ok()
                    .filter(|a: &f64| a.is_finite() && *a > 0.0)
                    .ok_or_else(|| format!("lora alpha `{v}`: expected a positive number"))?
            }
            "targets" => {
                let t: Vec<String> = v.split('+').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = t.iter().find(|s| !LORA_TARGETS.contains(&s.as_str())) {
                    return Err(format!(
                        "lora target `{bad}`: expected q, k, v, o, gate, up or down"
                    ));
                }
                lora.targets = t;
            }
            other => {
                return Err(format!(
                    "lora option `{other}`: expected r, alpha or targets"
                ));
            }
        }
    }
    Ok(())
}

/// Whether a parameter is a bias or a norm weight (BitFit's trainable set).
pub fn is_bitfit_param(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm") || name.ends_with("norm.weight")
}

/// What [`apply`] made trainable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainableSummary {
    /// Trainable parameter names.
    pub params: Vec<String>,
    /// Number of trainable scalars.
    pub num_params: usize,
    /// The lowest block with a trainable parameter (L if none; 0 with trainable embeddings).
    pub lowest_block: usize,
}

/// Applies `spec` to `m`: creates LoRA factors (A ~ U(±1/√d_in) from `seed`, B = 0, on every
/// block) if asked, then makes exactly the resolved parameters trainable.
pub fn apply(m: &mut Model, spec: &TrainableSpec, seed: u64) -> Result<TrainableSummary> {
    if let Some(lora) = &spec.lora {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        for i in 0..m.num_blocks() {
            for t in &lora.targets {
                let Some(w) = m.arch().lora_weight_name(i, t) else {
                    return Err(ModelError::TrainableSpec {
                        spec: format!("{spec:?}"),
                        what: format!("LoRA target `{t}` does not exist in this architecture"),
                    });
                };
                let wt = m.params.get(&w)?;
                let (d_out, d_in) = wt.dims2()?;
                let dtype = wt.dtype();
                let bound = 1.0 / (d_in as f64).sqrt();
                let a: Vec<f32> = (0..lora.r * d_in)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect();
                let a = Tensor::from_vec(a, (lora.r, d_in), &m.device)?.to_dtype(dtype)?;
                let b = Tensor::zeros((d_out, lora.r), DType::F32, &m.device)?.to_dtype(dtype)?;
                let base = w.trim_end_matches(".weight");
                m.params.insert(format!("{base}.lora_A.weight"), a);
                m.params.insert(format!("{base}.lora_B.weight"), b);
            }
        }
        m.params.lora_scale = lora.alpha / lora.r as f64;
    }
    let names = spec.resolve(m)?;
    m.params.set_trainable(&names)?;
    Ok(TrainableSummary {
        num_params: m.params.count(&names),
        lowest_block: m.lowest_trainable_block(),
        params: names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_adapters() {
        let s = TrainableSpec::parse("head,block.4,block.5").unwrap();
        assert_eq!(
            s.units,
            vec![
                UnitSel::Unit(UnitId::Head),
                UnitSel::Unit(UnitId::Block(4)),
                UnitSel::Unit(UnitId::Block(5))
            ]
        );
        let s = TrainableSpec::parse("lora:r=8;head").unwrap();
        assert_eq!(s.lora.as_ref().unwrap().r, 8);
        assert_eq!(s.units, vec![UnitSel::Unit(UnitId::Head)]);
        let s = TrainableSpec::parse("lora:r=4,alpha=8,targets=q+k+v;head").unwrap();
        let l = s.lora.unwrap();
        assert_eq!((l.r, l.alpha, l.targets.len()), (4, 8.0, 3));
        assert!(TrainableSpec::parse("bitfit").unwrap().bitfit);
        assert_eq!(
            TrainableSpec::parse("last:2").unwrap().units,
            vec![UnitSel::Last(2)]
        );
        assert_eq!(
            TrainableSpec::parse("block.2-4").unwrap().units,
            vec![UnitSel::Blocks(2, 4)]
        );
        let s = TrainableSpec::parse("head,block.3.mlp,block.3.attn,block.0.norms").unwrap();
        assert_eq!(
            s.units[1..],
            [
                UnitSel::Part(3, BlockPart::Mlp),
                UnitSel::Part(3, BlockPart::Attention),
                UnitSel::Part(0, BlockPart::Norms)
            ]
        );
        assert_eq!(s.to_string(), "head,block.3.mlp,block.3.attn,block.0.norms");
        let built = TrainableSpec::head_and_block_parts(true, &[2, 5], Some(BlockPart::Mlp));
        assert_eq!(
            built,
            TrainableSpec::parse("head,block.2.mlp,block.5.mlp").unwrap()
        );
    }

    #[test]
    fn errors_name_the_problem() {
        for (spec, needle) in [
            ("", "empty"),
            ("hed", "unknown item `hed`"),
            ("block.x", "block.N"),
            ("lora:r=0", "positive integer"),
            ("lora:targets=q+z", "lora target `z`"),
            ("alpha=3", "must follow `lora`"),
            ("last:two", "last:K"),
            ("block.3.ffn", "block.N.attn|mlp|norms"),
            ("block.x.mlp", "block.N.attn|mlp|norms"),
        ] {
            let e = TrainableSpec::parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }
}
