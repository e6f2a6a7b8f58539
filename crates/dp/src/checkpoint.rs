//! Checkpoints of a training run: trainable parameters, optimizer state, RNG states and step.
//!
//! Layout under `<run>/checkpoint/`: one folder per checkpoint, `step-00000120/` holding
//! `params.safetensors`, `optimizer.safetensors` and `state.json`, and `latest.json` naming the
//! newest complete folder. A folder is written in full before `latest.json` is replaced
//! (atomically), so a crash at any point leaves the previous checkpoint usable; older folders
//! are removed afterwards.
//!
//! Secret: `state.json` holds the noise RNG's key. Whoever has it can regenerate the noise of
//! every step and subtract it, which voids the privacy guarantee. A checkpoint must never leave
//! the machine of the run; the trainer removes it when the run finishes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::bridge::TrainableParams;
use crate::error::{DpError, Result, io_err};
use crate::optim::{OptimizerCheckpoint, OptimizerMeta};
use crate::rng::NoiseRngState;

/// The small, serialisable part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps completed.
    pub step: u64,
    /// The optimizer's step count, update rule and decay mask.
    pub optimizer: OptimizerMeta,
    /// The Poisson sampler's RNG.
    pub sampling_rng: NoiseRngState,
    /// The noise RNG (secret).
    pub noise_rng: NoiseRngState,
    /// The noise multiplier the run was calibrated to (checked on resume).
    pub noise_multiplier: f64,
    /// The sampling rate q (checked on resume).
    pub sampling_rate: f64,
    /// The planned number of steps (checked on resume).
    pub total_steps: u64,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Step, RNG states, optimizer metadata.
    pub state: CheckpointState,
    /// Trainable parameters by name.
    pub params: HashMap<String, Tensor>,
    /// The optimizer's moment tensors.
    pub optimizer_tensors: HashMap<String, Tensor>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Latest {
    step: u64,
    folder: String,
}

/// The checkpoint folder of a run.
pub fn checkpoint_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoint")
}

/// Writes a checkpoint (see the module documentation for the layout and why it is atomic).
pub fn save_checkpoint(
    run_dir: &Path,
    state: &CheckpointState,
    params: &HashMap<String, Tensor>,
    optimizer: &OptimizerCheckpoint,
) -> Result<()> {
    let root = checkpoint_dir(run_dir);
    let folder = format!("step-{:08}", state.step);
    let dir = root.join(&folder);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    candle_core::safetensors::save(params, dir.join("params.safetensors"))?;
    candle_core::safetensors::save(&optimizer.tensors, dir.join("optimizer.safetensors"))?;
    write_json(&dir.join("state.json"), state)?;
    // The switch: from here on the new folder is the checkpoint.
    write_json(
        &root.join("latest.json"),
        &Latest {
            step: state.step,
            folder: folder.clone(),
        },
    )?;
    for entry in std::fs::read_dir(&root).map_err(|e| io_err(&root, e))? {
        let path = entry.map_err(|e| io_err(&root, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if path.is_dir() && name.as_deref() != Some(folder.as_str()) {
            // Best effort: a stale folder only costs disk space.
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    Ok(())
}

/// Whether the run folder holds a checkpoint.
pub fn has_checkpoint(run_dir: &Path) -> bool {
    checkpoint_dir(run_dir).join("latest.json").exists()
}

/// Loads the newest checkpoint of a run onto `device`.
pub fn load_checkpoint(run_dir: &Path, device: &Device) -> Result<Checkpoint> {
    let root = checkpoint_dir(run_dir);
    let latest: Latest = read_json(&root.join("latest.json"))?;
    let dir = root.join(&latest.folder);
    let state: CheckpointState = read_json(&dir.join("state.json"))?;
    if state.step != latest.step {
        return Err(DpError::State(format!(
            "{}: step {} but latest.json says {}",
            dir.display(),
            state.step,
            latest.step
        )));
    }
    let params = candle_core::safetensors::load(dir.join("params.safetensors"), device)?;
    let optimizer_tensors =
        candle_core::safetensors::load(dir.join("optimizer.safetensors"), device)?;
    Ok(Checkpoint {
        state,
        params,
        optimizer_tensors,
    })
}

/// Saves the trained values of `params` at `path`: a finished run's output (no optimizer or RNG
/// state, so nothing secret), for a sweep that picks among its runs after an interruption. The
/// file is written beside `path` and renamed onto it, so it is whole or absent.
pub fn save_trained(path: &Path, params: &TrainableParams) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".tmp-{name}"));
    candle_core::safetensors::save(&params.tensors(), &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Sets `params` to the values [`save_trained`] wrote at `path` (same names and shapes).
pub fn load_trained(path: &Path, params: &TrainableParams) -> Result<()> {
    let device = params
        .vars
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let saved = candle_core::safetensors::load(path, &device)?;
    params.restore(&saved, &path.display().to_string())
}

/// Removes a run's checkpoints (at the end of a run: they hold the noise key).
pub fn remove_checkpoints(run_dir: &Path) -> Result<()> {
    let root = checkpoint_dir(run_dir);
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| io_err(&root, e))?;
    }
    Ok(())
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| DpError::State(format!("serialising {}: {e}", path.display())))?;
    dpselft_fsio::write_bytes_atomic(path, text.as_bytes()).map_err(|e| io_err(path, e))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        DpError::State(format!(
            "{}: line {}, column {}: {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}
