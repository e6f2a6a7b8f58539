//! Where a model's tensors live: `cpu`, or a CUDA GPU (`cuda`, `cuda:N`).
//!
//! [`DeviceSpec`] is what users write (`--device cuda:1`) and what crosses crate boundaries;
//! [`DeviceSpec::open`] turns it into candle's [`Device`]. The device never changes a result
//! beyond float rounding: the DP noise is drawn on the host from the run's ChaCha20 stream and
//! copied to the device (`dpselft_dp::noise`), so a seeded run draws the same noise everywhere.

use crate::error::{ModelError, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The CPU (candle's multi-threaded CPU backend).
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal (needs a binary built with the `cuda` feature).
    Cuda(usize),
}

impl DeviceSpec {
    /// Whether this binary was built with CUDA support (the `cuda` feature).
    pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

    /// Opens the device. A CUDA spec fails with a clear error in a build without the `cuda`
    /// feature, or when the driver, the CUDA libraries or the GPU cannot be found.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(_) if !Self::CUDA_COMPILED => Err(ModelError::Invalid(format!(
                "--device {self}: this dpselft was built without CUDA support \
                 (build it with scripts/build-cuda)"
            ))),
            DeviceSpec::Cuda(ordinal) => open_cuda(ordinal).map_err(|e| {
                ModelError::Invalid(format!(
                    "--device {self}: cannot open the GPU ({e}); the CUDA driver (libcuda) and \
                     the cuBLAS and cuRAND libraries must be on the library path"
                ))
            }),
        }
    }
}

/// The process's one candle device per GPU. candle gives every `Device::new_cuda` a device id
/// of its own and refuses to combine tensors of two ids, so a model loaded twice (selection
/// loads one per candidate) must get the same `Device` back.
fn open_cuda(ordinal: usize) -> candle_core::Result<Device> {
    static OPENED: Mutex<BTreeMap<usize, Device>> = Mutex::new(BTreeMap::new());
    let mut opened = OPENED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(device) = opened.get(&ordinal) {
        return Ok(device.clone());
    }
    let device = Device::new_cuda(ordinal)?;
    opened.insert(ordinal, device.clone());
    Ok(device)
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            ModelError::Invalid(format!(
                "device `{s}`: expected `cpu`, `cuda` or `cuda:N` (N a GPU ordinal)"
            ))
        };
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => {
                let n = other.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse().map(DeviceSpec::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = ModelError;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

/// Waits until the device has finished the work queued on it (a no-op on the CPU): timings
/// of GPU work read the clock only after this.
pub fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:0", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d, "{s}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        assert_eq!(DeviceSpec::Cpu.to_string(), "cpu");
        let json = serde_json::to_string(&DeviceSpec::Cuda(1)).unwrap();
        assert_eq!(json, "\"cuda:1\"");
        assert_eq!(
            serde_json::from_str::<DeviceSpec>(&json).unwrap(),
            DeviceSpec::Cuda(1)
        );
    }

    #[test]
    fn malformed_specs_name_what_was_expected() {
        for s in ["gpu", "cuda:", "cuda:x", "cuda:-1", "metal", "CUDA:0", ""] {
            let e = s.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("expected `cpu`, `cuda` or `cuda:N`"), "{s}: {e}");
        }
    }

    #[test]
    fn the_cpu_opens_and_cuda_says_how_to_get_it() {
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
        if !DeviceSpec::CUDA_COMPILED {
            let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("built without CUDA support"), "{e}");
            assert!(e.contains("scripts/build-cuda"), "{e}");
        }
    }
}
