//! The dataset formats and their validation: every malformed case has its own test, which checks
//! that the message names the file, the line and the problem.

use std::path::{Path, PathBuf};

use dpselft_data::{
    DataError, Dataset, Example, Format, LabelRequirement, LoadOptions, Problem, load_dataset,
    read_labels, write_jsonl, write_labels,
};
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, content).unwrap();
    path
}

fn load(path: &Path) -> Result<Dataset, DataError> {
    load_dataset(path, &LoadOptions::default())
}

/// Loads `content` as `name`, expects an error, and checks that its message names the file, the
/// line (when given) and contains `problem`.
fn expect_error(name: &str, content: &[u8], line: Option<u64>, problem: &str) -> DataError {
    expect_error_with(name, content, &LoadOptions::default(), line, problem)
}

fn expect_error_with(
    name: &str,
    content: &[u8],
    options: &LoadOptions,
    line: Option<u64>,
    problem: &str,
) -> DataError {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, name, content);
    let err = load_dataset(&path, options).expect_err("the dataset should be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "no file in: {msg}"
    );
    if let Some(line) = line {
        assert!(
            msg.contains(&format!(", line {line}:")),
            "no line {line} in: {msg}"
        );
        assert_eq!(err.location().unwrap().line, Some(line));
    }
    assert!(msg.contains(problem), "no \"{problem}\" in: {msg}");
    err
}

fn texts(d: &Dataset) -> Vec<&str> {
    d.examples.iter().map(|e| e.text.as_str()).collect()
}

fn label_names(d: &Dataset) -> Vec<&str> {
    d.examples
        .iter()
        .map(|e| d.label_name(e).unwrap())
        .collect()
}

// ---------------------------------------------------------------- JSONL: valid input

#[test]
fn jsonl_loads_labels_sorted_and_indexed() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "d.jsonl",
        br#"{"text": "b one", "label": "sports"}
{"text": "a one", "label": "politics"}
{"text": "b two", "label": "sports", "id": 7}
{"text": "a two", "label": "politics"}
"#,
    );
    let d = load(&path).unwrap();
    assert_eq!(d.labels, ["politics", "sports"]);
    assert_eq!(texts(&d), ["b one", "a one", "b two", "a two"]);
    assert_eq!(
        d.examples.iter().map(|e| e.label).collect::<Vec<_>>(),
        [Some(1), Some(0), Some(1), Some(0)]
    );
    assert_eq!(d.label_counts(), [2, 2]);
    assert!(d.is_labelled());
}

#[test]
fn jsonl_without_labels_is_language_modelling_data() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "d.jsonl",
        b"{\"text\": \"x\"}\n{\"text\": \"y\", \"label\": null}\n",
    );
    let d = load(&path).unwrap();
    assert!(d.labels.is_empty());
    assert!(!d.is_labelled());
    assert_eq!(
        d.examples[1],
        Example {
            text: "y".into(),
            label: None,
            group: None,
        }
    );
}

#[test]
fn jsonl_skips_blank_lines_and_accepts_bom_crlf_and_integer_labels() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "d.jsonl",
        b"\xEF\xBB\xBF{\"text\": \"x\", \"label\": 1}\r\n\r\n  \n{\"text\": \"y\", \"label\": 1}\r\n{\"text\": \"z\", \"label\": 0}\n{\"text\": \"w\", \"label\": 0}",
    );
    let d = load(&path).unwrap();
    assert_eq!(d.labels, ["0", "1"]);
    assert_eq!(texts(&d), ["x", "y", "z", "w"]);
}

#[test]
fn jsonl_ignore_labels_drops_them() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "d.jsonl",
        b"{\"text\": \"x\", \"label\": \"a\"}\n{\"text\": \"y\", \"label\": true}\n",
    );
    let options = LoadOptions {
        labels: LabelRequirement::Ignore,
        ..LoadOptions::default()
    };
    let d = load_dataset(&path, &options).unwrap();
    assert!(d.labels.is_empty());
    assert_eq!(d.len(), 2);
}

#[test]
fn known_labels_fix_the_order_and_may_be_absent() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "d.jsonl",
        b"{\"text\": \"x\", \"label\": \"b\"}\n{\"text\": \"y\", \"label\": \"b\"}\n",
    );
    let options = LoadOptions {
        known_labels: Some(vec!["c".into(), "b".into(), "a".into()]),
        ..LoadOptions::default()
    };
    let d = load_dataset(&path, &options).unwrap();
    assert_eq!(d.labels, ["c", "b", "a"]);
    assert_eq!(d.examples[0].label, Some(1));
    assert_eq!(d.label_counts(), [0, 2, 0]);
}

