//! The task builders on small synthetic corpora written into temporary folders.

use std::collections::HashSet;
use std::path::Path;

use dpselft_data::spam::is_test_file;
use dpselft_data::{
    BenchmarkTask, LabelCount, LoadOptions, TaskSplits, build_brown_genre, build_spam, load_dataset,
};
use tempfile::TempDir;

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A tagged document whose sentences are `<id>-s<k>` (one token each, tagged), 3 blank lines
/// between sentences and a leading tab, like the real corpus.
fn brown_doc(id: &str, sentences: usize) -> String {
    (0..sentences)
        .map(|k| format!("\n\n\t{id}-s{k}/nn and/or/cc ./.\n"))
        .collect()
}

/// Genre "news": 7 documents listed out of order; genre "lore": 3 documents.
fn brown_corpus() -> TempDir {
    let dir = TempDir::new().unwrap();
    let docs = [
        ("ca07", "news", 1),
        ("ca02", "news", 4),
        ("ca01", "news", 3),
        ("ca05", "news", 2),
        ("ca04", "news", 7),
        ("ca03", "news", 3),
        ("ca06", "news", 3),
        ("cf02", "lore", 5),
        ("cf01", "lore", 1),
        ("cf03", "lore", 2),
    ];
    let cats: String = docs
        .iter()
        .map(|(id, genre, _)| format!("{id} {genre}\n"))
        .collect();
    write(&dir.path().join("cats.txt"), cats.as_bytes());
    write(&dir.path().join("README"), b"not a document");
    for (id, _, n) in docs {
        write(&dir.path().join(id), brown_doc(id, n).as_bytes());
    }
    dir
}

fn doc_of(text: &str) -> &str {
    &text[..4]
}

#[test]
fn brown_genre_passages_labels_and_document_split() {
    let corpus = brown_corpus();
    let splits = build_brown_genre(corpus.path()).unwrap();
    assert_eq!(splits.labels(), ["lore", "news"]);
    assert_eq!(splits.test.labels, splits.train.labels);
    // Documents sorted by id within each genre; index 4 (the 5th) goes to test: only ca05.
    let test_docs: HashSet<&str> = splits
        .test
        .examples
        .iter()
        .map(|e| doc_of(&e.text))
        .collect();
    assert_eq!(test_docs, HashSet::from(["ca05"]));
    let train_docs: HashSet<&str> = splits
        .train
        .examples
        .iter()
        .map(|e| doc_of(&e.text))
        .collect();
    assert!(train_docs.is_disjoint(&test_docs));
    assert_eq!(train_docs.len(), 9);
    // Passages: 3 sentences each, the last shorter; tags stripped (and/or/cc -> and/or).
    let ca04: Vec<&str> = splits
        .train
        .examples
        .iter()
        .filter(|e| e.text.starts_with("ca04"))
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(
        ca04,
        [
            "ca04-s0 and/or . ca04-s1 and/or . ca04-s2 and/or .",
            "ca04-s3 and/or . ca04-s4 and/or . ca04-s5 and/or .",
            "ca04-s6 and/or ."
        ]
    );
    // Passage counts: news train ca01..ca04, ca06, ca07 = 1+2+1+3+1+1, test ca05 = 1;
    // lore train = 2+1+1.
    assert_eq!(
        splits.counts(),
        [
            LabelCount {
                label: "lore".into(),
                train: 4,
                test: 0
            },
            LabelCount {
                label: "news".into(),
                train: 9,
                test: 1
            },
        ]
    );
    // Every example carries its document's genre.
    for e in &splits.train.examples {
        let genre = if e.text.starts_with("cf") {
            "lore"
        } else {
            "news"
        };
        assert_eq!(splits.train.label_name(e), Some(genre));
    }
}

#[test]
fn no_passage_in_both_splits() {
    let splits = build_brown_genre(brown_corpus().path()).unwrap();
    let train: HashSet<&str> = splits
        .train
        .examples
        .iter()
        .map(|e| e.text.as_str())
        .collect();
    assert!(
        splits
            .test
            .examples
            .iter()
            .all(|e| !train.contains(e.text.as_str()))
    );
}

#[test]
fn brown_missing_document_names_it() {
    let corpus = brown_corpus();
    std::fs::remove_file(corpus.path().join("cf02")).unwrap();
    let msg = build_brown_genre(corpus.path()).unwrap_err().to_string();
    assert!(msg.contains("cf02"), "{msg}");
}

#[test]
fn brown_missing_categories_file() {
    let dir = TempDir::new().unwrap();
    let msg = build_brown_genre(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("cats.txt"), "{msg}");
}

fn spam_message(subject: &str, body: &str) -> Vec<u8> {
    format!("From x@y  Thu Aug 22 13:17:22 2002\nReturn-Path: <x@y>\nSubject: {subject}\nTo: z@w\n\n{body}\n")
        .into_bytes()
}

/// Five groups like the real corpus, with `.json` twins that must be ignored.
fn spam_corpus() -> (TempDir, Vec<(String, String)>) {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let mut expected = Vec::new();
    for (group, n) in [
        ("easy-ham-1", 6),
        ("easy-ham-2", 3),
        ("hard-ham-1", 2),
        ("spam-1", 5),
        ("spam-2", 4),
    ] {
        for i in 0..n {
            let name = format!("{:05}.{group}{i}.txt", i + 1);
            let subject = format!("{group} message {i}");
            write(
                &data.join(group).join(&name),
                &spam_message(&subject, "<html><body><p>body</p></body></html>"),
            );
            write(
                &data.join(group).join(name.replace(".txt", ".json")),
                b"{\"text\": \"not a message\"}",
            );
            expected.push((name, subject));
        }
    }
    write(&data.join("file_list.json"), b"[]");
    (dir, expected)
}

