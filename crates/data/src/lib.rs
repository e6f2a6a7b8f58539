//! Datasets for dpselft: JSONL / CSV / folder-per-label formats with validation that names the
//! file and record at fault, and the builders of the benchmark tasks (brown-genre, spam).
//!
//! - [`load_dataset`] reads a user's dataset, picking the format from the path ([`Format`]), and
//!   validates it ([`LoadOptions`]); every error names the file, the line and the problem.
//! - [`write_jsonl`] writes a dataset back as JSONL; [`write_labels`] / [`read_labels`] keep the
//!   label names beside a model. All writes are atomic (temporary file + rename).
//! - [`BenchmarkTask`] builds the benchmark tasks of BENCHMARKS.md from the fetched corpora:
//!   [`build_brown_genre`] and [`build_spam`], both giving [`TaskSplits`].

#![warn(missing_docs)]

mod atomic;
pub mod brown;
mod csv_format;
mod dataset;
mod error;
mod folder_format;
pub mod html;
pub mod mime;
mod mime_decode;
mod mime_header;
mod overlap;
pub mod spam;
pub mod subset;
mod task;

pub use atomic::write_atomic;
pub use brown::build_brown_genre;
pub use dataset::{
    Dataset, Example, Format, LABELS_FILE_NAME, LabelRequirement, LoadOptions, load_dataset,
    load_dataset_as, read_labels, write_jsonl, write_labels,
};
pub use error::{DataError, Location, Problem};
pub use overlap::{Overlap, check_eval_overlap, check_two_labels, overlap};
pub use spam::{SpamBuild, SpamStats, build_spam};
pub use subset::{SeededChoice, fisher_yates, split_held_out, subset};
pub use task::{BenchmarkTask, BuiltTask, LabelCount, TaskSplits, format_counts_table};