// ---------------------------------------------------------------- JSONL: each malformed case

#[test]
fn jsonl_bad_json() {
    let err = expect_error(
        "d.jsonl",
        b"{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n",
        Some(2),
        "invalid JSON",
    );
    assert!(matches!(err.problem(), Some(Problem::BadJson(_))));
    assert!(err.to_string().contains("column"), "{err}");
    assert!(!err.to_string().contains("at line 1"), "{err}");
}

#[test]
fn jsonl_not_an_object() {
    expect_error(
        "d.jsonl",
        b"{\"text\": \"ok\"}\n[\"text\"]\n",
        Some(2),
        "expected a JSON object",
    );
    expect_error("d.jsonl", b"\"just text\"\n", Some(1), "found a string");
}

#[test]
fn jsonl_missing_text() {
    let err = expect_error(
        "d.jsonl",
        b"{\"text\": \"a\", \"label\": \"x\"}\n{\"txt\": \"a\", \"label\": \"x\"}\n",
        Some(2),
        "missing field \"text\"",
    );
    assert_eq!(err.problem(), Some(&Problem::MissingField("text")));
}

#[test]
fn jsonl_text_of_wrong_type() {
    expect_error(
        "d.jsonl",
        b"{\"text\": 42}\n",
        Some(1),
        "field \"text\" must be a string, found a number",
    );
}

#[test]
fn jsonl_label_of_wrong_type() {
    expect_error(
        "d.jsonl",
        b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": [\"x\"]}\n",
        Some(2),
        "field \"label\" must be a string",
    );
    expect_error(
        "d.jsonl",
        b"{\"text\": \"b\", \"label\": 1.5}\n",
        Some(1),
        "found a number",
    );
}

#[test]
fn jsonl_group_of_wrong_type() {
    expect_error(
        "g.jsonl",
        b"{\"text\": \"a\", \"label\": \"x\", \"group\": \"d1\"}\n\
          {\"text\": \"b\", \"label\": \"x\", \"group\": [1]}\n",
        Some(2),
        "group",
    );
}

#[test]
fn jsonl_empty_text() {
    let err = expect_error(
        "d.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"\"}\n",
        Some(2),
        "empty text",
    );
    assert_eq!(err.problem(), Some(&Problem::EmptyText));
}

#[test]
fn jsonl_whitespace_only_text() {
    expect_error(
        "d.jsonl",
        b"{\"text\": \" \\n\\t \"}\n",
        Some(1),
        "empty text",
    );
}

#[test]
fn jsonl_empty_label() {
    expect_error(
        "d.jsonl",
        b"{\"text\": \"a\", \"label\": \" \"}\n",
        Some(1),
        "empty label",
    );
}

#[test]
fn jsonl_unknown_label() {
    let options = LoadOptions {
        known_labels: Some(vec!["ham".into(), "spam".into()]),
        ..LoadOptions::default()
    };
    let err = expect_error_with(
        "d.jsonl",
        b"{\"text\": \"a\", \"label\": \"spam\"}\n{\"text\": \"b\", \"label\": \"spam\"}\n{\"text\": \"c\", \"label\": \"eggs\"}\n",
        &options,
        Some(3),
        "unknown label \"eggs\" (known labels: ham, spam)",
    );
    assert!(matches!(err.problem(), Some(Problem::UnknownLabel { .. })));
}

#[test]
fn jsonl_non_utf8_bytes() {
    let err = expect_error(
        "d.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"caf\xe9\"}\n",
        Some(3),
        "invalid UTF-8 at column 14",
    );
    assert_eq!(
        err.problem(),
        Some(&Problem::NonUtf8 {
            column: 14,
            byte: 41,
            value: 0xe9
        })
    );
}

#[test]
fn jsonl_label_with_a_single_example() {
    let err = expect_error(
        "d.jsonl",
        b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"lonely\"}\n{\"text\": \"c\", \"label\": \"x\"}\n",
        Some(2),
        "label \"lonely\" has a single example",
    );
    assert!(matches!(err.problem(), Some(Problem::SingleExample { .. })));
}

