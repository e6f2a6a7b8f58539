//! The CSV format: a header naming a `text` column and optionally a `label` column, then one
//! record per row (a quoted field may span lines).

use std::collections::BTreeSet;
use std::path::Path;

use crate::dataset::{
    LabelRequirement, LoadOptions, RawRecord, check_label, check_text, read_bytes, strip_bom,
    utf8_at,
};
use crate::{DataError, Location, Problem};

/// Reads the records of a CSV file.
pub(crate) fn read_csv(path: &Path, options: &LoadOptions) -> Result<Vec<RawRecord>, DataError> {
    let bytes = read_bytes(path)?;
    let body = strip_bom(&bytes);
    let bom = bytes.len() - body.len();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(body);
    let lines = LineIndex::new(body);
    let csv_err = |e: csv::Error| csv_error(path, &lines, e);
    let header = reader.byte_headers().map_err(csv_err)?.clone();
    let (text_col, mut label_col) = find_columns(&header, path, bom)?;
    if options.labels == LabelRequirement::Ignore {
        label_col = None;
    }
    let columns = Columns {
        path,
        lines: &lines,
        bom,
        text_col,
        label_col,
    };
    let mut records = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_err(e)),
        }
        records.push(columns.record(&record)?);
    }
    Ok(records)
}

/// The line numbers of byte offsets in a CSV body.
///
/// The csv crate's line numbers do not count empty lines, and a record's position is where
/// the empty lines before it start: skip those and count lines from the byte offset.
struct LineIndex<'a> {
    /// The body (after the BOM).
    body: &'a [u8],
    /// The offsets of its `\n` bytes, in order.
    newlines: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Indexes the line breaks of `body`.
    fn new(body: &'a [u8]) -> Self {
        let newlines: Vec<usize> = body
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        LineIndex { body, newlines }
    }

    /// The 1-based line of the first non-line-break byte at or after `byte`.
    fn line_at(&self, byte: u64) -> u64 {
        let mut byte = byte as usize;
        while matches!(self.body.get(byte), Some(b'\n' | b'\r')) {
            byte += 1;
        }
        self.newlines.partition_point(|&p| p < byte) as u64 + 1
    }
}

/// A csv crate error as a [`DataError`] located at its line.
fn csv_error(path: &Path, lines: &LineIndex<'_>, e: csv::Error) -> DataError {
    let line = e.position().map(|p| lines.line_at(p.byte()));
    let location = Location {
        path: path.to_path_buf(),
        line,
    };
    let problem = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => Problem::FieldCount {
            expected: *expected_len,
            found: *len,
        },
        _ => {
            let msg = e.to_string();
            Problem::Csv(msg)
        }
    };
    DataError::invalid(location, problem)
}

/// The indices of the `text` and `label` columns of the header (names compared trimmed and
/// case-insensitively); an error for a duplicate column name or a missing `text` column.
fn find_columns(
    header: &csv::ByteRecord,
    path: &Path,
    bom: usize,
) -> Result<(usize, Option<usize>), DataError> {
    let mut text_col = None;
    let mut label_col = None;
    let mut seen = BTreeSet::new();
    for (i, field) in header.iter().enumerate() {
        let name = utf8_at(field, path, 1, bom)?.trim().to_ascii_lowercase();
        if !name.is_empty() && !seen.insert(name.clone()) {
            return Err(DataError::invalid(
                Location::line(path, 1),
                Problem::DuplicateColumn(name),
            ));
        }
        match name.as_str() {
            "text" => text_col = Some(i),
            "label" => label_col = Some(i),
            _ => {}
        }
    }
    let Some(text_col) = text_col else {
        return Err(DataError::invalid(
            Location::line(path, 1),
            Problem::MissingColumn("text"),
        ));
    };
    Ok((text_col, label_col))
}

/// What turning a CSV row into a record needs: where it is and which columns to read.
struct Columns<'a> {
    /// The file.
    path: &'a Path,
    /// Its line index.
    lines: &'a LineIndex<'a>,
    /// The length of its byte-order mark (0 or 3).
    bom: usize,
    /// The `text` column.
    text_col: usize,
    /// The `label` column, unless absent or ignored.
    label_col: Option<usize>,
}

impl Columns<'_> {
    /// The record of one row, its text and label checked (an empty label field is no label).
    fn record(&self, record: &csv::ByteRecord) -> Result<RawRecord, DataError> {
        let (line, byte) = record.position().map_or((0, 0), |p| {
            (self.lines.line_at(p.byte()), p.byte() as usize)
        });
        let location = Location::line(self.path, line);
        let text = field_text(record, self.text_col, &location, self.bom + byte)?;
        check_text(&text, &location)?;
        let label = match self.label_col {
            Some(col) => {
                let l = field_text(record, col, &location, self.bom + byte)?;
                if l.is_empty() { None } else { Some(l) }
            }
            None => None,
        };
        if let Some(l) = &label {
            check_label(l, &location)?;
        }
        Ok(RawRecord {
            location,
            text,
            label,
            group: None,
        })
    }
}

/// A field of a record as UTF-8 (empty when the row has no such column). A record may span lines
/// (quoted newlines); invalid UTF-8 is reported at the record's line, with its column in the field
/// and the record's byte offset `byte` in the file.
fn field_text(
    record: &csv::ByteRecord,
    col: usize,
    location: &Location,
    byte: usize,
) -> Result<String, DataError> {
    let raw = record.get(col).unwrap_or_default();
    match std::str::from_utf8(raw) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let bad = e.valid_up_to();
            Err(DataError::invalid(
                location.clone(),
                Problem::NonUtf8 {
                    column: bad + 1,
                    byte,
                    value: raw[bad],
                },
            ))
        }
    }
}
