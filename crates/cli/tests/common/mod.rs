//! Helpers shared by the command-line tests: run the built binary, check it succeeded, read
//! its JSON.
#![allow(dead_code)] // each test file uses some of these

pub mod toy_run;

use std::process::{Command, Output};

/// Runs the built `dpselft` with `args`, the workspace's assets folder as `$DPSELFT_ASSETS`
/// (assets are fetched there when a command needs them).
pub fn dpselft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dpselft"))
        .args(args)
        .env(
            "DPSELFT_ASSETS",
            dpselft_assets::workspace_assets_root(env!("CARGO_MANIFEST_DIR")),
        )
        .output()
        .expect("run dpselft")
}

/// Panics with the command's stderr unless it succeeded.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "dpselft failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The one JSON object a successful command printed on stdout.
pub fn json(out: &Output) -> serde_json::Value {
    ok(out);
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}