#[test]
fn label_with_too_few_examples_for_a_larger_minimum() {
    let options = LoadOptions {
        min_examples_per_label: 3,
        ..LoadOptions::default()
    };
    expect_error_with(
        "d.jsonl",
        b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"x\"}\n",
        &options,
        Some(1),
        "label \"x\" has only 2 examples (every label needs at least 3)",
    );
}

#[test]
fn single_example_check_can_be_disabled() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "d.jsonl", b"{\"text\": \"a\", \"label\": \"x\"}\n");
    let options = LoadOptions {
        min_examples_per_label: 1,
        ..LoadOptions::default()
    };
    assert_eq!(load_dataset(&path, &options).unwrap().len(), 1);
}

#[test]
fn jsonl_missing_label_when_others_have_one() {
    let err = expect_error(
        "d.jsonl",
        b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"x\"}\n{\"text\": \"c\"}\n",
        Some(3),
        "no label, but",
    );
    assert!(err.to_string().contains("line 1 has one"), "{err}");
}

#[test]
fn jsonl_label_when_earlier_records_have_none() {
    expect_error(
        "d.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"c\", \"label\": \"x\"}\n",
        Some(2),
        "has a label, but",
    );
}

#[test]
fn jsonl_labels_required() {
    let options = LoadOptions {
        labels: LabelRequirement::Required,
        ..LoadOptions::default()
    };
    expect_error_with(
        "d.jsonl",
        b"{\"text\": \"a\"}\n",
        &options,
        Some(1),
        "labels are required",
    );
}

#[test]
fn jsonl_without_any_record() {
    let err = expect_error("d.jsonl", b"\n  \n", None, "no examples");
    assert_eq!(err.problem(), Some(&Problem::NoExamples));
}

#[test]
fn missing_file_is_a_read_error_naming_it() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nope.jsonl");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, DataError::Read { .. }));
    assert!(err.to_string().contains("nope.jsonl"), "{err}");
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_handles_quoting_multiline_fields_and_column_order() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "d.csv",
        b"id,Label,TEXT\r\n1,pos,\"hello, \"\"world\"\"\"\r\n2,neg,\"two\nlines\"\r\n3,pos,plain\r\n4,neg,x\r\n",
    );
    let d = load(&path).unwrap();
    assert_eq!(d.labels, ["neg", "pos"]);
    assert_eq!(texts(&d), ["hello, \"world\"", "two\nlines", "plain", "x"]);
    assert_eq!(label_names(&d), ["pos", "neg", "pos", "neg"]);
}

#[test]
fn csv_skips_empty_lines_and_counts_them_in_line_numbers() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "d.csv", b"text,label\na,x\n\nb,x\n\n");
    assert_eq!(texts(&load(&path).unwrap()), ["a", "b"]);
    expect_error(
        "d.csv",
        b"text,label\na,x\nc,x\n\n\nb,y\n",
        Some(6),
        "label \"y\" has a single example",
    );
}

#[test]
fn csv_without_label_column_is_unlabelled() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "d.csv", b"\xEF\xBB\xBFtext\none\ntwo\n");
    let d = load(&path).unwrap();
    assert_eq!(texts(&d), ["one", "two"]);
    assert!(d.labels.is_empty());
}

#[test]
fn csv_missing_text_column() {
    expect_error("d.csv", b"body,label\nx,a\n", Some(1), "no \"text\" column");
}

#[test]
fn csv_duplicate_column() {
    expect_error(
        "d.csv",
        b"text,label,text\nx,a,y\n",
        Some(1),
        "names the column \"text\" twice",
    );
}

#[test]
fn csv_wrong_number_of_fields() {
    let err = expect_error(
        "d.csv",
        b"text,label\na,x\n\"multi\nline\",x\nb,x,extra\n",
        Some(5),
        "expected 2 fields like the header, found 3",
    );
    assert!(matches!(err.problem(), Some(Problem::FieldCount { .. })));
}

#[test]
fn csv_unterminated_quote_does_not_panic() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "d.csv", b"text,label\n\"never closed,x\n");
    // The csv crate reads an unterminated quote to the end of input: one field, not two.
    let err = load(&path).unwrap_err().to_string();
    assert!(err.contains("d.csv, line 2"), "{err}");
}

#[test]
fn csv_non_utf8_bytes() {
    expect_error(
        "d.csv",
        b"text,label\nok,x\nok,x\nbad \xff,x\n",
        Some(4),
        "invalid UTF-8",
    );
}

