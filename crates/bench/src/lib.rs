//! dpselft's benchmark harnesses, kept out of the libraries that users link: the experiment code
//! measures the pipeline (`dpselft-selft`) and the engine (`dpselft-dp`), it is not part of them.
//!
//! - [`grid`] — the privacy–utility grid: dp-selft against the baselines at the same (ε, δ),
//!   resumable, one line of `results.jsonl` per (method, ε, seed) cell; [`methods`] reads the
//!   committed per-method settings; [`table`] writes `table.md` and `chart.svg`.
//! - [`step_cost`] — the cost of one DP step against a non-private step on the same trainable
//!   set (`dpselft bench dp-overhead`).

#![deny(missing_docs)]

pub mod grid;
pub mod methods;
pub mod step_cost;
pub mod table;

pub use grid::{CellResult, UtilityBench, run_grid};
pub use methods::{Method, MethodKind, MethodsFile};
