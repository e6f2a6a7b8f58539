//! A user's dataset: the three formats (JSONL, CSV with a header, a folder of `.txt` files per
//! label), their validation, the JSONL writer and the labels file kept beside a model.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::csv_format::read_csv;
use crate::folder_format::read_folder;
use crate::{DataError, Location, Problem, write_atomic};

/// The name of the labels file written beside a model (see [`write_labels`]).
pub const LABELS_FILE_NAME: &str = "labels.json";

/// One example: a text and, for classification, the index of its label in [`Dataset::labels`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The text, exactly as read (never empty or whitespace-only).
    pub text: String,
    /// Index into [`Dataset::labels`]; `None` for language-modelling data.
    pub label: Option<usize>,
    /// The unit the example came from (a document, a conversation, a patient), when the data
    /// says so (JSONL's optional `"group"`): examples of one group are correlated, so a
    /// validation split must hold out whole groups ([`crate::split_held_out`]). Training
    /// ignores it (the privacy unit is the example).
    pub group: Option<String>,
}

/// A validated dataset: examples and the label names their indices refer to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dataset {
    /// The examples, in file order.
    pub examples: Vec<Example>,
    /// Label names, in a stable order (sorted, unless a label set was given): index `i` of
    /// [`Example::label`] is `labels[i]`. Empty for unlabelled data.
    pub labels: Vec<String>,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Whether the examples carry labels.
    pub fn is_labelled(&self) -> bool {
        self.examples.first().is_some_and(|e| e.label.is_some())
    }

    /// The label name of an example, if it has one.
    pub fn label_name(&self, example: &Example) -> Option<&str> {
        example
            .label
            .and_then(|i| self.labels.get(i))
            .map(String::as_str)
    }

    /// Number of examples of each label, indexed like [`Dataset::labels`].
    pub fn label_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for e in &self.examples {
            if let Some(c) = e.label.and_then(|i| counts.get_mut(i)) {
                *c += 1;
            }
        }
        counts
    }
}

/// The on-disk format of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line: `{"text": "...", "label": "..."}` (label optional).
    Jsonl,
    /// CSV with a header naming a `text` column and optionally a `label` column.
    Csv,
    /// A folder with one sub-folder of `.txt` files per label (one file = one example), or a
    /// folder of `.txt` files directly (unlabelled).
    Folder,
}

impl Format {
    /// Picks the format from the path: a folder, or a file ending in `.jsonl` / `.ndjson` /
    /// `.json` (JSONL) or `.csv`.
    pub fn detect(path: &Path) -> Result<Format, DataError> {
        if path.is_dir() {
            return Ok(Format::Folder);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "ndjson" | "json") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            _ if !path.exists() => Err(DataError::read(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            )),
            _ => Err(DataError::invalid(
                Location::file(path),
                Problem::UnknownFormat,
            )),
        }
    }
}

/// Whether records must, may or must not carry labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelRequirement {
    /// All records labelled, or none (language modelling): whichever the first record is.
    #[default]
    Auto,
    /// Every record must have a label (classification).
    Required,
    /// Labels are not read at all (language modelling on a labelled dataset).
    Ignore,
}

/// How to validate a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Whether labels are required.
    pub labels: LabelRequirement,
    /// The label set, in its order (e.g. the labels of the model being evaluated): any other
    /// label is an error, and [`Dataset::labels`] is this list. `None`: the sorted labels found.
    pub known_labels: Option<Vec<String>>,
    /// Every label present must have at least this many examples (default 2: a label with a
    /// single example is an error). 0 or 1 disables the check.
    pub min_examples_per_label: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            labels: LabelRequirement::Auto,
            known_labels: None,
            min_examples_per_label: 2,
        }
    }
}

/// Loads and validates a dataset, picking the format from the path ([`Format::detect`]).
pub fn load_dataset(path: &Path, options: &LoadOptions) -> Result<Dataset, DataError> {
    load_dataset_as(path, Format::detect(path)?, options)
}