#[test]
fn csv_empty_text() {
    expect_error(
        "d.csv",
        b"text,label\nok,x\n\"  \",x\n",
        Some(3),
        "empty text",
    );
}

#[test]
fn csv_unknown_label() {
    let options = LoadOptions {
        known_labels: Some(vec!["x".into()]),
        ..LoadOptions::default()
    };
    expect_error_with(
        "d.csv",
        b"text,label\na,x\nb,y\n",
        &options,
        Some(3),
        "unknown label \"y\"",
    );
}

#[test]
fn csv_label_with_a_single_example() {
    expect_error(
        "d.csv",
        b"text,label\na,x\nb,y\nc,x\n",
        Some(3),
        "label \"y\" has a single example",
    );
}

#[test]
fn csv_missing_label_when_others_have_one() {
    expect_error(
        "d.csv",
        b"text,label\na,x\nb,\nc,x\n",
        Some(3),
        "no label, but",
    );
}

// ---------------------------------------------------------------- Folder of .txt per label

#[test]
fn folder_one_subfolder_per_label() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ds/spam/2.txt", b"buy now");
    write(&dir, "ds/spam/1.txt", b"cheap pills");
    write(&dir, "ds/ham/a.txt", b"meeting at 3");
    write(&dir, "ds/ham/b.TXT", b"lunch?");
    write(&dir, "ds/ham/notes.md", b"ignored");
    write(&dir, "ds/.hidden/x.txt", b"ignored");
    let d = load(&dir.path().join("ds")).unwrap();
    assert_eq!(d.labels, ["ham", "spam"]);
    assert_eq!(
        texts(&d),
        ["meeting at 3", "lunch?", "cheap pills", "buy now"]
    );
    assert_eq!(label_names(&d), ["ham", "ham", "spam", "spam"]);
}

#[test]
fn flat_folder_is_unlabelled() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ds/a.txt", b"one");
    write(&dir, "ds/b.txt", b"two");
    let d = load(&dir.path().join("ds")).unwrap();
    assert_eq!(texts(&d), ["one", "two"]);
    assert!(d.labels.is_empty());
}

#[test]
fn folder_non_utf8_file_names_file_and_line() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ds/x/a.txt", b"fine");
    let bad = write(&dir, "ds/x/b.txt", b"line one\nline \x80two\n");
    let err = load(&dir.path().join("ds")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}, line 2:", bad.display())),
        "{msg}"
    );
    assert!(msg.contains("invalid UTF-8 at column 6"), "{msg}");
}

#[test]
fn folder_empty_file() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ds/x/a.txt", b"fine");
    let empty = write(&dir, "ds/x/b.txt", b"\n\n");
    let msg = load(&dir.path().join("ds")).unwrap_err().to_string();
    assert_eq!(msg, format!("{}: empty text", empty.display()));
}

#[test]
fn folder_label_with_a_single_example() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ds/x/a.txt", b"one");
    write(&dir, "ds/x/b.txt", b"two");
    let only = write(&dir, "ds/y/c.txt", b"three");
    let msg = load(&dir.path().join("ds")).unwrap_err().to_string();
    assert!(msg.starts_with(&only.display().to_string()), "{msg}");
    assert!(msg.contains("label \"y\" has a single example"), "{msg}");
}

#[test]
fn folder_empty_label_folder_is_an_error_not_a_dropped_label() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ds/x/a.txt", b"one");
    write(&dir, "ds/x/b.txt", b"two");
    write(&dir, "ds/y/notes.md", b"not an example");
    let msg = load(&dir.path().join("ds")).unwrap_err().to_string();
    let y = dir.path().join("ds/y");
    assert!(msg.starts_with(&y.display().to_string()), "{msg}");
    assert!(msg.contains("no .txt example"), "{msg}");
}

#[test]
fn folder_stray_text_file_beside_label_folders() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ds/x/a.txt", b"one");
    let stray = write(&dir, "ds/loose.txt", b"two");
    let msg = load(&dir.path().join("ds")).unwrap_err().to_string();
    assert!(msg.starts_with(&stray.display().to_string()), "{msg}");
    assert!(msg.contains("sub-folder of its label"), "{msg}");
}

