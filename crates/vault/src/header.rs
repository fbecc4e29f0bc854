//! The key header (`fieldsync.key`): a small fixed-size file that holds the
//! store's data key wrapped under a key-encryption key, and how to derive
//! that key from a passphrase or a key file.
//!
//! Layout, version 1 (152 bytes, integers little-endian):
//!
//! | offset | len | field |
//! |---|---|---|
//! | 0 | 8 | magic `FSVAULT\0` |
//! | 8 | 2 | version (1) |
//! | 10 | 1 | state: 1 locked, 2 wiped |
//! | 11 | 1 | lock: 1 passphrase (Argon2id), 2 key file (BLAKE3) |
//! | 12 | 4 | Argon2id memory, KiB (0 for a key file) |
//! | 16 | 4 | Argon2id passes (0 for a key file) |
//! | 20 | 4 | Argon2id lanes (0 for a key file) |
//! | 24 | 8 | when it was wiped, ms since the Unix epoch (0 unless wiped) |
//! | 32 | 32 | salt |
//! | 64 | 24 | XChaCha20-Poly1305 nonce |
//! | 88 | 48 | the wrapped data key: 32 bytes of ciphertext and a 16-byte tag |
//! | 136 | 16 | checksum: the first 16 bytes of BLAKE3 over bytes 0..136 |
//!
//! The wrap binds bytes 0..88 (everything before the wrapped key) as
//! associated data, so a header whose parameters or salt were changed does
//! not unwrap. The checksum only tells accidental damage (or a careless
//! edit) from a wrong passphrase. A wiped header keeps the first 32 bytes
//! (with state 2 and the time) and random bytes where the salt, nonce and
//! wrapped key were.

use std::path::Path;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use fieldsync_identity::Timestamp;
use zeroize::Zeroizing;

use crate::error::VaultError;
use crate::kdf::KdfParams;

/// Total length of a version 1 header.
pub(crate) const HEADER_LEN: usize = 152;
/// The magic bytes a key header starts with.
const MAGIC: [u8; 8] = *b"FSVAULT\0";
/// The header version this build writes and reads.
pub(crate) const VERSION: u16 = 1;
const STATE_LOCKED: u8 = 1;
const STATE_WIPED: u8 = 2;
const LOCK_PASSPHRASE: u8 = 1;
const LOCK_KEY_FILE: u8 = 2;
/// End of the bytes bound as associated data (the wrapped key starts here).
const AD_END: usize = 88;
/// End of the bytes the checksum covers (the checksum starts here).
const SUM_END: usize = 136;

/// What a store's data key is locked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// A passphrase, stretched with Argon2id.
    Passphrase,
    /// A key file of at least 32 random bytes.
    KeyFile,
}

/// A parsed key header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Header {
    /// The data key is there, wrapped.
    Locked(Locked),
    /// The key was destroyed.
    Wiped {
        /// When (absent if the header does not say).
        at: Option<Timestamp>,
    },
}

/// The fields of a header that holds a wrapped key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Locked {
    pub(crate) lock: LockKind,
    pub(crate) params: KdfParams,
    pub(crate) salt: [u8; 32],
    pub(crate) nonce: [u8; 24],
    pub(crate) wrapped: [u8; 48],
}

fn checksum(bytes: &[u8]) -> [u8; 16] {
    let full = blake3::hash(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full.as_bytes()[..16]);
    out
}

