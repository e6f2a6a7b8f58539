//! The folder format: one sub-folder of `.txt` files per label (one file = one example), or a
//! folder of `.txt` files directly (unlabelled).

use std::path::{Path, PathBuf};

use crate::dataset::{
    LabelRequirement, LoadOptions, RawRecord, check_text, read_bytes, strip_bom, utf8_at,
};
use crate::{DataError, Location, Problem};

/// Whether a path names a `.txt` file (any case).
fn is_txt(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

/// Whether a path names a hidden entry (its name starts with `.`).
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of a folder.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::read(dir, e))? {
        let entry = entry.map_err(|e| DataError::read(dir, e))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Reads one example file: UTF-8 (BOM skipped), not blank.
fn read_text_file(path: &Path) -> Result<String, DataError> {
    let bytes = read_bytes(path)?;
    let body = strip_bom(&bytes);
    let text = utf8_at(body, path, 1, bytes.len() - body.len())?.to_string();
    check_text(&text, &Location::file(path))?;
    Ok(text)
}

/// Reads the records of a folder dataset (hidden entries and non-`.txt` files ignored).
pub(crate) fn read_folder(dir: &Path, options: &LoadOptions) -> Result<Vec<RawRecord>, DataError> {
    let entries = list_dir(dir)?;
    let subdirs: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| p.is_dir() && !is_hidden(p))
        .collect();
    let top_files: Vec<&PathBuf> = entries
        .iter()
        .filter(|p| p.is_file() && is_txt(p) && !is_hidden(p))
        .collect();
    let mut records = Vec::new();
    if subdirs.is_empty() {
        // A flat folder of .txt files: unlabelled examples.
        for file in top_files {
            records.push(RawRecord {
                location: Location::file(file),
                text: read_text_file(file)?,
                label: None,
                group: None,
            });
        }
        return Ok(records);
    }
    if let Some(stray) = top_files.first() {
        return Err(DataError::invalid(
            Location::file(*stray),
            Problem::StrayTextFile,
        ));
    }
    for sub in subdirs {
        let name = sub
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| DataError::invalid(Location::file(sub), Problem::NonUtf8Name))?;
        let label = (options.labels != LabelRequirement::Ignore).then(|| name.to_string());
        let before = records.len();
        for file in list_dir(sub)? {
            if file.is_file() && is_txt(&file) && !is_hidden(&file) {
                records.push(RawRecord {
                    text: read_text_file(&file)?,
                    location: Location::file(file),
                    label: label.clone(),
                    group: None,
                });
            }
        }
        // A label whose folder is empty would silently vanish from the label set.
        if label.is_some() && records.len() == before {
            return Err(DataError::invalid(
                Location::file(sub),
                Problem::EmptyLabelFolder,
            ));
        }
    }
    Ok(records)
}