/// Loads and validates a dataset in the given format.
pub fn load_dataset_as(
    path: &Path,
    format: Format,
    options: &LoadOptions,
) -> Result<Dataset, DataError> {
    if let Some(known) = &options.known_labels {
        check_label_list(known, &Location::file(path))?;
    }
    let records = match format {
        Format::Jsonl => read_jsonl(path, options)?,
        Format::Csv => read_csv(path, options)?,
        Format::Folder => read_folder(path, options)?,
    };
    finish(path, records, options)
}

/// A record as read, before labels are indexed.
pub(crate) struct RawRecord {
    /// Where the record is (file, and line for the line-based formats).
    pub(crate) location: Location,
    /// The text, as read.
    pub(crate) text: String,
    /// The label's name, if the record has one (and labels are read).
    pub(crate) label: Option<String>,
    /// Its group, if the format has one and the record names it.
    pub(crate) group: Option<String>,
}

/// Validates the records read and indexes their labels: there must be at least one record,
/// labels on all records or none (all when required), only known labels (when a label set is
/// given) and at least `min_examples_per_label` examples of each label present.
fn finish(
    path: &Path,
    records: Vec<RawRecord>,
    options: &LoadOptions,
) -> Result<Dataset, DataError> {
    if records.is_empty() {
        return Err(DataError::invalid(
            Location::file(path),
            Problem::NoExamples,
        ));
    }
    let labelled = check_labelled(&records, options)?;
    if !labelled {
        return Ok(unlabelled(records));
    }
    let labels = label_names(&records, options);
    let (examples, tally) = index_labels(records, &labels)?;
    check_label_counts(path, &labels, &tally, options.min_examples_per_label)?;
    Ok(Dataset { examples, labels })
}

