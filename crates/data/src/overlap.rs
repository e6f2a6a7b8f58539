//! Checks between a training set and the data a run evaluates or trains on beside it: no
//! evaluation set that is (mostly) the training set, no classifier trained on a single label.
//!
//! Examples are compared by content: their text with runs of whitespace collapsed, so that a
//! copy re-wrapped or re-indented still counts as the same example.

use std::collections::HashMap;
use std::path::Path;

use crate::{DataError, Dataset, Location, Problem};

/// Evaluation examples whose content is also a training example's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    /// How many evaluation examples are shared.
    pub shared: usize,
    /// The evaluation set's size.
    pub total: usize,
    /// The first shared evaluation example and its training twin (0-based, file order).
    pub first: Option<(usize, usize)>,
}

/// The evaluation examples of `eval` whose content is also in `train`.
pub fn overlap(train: &Dataset, eval: &Dataset) -> Overlap {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(train.len());
    for (i, e) in train.examples.iter().enumerate() {
        seen.entry(content(&e.text)).or_insert(i);
    }
    let mut shared = 0;
    let mut first = None;
    for (i, e) in eval.examples.iter().enumerate() {
        if let Some(&j) = seen.get(&content(&e.text)) {
            shared += 1;
            first.get_or_insert((i, j));
        }
    }
    Overlap {
        shared,
        total: eval.len(),
        first,
    }
}

fn content(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Refuses an evaluation set `eval` (read from `eval_path`) of which half or more is training
/// data (`train`, from `train_path`): that is evaluating on the training set. A smaller overlap
/// — natural corpora repeat some texts, e.g. identical spam mails — is returned for the caller to
/// report.
pub fn check_eval_overlap(
    train: &Dataset,
    train_path: &Path,
    eval: &Dataset,
    eval_path: &Path,
) -> Result<Overlap, DataError> {
    let o = overlap(train, eval);
    match o.first {
        Some((i, j)) if 2 * o.shared >= o.total => Err(DataError::invalid(
            Location::file(eval_path),
            Problem::EvalIsTrainingData {
                shared: o.shared,
                total: o.total,
                train: train_path.display().to_string(),
                first_eval: i + 1,
                first_train: j + 1,
            },
        )),
        _ => Ok(o),
    }
}

/// Refuses classification training data (read from `path`) with fewer than two labels.
pub fn check_two_labels(train: &Dataset, path: &Path) -> Result<(), DataError> {
    let present: Vec<usize> = train
        .label_counts()
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(i, _)| i)
        .collect();
    match present.as_slice() {
        [only] => Err(DataError::invalid(
            Location::file(path),
            Problem::OneLabel(train.labels[*only].clone()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Example;

    fn set(texts: &[&str], label: usize) -> Dataset {
        Dataset {
            examples: texts
                .iter()
                .map(|t| Example {
                    text: t.to_string(),
                    label: Some(label),
                    group: None,
                })
                .collect(),
            labels: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn overlap_compares_content_not_layout() {
        let train = set(&["one two", "three"], 0);
        let eval = set(&["x", " one\n  two ", "y", "three"], 0);
        let o = overlap(&train, &eval);
        assert_eq!((o.shared, o.total, o.first), (2, 4, Some((1, 0))));
    }

    #[test]
    fn mostly_training_data_is_refused_a_little_overlap_reported() {
        let (tp, ep) = (Path::new("train.jsonl"), Path::new("test.jsonl"));
        let train = set(&["a", "b", "c"], 0);
        let err = check_eval_overlap(&train, tp, &set(&["a", "b", "z"], 0), ep).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("test.jsonl") && msg.contains("2 of its 3") && msg.contains("#1"),
            "{msg}"
        );
        let small = check_eval_overlap(&train, tp, &set(&["a", "x", "y", "z"], 0), ep).unwrap();
        assert_eq!(small.shared, 1);
        let none = check_eval_overlap(&train, tp, &set(&["x"], 0), ep).unwrap();
        assert_eq!(none.first, None);
    }

    #[test]
    fn one_label_is_refused() {
        let err = check_two_labels(&set(&["a", "b"], 1), Path::new("t.jsonl")).unwrap_err();
        assert!(err.to_string().contains("\"b\""), "{err}");
        let mut two = set(&["a", "b"], 1);
        two.examples[0].label = Some(0);
        check_two_labels(&two, Path::new("t.jsonl")).unwrap();
    }
}