#[test]
fn spam_labels_examples_and_hash_split() {
    let (dir, expected) = spam_corpus();
    let built = build_spam(dir.path()).unwrap();
    let splits = &built.splits;
    assert_eq!(splits.labels(), ["ham", "spam"]);
    assert_eq!(built.stats.messages, 20);
    assert_eq!(splits.train.len() + splits.test.len(), 20);
    let in_test: HashSet<String> = splits
        .test
        .examples
        .iter()
        .map(|e| e.text.clone())
        .collect();
    for (name, subject) in &expected {
        let text = format!("{subject}\n\nbody");
        let split = if is_test_file(name) {
            &splits.test
        } else {
            &splits.train
        };
        let example = split
            .examples
            .iter()
            .find(|e| e.text == text)
            .unwrap_or_else(|| panic!("{name} not in its split"));
        let label = if name.contains("spam") { "spam" } else { "ham" };
        assert_eq!(split.label_name(example), Some(label), "{name}");
        assert_eq!(in_test.contains(&text), is_test_file(name));
    }
    // The same layout without the `data/` level is accepted too.
    assert_eq!(
        build_spam(&dir.path().join("data")).unwrap().splits,
        built.splits
    );
}

#[test]
fn spam_split_hashes_the_basename_with_extension() {
    // Computed independently (Python hashlib):
    // SHA-256("00001.7c53336b37003a9286aba55d2945844c.txt") starts with 0x98 = 152 (mod 5 = 2);
    // SHA-256("00002.9c4069e25e1ef370c078db7ee85ff9ac.txt") starts with 0x50 = 80 (mod 5 = 0).
    assert!(!is_test_file("00001.7c53336b37003a9286aba55d2945844c.txt"));
    assert!(is_test_file("00002.9c4069e25e1ef370c078db7ee85ff9ac.txt"));
    // Without the extension it is another hash: 0x85 = 133 (mod 5 = 3).
    assert!(!is_test_file("00002.9c4069e25e1ef370c078db7ee85ff9ac"));
}

#[test]
fn spam_counts_lenient_decoding() {
    let dir = TempDir::new().unwrap();
    let g = dir.path().join("data").join("spam-1");
    write(&g.join("a.txt"), b"Subject: bad\n\ncaf\xe9 \xff\n");
    write(
        &g.join("b.txt"),
        b"Subject: latin\nContent-Type: text/plain; charset=iso-8859-1\n\ncaf\xe9\n",
    );
    write(&g.join("c.txt"), b"Subject: fine\n\nok\n");
    let built = build_spam(dir.path()).unwrap();
    assert_eq!(built.stats.messages, 3);
    assert_eq!(built.stats.non_utf8_files, 2);
    assert_eq!(built.stats.lenient_messages, 1);
    assert_eq!(built.stats.replaced_bytes, 2);
}

#[test]
fn spam_without_messages_is_an_error() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("data/spam-1")).unwrap();
    let msg = build_spam(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("no message"), "{msg}");
}

fn check_written(splits: &TaskSplits, out: &Path) {
    let options = LoadOptions {
        known_labels: Some(splits.labels().to_vec()),
        min_examples_per_label: 0,
        ..LoadOptions::default()
    };
    assert_eq!(
        &load_dataset(&out.join("train.jsonl"), &options).unwrap(),
        &splits.train
    );
    assert_eq!(
        &load_dataset(&out.join("test.jsonl"), &options).unwrap(),
        &splits.test
    );
}

#[test]
fn tasks_build_from_an_assets_folder_and_write_jsonl() {
    let assets = TempDir::new().unwrap();
    let brown = brown_corpus();
    let (spam, _) = spam_corpus();
    std::fs::rename(brown.path(), assets.path().join("brown")).unwrap();
    std::fs::rename(spam.path(), assets.path().join("spamassassin")).unwrap();
    for task in BenchmarkTask::ALL {
        assert_eq!(task.name().parse::<BenchmarkTask>().unwrap(), task);
        let built = task.build(assets.path()).unwrap();
        assert_eq!(
            built.spam_stats.is_some(),
            task.corpus_dir_name() == "spamassassin"
        );
        let out = assets.path().join("out").join(task.name());
        let (train, test) = built.splits.write(&out).unwrap();
        assert_eq!(
            (train, test),
            (out.join("train.jsonl"), out.join("test.jsonl"))
        );
        check_written(&built.splits, &out);
        let line = std::fs::read_to_string(out.join("train.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        let labelled = !task.is_language_modelling();
        assert!(
            first["text"].is_string() && first["label"].is_string() == labelled,
            "{first}"
        );
        assert_eq!(built.splits.labels().is_empty(), !labelled, "{task}");
    }
    assert!(
        "nope"
            .parse::<BenchmarkTask>()
            .unwrap_err()
            .contains("brown-genre, spam")
    );
}

#[test]
fn counts_table_has_a_total_row() {
    let table = dpselft_data::format_counts_table(&[
        LabelCount {
            label: "ham".into(),
            train: 3,
            test: 1,
        },
        LabelCount {
            label: "spam".into(),
            train: 2,
            test: 2,
        },
    ]);
    assert_eq!(
        table,
        "label    train     test    total\n\
         ham          3        1        4\n\
         spam         2        2        4\n\
         total        5        3        8\n"
    );
}
