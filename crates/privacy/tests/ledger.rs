//! The privacy ledger: atomic appends, reload-and-continue equals an uninterrupted run.

use dpselft_privacy::{LedgerEntry, Mechanism, PldAccountant, PrivacyError, PrivacyLedger};

fn run(ledger: &mut PrivacyLedger, train_chunks: &[u64]) {
    ledger
        .record(LedgerEntry::sampled_gaussian(0.05, 1.2, 300, 1.0, "synth"))
        .unwrap();
    ledger
        .record(LedgerEntry::gaussian(20.0, 1.0, 1, "label-histogram"))
        .unwrap();
    for &c in train_chunks {
        ledger
            .record(LedgerEntry::sampled_gaussian(0.02, 1.0, c, 0.5, "train"))
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
        .record(LedgerEntry::sampled_gaussian(0.02, 1.0, 400, 0.5, "train"))
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
    assert_eq!(straight.spent().pld.epsilon, Some(eps));
    let rdp = straight.spent().rdp;
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
    assert_eq!(l.spent().pld.epsilon, Some(0.0));
    l.record(LedgerEntry::sampled_gaussian(0.01, 1.1, 50, 1.0, "train"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let e = &v["entries"][0];
    assert_eq!(e["kind"], "sampled_gaussian");
    assert_eq!(e["noise_multiplier"], 1.1);
    assert_eq!(e["sampling_rate"], 0.01);
    assert_eq!(e["steps"], 50);
    assert_eq!(e["sensitivity"], 1.0);
    assert_eq!(e["purpose"], "train");
    assert_eq!(v["delta"], 1e-6);
    assert!(v["spent"]["pld"]["epsilon"].as_f64().unwrap() > 0.0);
    assert!(v["spent"]["rdp"]["epsilon"].as_f64().unwrap() > 0.0);
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
        l.record(LedgerEntry::sampled_gaussian(0.0, 1.0, 5, 1.0, "x"))
            .is_err()
    );
    assert!(l.record(LedgerEntry::gaussian(-1.0, 1.0, 1, "x")).is_err());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), before);
    assert!(l.entries().is_empty());
    // A corrupt file names the problem.
    std::fs::write(&p, "{ not json").unwrap();
    let err = PrivacyLedger::open(&p).unwrap_err();
    assert!(matches!(err, PrivacyError::LedgerFormat { .. }));
    assert!(err.to_string().contains("line 1"), "{err}");
}
