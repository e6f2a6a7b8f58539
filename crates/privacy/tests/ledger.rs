//! The privacy ledger: atomic appends, reload-and-continue equals an uninterrupted run.

use dpselft_privacy::{
    Accountant, LedgerEntry, Mechanism, PldAccountant, PrivacyError, PrivacyLedger, RdpAccountant,
    Stage,
};

fn run(ledger: &mut PrivacyLedger, train_chunks: &[u64]) {
    ledger
        .record(LedgerEntry::sampled_gaussian(
            0.05,
            1.2,
            300,
            1.0,
            Stage::SynthGenerator,
        ))
        .unwrap();
    ledger
        .record(LedgerEntry::gaussian(20.0, 1.0, 1, Stage::SynthHistogram))
        .unwrap();
    for &c in train_chunks {
        ledger
            .record(LedgerEntry::sampled_gaussian(
                0.02,
                1.0,
                c,
                0.5,
                Stage::Train,
            ))
            .unwrap();
    }
}

#[test]
fn reload_and_continue_equals_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    let mut straight = PrivacyLedger::create(&a, 1e-5).unwrap();
    run(&mut straight, &[600, 400]);

    let mut first = PrivacyLedger::create(&b, 1e-5).unwrap();
    run(&mut first, &[600]);
    drop(first);
    let mut resumed = PrivacyLedger::open(&b).unwrap();
    resumed
        .record(LedgerEntry::sampled_gaussian(
            0.02,
            1.0,
            400,
            0.5,
            Stage::Train,
        ))
        .unwrap();
    assert_eq!(straight.spent(), resumed.spent());
    assert_eq!(straight.entries(), resumed.entries());
    assert_eq!(
        std::fs::read_to_string(&a).unwrap(),
        std::fs::read_to_string(&b).unwrap()
    );
    // Chunked steps compose exactly like one event with all the steps.
    let events = [
        Mechanism::sampled_gaussian(0.05, 1.2, 300).unwrap(),
        Mechanism::gaussian(20.0, 1.0, 1).unwrap(),
        Mechanism::sampled_gaussian(0.02, 1.0, 1000).unwrap(),
    ];
    let eps = PldAccountant::default().epsilon(&events, 1e-5).unwrap();
    assert_eq!(straight.spent().epsilon(), Some(eps));
    assert_eq!(straight.spent().guarantee, "pld");
    let rdp = straight.spent().under("rdp").unwrap();
    assert!(rdp.epsilon.unwrap() >= eps);
    assert!(rdp.order.is_some());
    // Reopening recomputes the same totals.
    assert_eq!(PrivacyLedger::open(&a).unwrap().spent(), straight.spent());
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn ledger_file_records_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ledger.json");
    let mut l = PrivacyLedger::open_or_create(&p, 1e-6).unwrap();
    assert_eq!(l.spent().epsilon(), Some(0.0));
    l.record(LedgerEntry::sampled_gaussian(0.01, 1.1, 50, 1.0, Stage::Train).seeded(true))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let e = &v["entries"][0];
    assert_eq!(e["kind"], "sampled_gaussian");
    assert_eq!(e["noise_multiplier"], 1.1);
    assert_eq!(e["sampling_rate"], 0.01);
    assert_eq!(e["steps"], 50);
    assert_eq!(e["sensitivity"], 1.0);
    assert_eq!(e["stage"], "train");
    assert_eq!(e["seeded"], true);
    assert_eq!(v["delta"], 1e-6);
    assert_eq!(v["version"], 2);
    assert_eq!(v["accountants"][0]["name"], "pld");
    assert_eq!(v["accountants"][0]["discretisation"], 1e-4);
    assert_eq!(v["accountants"][1]["name"], "rdp");
    assert!(
        v["spent"]["by_accountant"]["pld"]["epsilon"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        v["spent"]["by_accountant"]["rdp"]["epsilon"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // open_or_create continues it.
    let l2 = PrivacyLedger::open_or_create(&p, 1e-6).unwrap();
    assert_eq!(l2.entries().len(), 1);
}

#[test]
fn ledger_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.json");
    assert!(matches!(
        PrivacyLedger::open(&p),
        Err(PrivacyError::Io { .. })
    ));
    let mut l = PrivacyLedger::create(&p, 1e-5).unwrap();
    // Creating over an existing run is refused: a resumed run must continue the ledger.
    assert!(PrivacyLedger::create(&p, 1e-5).is_err());
    // A δ mismatch on resume is refused.
    assert!(PrivacyLedger::open_or_create(&p, 1e-6).is_err());
    // Invalid entries change nothing.
    let before = std::fs::read_to_string(&p).unwrap();
    assert!(
        l.record(LedgerEntry::sampled_gaussian(
            0.0,
            1.0,
            5,
            1.0,
            Stage::Train
        ))
        .is_err()
    );
    assert!(
        l.record(LedgerEntry::gaussian(-1.0, 1.0, 1, Stage::Train))
            .is_err()
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), before);
    assert!(l.entries().is_empty());
    // A corrupt file names the problem.
    std::fs::write(&p, "{ not json").unwrap();
    let err = PrivacyLedger::open(&p).unwrap_err();
    assert!(matches!(err, PrivacyError::LedgerFormat { .. }));
    assert!(err.to_string().contains("line 1"), "{err}");
}

