//! The benchmark tasks of BENCHMARKS.md and their train/test splits.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::{DataError, Dataset, Example, SpamStats, write_jsonl};

/// A benchmark task built from a fetched corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BenchmarkTask {
    /// 15-way genre classification of Brown corpus passages.
    BrownGenre,
    /// Spam/ham classification of the SpamAssassin messages.
    Spam,
    /// Causal language modelling of the SpamAssassin ham (legitimate mail) messages: private
    /// mail as a model would be fine-tuned to write it. Unlabelled; spam's split.
    HamLm,
}

impl BenchmarkTask {
    /// Every task.
    pub const ALL: [BenchmarkTask; 3] = [
        BenchmarkTask::BrownGenre,
        BenchmarkTask::Spam,
        BenchmarkTask::HamLm,
    ];

    /// The task's name on the command line and in reports: `brown-genre`, `spam`, `ham-lm`.
    pub fn name(self) -> &'static str {
        match self {
            BenchmarkTask::BrownGenre => "brown-genre",
            BenchmarkTask::Spam => "spam",
            BenchmarkTask::HamLm => "ham-lm",
        }
    }

    /// Whether the task's examples name their group (brown-genre: the document of each
    /// passage), so that validation splits hold out whole groups.
    pub fn has_groups(self) -> bool {
        self == BenchmarkTask::BrownGenre
    }

    /// Whether the task is language modelling (unlabelled text) rather than classification.
    pub fn is_language_modelling(self) -> bool {
        self == BenchmarkTask::HamLm
    }

    /// What one example is, in a few public words (for the synthetic stage's prompts).
    pub fn data_kind(self) -> &'static str {
        match self {
            BenchmarkTask::BrownGenre => "passage of American English prose from 1961",
            BenchmarkTask::Spam => "email message",
            // Unlabelled: the kind alone says what to write.
            BenchmarkTask::HamLm => {
                "email message with a subject line, such as a message between colleagues or \
                 friends or a post to a mailing list"
            }
        }
    }

    /// A public description of each label, as `(label, phrase)`: the synthetic stage's prompts
    /// say it after the kind of example (`{description}`), because a generator that reads only
    /// a bare name writes off task (a "ham" email became a recipe). They paraphrase the corpora's
    /// own documentation (the Brown Corpus manual's genre list; SpamAssassin's ham/spam), never
    /// the private examples.
    pub fn label_descriptions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            BenchmarkTask::BrownGenre => &[
                ("adventure", "from an adventure story or a western"),
                (
                    "belles_lettres",
                    "of belles lettres: from a biography, a memoir or an essay",
                ),
                (
                    "editorial",
                    "from a newspaper editorial, column or letter to the editor",
                ),
                ("fiction", "from a general novel or short story"),
                (
                    "government",
                    "from a government document, a foundation or industry report, or a college catalog",
                ),
                (
                    "hobbies",
                    "from a book or magazine article about a skill, a trade or a hobby",
                ),
                ("humor", "from a humorous story or essay"),
                (
                    "learned",
                    "from a learned article in the sciences, medicine, engineering or the humanities",
                ),
                (
                    "lore",
                    "of popular lore: popular non-fiction about history, science, society or health",
                ),
                ("mystery", "from a mystery or detective story"),
                ("news", "from a newspaper's news report"),
                (
                    "religion",
                    "from a book, periodical or tract about religion",
                ),
                (
                    "reviews",
                    "from a newspaper review of a book, a play, a concert or a film",
                ),
                ("romance", "from a romance or love story"),
                ("science_fiction", "from a science-fiction story"),
            ],
            BenchmarkTask::Spam => &[
                (
                    "ham",
                    "that is not spam: an ordinary email a person wants, such as a message between \
                     colleagues or friends or a post to a mailing list, with a subject line",
                ),
                (
                    "spam",
                    "that is spam: an unsolicited bulk email advertising a product, a service, a \
                     loan or a money-making offer, with a subject line",
                ),
            ],
            BenchmarkTask::HamLm => &[],
        }
    }

    /// The corpus folder's name inside the assets folder: `brown`, `spamassassin`.
    pub fn corpus_dir_name(self) -> &'static str {
        match self {
            BenchmarkTask::BrownGenre => "brown",
            BenchmarkTask::Spam | BenchmarkTask::HamLm => "spamassassin",
        }
    }

    /// The corpus folder inside an assets folder.
    pub fn corpus_dir(self, assets_dir: &Path) -> PathBuf {
        assets_dir.join(self.corpus_dir_name())
    }

    /// Builds the task from the assets folder (the one holding `brown/` and `spamassassin/`).
    pub fn build(self, assets_dir: &Path) -> Result<BuiltTask, DataError> {
        let dir = self.corpus_dir(assets_dir);
        Ok(match self {
            BenchmarkTask::BrownGenre => BuiltTask {
                task: self,
                splits: crate::build_brown_genre(&dir)?,
                spam_stats: None,
            },
            BenchmarkTask::Spam => {
                let built = crate::build_spam(&dir)?;
                BuiltTask {
                    task: self,
                    splits: built.splits,
                    spam_stats: Some(built.stats),
                }
            }
            BenchmarkTask::HamLm => {
                let built = crate::build_spam(&dir)?;
                BuiltTask {
                    task: self,
                    splits: built.splits.ham_text(),
                    spam_stats: Some(built.stats),
                }
            }
        })
    }
}

