//! `dpselft data build`: the command line around the data crate's task builders, run on a tiny
//! synthetic assets folder (the real counts are pinned in the data crate's tests).

use std::path::Path;
use std::process::{Command, Output};

fn dpselft(args: &[&str], cwd: &Path, assets_env: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpselft"));
    cmd.args(args).current_dir(cwd).env_remove("DPSELFT_ASSETS");
    if let Some(dir) = assets_env {
        cmd.env("DPSELFT_ASSETS", dir);
    }
    cmd.output().unwrap()
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// Two genres of five documents each (one test document per genre), one sentence per document.
fn fake_assets(root: &Path) {
    let brown = root.join("brown");
    let mut cats = String::new();
    for (prefix, genre) in [("ca", "news"), ("cf", "lore")] {
        for i in 1..=5 {
            let id = format!("{prefix}{i:02}");
            cats.push_str(&format!("{id} {genre}\n"));
            write(&brown.join(&id), &format!("\n\n\tWord/nn {id}/np ./.\n"));
        }
    }
    write(&brown.join("cats.txt"), &cats);
    let spam = root.join("spamassassin/data");
    for (group, n) in [("easy-ham-1", 4), ("spam-1", 3)] {
        for i in 0..n {
            write(
                &spam.join(group).join(format!("{i:05}.{group}.txt")),
                &format!("Subject: {group} {i}\n\nbody {i}\n"),
            );
        }
    }
}

#[test]
fn builds_both_tasks_and_prints_the_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let assets = tmp.path().join("my-assets");
    fake_assets(&assets);
    let out = dpselft(
        &["data", "build", "brown-genre", "--assets", "my-assets"],
        tmp.path(),
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("lore         4        1        5"),
        "{stdout}"
    );
    assert!(
        stdout.contains("total        8        2       10"),
        "{stdout}"
    );
    // Default output folder: data/<task>.
    let train = std::fs::read_to_string(tmp.path().join("data/brown-genre/train.jsonl")).unwrap();
    assert_eq!(train.lines().count(), 8);
    assert_eq!(
        train.lines().next().unwrap(),
        r#"{"text":"Word cf01 .","label":"lore","group":"cf01"}"#
    );
    let test = std::fs::read_to_string(tmp.path().join("data/brown-genre/test.jsonl")).unwrap();
    assert_eq!(test.lines().count(), 2);

    // The assets folder from the environment, and an explicit --out.
    let out = dpselft(
        &["data", "build", "spam", "--out", "elsewhere"],
        tmp.path(),
        Some(&assets),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("7 messages"), "{stdout}");
    let lines = |name: &str| {
        std::fs::read_to_string(tmp.path().join("elsewhere").join(name))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines("train.jsonl") + lines("test.jsonl"), 7);
}

#[test]
fn missing_assets_say_to_fetch_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = dpselft(&["data", "build", "spam"], tmp.path(), None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dpselft fetch-assets"), "{stderr}");
    assert!(!tmp.path().join("data").exists());
}

#[test]
fn unknown_task_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = dpselft(&["data", "build", "imdb"], tmp.path(), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("brown-genre"));
}

#[test]
fn out_that_is_a_file_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    fake_assets(&tmp.path().join("assets"));
    write(&tmp.path().join("taken"), "x");
    let out = dpselft(
        &["data", "build", "spam", "--out", "taken"],
        tmp.path(),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a folder"));
}

#[test]
fn a_damaged_fetched_corpus_is_refused_not_built_short() {
    let tmp = tempfile::tempdir().unwrap();
    let assets = tmp.path().join("assets");
    fake_assets(&assets);
    // Mark the fake Brown folder as a fetched asset, then damage one document.
    let spec = dpselft_assets::catalog::BROWN;
    let dir = dpselft_assets::asset_dir(&assets, &spec);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.push((name, std::fs::metadata(&path).unwrap().len()));
    }
    let marker = dpselft_assets::fetch::Marker {
        id: spec.id.into(),
        package: spec.package.into(),
        sha256: spec.sha256.into(),
        files,
    };
    write(
        &dir.join(dpselft_assets::fetch::MARKER_FILE),
        &serde_json::to_string(&marker).unwrap(),
    );
    let built = dpselft(&["data", "build", "brown-genre"], tmp.path(), None);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    write(&dir.join("ca03"), "\n");
    let out = dpselft(&["data", "build", "brown-genre"], tmp.path(), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("damaged") && stderr.contains("ca03") && stderr.contains("fetch-assets"),
        "{stderr}"
    );
}
