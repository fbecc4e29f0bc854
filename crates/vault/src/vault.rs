//! The vault of one data directory: create, unlock, shred.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fieldsync_identity::Timestamp;
use zeroize::Zeroizing;

use crate::error::VaultError;
use crate::files;
use crate::header::{self, Header, LockKind, Locked};
use crate::kdf::{self, KdfParams};
use crate::throttle::{self, Throttle};

/// The key header's file name inside a data directory.
pub const KEY_HEADER_FILE: &str = "fieldsync.key";
/// The failed-attempts counter's file name inside a data directory.
pub const ATTEMPTS_FILE: &str = "fieldsync.key.attempts";
/// The tombstone a wipe leaves inside a data directory.
pub const TOMBSTONE_FILE: &str = "fieldsync.wiped";
/// The agent's store file inside a data directory (removed by a wipe).
pub const STORE_FILE: &str = "fieldsync.redb";
/// The shortest passphrase a new store accepts, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 8;
/// The shortest key file accepted, in bytes.
pub const MIN_KEY_FILE_LEN: usize = 32;

/// What unlocks a store: a passphrase or the contents of a key file. Both
/// are zeroized when dropped; `Debug` shows neither.
pub enum Credential {
    /// A passphrase, as typed (its UTF-8 bytes, not normalized).
    Passphrase(Zeroizing<String>),
    /// The bytes of a key file.
    KeyFile(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Passphrase(_) => f.write_str("Credential::Passphrase(..)"),
            Credential::KeyFile(_) => f.write_str("Credential::KeyFile(..)"),
        }
    }
}

impl Credential {
    /// A passphrase.
    pub fn passphrase(passphrase: Zeroizing<String>) -> Self {
        Credential::Passphrase(passphrase)
    }

    /// Reads a key file (at least [`MIN_KEY_FILE_LEN`] bytes).
    pub fn from_key_file(path: &Path) -> Result<Self, VaultError> {
        let bytes =
            Zeroizing::new(
                std::fs::read(path).map_err(|source| VaultError::KeyFileRead {
                    path: path.to_owned(),
                    source,
                })?,
            );
        if bytes.len() < MIN_KEY_FILE_LEN {
            return Err(VaultError::KeyFileTooShort {
                path: path.to_owned(),
                len: bytes.len() as u64,
            });
        }
        Ok(Credential::KeyFile(bytes))
    }

    /// Which kind of lock this credential opens.
    pub fn lock_kind(&self) -> LockKind {
        match self {
            Credential::Passphrase(_) => LockKind::Passphrase,
            Credential::KeyFile(_) => LockKind::KeyFile,
        }
    }
}

/// A store's 32-byte data key, zeroized when dropped; `Debug` hides it.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// The key's bytes (hand them to the store's seal, nowhere else).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// What a data directory holds, as far as keys go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultState {
    /// No key header and no tombstone: no store, or a store that is not
    /// encrypted at rest (made before encryption at rest, or a relay's).
    Absent,
    /// A key header holding a wrapped data key.
    Locked(LockKind),
    /// The store was wiped.
    Wiped {
        /// When, if known.
        at: Option<Timestamp>,
        /// Why, if recorded.
        reason: String,
    },
}

/// What [`shred`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shredded {
    /// The time recorded in the tombstone (the first wipe's, if wiped before).
    pub at: Timestamp,
    /// A wrapped data key was overwritten.
    pub key_destroyed: bool,
    /// A store that was not encrypted at rest was overwritten with zeros and removed.
    pub plain_store_overwritten: bool,
    /// The directory had been wiped before.
    pub already_wiped: bool,
}

fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| VaultError::Random(e.to_string()))?;
    Ok(buf)
}

/// Creates a key file of 32 random bytes at `path`, readable by its owner
/// only; fails with [`VaultError::KeyFileExists`] if there is a file there.
pub fn create_key_file(path: &Path) -> Result<(), VaultError> {
    let bytes = Zeroizing::new(random::<32>()?);
    files::create_private_file(path, bytes.as_slice())
}

/// The key material of one data directory.
#[derive(Debug, Clone)]
pub struct Vault {
    dir: PathBuf,
    params: KdfParams,
    throttle: Throttle,
}