impl std::fmt::Display for BenchmarkTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BenchmarkTask {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BenchmarkTask::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown task \"{s}\" (tasks: brown-genre, spam, ham-lm)"))
    }
}

/// A built task: its splits, and for spam the decoding statistics.
#[derive(Debug, Clone)]
pub struct BuiltTask {
    /// Which task.
    pub task: BenchmarkTask,
    /// The train and test splits.
    pub splits: TaskSplits,
    /// How the SpamAssassin messages were decoded (spam and ham-lm).
    pub spam_stats: Option<SpamStats>,
}

/// The train and test splits of a task; both have the same label list (empty for language
/// modelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSplits {
    /// The training split.
    pub train: Dataset,
    /// The test split.
    pub test: Dataset,
}

/// The number of examples of one label in each split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelCount {
    /// The label's name.
    pub label: String,
    /// Examples in train.
    pub train: usize,
    /// Examples in test.
    pub test: usize,
}

impl TaskSplits {
    /// The label names (the same in both splits).
    pub fn labels(&self) -> &[String] {
        &self.train.labels
    }

    /// The `ham` examples of spam's splits as unlabelled text (ham-lm): each split keeps its
    /// side of spam's split, so no test message is a training message.
    fn ham_text(self) -> TaskSplits {
        let only_ham = |d: Dataset| {
            let ham = d.labels.iter().position(|l| l == "ham");
            Dataset {
                examples: d
                    .examples
                    .into_iter()
                    .filter(|e| e.label.is_some() && e.label == ham)
                    .map(|e| Example {
                        text: e.text,
                        label: None,
                        group: e.group,
                    })
                    .collect(),
                labels: Vec::new(),
            }
        };
        TaskSplits {
            train: only_ham(self.train),
            test: only_ham(self.test),
        }
    }

    /// Examples per label and split, in label order.
    pub fn counts(&self) -> Vec<LabelCount> {
        let train = self.train.label_counts();
        let test = self.test.label_counts();
        self.labels()
            .iter()
            .enumerate()
            .map(|(i, label)| LabelCount {
                label: label.clone(),
                train: train.get(i).copied().unwrap_or(0),
                test: test.get(i).copied().unwrap_or(0),
            })
            .collect()
    }

    /// Writes `dir/train.jsonl` and `dir/test.jsonl` (each atomically), creating `dir`.
    /// Returns the two paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), DataError> {
        std::fs::create_dir_all(dir).map_err(|source| DataError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let train = dir.join("train.jsonl");
        let test = dir.join("test.jsonl");
        write_jsonl(&train, &self.train)?;
        write_jsonl(&test, &self.test)?;
        Ok((train, test))
    }
}

/// A plain-text table of counts per label and split, with a total row.
pub fn format_counts_table(counts: &[LabelCount]) -> String {
    let width = counts
        .iter()
        .map(|c| c.label.chars().count())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>7}  {:>7}  {:>7}",
        "label", "train", "test", "total"
    );
    let (mut train, mut test) = (0, 0);
    for c in counts {
        train += c.train;
        test += c.test;
        let _ = writeln!(
            out,
            "{:<width$}  {:>7}  {:>7}  {:>7}",
            c.label,
            c.train,
            c.test,
            c.train + c.test
        );
    }
    let _ = writeln!(
        out,
        "{:<width$}  {:>7}  {:>7}  {:>7}",
        "total",
        train,
        test,
        train + test
    );
    out
}