/// A version-1 ledger (free-text purposes, one PLD discretisation) opens as version 2: stages and
/// seeded flags from the purposes, totals recomputed, and the next record writes version 2.
#[test]
fn version_1_ledgers_are_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ledger.json");
    let v1 = r#"{
  "format": "dpselft-privacy-ledger",
  "version": 1,
  "delta": 1e-5,
  "pld_discretisation": 0.0001,
  "entries": [
    {"kind": "gaussian", "noise_multiplier": 16.3, "sampling_rate": 1.0, "steps": 1,
     "sensitivity": 1.0, "purpose": "synth: label histogram"},
    {"kind": "sampled_gaussian", "noise_multiplier": 1.4, "sampling_rate": 0.1, "steps": 3,
     "sensitivity": 1.0, "purpose": "synth: generator (seeded: noise reproducible from the seed)"},
    {"kind": "sampled_gaussian", "noise_multiplier": 1.1, "sampling_rate": 0.2, "steps": 10,
     "sensitivity": 1.0, "purpose": "train (seeded: noise reproducible from the seed)"}
  ],
  "spent": {"pld": {"epsilon": 4.0, "delta": 1e-5}, "rdp": {"epsilon": 4.6, "delta": 1e-5, "order": 9.0}}
}"#;
    std::fs::write(&p, v1).unwrap();
    let mut l = PrivacyLedger::open(&p).unwrap();
    let stages: Vec<(Stage, bool)> = l.entries().iter().map(|e| (e.stage, e.seeded)).collect();
    assert_eq!(
        stages,
        [
            (Stage::SynthHistogram, false),
            (Stage::SynthGenerator, true),
            (Stage::Train, true)
        ]
    );
    // The stored totals are not trusted: they are recomputed from the entries.
    let events = [
        Mechanism::gaussian(16.3, 1.0, 1).unwrap(),
        Mechanism::sampled_gaussian(0.1, 1.4, 3).unwrap(),
        Mechanism::sampled_gaussian(0.2, 1.1, 10).unwrap(),
    ];
    let pld = PldAccountant::default().epsilon(&events, 1e-5).unwrap();
    let rdp = Accountant::epsilon(&RdpAccountant::default(), &events, 1e-5).unwrap();
    assert_eq!(l.spent().epsilon(), Some(pld));
    assert_eq!(l.spent().under("rdp").unwrap().epsilon, Some(rdp));
    // A stage's share under the ledger's own accountant.
    let synth = l.epsilon_of(Stage::is_synth).unwrap();
    let expected = PldAccountant::default()
        .epsilon(&events[..2], 1e-5)
        .unwrap();
    assert_eq!(synth, expected);
    l.record(LedgerEntry::sampled_gaussian(
        0.2,
        1.1,
        1,
        1.0,
        Stage::Train,
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["entries"][1]["stage"], "synth-generator");
    // An unknown purpose is named.
    std::fs::write(&p, v1.replace("synth: label histogram", "mystery")).unwrap();
    let err = PrivacyLedger::open(&p).unwrap_err().to_string();
    assert!(err.contains("entry 0") && err.contains("mystery"), "{err}");
}