impl Vault {
    /// The vault of data directory `dir`, with the default Argon2id
    /// parameters (for new stores) and the default throttle.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            params: KdfParams::DEFAULT,
            throttle: Throttle::default(),
        }
    }

    /// Uses `params` for stores created from now on (an existing header
    /// keeps the parameters it names).
    pub fn with_kdf_params(mut self, params: KdfParams) -> Self {
        self.params = params;
        self
    }

    /// Uses another throttle.
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = throttle;
        self
    }

    /// The throttle in force.
    pub fn throttle(&self) -> Throttle {
        self.throttle
    }

    /// The key header's path.
    pub fn header_path(&self) -> PathBuf {
        self.dir.join(KEY_HEADER_FILE)
    }

    fn attempts_path(&self) -> PathBuf {
        self.dir.join(ATTEMPTS_FILE)
    }

    fn tombstone_path(&self) -> PathBuf {
        self.dir.join(TOMBSTONE_FILE)
    }

    /// Reads the key header, if there is one.
    fn header(&self) -> Result<Option<Header>, VaultError> {
        let path = self.header_path();
        match std::fs::read(&path) {
            Ok(bytes) => header::decode(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VaultError::io("read", &path)(e)),
        }
    }

    /// What the directory holds: nothing, a locked key, or a wiped one.
    pub fn state(&self) -> Result<VaultState, VaultError> {
        if let Some((at, reason)) = read_tombstone(&self.tombstone_path())? {
            return Ok(VaultState::Wiped { at, reason });
        }
        Ok(match self.header()? {
            None => VaultState::Absent,
            Some(Header::Locked(l)) => VaultState::Locked(l.lock),
            Some(Header::Wiped { at }) => VaultState::Wiped {
                at,
                reason: String::new(),
            },
        })
    }

    /// Failed unlock attempts in a row so far.
    pub fn failures(&self) -> Result<u32, VaultError> {
        throttle::read_failures(&self.attempts_path(), self.throttle.free_attempts)
    }

    /// Makes a new random data key, wraps it under `credential` and writes
    /// the key header durably. Fails if the directory has a header or was
    /// wiped; a passphrase needs [`MIN_PASSPHRASE_CHARS`] characters.
    pub fn create(&self, credential: &Credential) -> Result<DataKey, VaultError> {
        match self.state()? {
            VaultState::Absent => {}
            VaultState::Wiped { at, reason } => return Err(VaultError::StoreWiped { at, reason }),
            VaultState::Locked(_) => {
                return Err(VaultError::KeyExists {
                    path: self.header_path(),
                });
            }
        }
        if let Credential::Passphrase(p) = credential
            && p.chars().count() < MIN_PASSPHRASE_CHARS
        {
            return Err(VaultError::PassphraseTooShort {
                min: MIN_PASSPHRASE_CHARS,
            });
        }
        let data_key = DataKey(Zeroizing::new(random::<32>()?));
        let mut locked = Locked {
            lock: credential.lock_kind(),
            params: match credential {
                Credential::Passphrase(_) => self.params,
                Credential::KeyFile(_) => KdfParams::NONE,
            },
            salt: random()?,
            nonce: random()?,
            wrapped: [0; 48],
        };
        let kek = kek(credential, &locked)?;
        locked.wrap(&kek, data_key.as_bytes())?;
        files::create_durably(&self.header_path(), &locked.encode())?;
        Ok(data_key)
    }

    /// Removes a key header that [`Vault::create`] just wrote, when the
    /// store it was made for could not be created (so `init` can be retried).
    pub fn discard_new(&self) -> Result<(), VaultError> {
        files::remove_durably(&self.header_path())
    }

    /// Unwraps the data key with `credential`.
    ///
    /// A passphrase is throttled: after [`Throttle::free_attempts`]
    /// failures in a row, `pause` is called first with the wait and the
    /// failure count (it is expected to tell the user and sleep that long);
    /// the attempt is counted durably before it is tried, and a success
    /// resets the count. A key file (256 bits or more that nobody guesses)
    /// is neither counted nor slowed. A wrong credential gives
    /// [`VaultError::WrongPassphrase`]; a wiped directory
    /// [`VaultError::StoreWiped`].
    pub fn unlock(
        &self,
        credential: &Credential,
        pause: &mut dyn FnMut(Duration, u32),
    ) -> Result<DataKey, VaultError> {
        let locked = self.locked()?;
        if credential.lock_kind() != locked.lock {
            return Err(VaultError::LockMismatch {
                locked_with: locked.lock,
            });
        }
        if let Credential::KeyFile(bytes) = credential {
            let kek = kdf::from_key_file(bytes, &locked.salt);
            return locked
                .unwrap_key(&kek)
                .map(DataKey)
                .ok_or(VaultError::WrongPassphrase {
                    failures: 0,
                    next_wait: Duration::ZERO,
                });
        }
        let attempts = self.attempts_path();
        let failures = throttle::read_failures(&attempts, self.throttle.free_attempts)?;
        let wait = self.throttle.wait_before(failures);
        if !wait.is_zero() {
            pause(wait, failures);
        }
        let failures = failures.saturating_add(1);
        throttle::write_failures(&attempts, failures)?;
        let kek = kek(credential, &locked)?;
        match locked.unwrap_key(&kek) {
            Some(key) => {
                throttle::write_failures(&attempts, 0)?;
                Ok(DataKey(key))
            }
            None => Err(VaultError::WrongPassphrase {
                failures,
                next_wait: self.throttle.wait_before(failures),
            }),
        }
    }

    /// The locked header, or the error that says why there is none.
    fn locked(&self) -> Result<Locked, VaultError> {
        match self.state()? {
            VaultState::Wiped { at, reason } => Err(VaultError::StoreWiped { at, reason }),
            VaultState::Absent => Err(VaultError::NoKey {
                path: self.header_path(),
            }),
            VaultState::Locked(_) => match self.header()? {
                Some(Header::Locked(l)) => Ok(l),
                Some(Header::Wiped { at }) => Err(VaultError::StoreWiped {
                    at,
                    reason: String::new(),
                }),
                None => Err(VaultError::NoKey {
                    path: self.header_path(),
                }),
            },
        }
    }
}