/// Whether the dataset is labelled (by the requirement, or by the first record under
/// [`LabelRequirement::Auto`]), checking that every record agrees: labels all or none (or all,
/// when required).
fn check_labelled(records: &[RawRecord], options: &LoadOptions) -> Result<bool, DataError> {
    // Labels: all or none (or all, when required).
    let first = &records[0];
    let labelled = match options.labels {
        LabelRequirement::Ignore => false,
        LabelRequirement::Required => true,
        LabelRequirement::Auto => first.label.is_some(),
    };
    if options.labels != LabelRequirement::Ignore {
        for r in records {
            match (&r.label, labelled) {
                (None, true) => {
                    let why = if options.labels == LabelRequirement::Required {
                        "labels are required".to_string()
                    } else {
                        format!("{} has one: label every record or none", first.location)
                    };
                    return Err(DataError::invalid(
                        r.location.clone(),
                        Problem::MissingLabel(why),
                    ));
                }
                (Some(_), false) => {
                    return Err(DataError::invalid(
                        r.location.clone(),
                        Problem::UnexpectedLabel(format!(
                            "{} has none: label every record or none",
                            first.location
                        )),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(labelled)
}

/// The dataset of unlabelled records (any label read is dropped).
fn unlabelled(records: Vec<RawRecord>) -> Dataset {
    Dataset {
        examples: records
            .into_iter()
            .map(|r| Example {
                text: r.text,
                label: None,
                group: r.group,
            })
            .collect(),
        labels: Vec::new(),
    }
}

/// The label names, in index order: the given label set, or the sorted labels of the records.
fn label_names(records: &[RawRecord], options: &LoadOptions) -> Vec<String> {
    match &options.known_labels {
        Some(known) => known.clone(),
        None => records
            .iter()
            .filter_map(|r| r.label.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    }
}

/// How many examples each label has, and where its first one is.
struct LabelTally {
    /// Number of examples of each label, indexed like the label names.
    counts: Vec<usize>,
    /// The location of each label's first example.
    first_seen: Vec<Option<Location>>,
}

/// Turns labelled records into examples carrying the index of their label in `labels`
/// ([`Problem::UnknownLabel`] for a label not in it), tallying the labels.
fn index_labels(
    records: Vec<RawRecord>,
    labels: &[String],
) -> Result<(Vec<Example>, LabelTally), DataError> {
    let index: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut counts = vec![0usize; labels.len()];
    let mut first_seen: Vec<Option<Location>> = vec![None; labels.len()];
    let mut examples = Vec::with_capacity(records.len());
    for r in records {
        let name = r.label.unwrap_or_default();
        let Some(&i) = index.get(name.as_str()) else {
            return Err(DataError::invalid(
                r.location,
                Problem::UnknownLabel {
                    label: name,
                    known: labels.join(", "),
                },
            ));
        };
        counts[i] += 1;
        if first_seen[i].is_none() {
            first_seen[i] = Some(r.location);
        }
        examples.push(Example {
            text: r.text,
            label: Some(i),
            group: r.group,
        });
    }
    Ok((examples, LabelTally { counts, first_seen }))
}

/// Checks that every label present has at least `min` examples; the error is located at the
/// label's first example.
fn check_label_counts(
    path: &Path,
    labels: &[String],
    tally: &LabelTally,
    min: usize,
) -> Result<(), DataError> {
    for (i, &count) in tally.counts.iter().enumerate() {
        if count > 0 && count < min {
            let location = tally.first_seen[i]
                .clone()
                .unwrap_or_else(|| Location::file(path));
            let label = labels[i].clone();
            let problem = if count == 1 {
                Problem::SingleExample { label, min }
            } else {
                Problem::TooFewExamples { label, count, min }
            };
            return Err(DataError::invalid(location, problem));
        }
    }
    Ok(())
}

/// Reads a whole file (an error names it).
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|e| DataError::read(path, e))
}

/// `bytes` without a leading UTF-8 byte-order mark.
pub(crate) fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Decodes `bytes` as UTF-8, or names the first invalid byte: its line in the file (counting from
/// `first_line`), its column and its offset (from `offset`).
pub(crate) fn utf8_at<'a>(
    bytes: &'a [u8],
    path: &Path,
    first_line: u64,
    offset: usize,
) -> Result<&'a str, DataError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let bad = e.valid_up_to();
        let before = &bytes[..bad];
        let newlines = before.iter().filter(|&&b| b == b'\n').count() as u64;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        DataError::invalid(
            Location::line(path, first_line + newlines),
            Problem::NonUtf8 {
                column: bad - line_start + 1,
                byte: offset + bad,
                value: bytes[bad],
            },
        )
    })
}

/// The JSON type of a value, as an English noun phrase ("a string").
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Rejects an empty or whitespace-only text.
pub(crate) fn check_text(text: &str, location: &Location) -> Result<(), DataError> {
    if text.trim().is_empty() {
        return Err(DataError::invalid(location.clone(), Problem::EmptyText));
    }
    Ok(())
}

/// Rejects an empty or whitespace-only label.
pub(crate) fn check_label(label: &str, location: &Location) -> Result<(), DataError> {
    if label.trim().is_empty() {
        return Err(DataError::invalid(location.clone(), Problem::EmptyLabel));
    }
    Ok(())
}

/// Reads the records of a JSONL file (blank lines skipped).
fn read_jsonl(path: &Path, options: &LoadOptions) -> Result<Vec<RawRecord>, DataError> {
    let bytes = read_bytes(path)?;
    let body = strip_bom(&bytes);
    let bom = bytes.len() - body.len();
    let mut records = Vec::new();
    let mut offset = bom;
    for (i, raw_line) in body.split(|&b| b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let line_offset = offset;
        offset += raw_line.len() + 1;
        let location = Location::line(path, line_no);
        let line = utf8_at(raw_line, path, line_no, line_offset)?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            // serde_json says "... at line 1 column N": the line is ours, keep the column.
            let msg = e.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(m, _)| m)
                .to_string();
            DataError::invalid(
                location.clone(),
                Problem::BadJson(format!("{msg} (column {})", e.column())),
            )
        })?;
        let Value::Object(mut obj) = value else {
            return Err(DataError::invalid(
                location,
                Problem::NotAnObject(json_type(&value)),
            ));
        };
        let text = match obj.remove("text") {
            None => return Err(DataError::invalid(location, Problem::MissingField("text"))),
            Some(Value::String(s)) => s,
            Some(other) => {
                return Err(DataError::invalid(
                    location,
                    Problem::WrongType {
                        field: "text",
                        expected: "a string",
                        found: json_type(&other),
                    },
                ));
            }
        };
        check_text(&text, &location)?;
        let label = if options.labels == LabelRequirement::Ignore {
            None
        } else {
            name_field(
                obj.remove("label"),
                "label",
                "a string (the label's name) or an integer",
                &location,
            )?
        };
        if let Some(l) = &label {
            check_label(l, &location)?;
        }
        let group = name_field(
            obj.remove("group"),
            "group",
            "a string (the example's document, conversation, ...) or an integer",
            &location,
        )?;
        records.push(RawRecord {
            location,
            text,
            label,
            group,
        });
    }
    Ok(records)
}

