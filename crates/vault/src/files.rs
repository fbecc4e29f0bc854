//! Durable small-file writes: a temporary file, fsync, rename, fsync of the
//! directory. Files the vault writes are readable by their owner only.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::VaultError;

/// Opens a new file for writing, owner-only where the platform has modes.
fn create_private(path: &Path, create_new: bool) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true);
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Makes a directory entry change (a rename, a removal) durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), VaultError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Directories cannot be opened for syncing on every platform; where they
    // can, a failure to sync is a real failure.
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(VaultError::io("sync the directory of", path))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `path` with `bytes`, durably and atomically.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = create_private(&tmp, false).map_err(VaultError::io("create", &tmp))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(VaultError::io("write", &tmp))?;
        std::fs::rename(&tmp, path).map_err(VaultError::io("replace", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(path)
}

/// Writes `bytes` to a new file at `path` durably; fails if it exists.
pub(crate) fn create_durably(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    if path.exists() {
        return Err(VaultError::KeyExists {
            path: path.to_owned(),
        });
    }
    write_durably(path, bytes)
}

/// Overwrites the existing file at `path` in place (same blocks where the
/// file system allows) with `bytes`, and syncs it.
pub(crate) fn overwrite_in_place(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(VaultError::io("open", path))?;
    f.write_all(bytes)
        .and_then(|()| f.set_len(bytes.len() as u64))
        .and_then(|()| f.sync_all())
        .map_err(VaultError::io("overwrite", path))
}

/// Overwrites a file's whole length with zeros, syncs, and removes it.
pub(crate) fn zero_and_remove(path: &Path) -> Result<(), VaultError> {
    let len = std::fs::metadata(path)
        .map_err(VaultError::io("read", path))?
        .len();
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(VaultError::io("open", path))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])
            .map_err(VaultError::io("overwrite", path))?;
        left -= n as u64;
    }
    f.sync_all().map_err(VaultError::io("overwrite", path))?;
    drop(f);
    remove_durably(path)
}

/// Removes `path` if it exists, durably.
pub(crate) fn remove_durably(path: &Path) -> Result<(), VaultError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VaultError::io("remove", path)(e)),
    }
}

/// Creates a new owner-only file holding `bytes`, durably; fails if it exists.
pub(crate) fn create_private_file(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let mut f = create_private(path, true).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            VaultError::KeyFileExists {
                path: path.to_owned(),
            }
        } else {
            VaultError::io("create", path)(e)
        }
    })?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(VaultError::io("write", path)(e));
    }
    sync_dir(path)
}