/// δ must be below 1/n unless the operator allows it, and then the ledger keeps the override.
#[test]
fn delta_at_least_one_over_n_is_refused_unless_allowed_and_recorded() {
    use dpselft_privacy::{Override, check_delta_for_examples};
    assert_eq!(check_delta_for_examples(1e-5, 40, false).unwrap(), None);
    assert_eq!(check_delta_for_examples(0.0249, 40, false).unwrap(), None);
    let err = check_delta_for_examples(0.025, 40, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1/n") && err.contains("n = 40"), "{err}");
    assert!(check_delta_for_examples(0.5, 40, false).is_err());
    let o = check_delta_for_examples(0.1, 40, true).unwrap().unwrap();
    assert_eq!(
        o,
        Override::DeltaNotBelowOneOverN {
            delta: 0.1,
            examples: 40
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ledger.json");
    let mut l = PrivacyLedger::create(&p, 0.1).unwrap();
    l.record_override(o.clone()).unwrap();
    l.record_override(o.clone()).unwrap();
    let reopened = PrivacyLedger::open(&p).unwrap();
    assert_eq!(reopened.overrides(), [o]);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["overrides"][0]["kind"], "delta_not_below_one_over_n");
}

#[test]
fn chunks_of_one_mechanism_merge_into_one_entry_with_the_same_total() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = |steps| LedgerEntry::sampled_gaussian(0.02, 1.0, steps, 0.5, Stage::Train);
    let mut merged = PrivacyLedger::create(dir.path().join("m.json"), 1e-5).unwrap();
    let mut apart = PrivacyLedger::create(dir.path().join("a.json"), 1e-5).unwrap();
    for steps in [100, 100, 50] {
        merged.record_merged(chunk(steps)).unwrap();
        apart.record(chunk(steps)).unwrap();
    }
    assert_eq!(merged.entries(), &[chunk(250)]);
    assert_eq!(apart.entries().len(), 3);
    assert_eq!(merged.spent(), apart.spent());
    // A different mechanism (or seeding) starts a new entry.
    merged.record_merged(chunk(10).seeded(true)).unwrap();
    merged
        .record_merged(LedgerEntry::sampled_gaussian(
            0.02,
            2.0,
            5,
            0.5,
            Stage::Train,
        ))
        .unwrap();
    assert_eq!(merged.entries().len(), 3);
}

#[test]
fn lost_attempts_keep_counting_and_are_reported_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.json");
    let mut ledger = PrivacyLedger::create(&path, 1e-5).unwrap();
    run(&mut ledger, &[600]);
    let before = ledger.spent();
    let lost = ledger.mark_lost(|s| s == Stage::Train).unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(ledger.spent(), before, "a lost attempt still counts");
    let alone = PldAccountant::default()
        .epsilon(
            &[Mechanism::sampled_gaussian(0.02, 1.0, 600).unwrap()],
            1e-5,
        )
        .unwrap();
    assert!((ledger.lost_epsilon().unwrap() - alone).abs() < 1e-9);
    // Marking again marks nothing; a new attempt's steps never merge into the lost entry.
    assert!(ledger.mark_lost(|s| s == Stage::Train).unwrap().is_empty());
    ledger
        .record_merged(LedgerEntry::sampled_gaussian(
            0.02,
            1.0,
            600,
            0.5,
            Stage::Train,
        ))
        .unwrap();
    let reopened = PrivacyLedger::open(&path).unwrap();
    let flags: Vec<bool> = reopened.entries().iter().map(|e| e.lost).collect();
    assert_eq!(flags, [false, false, true, false]);
    assert!(reopened.spent().epsilon() > before.epsilon());
}
