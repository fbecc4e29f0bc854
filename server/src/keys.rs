//! The server's data directory: which file holds what, and the careful
//! reading and writing of the files that are not in the store.
//!
//! ```text
//! DIR/                 created with mode 0700 by `init`
//!   relay.redb         the relay store (fieldsync-store, StoreKind::Relay); held
//!                      open, and locked, by a running server
//!   hq-root.key        headquarters' root secret: 64 hex digits of the ed25519
//!                      seed and a newline, mode 0600, written once, never
//!                      overwritten; only on the headquarters relay (an office
//!                      relay has none), and never inside the store
//!   relay.cert         this relay's certificate, in the certificate text form
//!   control.sock       the control socket of a running server (mode 0600)
//! ```

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use fieldsync_identity::{CertificateError, DeviceCertificate, HqRoot, PublicKey, SecretKey};
use thiserror::Error;
use zeroize::Zeroizing;

/// The store file, inside the data directory.
pub const STORE_FILE: &str = "relay.redb";
/// The headquarters root secret, inside the data directory.
pub const HQ_KEY_FILE: &str = "hq-root.key";
/// This relay's certificate (text form), inside the data directory.
pub const RELAY_CERT_FILE: &str = "relay.cert";
/// The control socket of a running server, inside the data directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Longest key file accepted (64 hex digits and some whitespace).
const KEY_FILE_MAX: u64 = 1024;
/// Longest certificate file accepted.
const CERT_FILE_MAX: u64 = 64 * 1024;

/// Reading or writing a file of the data directory failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FileError {
    /// A file system operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done ("create", "read", "write", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file to create exists already; it was left untouched.
    #[error("{} exists already; it was left untouched (choose another path or move it away)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The key file does not hold a key.
    #[error("{} is not a headquarters key file: {detail}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The file is larger than any file of its kind.
    #[error("{} is too large to be a {what}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// What it should be.
        what: &'static str,
    },
    /// The certificate file does not hold a valid certificate of this headquarters.
    #[error("{} is not a certificate of this headquarters", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: CertificateError,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_owned();
    move |source| FileError::Io { op, path, source }
}

/// A server's data directory and the paths of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root` (nothing is checked or created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/relay.redb`.
    pub fn store(&self) -> PathBuf {
        self.root.join(STORE_FILE)
    }

    /// `DIR/hq-root.key`.
    pub fn hq_key(&self) -> PathBuf {
        self.root.join(HQ_KEY_FILE)
    }

    /// `DIR/relay.cert`.
    pub fn relay_certificate(&self) -> PathBuf {
        self.root.join(RELAY_CERT_FILE)
    }

    /// `DIR/control.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.root.join(CONTROL_SOCKET)
    }

    /// Creates the directory (and its parents) if it is missing; a new
    /// directory gets mode 0700 on unix, since it holds the root key.
    pub fn create(&self) -> Result<(), FileError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.root).map_err(io("create", &self.root))
    }
}

/// Writes `bytes` to a new file durably (file and directory entry), with
/// `mode` on unix; refuses to overwrite anything ([`FileError::Exists`]).
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            FileError::Exists {
                path: path.to_owned(),
            }
        } else {
            io("create", path)(source)
        }
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("write", path))?;
    sync_parent(path)
}

/// Makes a new directory entry durable (a no-op where directories cannot be opened).
fn sync_parent(path: &Path) -> Result<(), FileError> {
    #[cfg(unix)]
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", parent))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Reads a whole file of at most `max` bytes.
fn read_bounded(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let f = File::open(path).map_err(io("read", path))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io("read", path))?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            what,
        });
    }
    Ok(bytes)
}

/// Writes headquarters' root secret seed to a new key file (mode 0600),
/// never over an existing one.
pub fn write_hq_key(path: &Path, seed: &[u8; 32]) -> Result<(), FileError> {
    let mut text = Zeroizing::new(hex::encode(seed));
    text.push('\n');
    write_new_file(path, text.as_bytes(), 0o600)
}

/// Reads headquarters' root key; `None` when there is no key file (an
/// office relay). Warns when the file is readable by others.
pub fn read_hq_key(path: &Path) -> Result<Option<HqRoot>, FileError> {
    if !path.exists() {
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(io("read", path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the headquarters key file is readable by others; chmod 600 it"
            );
        }
    }
    let bytes = Zeroizing::new(read_bounded(path, KEY_FILE_MAX, "headquarters key file")?);
    let bad = |detail| FileError::BadKey {
        path: path.to_owned(),
        detail,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not text"))?;
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut_slice())
        .map_err(|_| bad("it does not hold exactly 64 hex digits"))?;
    Ok(Some(HqRoot::from_secret(SecretKey::from_seed(&seed))))
}

/// Reads a certificate file (text form) issued by `hq`.
pub fn read_certificate(path: &Path, hq: &PublicKey) -> Result<DeviceCertificate, FileError> {
    let bytes = read_bounded(path, CERT_FILE_MAX, "certificate file")?;
    let text = String::from_utf8_lossy(&bytes);
    DeviceCertificate::from_pem_like(&text, hq).map_err(|source| FileError::Certificate {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn key_file_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("srv"));
        data.create().unwrap();
        assert_eq!(
            read_hq_key(&data.hq_key()).unwrap().map(|k| k.public()),
            None
        );
        write_hq_key(&data.hq_key(), &[7; 32]).unwrap();
        let hq = read_hq_key(&data.hq_key()).unwrap().unwrap();
        assert_eq!(hq.public(), SecretKey::from_seed(&[7; 32]).public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&data.hq_key()), 0o600);
            assert_eq!(mode(data.root()), 0o700);
        }
        let err = write_hq_key(&data.hq_key(), &[8; 32]).unwrap_err();
        assert!(matches!(err, FileError::Exists { .. }), "{err}");
        assert_eq!(
            read_hq_key(&data.hq_key()).unwrap().unwrap().public(),
            hq.public()
        );
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key\n").unwrap();
        let err = read_hq_key(&bad).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
    }
}
