//! One process per folder: an exclusive advisory lock on `DIR/.lock`, held for as long as the
//! [`FolderLock`] lives (the operating system releases it when the process ends, however it ends).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a locked folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a folder; dropping it releases the lock.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
    path: PathBuf,
}

impl FolderLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `dir` if needed and takes its exclusive lock, writing this process's pid into the
/// lock file. A second process (or a second lock in this one) gets an error of kind
/// [`io::ErrorKind::WouldBlock`] that names the folder and the holder's pid; it never waits.
pub fn lock_folder(dir: &Path) -> io::Result<FolderLock> {
    if dir.exists() && !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a folder (a run folder is needed here)",
        ));
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "unknown pid".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another dpselft process ({holder}); wait for it to finish \
                     or choose another folder",
                    dir.display()
                ),
            ));
        }
        Err(TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(FolderLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_folder_refuses_a_second_lock_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let first = lock_folder(&run).unwrap();
        assert!(run.is_dir(), "the folder is created");
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(first.path()).unwrap().trim(), pid);
        // flock conflicts between two open file descriptions, even in one process.
        let err = lock_folder(&run).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid {pid}")), "{msg}");
        assert!(msg.contains(&run.display().to_string()), "{msg}");
        drop(first);
        let again = lock_folder(&run).unwrap();
        assert_eq!(std::fs::read_to_string(again.path()).unwrap().trim(), pid);
    }

    #[test]
    fn a_regular_file_is_no_run_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let err = lock_folder(&file).unwrap_err();
        assert!(err.to_string().contains("not a folder"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x", "left alone");
    }
}
