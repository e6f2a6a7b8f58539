//! The peer of `dpselft bench dp-overhead --peer`: PyTorch (non-private) and Opacus (DP) timing
//! the same step on the same model folder and shapes, in a Python process of its own
//! (`bench/peer/peer_step.py`, set up by `bench/peer/setup`), driven one step pair at a time so
//! that its steps interleave with ours.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};
use dpselft_bench::peer::{PeerRep, PeerVersions};
use dpselft_model::DeviceSpec;

/// The peer script, relative to the repository root (the working directory of the bench).
pub const PEER_SCRIPT: &str = "bench/peer/peer_step.py";

/// A running peer for one row.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What the peer runs on (torch, opacus, transformers, threads, BLAS).
    pub versions: PeerVersions,
}

impl Peer {
    /// Starts the peer on `model_dir` with the trainable set `spec`, on the device ours runs on
    /// (PyTorch names devices as we do: `cpu`, `cuda:N`), and waits until it has loaded the model
    /// and run one warm-up step of each kind.
    pub fn start(
        python: &Path,
        model_dir: &Path,
        spec: &str,
        (batch, seq_len): (usize, usize),
        device: DeviceSpec,
    ) -> anyhow::Result<Self> {
        if !Path::new(PEER_SCRIPT).is_file() {
            bail!("--peer: no {PEER_SCRIPT} here (run the bench from the repository root)");
        }
        if !python.is_file() {
            bail!(
                "--peer: no Python at {} (run bench/peer/setup once, or pass --peer-python)",
                python.display()
            );
        }
        let mut child = Command::new(python)
            .arg(PEER_SCRIPT)
            .arg("--model")
            .arg(model_dir)
            .args(["--trainable", spec])
            .args([
                "--batch",
                &batch.to_string(),
                "--seq-len",
                &seq_len.to_string(),
                "--device",
                &device.to_string(),
            ])
            // OpenMP's threads would otherwise spin after each of the peer's steps, taking the
            // cores from our next step (ours and theirs alternate on the same two cores).
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env("TRANSFORMERS_OFFLINE", "1")
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {PEER_SCRIPT}", python.display()))?;
        let stdin = child.stdin.take().context("the peer's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the peer's stdout")?);
        let mut peer = Self {
            child,
            stdin,
            stdout,
            versions: PeerVersions::default(),
        };
        peer.versions = peer.read()?;
        peer.send("warmup")?;
        let _: serde_json::Value = peer.read()?;
        Ok(peer)
    }

    /// One step of each kind (non-private first for an even `rep`, as ours alternate).
    pub fn rep(&mut self, rep: usize) -> anyhow::Result<PeerRep> {
        self.send(&format!("rep {rep}"))?;
        self.read()
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{line}").context("writing to the peer")?;
        self.stdin.flush().context("writing to the peer")
    }

    fn read<T: serde::de::DeserializeOwned>(&mut self) -> anyhow::Result<T> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .context("reading the peer's answer")?;
        if n == 0 {
            let status = self.child.wait().ok();
            bail!("the peer exited ({status:?}); its error is above");
        }
        serde_json::from_str(&line).with_context(|| format!("the peer answered {line:?}"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}