/// The key-encryption key for `credential` under the header's parameters.
fn kek(credential: &Credential, locked: &Locked) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    match credential {
        Credential::Passphrase(p) => {
            kdf::from_passphrase(p.as_bytes(), &locked.salt, locked.params)
        }
        Credential::KeyFile(bytes) => Ok(kdf::from_key_file(bytes, &locked.salt)),
    }
}

/// The tombstone's text.
fn tombstone_text(at: Timestamp, reason: &str) -> String {
    format!(
        "fieldsync store wiped\nat {at}\nat-ms {}\nreason {reason}\n",
        at.as_millis()
    )
}

/// Reads a tombstone: `None` when there is none. One that does not parse
/// still means the store was wiped (when and why unknown).
fn read_tombstone(path: &Path) -> Result<Option<(Option<Timestamp>, String)>, VaultError> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(VaultError::io("read", path)(e)),
    };
    let mut at = None;
    let mut reason = String::new();
    for line in text.lines() {
        if let Some(ms) = line.strip_prefix("at-ms ") {
            at = ms.trim().parse().ok().map(Timestamp::from_millis);
        } else if let Some(r) = line.strip_prefix("reason ") {
            reason = r.trim().to_owned();
        }
    }
    Ok(Some((at, reason)))
}

/// Crypto-shreds the store in data directory `dir`, at once and for good.
///
/// The key header is overwritten in place with a wiped header (random
/// bytes where the salt, nonce and wrapped key were) and synced: from then
/// on the store file is ciphertext without a key. A tombstone records
/// `at` and `reason` (one line), the failed-attempts counter goes, and the
/// store file is removed. A store that is not encrypted at rest (no key
/// header) is overwritten with zeros before it is removed. No passphrase is
/// needed. Shredding a wiped directory again changes nothing and reports
/// `already_wiped`.
///
/// Overwriting in place is what a file system allows: copy-on-write file
/// systems and flash wear levelling may keep old blocks, which is why the
/// data key, not the store, is what is destroyed.
pub fn shred(dir: &Path, reason: &str, at: Timestamp) -> Result<Shredded, VaultError> {
    let vault = Vault::new(dir);
    let header_path = vault.header_path();
    let tombstone_path = vault.tombstone_path();
    let store_path = dir.join(STORE_FILE);
    let earlier = read_tombstone(&tombstone_path)?;
    let already_wiped = earlier.is_some();
    let header_bytes = match std::fs::read(&header_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(VaultError::io("read", &header_path)(e)),
    };
    let mut key_destroyed = false;
    let mut plain_store_overwritten = false;
    match header_bytes {
        Some(bytes) => {
            // Anything but a header already wiped is overwritten, damaged or not.
            let wiped = matches!(
                header::decode(&header_path, &bytes),
                Ok(Header::Wiped { .. })
            );
            if !wiped {
                let noise = Zeroizing::new(random::<104>()?);
                files::overwrite_in_place(&header_path, &header::wiped_bytes(at, &noise))?;
                key_destroyed = true;
            }
        }
        None => {
            if store_path.exists() {
                files::zero_and_remove(&store_path)?;
                plain_store_overwritten = true;
            } else if !already_wiped {
                return Err(VaultError::NothingToWipe {
                    dir: dir.to_owned(),
                });
            }
        }
    }
    let at = match earlier {
        Some((Some(first), _)) => first,
        Some((None, _)) => at,
        None => {
            let reason: String = reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(200)
                .collect();
            files::write_durably(
                &tombstone_path,
                tombstone_text(at, reason.trim()).as_bytes(),
            )?;
            at
        }
    };
    files::remove_durably(&vault.attempts_path())?;
    files::remove_durably(&store_path)?;
    Ok(Shredded {
        at,
        key_destroyed,
        plain_store_overwritten,
        already_wiped,
    })
}
