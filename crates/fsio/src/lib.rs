//! Atomic file writes, shared by every dpselft crate that writes a file a user or a later run
//! relies on (datasets, ledgers, checkpoints, models, tokenizers): a reader sees either the old
//! file or the complete new one, never a half-written one ([`FolderWriter`]: the same for a
//! folder of files, such as a saved model). And folder locks ([`lock_folder`]):
//! one process per run folder, so that no two processes append to one ledger.

mod lock;

pub use lock::{FolderLock, LOCK_FILE, lock_folder};

use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Writes `path` atomically: `write` fills a temporary file in the same folder (so the final
/// rename stays on one file system), which is flushed, synced and renamed onto `path`. On any
/// error the temporary file is removed and `path` is left as it was. The folder must exist.
/// The folder is synced after the rename, so the new file survives a crash.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    // A temporary file is private (0600); the result is an ordinary file (0644 less the umask).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let tmp = builder.tempfile_in(dir)?;
    {
        let mut writer = BufWriter::new(tmp.as_file());
        write(&mut writer)?;
        writer.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable: a ledger must not come back older after a crash. Best
    // effort, as not every platform can open a folder.
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// A folder written as a whole: files go into a fresh temporary folder beside `dir`
/// ([`FolderWriter::path`]); [`FolderWriter::commit`] syncs them and renames the folder onto
/// `dir`. A reader (or a resumed run) sees the complete old folder or the complete new one,
/// never a folder with some files missing. Dropped without a commit (an error on the way), the
/// temporary folder is removed and `dir` is left as it was.
pub struct FolderWriter {
    dir: std::path::PathBuf,
    tmp: tempfile::TempDir,
}

impl FolderWriter {
    /// Starts writing `dir` (its parent is created if needed).
    pub fn begin(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(parent_of(dir))?;
        let mut builder = tempfile::Builder::new();
        builder.prefix(".tmp-");
        // A temporary folder is private (0700); the result is an ordinary folder (0755 less the
        // umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o755));
        }
        let tmp = builder.tempdir_in(parent_of(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tmp,
        })
    }

    /// The temporary folder to write the files into.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Syncs every file and puts the folder in place of `dir` (an existing `dir` is moved
    /// aside first and removed once the new one is in place).
    pub fn commit(self) -> io::Result<()> {
        for file in walk_files(self.tmp.path())? {
            std::fs::File::open(&file)?.sync_all()?;
        }
        let parent = parent_of(&self.dir);
        let old = if self.dir.exists() {
            let aside = tempfile::Builder::new()
                .prefix(".old-")
                .tempdir_in(parent)?;
            std::fs::rename(&self.dir, aside.path().join("folder"))?;
            Some(aside)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(self.tmp.path(), &self.dir) {
            if let Some(aside) = &old {
                let _ = std::fs::rename(aside.path().join("folder"), &self.dir);
            }
            return Err(e);
        }
        // The temporary folder is now `dir`: nothing left for the TempDir to remove.
        let _ = self.tmp.keep();
        if let Ok(folder) = std::fs::File::open(parent) {
            let _ = folder.sync_all();
        }
        drop(old);
        Ok(())
    }
}

/// The folder holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Every file under `dir`, recursively.
fn walk_files(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk_files(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_and_replaces_leaving_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_bytes_atomic(&path, b"first").unwrap();
        write_bytes_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(names_in(dir.path()), vec!["out.json"]);
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_bytes_atomic(&path, b"old").unwrap();
        let err = write_atomic(&path, |w| {
            w.write_all(b"half of the new cont")?;
            Err(io::Error::other("interrupted"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "interrupted");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), vec!["out.json"]);
    }

    #[test]
    fn missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/folder/out.json");
        assert!(write_bytes_atomic(&path, b"x").is_err());
    }

    #[test]
    fn a_folder_is_written_whole_and_replaces_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        let w = FolderWriter::begin(&dir).unwrap();
        std::fs::write(w.path().join("a"), b"1").unwrap();
        std::fs::create_dir(w.path().join("sub")).unwrap();
        std::fs::write(w.path().join("sub/b"), b"2").unwrap();
        w.commit().unwrap();
        let w = FolderWriter::begin(&dir).unwrap();
        std::fs::write(w.path().join("c"), b"3").unwrap();
        w.commit().unwrap();
        assert_eq!(names_in(&dir), vec!["c"]);
        assert_eq!(names_in(root.path()), vec!["model"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_written_folder_is_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        FolderWriter::begin(&dir).unwrap().commit().unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o055, 0o055 & !umask(), "mode {mode:o}");
    }

    /// The process's umask (read by setting and restoring it is racy; /proc is not).
    #[cfg(unix)]
    fn umask() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    }

    #[test]
    fn an_abandoned_folder_write_keeps_the_old_folder_and_leaves_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        let w = FolderWriter::begin(&dir).unwrap();
        std::fs::write(w.path().join("a"), b"1").unwrap();
        w.commit().unwrap();
        // A writer dropped on an error, half-way through.
        let w = FolderWriter::begin(&dir).unwrap();
        std::fs::write(w.path().join("half"), b"x").unwrap();
        drop(w);
        assert_eq!(names_in(&dir), vec!["a"]);
        assert_eq!(names_in(root.path()), vec!["model"]);
    }
}
