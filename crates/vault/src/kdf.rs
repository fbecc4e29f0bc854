//! Key-encryption keys: Argon2id over a passphrase, or BLAKE3 over a key file.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::error::VaultError;

/// Argon2id cost parameters, stored in the key header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_kib: u32,
    /// Passes over the memory.
    pub t: u32,
    /// Lanes (parallelism).
    pub p: u32,
}

/// Upper bounds a header's parameters must respect: a header edited to ask
/// for 4 TiB of memory is damaged, not a reason to exhaust the device.
const MAX_M_KIB: u32 = 4 * 1024 * 1024;
const MAX_T: u32 = 64;
const MAX_P: u32 = 16;

impl KdfParams {
    /// The parameters new stores get: 64 MiB of memory, 3 passes, 1 lane.
    pub const DEFAULT: Self = Self {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };

    /// Cheap parameters for tests only (8 MiB, 1 pass): never for a real store.
    pub const DANGER_TEST_ONLY: Self = Self {
        m_kib: 8 * 1024,
        t: 1,
        p: 1,
    };

    /// The (unused) parameters of a key-file header.
    pub(crate) const NONE: Self = Self {
        m_kib: 0,
        t: 0,
        p: 0,
    };

    /// Checks that the parameters are within what this build accepts.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_P).contains(&self.p) {
            return Err(format!(
                "Argon2id lanes {} out of range 1..={MAX_P}",
                self.p
            ));
        }
        if !(1..=MAX_T).contains(&self.t) {
            return Err(format!(
                "Argon2id passes {} out of range 1..={MAX_T}",
                self.t
            ));
        }
        if !(8 * self.p..=MAX_M_KIB).contains(&self.m_kib) {
            return Err(format!(
                "Argon2id memory {} KiB out of range {}..={MAX_M_KIB}",
                self.m_kib,
                8 * self.p
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for KdfParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Argon2id m = {} MiB, t = {}, p = {}",
            self.m_kib / 1024,
            self.t,
            self.p
        )
    }
}

/// The key-encryption key for a passphrase: Argon2id (version 0x13) with
/// `params` over the passphrase's bytes and the header's salt.
pub(crate) fn from_passphrase(
    passphrase: &[u8],
    salt: &[u8; 32],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let params = Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| VaultError::Kdf(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut kek = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, kek.as_mut_slice())
        .map_err(|e| VaultError::Kdf(e.to_string()))?;
    Ok(kek)
}

/// The key-encryption key for a key file: BLAKE3 in key-derivation mode
/// over the salt and the file's bytes (a key file holds at least 256 bits
/// of randomness: no stretching is needed).
pub(crate) fn from_key_file(contents: &[u8], salt: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut h = blake3::Hasher::new_derive_key("fieldsync vault key-file kek v1");
    h.update(salt);
    h.update(contents);
    Zeroizing::new(*h.finalize().as_bytes())
}
