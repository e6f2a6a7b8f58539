//! Where a command's results go. The binary prints a `--json` result on stdout and training
//! progress on stderr; a caller that embeds the commands (the Python package) instead takes the
//! results as values ([`capture`]) and the progress as events ([`ProgressEvent`]) through a hook.
//! Both are per thread: a command runs on the thread that called it.

use std::cell::RefCell;
use std::io::Write;

/// One training step, as the progress log lines report it: nothing computed from private
/// examples without noise (no loss, no realised batch size), so it may be shown or logged.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgressEvent {
    /// Steps done.
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Epochs done (expected examples seen / n).
    pub epoch: f64,
    /// Examples per second, from the expected batch size.
    pub examples_per_s: f64,
    /// Seconds left, at the rate so far.
    pub eta_s: f64,
    /// ε spent so far (`None`: a non-private run).
    pub epsilon: Option<f64>,
}

/// A receiver of progress events.
pub type ProgressHook = Box<dyn FnMut(&ProgressEvent)>;

thread_local! {
    static RESULTS: RefCell<Option<Vec<serde_json::Value>>> = const { RefCell::new(None) };
    static HOOK: RefCell<Option<ProgressHook>> = const { RefCell::new(None) };
}

/// A command's `--json` result: printed on stdout (as `value` serialises, field order kept), or
/// kept by an enclosing [`capture`]. A closed stdout (`dpselft … --json | head`) is not an error.
pub fn emit_json<T: serde::Serialize>(value: &T, pretty: bool) -> std::io::Result<()> {
    let capturing = RESULTS.with(|r| r.borrow().is_some());
    if capturing {
        let v = serde_json::to_value(value)?;
        RESULTS.with(|r| r.borrow_mut().as_mut().map(|results| results.push(v)));
        return Ok(());
    }
    let text = if pretty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Runs `f` with its `--json` results kept instead of printed and its training progress sent
/// to `hook` (if any) instead of a bar or log lines; returns `f`'s result and the JSON values.
pub fn capture<T>(
    hook: Option<ProgressHook>,
    f: impl FnOnce() -> T,
) -> (T, Vec<serde_json::Value>) {
    /// Restores printing when `f` returns or unwinds.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            HOOK.with(|h| *h.borrow_mut() = None);
            RESULTS.with(|r| *r.borrow_mut() = None);
        }
    }
    RESULTS.with(|r| *r.borrow_mut() = Some(Vec::new()));
    HOOK.with(|h| *h.borrow_mut() = hook);
    let reset = Reset;
    let out = f();
    let results = RESULTS.with(|r| r.borrow_mut().take()).unwrap_or_default();
    drop(reset);
    (out, results)
}

/// Whether progress goes to a hook (the bar and the log lines then stay quiet).
pub(crate) fn has_progress_hook() -> bool {
    HOOK.with(|h| h.borrow().is_some())
}

/// Sends `event` to the hook, if one is installed. The hook is taken out while it runs, so a
/// hook that calls back into this module cannot find it borrowed.
pub(crate) fn progress(event: &ProgressEvent) {
    let Some(mut hook) = HOOK.with(|h| h.borrow_mut().take()) else {
        return;
    };
    hook(event);
    HOOK.with(|h| {
        let mut slot = h.borrow_mut();
        if slot.is_none() {
            *slot = Some(hook);
        }
    });
}
