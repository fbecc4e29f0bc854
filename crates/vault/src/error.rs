//! Errors of the vault.

use std::path::PathBuf;
use std::time::Duration;

use fieldsync_identity::Timestamp;
use thiserror::Error;

use crate::header::LockKind;

/// A vault operation failed. Nothing was changed unless the variant says so.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The passphrase or key file does not unwrap the data key. A
    /// passphrase's failure was counted; `next_wait` is how long the next
    /// attempt will wait (key files are not throttled: both are 0).
    #[error("wrong passphrase (or key file) for this store{}", throttle_note(*failures, *next_wait))]
    WrongPassphrase {
        /// Failed passphrase attempts in a row, this one included.
        failures: u32,
        /// How long the next attempt waits before it is tried.
        next_wait: Duration,
    },
    /// The store was wiped (crypto-shredded): its key is gone.
    #[error("this store was wiped on {}; its data cannot be recovered", wiped_when(*at, reason))]
    StoreWiped {
        /// When it was wiped, if the tombstone says.
        at: Option<Timestamp>,
        /// Why, if the tombstone says (for example a headquarters wipe order).
        reason: String,
    },
    /// There is no key header in this directory.
    #[error("no key header at {}", path.display())]
    NoKey {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// [`shred`](crate::shred) found neither a key header nor a store.
    #[error("there is no store in {} to wipe", dir.display())]
    NothingToWipe {
        /// The data directory.
        dir: PathBuf,
    },
    /// `create` found a key header already there.
    #[error("a key header already exists at {}; it was left untouched", path.display())]
    KeyExists {
        /// The existing header.
        path: PathBuf,
    },
    /// The key header is damaged: bad magic, a failed checksum or parameters out of range.
    #[error("the key header {} is damaged ({what}); restore it from a backup of this device", path.display())]
    HeaderCorrupt {
        /// The header file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The key header was written by a newer build.
    #[error("the key header {} has version {found}; this build reads version {supported}; upgrade fieldsync", path.display())]
    UnsupportedVersion {
        /// The header file.
        path: PathBuf,
        /// Version found.
        found: u16,
        /// Version this build writes and reads.
        supported: u16,
    },
    /// The store is locked with the other kind of credential.
    #[error("{}", lock_mismatch(*locked_with))]
    LockMismatch {
        /// What the store is locked with.
        locked_with: LockKind,
    },
    /// A key file is shorter than 32 bytes.
    #[error("the key file {} holds {len} bytes; a key file needs at least 32 random bytes", path.display())]
    KeyFileTooShort {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A key file could not be read.
    #[error("cannot read the key file {}: {source}", path.display())]
    KeyFileRead {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `create_key_file` found a file there.
    #[error("{} exists already; it was left untouched", path.display())]
    KeyFileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A passphrase that is too short to protect a store.
    #[error("the passphrase is too short: use at least {min} characters")]
    PassphraseTooShort {
        /// The minimum length, in characters.
        min: usize,
    },
    /// A file of the vault could not be read or written.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The OS random generator failed.
    #[error("the OS random generator failed: {0}")]
    Random(String),
    /// Argon2id refused its parameters or ran out of memory.
    #[error("the key derivation (Argon2id) failed: {0}")]
    Kdf(String),
}

fn throttle_note(failures: u32, next_wait: Duration) -> String {
    if next_wait.is_zero() {
        String::new()
    } else {
        format!(
            " ({failures} failed attempts in a row; the next attempt waits {})",
            crate::throttle::human(next_wait)
        )
    }
}

fn wiped_when(at: Option<Timestamp>, reason: &str) -> String {
    let at = at.map_or_else(|| "an unknown date".to_owned(), |t| t.to_string());
    if reason.is_empty() {
        at
    } else {
        format!("{at} ({reason})")
    }
}

fn lock_mismatch(locked_with: LockKind) -> &'static str {
    match locked_with {
        LockKind::Passphrase => {
            "this store is locked with a passphrase, not a key file; drop --key-file (and FIELDSYNC_KEY_FILE)"
        }
        LockKind::KeyFile => {
            "this store is locked with a key file; pass --key-file PATH (or set FIELDSYNC_KEY_FILE)"
        }
    }
}

impl VaultError {
    pub(crate) fn io(
        op: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| VaultError::Io { op, path, source }
    }
}