fn u32_at(b: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

impl Locked {
    /// The header's bytes; the wrapped key must have been made with
    /// [`Locked::associated_data`] of the same fields.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = self.prefix();
        b[AD_END..AD_END + 48].copy_from_slice(&self.wrapped);
        let sum = checksum(&b[..SUM_END]);
        b[SUM_END..].copy_from_slice(&sum);
        b
    }

    /// Everything before the wrapped key (the associated data of the wrap).
    fn prefix(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[10] = STATE_LOCKED;
        match self.lock {
            LockKind::Passphrase => {
                b[11] = LOCK_PASSPHRASE;
                b[12..16].copy_from_slice(&self.params.m_kib.to_le_bytes());
                b[16..20].copy_from_slice(&self.params.t.to_le_bytes());
                b[20..24].copy_from_slice(&self.params.p.to_le_bytes());
            }
            LockKind::KeyFile => b[11] = LOCK_KEY_FILE,
        }
        b[32..64].copy_from_slice(&self.salt);
        b[64..88].copy_from_slice(&self.nonce);
        b
    }

    /// The associated data the wrapped key is bound to.
    pub(crate) fn associated_data(&self) -> [u8; AD_END] {
        array(&self.prefix()[..AD_END])
    }

    /// Wraps `data_key` under `kek`, filling `wrapped`.
    pub(crate) fn wrap(&mut self, kek: &[u8; 32], data_key: &[u8; 32]) -> Result<(), VaultError> {
        let cipher = XChaCha20Poly1305::new(&Key::from(*kek));
        let ad = self.associated_data();
        let mut buf = Zeroizing::new(*data_key);
        let tag = cipher
            .encrypt_inout_detached(&XNonce::from(self.nonce), &ad, buf.as_mut_slice().into())
            .map_err(|_| VaultError::Kdf("wrapping the data key failed".into()))?;
        self.wrapped[..32].copy_from_slice(buf.as_slice());
        self.wrapped[32..].copy_from_slice(tag.as_slice());
        Ok(())
    }

    /// Unwraps the data key with `kek`; `None` if it does not open.
    pub(crate) fn unwrap_key(&self, kek: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let cipher = XChaCha20Poly1305::new(&Key::from(*kek));
        let ad = self.associated_data();
        let mut buf = Zeroizing::new(array::<32>(&self.wrapped[..32]));
        let tag = Tag::try_from(&self.wrapped[32..]).ok()?;
        cipher
            .decrypt_inout_detached(
                &XNonce::from(self.nonce),
                &ad,
                buf.as_mut_slice().into(),
                &tag,
            )
            .ok()?;
        Some(buf)
    }
}

/// The bytes of a wiped header: the state and time kept, `noise` (random
/// bytes) where the salt, nonce and wrapped key were.
pub(crate) fn wiped_bytes(at: Timestamp, noise: &[u8; 104]) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[..8].copy_from_slice(&MAGIC);
    b[8..10].copy_from_slice(&VERSION.to_le_bytes());
    b[10] = STATE_WIPED;
    b[24..32].copy_from_slice(&at.as_millis().to_le_bytes());
    b[32..SUM_END].copy_from_slice(noise);
    let sum = checksum(&b[..SUM_END]);
    b[SUM_END..].copy_from_slice(&sum);
    b
}

/// Parses a header read from `path`.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Header, VaultError> {
    let corrupt = |what: &str| VaultError::HeaderCorrupt {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    if bytes.len() < 10 || bytes[..8] != MAGIC {
        return Err(corrupt("it is not a FieldSync key header"));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(VaultError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: VERSION,
        });
    }
    let b: &[u8; HEADER_LEN] = bytes
        .try_into()
        .map_err(|_| corrupt(&format!("{} bytes, expected {HEADER_LEN}", bytes.len())))?;
    if checksum(&b[..SUM_END]) != b[SUM_END..] {
        return Err(corrupt("its checksum does not match"));
    }
    match b[10] {
        STATE_WIPED => {
            let ms = i64::from_le_bytes(array(&b[24..32]));
            return Ok(Header::Wiped {
                at: (ms != 0).then(|| Timestamp::from_millis(ms)),
            });
        }
        STATE_LOCKED => {}
        other => return Err(corrupt(&format!("unknown state {other}"))),
    }
    let (lock, params) = match b[11] {
        LOCK_PASSPHRASE => {
            let params = KdfParams {
                m_kib: u32_at(b, 12),
                t: u32_at(b, 16),
                p: u32_at(b, 20),
            };
            params.check().map_err(|what| corrupt(&what))?;
            (LockKind::Passphrase, params)
        }
        LOCK_KEY_FILE => (LockKind::KeyFile, KdfParams::NONE),
        other => return Err(corrupt(&format!("unknown lock kind {other}"))),
    };
    if b[24..32] != [0; 8] {
        return Err(corrupt("a locked header carries a wipe time"));
    }
    Ok(Header::Locked(Locked {
        lock,
        params,
        salt: array(&b[32..64]),
        nonce: array(&b[64..88]),
        wrapped: array(&b[88..136]),
    }))
}
