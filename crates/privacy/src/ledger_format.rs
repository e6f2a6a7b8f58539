//! Reading a ledger file: the current layout (version 2) or version 1, which named each entry's
//! stage in a free-text `purpose` (`"train"`, `"synth: generator"`, …, with
//! `" (seeded: noise reproducible from the seed)"` appended for seeded noise) and stored one PLD
//! discretisation instead of a list of accountants.

use serde::Deserialize;

use crate::accountant::{AccountantConfig, Guarantee};
use crate::ledger::{
    LEDGER_FORMAT, LEDGER_VERSION, LedgerEntry, LedgerFile, MechanismKind, Spent, Stage,
};

/// Only what tells the layouts apart.
#[derive(Deserialize)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    #[allow(dead_code)]
    format: String,
    #[allow(dead_code)]
    version: u32,
    delta: f64,
    pld_discretisation: f64,
    entries: Vec<EntryV1>,
    #[allow(dead_code)]
    spent: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryV1 {
    kind: MechanismKind,
    noise_multiplier: f64,
    sampling_rate: f64,
    steps: u64,
    sensitivity: f64,
    purpose: String,
}

/// Parses a ledger file's text; the message says what is wrong (the caller adds the path).
pub(crate) fn parse(text: &str) -> Result<LedgerFile, String> {
    let at = |e: serde_json::Error| {
        format!(
            "not a valid ledger (line {}, column {}): {e}",
            e.line(),
            e.column()
        )
    };
    let header: Header = serde_json::from_str(text).map_err(at)?;
    if header.format != LEDGER_FORMAT || !(1..=LEDGER_VERSION).contains(&header.version) {
        return Err(format!(
            "expected format \"{LEDGER_FORMAT}\" version 1 to {LEDGER_VERSION}, found \"{}\" \
             version {}",
            header.format, header.version
        ));
    }
    if header.version == LEDGER_VERSION {
        return serde_json::from_str(text).map_err(at);
    }
    let v1: FileV1 = serde_json::from_str(text).map_err(at)?;
    let entries = v1
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| upgrade_entry(e).map_err(|m| format!("entry {i}: {m}")))
        .collect::<Result<Vec<_>, _>>()?;
    let pld = AccountantConfig::Pld {
        discretisation: v1.pld_discretisation,
    };
    Ok(LedgerFile {
        format: LEDGER_FORMAT.to_string(),
        version: LEDGER_VERSION,
        delta: v1.delta,
        accountants: vec![pld, AccountantConfig::Rdp],
        entries,
        overrides: Vec::new(),
        // Recomputed by the caller from the entries.
        spent: Spent {
            guarantee: "pld".into(),
            by_accountant: [("pld".to_string(), Guarantee::nothing(v1.delta))].into(),
        },
    })
}

const SEEDED_SUFFIX: &str = " (seeded: noise reproducible from the seed)";

fn upgrade_entry(e: EntryV1) -> Result<LedgerEntry, String> {
    let (name, seeded) = match e.purpose.strip_suffix(SEEDED_SUFFIX) {
        Some(name) => (name, true),
        None => (e.purpose.as_str(), false),
    };
    let stage = match name {
        "synth: label histogram" => Stage::SynthHistogram,
        "synth: generator" => Stage::SynthGenerator,
        "train" => Stage::Train,
        other => {
            return Err(format!(
                "purpose `{other}`: expected \"synth: label histogram\", \"synth: generator\" or \
                 \"train\""
            ));
        }
    };
    Ok(LedgerEntry {
        kind: e.kind,
        noise_multiplier: e.noise_multiplier,
        sampling_rate: e.sampling_rate,
        steps: e.steps,
        sensitivity: e.sensitivity,
        stage,
        seeded,
        lost: false,
    })
}
