//! `dpselft._native`: the command line's commands, run in-process for the Python package
//! (`python/dpselft/__init__.py` turns keyword arguments into the command's arguments). Each call
//! parses the arguments with the same parser as the binary and runs the same command, so the
//! package cannot drift from the CLI: what it returns is the command's `--json` output.

use clap::Parser;
use dpselft::output::{ProgressEvent, ProgressHook, capture};
use dpselft::{Cli, error_chain, execute, is_usage_error};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    _native,
    DpselftError,
    PyRuntimeError,
    "A dpselft command failed (bad data, a model that does not load, a spent budget, ...)."
);

/// Runs the command `argv` (without the program name, e.g. `["train", "--model", "m", …]`)
/// with the GIL released; returns the JSON texts it produced (one for commands run with
/// `--json`). `progress`, if given, is called with one JSON text per training step (step,
/// total_steps, epoch, examples_per_s, eta_s, epsilon). Raises `ValueError` for invalid
/// arguments and `DpselftError` when the command fails.
#[pyfunction]
#[pyo3(signature = (argv, progress=None))]
fn invoke(py: Python<'_>, argv: Vec<String>, progress: Option<Py<PyAny>>) -> PyResult<Vec<String>> {
    let cli = Cli::try_parse_from(std::iter::once("dpselft".to_string()).chain(argv))
        .map_err(|e| PyValueError::new_err(e.render().to_string()))?;
    let (result, outputs) = py.detach(move || {
        let hook = progress.map(python_hook);
        capture(hook, || execute(cli.command))
    });
    match result {
        Ok(()) => Ok(outputs.iter().map(|v| v.to_string()).collect()),
        Err(err) if is_usage_error(&err) => Err(PyValueError::new_err(error_chain(&err))),
        Err(err) => Err(DpselftError::new_err(error_chain(&err))),
    }
}

/// A progress hook that calls `callback` with the event as JSON text. An exception in the
/// callback cannot stop the Rust loop: it is printed (with its traceback) and the run goes on.
fn python_hook(callback: Py<PyAny>) -> ProgressHook {
    Box::new(move |event: &ProgressEvent| {
        let Ok(text) = serde_json::to_string(event) else {
            return;
        };
        Python::attach(|py| {
            if let Err(e) = callback.call1(py, (text,)) {
                e.print(py);
            }
        });
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(invoke, m)?)?;
    m.add("DpselftError", m.py().get_type::<DpselftError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