/// An optional naming field of a JSONL record (`label`, `group`): a string, or an integer taken
/// as its decimal name; absent or null is `None`.
fn name_field(
    value: Option<Value>,
    field: &'static str,
    expected: &'static str,
    location: &Location,
) -> Result<Option<String>, DataError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(DataError::invalid(
            location.clone(),
            Problem::WrongType {
                field,
                expected,
                found: json_type(&other),
            },
        )),
    }
}

/// One line of a JSONL file as written.
#[derive(Serialize)]
struct JsonlRecord<'a> {
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<&'a str>,
}

/// Writes a dataset as JSONL, atomically: one `{"text": ..., "label": ...}` object per line, the
/// label as its name (omitted for unlabelled examples). [`load_dataset`] reads it back.
pub fn write_jsonl(path: &Path, dataset: &Dataset) -> Result<(), DataError> {
    write_atomic(path, |w| {
        for e in &dataset.examples {
            let record = JsonlRecord {
                text: &e.text,
                label: dataset.label_name(e),
                group: e.group.as_deref(),
            };
            serde_json::to_writer(&mut *w, &record)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// The labels file as written.
#[derive(Serialize)]
struct LabelsFile<'a> {
    labels: &'a [String],
}

/// Checks a list of label names: each non-empty, no two the same.
fn check_label_list(labels: &[String], location: &Location) -> Result<(), DataError> {
    let mut seen = BTreeSet::new();
    for l in labels {
        check_label(l, location)?;
        if !seen.insert(l.as_str()) {
            return Err(DataError::invalid(
                location.clone(),
                Problem::DuplicateLabel(l.clone()),
            ));
        }
    }
    Ok(())
}

/// Writes the label names, in their order, as `{"labels": [...]}` (atomically). Keep it beside a
/// model as [`LABELS_FILE_NAME`]: class `i` of the model is `labels[i]`.
pub fn write_labels(path: &Path, labels: &[String]) -> Result<(), DataError> {
    check_label_list(labels, &Location::file(path))?;
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, &LabelsFile { labels })?;
        w.write_all(b"\n")
    })
}

/// Reads a labels file written by [`write_labels`], checking its shape (an object whose
/// `labels` is an array of distinct, non-empty strings).
pub fn read_labels(path: &Path) -> Result<Vec<String>, DataError> {
    let bytes = read_bytes(path)?;
    let text = utf8_at(&bytes, path, 1, 0)?;
    let bad = |msg: String| DataError::invalid(Location::file(path), Problem::BadLabelsFile(msg));
    let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let list = value
        .get("labels")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no \"labels\" array".to_string()))?;
    let labels = list
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("a label is {}, not a string", json_type(v))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_label_list(&labels, &Location::file(path))?;
    Ok(labels)
}