#[test]
fn folder_unknown_label() {
    let dir = TempDir::new().unwrap();
    write(&dir, "ds/x/a.txt", b"one");
    write(&dir, "ds/x/b.txt", b"two");
    let options = LoadOptions {
        known_labels: Some(vec!["y".into()]),
        ..LoadOptions::default()
    };
    let msg = load_dataset(&dir.path().join("ds"), &options)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("a.txt: unknown label \"x\""), "{msg}");
}

#[test]
fn empty_folder_has_no_examples() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir(dir.path().join("ds")).unwrap();
    let msg = load(&dir.path().join("ds")).unwrap_err().to_string();
    assert!(msg.ends_with("ds: no examples"), "{msg}");
}

// ---------------------------------------------------------------- format detection

#[test]
fn format_is_picked_from_the_path() {
    let dir = TempDir::new().unwrap();
    for (name, format) in [
        ("a.jsonl", Format::Jsonl),
        ("a.JSONL", Format::Jsonl),
        ("a.ndjson", Format::Jsonl),
        ("a.csv", Format::Csv),
    ] {
        let path = write(&dir, name, b"");
        assert_eq!(Format::detect(&path).unwrap(), format, "{name}");
    }
    assert_eq!(Format::detect(dir.path()).unwrap(), Format::Folder);
}

#[test]
fn unknown_format() {
    let err = expect_error(
        "data.parquet",
        b"PAR1",
        None,
        "cannot tell the dataset format",
    );
    assert_eq!(err.problem(), Some(&Problem::UnknownFormat));
}

// ---------------------------------------------------------------- writing

#[test]
fn jsonl_round_trip() {
    let dir = TempDir::new().unwrap();
    let d = Dataset {
        examples: vec![
            Example {
                text: "quote \" and\nnewline é".into(),
                label: Some(1),
                group: None,
            },
            Example {
                text: "b".into(),
                label: Some(0),
                group: None,
            },
            Example {
                text: "c".into(),
                label: Some(1),
                group: None,
            },
            Example {
                text: "d".into(),
                label: Some(0),
                group: Some("doc 7".into()),
            },
        ],
        labels: vec!["neg".into(), "pos".into()],
    };
    let path = dir.path().join("out.jsonl");
    write_jsonl(&path, &d).unwrap();
    let first = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        first.lines().next().unwrap(),
        r#"{"text":"quote \" and\nnewline é","label":"pos"}"#
    );
    assert_eq!(load(&path).unwrap(), d);
    assert!(first.ends_with("{\"text\":\"d\",\"label\":\"neg\",\"group\":\"doc 7\"}\n"));
    // Unlabelled examples have no label field.
    let lm = Dataset {
        examples: vec![Example {
            text: "x".into(),
            label: None,
            group: None,
        }],
        labels: vec![],
    };
    write_jsonl(&path, &lm).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"text\":\"x\"}\n"
    );
    // Nothing but the file itself is left in the folder.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["out.jsonl"]);
}

#[test]
fn failed_write_leaves_the_old_file() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "keep.jsonl", b"old");
    let err = dpselft_data::write_atomic(&path, |w| {
        w.write_all(b"partial")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("keep.jsonl") && err.to_string().contains("disk full"));
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

// ---------------------------------------------------------------- labels file

#[test]
fn labels_file_round_trip() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join(dpselft_data::LABELS_FILE_NAME);
    let labels: Vec<String> = vec!["b".into(), "a".into(), "ç".into()];
    write_labels(&path, &labels).unwrap();
    assert_eq!(read_labels(&path).unwrap(), labels);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn labels_file_duplicate_label() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "labels.json", br#"{"labels": ["a", "b", "a"]}"#);
    let msg = read_labels(&path).unwrap_err().to_string();
    assert!(
        msg.contains("labels.json") && msg.contains("label \"a\" is listed twice"),
        "{msg}"
    );
    assert!(write_labels(&path, &["x".into(), "x".into()]).is_err());
}

#[test]
fn labels_file_of_wrong_shape() {
    let dir = TempDir::new().unwrap();
    for (content, problem) in [
        (&br#"["a", "b"]"#[..], "no \"labels\" array"),
        (br#"{"labels": ["a", 3]}"#, "a label is a number"),
        (br#"{"labels": "#, "EOF"),
    ] {
        let path = write(&dir, "labels.json", content);
        let msg = read_labels(&path).unwrap_err().to_string();
        assert!(
            msg.contains("labels.json") && msg.contains(problem),
            "{msg}"
        );
    }
}
