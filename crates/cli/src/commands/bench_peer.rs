//! The peers of the speed benches, each a Python process of its own set up by `bench/peer/setup`
//! and driven one request at a time so that its runs interleave with ours:
//! - `dpselft bench dp-overhead --peer`: PyTorch (non-private) and Opacus (DP) timing the same
//!   step on the same model folder and shapes (`bench/peer/peer_step.py`);
//! - `dpselft bench generate --peer`: Hugging Face transformers' `generate` on the same weights
//!   and prompts (`bench/peer/peer_generate.py`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, bail};
use dpselft_bench::generation::{GenSampling, GenShape};
use dpselft_bench::peer::{PeerRep, PeerVersions};
use dpselft_model::DeviceSpec;

/// The step peer's script, relative to the repository root (the working directory of the bench).
pub const PEER_SCRIPT: &str = "bench/peer/peer_step.py";

/// The generation peer's script (`dpselft bench generate --peer`).
pub const GENERATE_SCRIPT: &str = "bench/peer/peer_generate.py";

/// A peer script running in a Python process of its own: one JSON line per answer.
struct PeerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PeerProcess {
    /// Starts `python script args…` (the script relative to the repository root).
    fn spawn(python: &Path, script: &str, args: &[String]) -> anyhow::Result<Self> {
        if !Path::new(script).is_file() {
            bail!("--peer: no {script} here (run the bench from the repository root)");
        }
        if !python.is_file() {
            bail!(
                "--peer: no Python at {} (run bench/peer/setup once, or pass --peer-python)",
                python.display()
            );
        }
        let mut child = Command::new(python)
            .arg(script)
            .args(args)
            // OpenMP's threads would otherwise spin after each of the peer's steps, taking the
            // cores from our next step (ours and theirs alternate on the same two cores).
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .env("TRANSFORMERS_OFFLINE", "1")
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {script}", python.display()))?;
        let stdin = child.stdin.take().context("the peer's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the peer's stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
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

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// A running step peer for one row.
pub struct Peer {
    process: PeerProcess,
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
        let args = [
            "--model".to_string(),
            model_dir.display().to_string(),
            "--trainable".into(),
            spec.into(),
            "--batch".into(),
            batch.to_string(),
            "--seq-len".into(),
            seq_len.to_string(),
            "--device".into(),
            device.to_string(),
        ];
        let mut process = PeerProcess::spawn(python, PEER_SCRIPT, &args)?;
        let versions = process.read()?;
        process.send("warmup")?;
        let _: serde_json::Value = process.read()?;
        Ok(Self { process, versions })
    }

    /// One step of each kind (non-private first for an even `rep`, as ours alternate).
    pub fn rep(&mut self, rep: usize) -> anyhow::Result<PeerRep> {
        self.process.send(&format!("rep {rep}"))?;
        self.process.read()
    }
}

/// What the generation peer answers to one request.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct GenAnswer {
    seconds: f64,
    generated: usize,
}

/// A running generation peer (Hugging Face transformers' `generate` on a causal-LM folder).
pub struct GenPeer {
    process: PeerProcess,
    /// What the peer runs on (torch, transformers, threads, BLAS).
    pub versions: PeerVersions,
}

impl GenPeer {
    /// Starts the peer on the causal-LM folder `model_dir` (on the CPU) and waits until it has
    /// loaded it.
    pub fn start(python: &Path, model_dir: &Path) -> anyhow::Result<Self> {
        let args = ["--model".to_string(), model_dir.display().to_string()];
        let mut process = PeerProcess::spawn(python, GENERATE_SCRIPT, &args)?;
        let versions = process.read()?;
        Ok(Self { process, versions })
    }

    /// Continues each prompt by exactly `shape.new_tokens` tokens; the seconds it took.
    pub fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        shape: GenShape,
        sampling: GenSampling,
        seed: u64,
    ) -> anyhow::Result<f64> {
        let request = serde_json::json!({
            "ids": prompts,
            "new_tokens": shape.new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": seed,
        });
        self.process.send(&request.to_string())?;
        let answer: GenAnswer = self.process.read()?;
        if answer.generated != shape.generated() {
            bail!(
                "the generation peer made {} tokens where {} were asked for",
                answer.generated,
                shape.generated()
            );
        }
        Ok(answer.seconds)
    }
}
