//! Datasets for dpselft: JSONL / CSV / folder-per-label formats with validation that names the
//! file and record at fault, and the builders of the benchmark tasks (brown-genre, spam).
