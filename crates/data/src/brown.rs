//! The brown-genre task (BENCHMARKS.md): 15-way genre classification of passages of the Brown
//! corpus.
//!
//! - A sentence is a non-blank line of a tagged document; its tokens are split on whitespace and
//!   only the last `/tag` of each is removed (`and/or/cc` → `and/or`).
//! - An example is a passage of up to [`SENTENCES_PER_PASSAGE`] consecutive sentences
//!   (non-overlapping windows from the document's first sentence; the last may be shorter), its
//!   tokens joined by single spaces, nothing else normalised. Its label is the document's genre as
//!   `cats.txt` names it.
//! - The split is by document: within each genre the documents are sorted by id, and every 5th
//!   (index mod 5 = 4) goes to test, the rest to train.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{DataError, Dataset, Example, Location, Problem, TaskSplits};

/// Sentences per passage.
pub const SENTENCES_PER_PASSAGE: usize = 3;

/// Within each genre, document index `i` (documents sorted by id) goes to test when
/// `i % TEST_EVERY == TEST_EVERY - 1`.
pub const TEST_EVERY: usize = 5;

/// The file of the corpus that gives each document's genre.
pub const CATEGORIES_FILE: &str = "cats.txt";

/// Removes the last `/tag` of a tagged token: `and/or/cc` → `and/or`, `//in` → `/`. A token
/// without a slash is returned unchanged.
pub fn strip_tag(token: &str) -> &str {
    token.rsplit_once('/').map_or(token, |(word, _tag)| word)
}

/// The sentences of a tagged document: one per non-blank line, each as its untagged tokens.
pub fn sentences(tagged: &str) -> Vec<Vec<&str>> {
    tagged
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(strip_tag)
                // A token that is nothing but a tag ("/nn") leaves nothing to join.
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The passages of a tagged document: windows of up to [`SENTENCES_PER_PASSAGE`] sentences, all
/// tokens joined by single spaces.
pub fn passages(tagged: &str) -> Vec<String> {
    sentences(tagged)
        .chunks(SENTENCES_PER_PASSAGE)
        .map(|window| window.concat().join(" "))
        .collect()
}

/// Reads `cats.txt`: `(document id, genre)` for each non-blank line `<id> <genre>`.
pub fn read_categories(path: &Path) -> Result<Vec<(String, String)>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::read(path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        DataError::invalid(
            Location::file(path),
            Problem::Corpus("not valid UTF-8".into()),
        )
    })?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let location = Location::line(path, i as u64 + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => continue,
            [id, genre] => {
                if !seen.insert(id.to_string()) {
                    return Err(DataError::invalid(
                        location,
                        Problem::Corpus(format!("document {id} is listed twice")),
                    ));
                }
                out.push((id.to_string(), genre.to_string()));
            }
            _ => {
                return Err(DataError::invalid(
                    location,
                    Problem::Corpus(format!(
                        "expected \"<document id> <genre>\", found {} fields",
                        fields.len()
                    )),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(DataError::invalid(
            Location::file(path),
            Problem::Corpus("lists no document".into()),
        ));
    }
    Ok(out)
}

/// Builds the brown-genre task from the Brown corpus folder (the one holding `cats.txt` and the
/// tagged documents `ca01` … `cr09`).
pub fn build_brown_genre(brown_dir: &Path) -> Result<TaskSplits, DataError> {
    let cats = read_categories(&brown_dir.join(CATEGORIES_FILE))?;
    let mut by_genre: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, genre) in cats {
        by_genre.entry(genre).or_default().push(id);
    }
    let labels: Vec<String> = by_genre.keys().cloned().collect();
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (label, docs) in by_genre.values_mut().enumerate() {
        docs.sort();
        for (i, id) in docs.iter().enumerate() {
            let path = brown_dir.join(id);
            let bytes = std::fs::read(&path).map_err(|e| DataError::read(&path, e))?;
            let text = crate::dataset::utf8_at(&bytes, &path, 1, 0)?;
            let split = if i % TEST_EVERY == TEST_EVERY - 1 {
                &mut test
            } else {
                &mut train
            };
            // The document is the group: its passages are correlated, so a validation split
            // of the training passages holds out whole documents, as the test split does.
            split.extend(passages(text).into_iter().map(|text| Example {
                text,
                label: Some(label),
                group: Some(id.clone()),
            }));
        }
    }
    Ok(TaskSplits {
        train: Dataset {
            examples: train,
            labels: labels.clone(),
        },
        test: Dataset {
            examples: test,
            labels,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_the_last_tag() {
        assert_eq!(strip_tag("and/or/cc"), "and/or");
        assert_eq!(strip_tag("The/at"), "The");
        assert_eq!(strip_tag("//in"), "/");
        assert_eq!(strip_tag("1/2/cd"), "1/2");
        assert_eq!(strip_tag("Atlanta's/np$"), "Atlanta's");
        assert_eq!(strip_tag("notag"), "notag");
    }

    #[test]
    fn sentences_are_non_blank_lines_with_tabs_and_extra_spaces() {
        let doc = "\n\n\tThe/at jury/nn  said/vbd ./.\n \t \n\n\tIt/pps and/or/cc ran/vbd ./.\n";
        assert_eq!(
            sentences(doc),
            vec![
                vec!["The", "jury", "said", "."],
                vec!["It", "and/or", "ran", "."]
            ]
        );
    }

    #[test]
    fn passages_are_windows_of_three_sentences_joined_by_single_spaces() {
        let doc = "\tA/x a/x\n\n\tB/x\n\tC/x c/x\n\n\tD/x\n\tE/x e/x e/x\n";
        assert_eq!(passages(doc), vec!["A a B C c", "D E e e"]);
        let doc = "\tA/x\n\tB/x\n\tC/x\n\tD/x\n\tE/x\n\tF/x\n\tG/x\n";
        assert_eq!(passages(doc), vec!["A B C", "D E F", "G"]);
        assert!(passages("\n \n").is_empty());
    }

    #[test]
    fn categories_file_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cats.txt");
        std::fs::write(&path, "ca01 news\nca02 news extra\n").unwrap();
        let err = read_categories(&path).unwrap_err().to_string();
        assert!(err.contains("cats.txt, line 2"), "{err}");
        std::fs::write(&path, "ca01 news\n\nca01 lore\n").unwrap();
        let err = read_categories(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("listed twice"),
            "{err}"
        );
    }
}
