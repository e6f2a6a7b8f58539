//! The error type of the crate: every validation error names the file, the line (or record) and
//! the problem.

use std::fmt;
use std::path::PathBuf;

/// Where a problem was found: a file, and the line in it when the problem belongs to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (or folder) at fault.
    pub path: PathBuf,
    /// The 1-based line of the record at fault, if the problem belongs to a record.
    pub line: Option<u64>,
}

impl Location {
    /// A location naming a whole file or folder.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Location {
            path: path.into(),
            line: None,
        }
    }

    /// A location naming one line of a file.
    pub fn line(path: impl Into<PathBuf>, line: u64) -> Self {
        Location {
            path: path.into(),
            line: Some(line),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}, line {line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// What is wrong with a dataset, a labels file or a corpus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A JSONL line that is not valid JSON.
    #[error("invalid JSON: {0}")]
    BadJson(String),
    /// A JSONL line that is valid JSON but not an object.
    #[error("expected a JSON object like {{\"text\": \"...\", \"label\": \"...\"}}, found {0}")]
    NotAnObject(&'static str),
    /// A required field (JSONL) or column (CSV) is absent.
    #[error("missing field \"{0}\"")]
    MissingField(&'static str),
    /// A field holds a value of the wrong JSON type.
    #[error("field \"{field}\" must be {expected}, found {found}")]
    WrongType {
        /// The field's name.
        field: &'static str,
        /// What the field must hold.
        expected: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// The text is empty or only whitespace.
    #[error("empty text")]
    EmptyText,
    /// The label is an empty string.
    #[error("empty label")]
    EmptyLabel,
    /// A label outside the given label set.
    #[error("unknown label \"{label}\" (known labels: {known})")]
    UnknownLabel {
        /// The label found.
        label: String,
        /// The known labels, comma-separated.
        known: String,
    },
    /// Bytes that are not valid UTF-8.
    #[error(
        "invalid UTF-8 at column {column} (byte {byte}: 0x{value:02x}); save the file as UTF-8"
    )]
    NonUtf8 {
        /// 1-based byte column of the first invalid byte in its line.
        column: usize,
        /// 0-based byte offset of the first invalid byte in the file.
        byte: usize,
        /// The invalid byte.
        value: u8,
    },
    /// A label with fewer examples than required.
    #[error(
        "label \"{label}\" has a single example (every label needs at least {min}); add examples or drop it"
    )]
    SingleExample {
        /// The label.
        label: String,
        /// The minimum number of examples per label.
        min: usize,
    },
    /// A label with fewer examples than required, when more than two are required.
    #[error("label \"{label}\" has only {count} examples (every label needs at least {min})")]
    TooFewExamples {
        /// The label.
        label: String,
        /// How many examples it has.
        count: usize,
        /// The minimum number of examples per label.
        min: usize,
    },
    /// A record without a label in a dataset whose other records have one (or labels required).
    #[error("no label, but {0}")]
    MissingLabel(String),
    /// A record with a label in a dataset whose earlier records have none.
    #[error("has a label, but {0}")]
    UnexpectedLabel(String),
    /// A CSV header that lacks a required column.
    #[error("the header has no \"{0}\" column (expected a header like: text,label)")]
    MissingColumn(&'static str),
    /// A CSV header that names a column twice.
    #[error("the header names the column \"{0}\" twice")]
    DuplicateColumn(String),
    /// A CSV record with the wrong number of fields.
    #[error("expected {expected} fields like the header, found {found}")]
    FieldCount {
        /// Fields in the header.
        expected: u64,
        /// Fields in this record.
        found: u64,
    },
    /// Any other malformed CSV.
    #[error("malformed CSV: {0}")]
    Csv(String),
    /// The dataset holds no example at all.
    #[error("no examples")]
    NoExamples,
    /// The path's format cannot be told from its name.
    #[error(
        "cannot tell the dataset format: expected a .jsonl or .csv file, or a folder with one sub-folder of .txt files per label"
    )]
    UnknownFormat,
    /// A folder dataset mixing top-level .txt files with label sub-folders.
    #[error(
        "a .txt file directly in a dataset folder that has label sub-folders: move it into the sub-folder of its label"
    )]
    StrayTextFile,
    /// A name (label, folder) that is not valid UTF-8.
    #[error("the name is not valid UTF-8")]
    NonUtf8Name,
    /// A label listed twice in a labels file.
    #[error("label \"{0}\" is listed twice")]
    DuplicateLabel(String),
    /// A labels file that is not of the expected shape.
    #[error("expected a labels file like {{\"labels\": [\"a\", \"b\"]}}: {0}")]
    BadLabelsFile(String),
    /// A label sub-folder of a folder dataset without a single `.txt` example.
    #[error("a label folder with no .txt example: add its examples, or remove the folder")]
    EmptyLabelFolder,
    /// Classification training data with a single label.
    #[error(
        "every example has the label \"{0}\": a classifier trained on it has one answer (classification needs at least two labels)"
    )]
    OneLabel(String),
    /// Evaluation data that is mostly training data.
    #[error(
        "{shared} of its {total} examples are also in the training data {train} (e.g. example #{first_eval}, training example #{first_train}): an evaluation on training examples is no held-out result, and releases what the ledger does not cover"
    )]
    EvalIsTrainingData {
        /// Evaluation examples whose text is also a training example's.
        shared: usize,
        /// Evaluation examples.
        total: usize,
        /// The training data's path.
        train: String,
        /// The first shared evaluation example (1-based, file order).
        first_eval: usize,
        /// Its training twin (1-based, file order).
        first_train: usize,
    },
    /// A problem in a benchmark corpus.
    #[error("{0}")]
    Corpus(String),
}

/// An error of the data crate.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid content, at a location.
    #[error("{location}: {problem}")]
    Invalid {
        /// Where.
        location: Location,
        /// What.
        problem: Problem,
    },
}

impl DataError {
    /// An invalid-content error.
    pub fn invalid(location: Location, problem: Problem) -> Self {
        DataError::Invalid { location, problem }
    }

    /// The problem, for invalid-content errors.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            DataError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// The location, for invalid-content errors.
    pub fn location(&self) -> Option<&Location> {
        match self {
            DataError::Invalid { location, .. } => Some(location),
            _ => None,
        }
    }

    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Read {
            path: path.into(),
            source,
        }
    }
}
