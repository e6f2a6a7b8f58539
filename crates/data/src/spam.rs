//! The spam task (BENCHMARKS.md): spam/ham classification of the SpamAssassin messages.
//!
//! - Messages: the `.txt` files of the corpus's group folders (`easy-ham-1`, `easy-ham-2`,
//!   `hard-ham-1`, `spam-1`, `spam-2`); the `.json` twins are not messages. Label: `spam` for a
//!   group whose name starts with `spam`, `ham` otherwise.
//! - Example: the decoded Subject line, a blank line, then the body's text ([`extract_message`]:
//!   other headers dropped, MIME parts decoded where they are text, HTML tags removed). Texts
//!   longer than [`MAX_TEXT_CHARS`] are cut there (the model truncates far earlier, at
//!   tokenisation; the cap only keeps the files small).
//! - Split: SHA-256 of the file's basename (extension included); first byte mod 5 = 0 → test.
//!
//! About 500 files are not valid UTF-8 as a whole; their parts are decoded in their declared
//! charsets, and whatever is still invalid is replaced and counted ([`SpamStats`]).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::mime::extract_message;
use crate::{DataError, Dataset, Example, Location, Problem, TaskSplits};

/// Texts are cut to at most this many characters (at a character boundary).
pub const MAX_TEXT_CHARS: usize = 20_000;

/// The label names, in label order.
pub const LABELS: [&str; 2] = ["ham", "spam"];

/// How the messages were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpamStats {
    /// Messages read.
    pub messages: usize,
    /// Message files that are not valid UTF-8 as a whole.
    pub non_utf8_files: usize,
    /// Messages with at least one byte that was invalid in its charset (replaced by U+FFFD).
    pub lenient_messages: usize,
    /// Bytes replaced by U+FFFD, over all messages.
    pub replaced_bytes: usize,
    /// Messages whose text was cut at [`MAX_TEXT_CHARS`].
    pub truncated_messages: usize,
    /// Messages with neither a subject nor any body text.
    pub empty_messages: usize,
}

/// The spam task and how its messages were read.
#[derive(Debug, Clone)]
pub struct SpamBuild {
    /// Train and test splits; labels `["ham", "spam"]`.
    pub splits: TaskSplits,
    /// Decoding statistics.
    pub stats: SpamStats,
}

/// Whether a message file goes to test: the first byte of the SHA-256 of its basename
/// (extension included) is 0 mod 5.
pub fn is_test_file(basename: &str) -> bool {
    Sha256::digest(basename.as_bytes())[0] % 5 == 0
}

/// The label index (into [`LABELS`]) of a group folder: spam for `spam*`, ham otherwise.
pub fn group_label(group: &str) -> usize {
    usize::from(group.starts_with("spam"))
}

/// Cuts `text` to at most `max` characters; returns whether it was cut.
fn truncate_chars(text: &mut String, max: usize) -> bool {
    match text.char_indices().nth(max) {
        Some((byte, _)) => {
            text.truncate(byte);
            true
        }
        None => false,
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::read(dir, e))? {
        out.push(entry.map_err(|e| DataError::read(dir, e))?.path());
    }
    out.sort();
    Ok(out)
}

/// Builds the spam task from the SpamAssassin package folder (the one holding `data/`, or the
/// `data/` folder itself): every sub-folder of it with `.txt` files is a group.
pub fn build_spam(spam_dir: &Path) -> Result<SpamBuild, DataError> {
    let data = spam_dir.join("data");
    let data = if data.is_dir() {
        data
    } else {
        spam_dir.to_path_buf()
    };
    let labels: Vec<String> = LABELS.iter().map(|s| s.to_string()).collect();
    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut stats = SpamStats::default();
    for group_dir in sorted_entries(&data)? {
        if !group_dir.is_dir() {
            continue;
        }
        let Some(group) = group_dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let label = group_label(group);
        for path in sorted_entries(&group_dir)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".txt") || !path.is_file() {
                continue;
            }
            let raw = std::fs::read(&path).map_err(|e| DataError::read(&path, e))?;
            stats.messages += 1;
            if std::str::from_utf8(&raw).is_err() {
                stats.non_utf8_files += 1;
            }
            let message = extract_message(&raw);
            if message.replaced_bytes > 0 {
                stats.lenient_messages += 1;
                stats.replaced_bytes += message.replaced_bytes;
            }
            if message.subject.is_empty() && message.body.is_empty() {
                stats.empty_messages += 1;
            }
            let mut text = message.example_text();
            if truncate_chars(&mut text, MAX_TEXT_CHARS) {
                stats.truncated_messages += 1;
            }
            let example = Example {
                text,
                label: Some(label),
                group: None,
            };
            if is_test_file(name) {
                test.push(example);
            } else {
                train.push(example);
            }
        }
    }
    if stats.messages == 0 {
        return Err(DataError::invalid(
            Location::file(&data),
            Problem::Corpus("no message (.txt file) found in any group folder".into()),
        ));
    }
    Ok(SpamBuild {
        splits: TaskSplits {
            train: Dataset {
                examples: train,
                labels: labels.clone(),
            },
            test: Dataset {
                examples: test,
                labels,
            },
        },
        stats,
    })
}
